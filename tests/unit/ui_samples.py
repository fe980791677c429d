"""A store filled with known samples, events and request records, for the UI tests (and the
visual check: `python -m tests.unit.ui_samples PATH` fills PATH with an hour ending now).

Everything is written through `SqliteStore` as the recorder and the logger write it, with the
metric names of `aidash_lib.derive`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aidash_lib.store.schema import Event, RequestRecord, Sample
from aidash_lib.store.sqlite import SqliteStore

GATEWAY_URL = "http://127.0.0.1:4000"

#: group -> [(deployment id, provider, api_base, base latency s, failure fraction)]
DEPLOYMENTS: dict[str, list[tuple[str, str, str | None, float, float]]] = {
    "gpt-4o-mini": [("gpt-4o-mini-a", "openai", None, 0.4, 0.0),
                    ("gpt-4o-mini-b", "azure", "https://example.openai.azure.com", 0.7, 0.05)],
    "claude-haiku": [("claude-haiku-1", "anthropic", None, 0.9, 0.0)],
    "llama3-local": [("llama3-local-1", "hosted_vllm", "http://127.0.0.1:9", 0.2, 1.0)],
}
FALLBACK = {"llama3-local": "gpt-4o-mini"}


@dataclass
class Filled:
    """What `fill` wrote: its window, and counts a test can check."""

    start_s: float
    end_s: float
    samples: int = 0
    records: int = 0
    failures_by_deployment: dict[str, int] = field(default_factory=dict)
    requests_by_deployment: dict[str, int] = field(default_factory=dict)


def _labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def deployments_detail() -> str:
    items = [
        {"group": group, "deployment_id": dep, "provider": provider,
         "model": f"{provider}/{group}", "api_base": api_base, "is_mock": True}
        for group, deps in DEPLOYMENTS.items() for dep, provider, api_base, _, _ in deps
    ]
    return json.dumps(items)


def fill(
    path: Path,
    *,
    end_s: float | None = None,
    minutes: float = 60,
    gpus: int = 1,
    records: bool = True,
    machine_step_s: float = 5.0,
    gateway_step_s: float = 15.0,
    gateway_down_after_s: float | None = None,
) -> Filled:
    """Fill the store at `path` with `minutes` of history ending at `end_s` (default now).

    Machine and GPU samples every `machine_step_s`; gateway rates every `gateway_step_s`;
    `gpus=0` writes the GPU source's fault instead; `records` adds request records (one
    attempt per deployment per gateway interval, and fallbacks for `llama3-local`). With
    `gateway_down_after_s`, the gateway stops answering that long before `end_s`.
    """
    end = time.time() if end_s is None else end_s
    start = end - minutes * 60
    filled = Filled(start, end)
    store = SqliteStore(path)
    samples: list[Sample] = []
    t = start
    k = 0
    while t <= end:
        wave = math.sin(k / 20.0)
        samples += [
            Sample("system_cpu_percent", (), t, 40 + 30 * wave),
            Sample("system_load_1m", (), t, 1.0 + wave),
            Sample("system_memory_used_percent", (), t, 60 + 5 * wave),
            Sample("system_memory_used_bytes", (), t, 6e9),
            Sample("system_memory_total_bytes", (), t, 10e9),
            Sample("system_disk_used_percent", _labels(path="/"), t, 71.5),
            Sample("system_net_rx_bytes_per_s", (), t, 2e5 + 1e5 * wave),
            Sample("system_net_tx_bytes_per_s", (), t, 1e5),
            Sample("system_disk_read_bytes_per_s", (), t, 5e4),
            Sample("system_disk_write_bytes_per_s", (), t, 2e5),
            Sample("system_process_count", (), t, 212),
        ]
        for gpu in range(gpus):
            g = _labels(gpu=str(gpu))
            samples += [
                Sample("gpu_utilization_percent", g, t, 50 + 45 * wave),
                Sample("gpu_memory_used_percent", g, t, 80.0 + gpu),
                Sample("gpu_temperature_c", g, t, 65 + 10 * wave),
                Sample("gpu_power_w", g, t, 300 + 200 * wave),
                Sample("gpu_power_limit_w", g, t, 700.0),
            ]
        t += machine_step_s
        k += 1
    events: list[Event] = [Event(start, "deployments", GATEWAY_URL, deployments_detail())]
    if gpus == 0:
        events.append(Event(start, "source_fault", "gpu",
                            "not_available: no NVIDIA driver: NVML could not be loaded "
                            "(NVML Shared Library Not Found)"))
    down_from = end - gateway_down_after_s if gateway_down_after_s is not None else None
    reqs: list[RequestRecord] = []
    t = start + gateway_step_s
    k = 0
    while t <= end:
        up = down_from is None or t < down_from
        samples.append(Sample("gateway_ready", (), t, 1.0 if up else 0.0))
        if up:
            samples += _gateway_samples(t, k, gateway_step_s)
            if records:
                reqs += _records(t, k, filled)
        t += gateway_step_s
        k += 1
    if down_from is not None:
        events.append(Event(down_from, "source_fault", "gateway.readiness",
                            f"unreachable ({GATEWAY_URL}/health/readiness): connection refused"))
    filled.samples = store.write_samples(samples)
    store.write_events(events)
    if reqs:
        filled.records = store.write_requests(reqs)
    store.close()
    return filled


def _gateway_samples(t: float, k: int, step_s: float) -> list[Sample]:
    out: list[Sample] = []
    total_rpm = 0.0
    total_err = 0.0
    for group, deps in DEPLOYMENTS.items():
        g_rpm = g_err = 0.0
        for dep, _, _, latency, fail in deps:
            d = _labels(deployment_id=dep, model_group=group)
            rpm = 60.0 / step_s
            err = rpm * fail
            g_rpm += rpm
            g_err += err
            out += [
                Sample("gateway_deployment_requests_per_min", d, t, rpm),
                Sample("gateway_deployment_errors_per_min", d, t, err),
                Sample("gateway_deployment_error_rate_percent", d, t, 100 * fail),
                Sample("gateway_deployment_state", d, t, 2.0 if fail >= 1 else 0.0),
                Sample("gateway_deployment_cooldowns", d, t, 1.0 if fail >= 1 else 0.0),
                Sample("gateway_deployment_tokens_per_s", d, t, 30.0),
                Sample("gateway_deployment_spend_usd_per_h", d, t, 0.2),
            ]
            if fail < 1:
                out += [
                    Sample("gateway_deployment_latency_p50_s", d, t, latency),
                    Sample("gateway_deployment_latency_p95_s", d, t, latency * 1.5),
                    Sample("gateway_deployment_latency_p99_s", d, t, latency * 2),
                ]
        gl = _labels(model_group=group)
        lat = min(x[3] for x in deps)
        out += [
            Sample("gateway_group_requests_per_min", gl, t, g_rpm),
            Sample("gateway_group_errors_per_min", gl, t, g_err),
            Sample("gateway_group_error_rate_percent", gl, t, 100 * g_err / g_rpm),
            Sample("gateway_group_tokens_per_s", gl, t, 30.0 * len(deps)),
            Sample("gateway_group_spend_usd_per_h", gl, t, 0.2 * len(deps)),
        ]
        if g_err < g_rpm:
            out += [
                Sample("gateway_group_latency_p50_s", gl, t, lat),
                Sample("gateway_group_latency_p95_s", gl, t, lat * 1.5),
                Sample("gateway_group_latency_p99_s", gl, t, lat * 2),
            ]
        total_rpm += g_rpm
        total_err += g_err
    out += [
        Sample("gateway_requests_per_min", (), t, total_rpm),
        Sample("gateway_errors_per_min", (), t, total_err),
        Sample("gateway_error_rate_percent", (), t, 100 * total_err / total_rpm),
        Sample("gateway_latency_p50_s", (), t, 0.5 + 0.1 * math.sin(k / 10)),
        Sample("gateway_latency_p95_s", (), t, 0.9 + 0.2 * math.sin(k / 10)),
        Sample("gateway_latency_p99_s", (), t, 1.3),
        Sample("gateway_tokens_per_s", (), t, 150.0),
        Sample("gateway_spend_usd_per_h", (), t, 1.0),
    ]
    return out


def _records(t: float, k: int, filled: Filled) -> list[RequestRecord]:
    out = []
    for group, deps in DEPLOYMENTS.items():
        for dep, provider, api_base, latency, fail in deps:
            call = f"call-{k}-{dep}"
            failed = fail >= 1 or (fail > 0 and k % int(1 / fail) == 0)
            out.append(RequestRecord(
                call_id=call, started_s=t - latency, ended_s=t, requested_group=group,
                deployment_id=dep, model=f"{provider}/{group}", provider=provider,
                api_base=api_base, status="failure" if failed else "success",
                latency_s=latency, ttft_s=None if failed else latency / 3,
                prompt_tokens=0 if failed else 100, completion_tokens=0 if failed else 40,
                cost_usd=0.0 if failed else 0.0005,
                error_class="APIConnectionError" if failed else None,
                normalized_error="connection_error" if failed else None,
                error_message="Connection refused (sk-secret-should-be-masked)" if failed
                else None,
            ))
            filled.requests_by_deployment[dep] = filled.requests_by_deployment.get(dep, 0) + 1
            if failed:
                filled.failures_by_deployment[dep] = filled.failures_by_deployment.get(dep, 0) + 1
                target = FALLBACK.get(group)
                if target:
                    to_dep = DEPLOYMENTS[target][0][0]
                    out.append(RequestRecord(
                        call_id=call, started_s=t, ended_s=t + 0.4, requested_group=target,
                        deployment_id=to_dep, model=f"openai/{target}", provider="openai",
                        api_base=None, status="success", latency_s=0.4, ttft_s=0.1,
                        prompt_tokens=100, completion_tokens=40, cost_usd=0.0005,
                        attempted_fallbacks=1,
                    ))
                    filled.requests_by_deployment[to_dep] = \
                        filled.requests_by_deployment.get(to_dep, 0) + 1
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1])
    result = fill(target, gpus=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(f"filled {target}: {result.samples} samples, {result.records} records")
