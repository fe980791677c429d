"""A snapshot as a person reads it in a terminal: rich tables, faults in words, no keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from aidash_lib.snapshot import Snapshot
from aidash_lib.sources.base import Reading
from aidash_lib.sources.gpu import format_value

_STATE_STYLE = {"healthy": "green", "partial": "yellow", "outage": "red"}


def print_snapshot(snapshot: Snapshot, console: Console | None = None) -> None:
    """Print every section of the snapshot, then its failures (which decide the exit code)."""
    if console is None:
        console = Console(highlight=False, soft_wrap=True)
        if not console.is_terminal:  # piped or captured: whole tables, never truncated cells
            console = Console(highlight=False, soft_wrap=True, width=200)
    when = dt.datetime.fromtimestamp(snapshot.started_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    console.print(f"[bold]aidash snapshot[/] {when} UTC  gateway {snapshot.gateway_url}")
    for title, names, render in _SECTIONS:
        readings = [snapshot.readings[name] for name in names if name in snapshot.readings]
        if not readings:
            continue
        console.print(f"\n[bold]{title}[/]")
        faulty = {name: snapshot.readings[name] for name in names
                  if name in snapshot.readings and not snapshot.readings[name].ok}
        if faulty and len(faulty) == len(readings):
            for line in _fault_lines(faulty):
                console.print(f"  {line}")
            continue
        render(console, snapshot)
    console.print()
    if snapshot.ok:
        console.print("[green]every source answered[/]")
    failed = {name: r for name, r in snapshot.readings.items() if name in snapshot.failures}
    faulted = {name: r for name, r in failed.items() if r.fault is not None}
    for line in _fault_lines(faulted):
        console.print(f"[red]FAILED[/] {line}")
    for name in failed.keys() - faulted.keys():
        console.print(f"[red]FAILED[/] {name}: {snapshot.failures[name]}")


def _fault_lines(faulty: dict[str, Reading[Any]]) -> list[str]:
    """Faults in words, one line for readings that failed the same way at the same server
    (a gateway that is down is one line, not six)."""
    groups: dict[tuple[str, str, int | None, str], list[str]] = {}
    for name, reading in faulty.items():
        fault = reading.fault
        key = (fault.kind.value, fault.message, fault.status_code, _origin(fault.url))
        groups.setdefault(key, []).append(name)
    lines = []
    for (kind, message, status, origin), names in groups.items():
        where = f" at {origin}" if origin else ""
        code = f"HTTP {status}: " if status is not None else ""
        lines.append(f"{_names(names)}: {kind}{where}: {code}{message}")
    return lines


def _names(names: list[str]) -> str:
    """`gateway (6 readings)` rather than six names that share their source."""
    prefixes = {name.split(".")[0] for name in names}
    if len(names) > 2 and len(prefixes) == 1:
        return f"{prefixes.pop()} ({len(names)} readings)"
    return ", ".join(names)


def _origin(url: str | None) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _gateway(console: Console, snapshot: Snapshot) -> None:
    readiness = _value(snapshot, "gateway.readiness")
    if readiness is not None:
        state = "[green]ready[/]" if readiness.healthy else f"[red]{readiness.status}[/]"
        extra = [f"db {readiness.db}"]
        if readiness.litellm_version:
            extra.append(f"LiteLLM {readiness.litellm_version}")
        if readiness.cache:
            extra.append(f"cache {readiness.cache}")
        if readiness.details_error:
            extra.append(f"details: {readiness.details_error}")
        console.print(f"  {state} ({', '.join(extra)})")
    groups = _value(snapshot, "gateway.model_groups")
    if groups is not None:
        console.print(f"  model groups ({len(groups)}): " + ", ".join(g.name for g in groups))
    router = _value(snapshot, "gateway.router_settings")
    if router is not None:
        console.print(
            f"  routing {router.routing_strategy}, retries {router.num_retries}, "
            f"cooldown {router.cooldown_time_s} s"
        )
        for kind in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            for group, targets in getattr(router, kind).items():
                console.print(f"  {kind.replace('_', ' ')}: {group} -> {' -> '.join(targets)}")
    partial = {name: r for name, r in snapshot.readings.items()
               if name.startswith("gateway.") and not r.ok}
    for line in _fault_lines(partial):
        console.print(f"  {line}")
    if snapshot.deployments:
        table = Table("group", "deployment", "provider", "model", "api_base", "state",
                      "requests", "failures", box=None, padding=(0, 1))
        for view in snapshot.deployments:
            d = view.deployment
            state = view.state or "unknown"
            table.add_row(
                d.group, d.deployment_id, d.provider or "", d.model, d.api_base or "",
                f"[{_STATE_STYLE.get(state, 'dim')}]{state}[/]",
                _count(view.requests), _count(view.failures),
            )
        console.print(table)


def _machine(console: Console, snapshot: Snapshot) -> None:
    m = _value(snapshot, "machine")
    if m is None:
        return
    console.print(
        f"  CPU {format_value(m.cpu_percent, '%')} of {m.cpu_count} cores, load "
        f"{format_value(m.load_average_1m, digits=2)} / {format_value(m.load_average_5m, digits=2)}"
        f" / {format_value(m.load_average_15m, digits=2)}"
    )
    console.print(
        f"  memory {_bytes(m.memory_used_bytes)} of {_bytes(m.memory_total_bytes)} "
        f"({format_value(m.memory_used_percent, '%')}), swap {_bytes(m.swap_used_bytes)}"
    )
    for disk in m.disks:
        if disk.error:
            console.print(f"  disk {disk.path}: {disk.error}")
        else:
            console.print(
                f"  disk {disk.path}: {_bytes(disk.used_bytes)} of {_bytes(disk.total_bytes)} "
                f"({format_value(disk.used_percent, '%')})"
            )
    console.print(
        f"  disk I/O read {_rate(m.disk_read_bytes_per_s)}, "
        f"write {_rate(m.disk_write_bytes_per_s)}; "
        f"network rx {_rate(m.net_rx_bytes_per_s)}, tx {_rate(m.net_tx_bytes_per_s)}"
    )
    if m.top_by_cpu:
        top = ", ".join(f"{p.name} {format_value(p.cpu_percent, '%')}" for p in m.top_by_cpu[:3])
        console.print(f"  top CPU: {top}")


def _gpu(console: Console, snapshot: Snapshot) -> None:
    reading = snapshot.readings["gpu"]
    if not reading.ok:
        console.print(f"  {reading.fault.message}")
        return
    gpus = reading.value
    console.print(f"  driver {gpus.driver_version or 'N/A'}, CUDA {gpus.cuda_version or 'N/A'}")
    for g in gpus.gpus:
        console.print(
            f"  GPU {g.index} {g.name}: util {format_value(g.utilization_gpu_percent, '%')}, "
            f"memory {_bytes(g.memory_used_bytes)} / {_bytes(g.memory_total_bytes)}, "
            f"{format_value(g.temperature_c, ' °C')}, power {format_value(g.power_w, ' W')} / "
            f"{format_value(g.power_limit_w, ' W')}"
        )
        for p in g.processes:
            model = f" serving {p.served_model}" if p.served_model else ""
            memory = _bytes(p.gpu_memory_used_bytes)
            console.print(f"    pid {p.pid} {p.name or 'N/A'} {memory}{model}")


def _services(console: Console, snapshot: Snapshot) -> None:
    statuses = _value(snapshot, "services") or ()
    if not statuses:
        console.print("  none configured")
    for s in statuses:
        since = ""
        if s.since:
            since = " since " + dt.datetime.fromtimestamp(s.since, dt.UTC).strftime("%H:%M:%S UTC")
        console.print(f"  {s.name} ({s.kind} {s.target}): {s.state}{since} {s.detail}".rstrip())


def _servers(console: Console, snapshot: Snapshot) -> None:
    prometheus = _value(snapshot, "prometheus")
    if prometheus is not None:
        console.print(f"  Prometheus {prometheus.url}: {prometheus.message}")
    alerts = snapshot.readings.get("alertmanager.alerts")
    if alerts is not None and alerts.ok:
        console.print(f"  Alertmanager: {len(alerts.value)} active alert(s)")
        for alert in alerts.value:
            severity = alert.severity or "no severity"
            console.print(f"    {alert.name} [{severity}] {alert.summary or ''}")
    partial = {name: snapshot.readings[name] for name in ("prometheus", "alertmanager.alerts")
               if name in snapshot.readings and not snapshot.readings[name].ok}
    for line in _fault_lines(partial):
        console.print(f"  {line}")


_SECTIONS: list[tuple[str, tuple[str, ...], Callable[[Console, Snapshot], None]]] = [
    ("Gateway", ("gateway.liveliness", "gateway.readiness", "gateway.model_groups",
                 "gateway.deployments", "gateway.router_settings", "gateway.metrics"), _gateway),
    ("Machine", ("machine",), _machine),
    ("GPUs", ("gpu",), _gpu),
    ("Services", ("services",), _services),
    ("Prometheus and Alertmanager", ("prometheus", "alertmanager.alerts"), _servers),
]


def _value(snapshot: Snapshot, name: str) -> Any:
    reading: Reading[Any] | None = snapshot.readings.get(name)
    return reading.value if reading is not None and reading.ok else None


def _bytes(value: float | None) -> str:
    if value is None:
        return "N/A"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "N/A"


def _rate(value: float | None) -> str:
    return "N/A" if value is None else f"{_bytes(value)}/s"


def _count(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"
