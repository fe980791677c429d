"""The machine: CPU, memory, disk and network over time with threshold lines, and the busiest
processes.

Two charts: CPU, memory and disk used share one percent chart (one line each, a line per disk
path) with their warn and critical lines (one pair when they share one, as by default), and
network and disk I/O share one bytes-per-second chart: a bqplot figure costs the page about
50 ms to draw (`benchmarks/chart_cost.py`), and these read best side by side anyway.

Reads the series `system_cpu_percent`, `system_load_1m`, `system_memory_used_percent`,
`system_memory_used_bytes`, `system_memory_total_bytes`, `system_disk_used_percent{path}`,
`system_net_rx_bytes_per_s`, `system_net_tx_bytes_per_s`, `system_disk_read_bytes_per_s`,
`system_disk_write_bytes_per_s`, `system_process_count`, the machine source's `source_fault`
events (subject `machine`), and the last `processes` event when the recorder stores one: its
detail is JSON `{"top_by_cpu": [...], "top_by_memory": [...]}` of
`sources.system.TopProcess` (pid, name, cpu_percent, memory_rss_bytes, username; command lines
are never shown).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import (
    PanelBase,
    esc,
    fmt_bytes,
    fmt_number,
    fmt_percent,
    fmt_when,
    html_table,
    level,
    note,
    values_table,
)
from aidash_lib.ui.charts import TimeSeriesChart, frame_lines
from aidash_lib.ui.common import PROCESSES_MAX_AGE_S, last_value, last_values, open_faults
from aidash_lib.ui.traffic import chart_row
from aidash_lib.ui.view import DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History

TOP_ROWS = 8


def parse_top_processes(detail: str) -> dict[str, list[dict[str, Any]]]:
    """`top_by_cpu` and `top_by_memory` lists from a `processes` event's detail."""
    try:
        data = json.loads(detail)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: [p for p in data.get(k) or [] if isinstance(p, dict)]
            for k in ("top_by_cpu", "top_by_memory")}


class MachinePanel(PanelBase):
    """CPU, memory and disk used in one chart, network and disk I/O in another; load and the
    rest now; the top processes."""

    css_class = "aidash-machine"
    title = "Machine"

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(history, settings, **kwargs)
        s = self.settings.dashboard
        th = self.settings.thresholds
        size = {"width_px": s.chart_width_px, "height_px": s.chart_height_px}
        self.summary = shared.html("", "aidash-machine-summary")
        self.usage = TimeSeriesChart(
            "CPU, memory and disk used", unit="%", y_max=100,
            thresholds={"CPU": th.get("cpu_percent"), "memory": th.get("memory_percent"),
                        "disk": th.get("disk_percent")},
            css="aidash-chart-usage", **size)
        self.network = TimeSeriesChart("Network and disk I/O", unit="B/s",
                                       css="aidash-chart-network", tick_format="~s", **size)
        self.charts = [self.usage, self.network]
        self.processes = shared.html("", "aidash-top-processes")
        self.body.children = [self.summary, chart_row(self.charts), self.processes]

    async def _series(self, metric: str, window: tuple[float, float], step: float,
                      **assign: str) -> pd.DataFrame:
        frame = await self.history.series(metric, *window, step_s=step)
        return frame.assign(**assign) if assign else frame

    async def _update(self, view: DashboardView) -> None:
        now = time.time()
        window = view.window(now)
        step = self.usage.step_s(window)
        cpu = await self._series("system_cpu_percent", window, step)
        memory = await self._series("system_memory_used_percent", window, step)
        disk = await self._series("system_disk_used_percent", window, step)
        rx = await self._series("system_net_rx_bytes_per_s", window, step, dir="net in")
        tx = await self._series("system_net_tx_bytes_per_s", window, step, dir="net out")
        read = await self._series("system_disk_read_bytes_per_s", window, step, dir="disk read")
        write = await self._series("system_disk_write_bytes_per_s", window, step,
                                   dir="disk write")
        self.usage.set_lines({
            **frame_lines(cpu, lambda _: "CPU"), **frame_lines(memory, lambda _: "memory"),
            **frame_lines(disk, lambda labels: f"disk {labels.get('path', '')}".strip()),
        }, window)
        self.network.set_frame(pd.concat([rx, tx, read, write]), window, label="dir")
        await self._summary(window, cpu, memory, disk, rx, tx)
        await self._processes(window[1], now)
        faults = await open_faults(self.history, window[1])
        fault = faults.get("machine")
        if fault is not None:
            self.problem(f"machine source: {fault.reason} (since {fmt_when(fault.since_s, now)})")
        _, last_s = last_value(cpu)
        # A point stands for its bucket's start: over 6 h a fresh reading is up to `step` old.
        stale_after = max(3 * self.settings.intervals.machine_s, 30.0) + step
        if view.end_s is None and (last_s is None or now - last_s > stale_after):
            self.problem("No recent machine reading: is the recorder (`aidash record`) running?")

    async def _summary(self, window: tuple[float, float], cpu: pd.DataFrame,
                       memory: pd.DataFrame, disk: pd.DataFrame, rx: pd.DataFrame,
                       tx: pd.DataFrame) -> None:
        th = self.settings.thresholds
        start, end = window
        recent = max(start, end - 600)
        used, _ = last_value(await self.history.series("system_memory_used_bytes", recent, end))
        total, _ = last_value(await self.history.series("system_memory_total_bytes", recent, end))
        procs, _ = last_value(await self.history.series("system_process_count", recent, end))
        ld, _ = last_value(await self.history.series("system_load_1m", recent, end))
        c, _ = last_value(cpu)
        m, _ = last_value(memory)
        disks = last_values(disk, "path")
        worst_path, (d, _) = max(disks.items(), key=lambda kv: kv[1][0]) if disks else \
            (None, (None, None))
        r, _ = last_value(rx)
        t, _ = last_value(tx)

        def css(value: float | None, name: str) -> str:
            found = level(value, th.get(name))
            return f"aidash-{found}" if found else ""

        memory_text = fmt_percent(m, 0)
        if used is not None and total:
            memory_text += f" ({fmt_bytes(used)} of {fmt_bytes(total)})"
        self.summary.value = values_table({
            "cpu_percent": ("CPU", fmt_percent(c, 0), c, css(c, "cpu_percent")),
            "memory_percent": ("memory", memory_text, m, css(m, "memory_percent")),
            "disk_percent": (f"disk {worst_path or ''}".strip(), fmt_percent(d, 0), d,
                             css(d, "disk_percent")),
            "net_rx": ("network in", fmt_bytes(r, "/s"), r),
            "net_tx": ("network out", fmt_bytes(t, "/s"), t),
            "load_1m": ("load 1m", fmt_number(ld, 2), ld),
            "processes": ("processes", fmt_number(procs, 0), procs),
        })

    async def _processes(self, end_s: float, now: float) -> None:
        events = await self.history.events(end_s - PROCESSES_MAX_AGE_S, end_s, kind="processes")
        if events.empty:
            self.processes.value = note(
                "Top processes: not in the store (the recorder does not record them yet).")
            return
        last = events.iloc[-1]
        top = parse_top_processes(str(last["detail"]))
        when = fmt_when(pd.Timestamp(last["time"]).timestamp(), now)
        tables = []
        for key, title in (("top_by_cpu", "by CPU"), ("top_by_memory", "by memory")):
            rows = [
                [str(p.get("pid", "–")), str(p.get("name") or "–"),
                 str(p.get("username") or "–"),
                 fmt_percent(p.get("cpu_percent"), 0), fmt_bytes(p.get("memory_rss_bytes"))]
                for p in top.get(key, [])[:TOP_ROWS]
            ]
            tables.append(
                f'<div style="display:inline-block;vertical-align:top;margin-right:16px">'
                f"<b>Top processes {esc(title)}</b> (at {esc(when)})"
                + html_table(["pid", "name", "user", "CPU", "memory"], rows,
                             css=f"aidash-table aidash-top-{key.removeprefix('top_by_')}",
                             numeric=(0, 3, 4))
                + "</div>"
            )
        self.processes.value = "".join(tables)
