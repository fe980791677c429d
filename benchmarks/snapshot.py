"""One full concurrent snapshot versus the same raw calls made one after another.

The floor is what a sequential collector pays: every HTTP call of the snapshot (gateway,
Prometheus, Alertmanager) and every local reading (GPU, machine, services), in turn.
Median of several runs, interleaved, against real servers started here.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx
from _servers import running_servers

from aidash_lib.settings import Settings
from aidash_lib.snapshot import collect_snapshot
from aidash_lib.sources.gpu import GpuSource
from aidash_lib.sources.services import ServiceSpec, ServicesSource
from aidash_lib.sources.system import SystemSource

RUNS = 7
GATEWAY_PATHS = (
    "/health/liveliness", "/health/readiness", "/health/readiness/details", "/v1/models",
    "/model/info", "/router/settings", "/metrics/",
)


def settings_for(servers) -> Settings:
    return Settings.model_validate({
        "gateway": {"url": servers.gateway.base_url, "key": servers.gateway.master_key},
        "prometheus": {"url": servers.prometheus.base_url},
        "alertmanager": {"url": servers.alertmanager.base_url},
        "services": [{"name": "gateway", "kind": "process", "target": "litellm .*--config"}],
    })


async def sequential(settings: Settings) -> float:
    """The same calls, one after another: the floor."""
    key = settings.gateway_key({})
    headers = {"Authorization": f"Bearer {key}"}
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as client:
        for path in GATEWAY_PATHS:
            (await client.get(settings.gateway.url + path, headers=headers)).raise_for_status()
        (await client.get(f"{settings.prometheus.url}/-/ready")).raise_for_status()
        alerts = f"{settings.alertmanager.url}/api/v2/alerts"
        (await client.get(alerts, params={"active": "true"})).raise_for_status()
    await GpuSource().read()
    system = SystemSource()
    await system.read()
    await system.read()
    await ServicesSource([ServiceSpec(s.name, s.kind, s.target) for s in settings.services]).read()
    return time.perf_counter() - started


async def concurrent(settings: Settings) -> float:
    started = time.perf_counter()
    snapshot = await collect_snapshot(settings, environ={})
    elapsed = time.perf_counter() - started
    if not snapshot.ok:
        raise SystemExit(f"snapshot failed: {snapshot.failures}")
    return elapsed


async def measure(settings: Settings) -> tuple[list[float], list[float]]:
    ours, floor = [], []
    await concurrent(settings)  # warm-up: imports, first scrape
    await sequential(settings)
    for _ in range(RUNS):
        ours.append(await concurrent(settings))
        floor.append(await sequential(settings))
    return ours, floor


def main() -> None:
    with running_servers() as servers:
        servers.gateway.chat(20, model="gpt-4o-mini")  # realistic /metrics size
        servers.gateway.chat(2, model="llama3-local")
        ours, floor = asyncio.run(measure(settings_for(servers)))
    value, base = statistics.median(ours), statistics.median(floor)
    print(f"concurrent snapshot: median {value * 1000:.0f} ms over {RUNS} runs "
          f"({', '.join(f'{t * 1000:.0f}' for t in ours)})")
    print(f"sequential calls (floor): median {base * 1000:.0f} ms "
          f"({', '.join(f'{t * 1000:.0f}' for t in floor)})")
    print(json.dumps({"name": "snapshot_concurrent_vs_sequential", "value": round(value, 4),
                      "floor": round(base, 4), "ratio": round(value / base, 3), "target": 0.8,
                      "unit": "s"}))


if __name__ == "__main__":
    main()
