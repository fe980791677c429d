"""Gateway throughput with aidash's request logger versus with the prometheus callback only.

Two real LiteLLM proxies (the test config: mock deployments) run side by side: the floor with
`callbacks: ["prometheus"]`, the other with `["prometheus", "aidash_callbacks.handler"]`
writing to a fresh store. Every request goes to the `claude-haiku` mock (no delay, so the figure
is the gateway's own cost per request) at a fixed concurrency. After a warm-up, each pass sends a
fixed number of requests to each proxy, in short chunks that alternate between them (ABBA), so
that the load of a shared machine falls on both alike. The figure is the median of the passes.
The proxies' CPU time per request is printed too: it is much less sensitive to other load.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.servers.litellm_logged import LoggedGateway, start_logged_litellm  # noqa: E402

MODEL = "claude-haiku"
CONCURRENCY = 8
REQUESTS = 400  # per proxy and pass
CHUNK = 50
WARMUP = 60
PASSES = 3
TARGET = 0.95


async def _send(logged: LoggedGateway, n: int) -> float:
    """Send `n` chat completions at `CONCURRENCY`; the seconds taken (all must be 200)."""
    gateway = logged.gateway
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "benchmark"}]}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.headers,
                                 timeout=30.0, limits=limits) as client:

        async def one() -> int:
            async with semaphore:
                response = await client.post("/v1/chat/completions", json=body)
                return response.status_code

        started = time.perf_counter()
        statuses = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - started
    failed = [s for s in statuses if s != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} requests failed: {sorted(set(failed))}")
    return elapsed


def _cpu_s(logged: LoggedGateway) -> float:
    process = psutil.Process(logged.gateway.server.proc.pid)
    times = [process.cpu_times()] + [c.cpu_times() for c in process.children(recursive=True)]
    return sum(t.user + t.system for t in times)


def _one_pass(floor_gw: LoggedGateway, logged_gw: LoggedGateway) -> dict[str, float]:
    """Throughput (req/s) and CPU per request (ms) of each proxy over one ABBA pass."""
    elapsed = {"floor": 0.0, "logger": 0.0}
    gateways = {"floor": floor_gw, "logger": logged_gw}
    cpu_before = {k: _cpu_s(g) for k, g in gateways.items()}
    for i in range(REQUESTS // CHUNK):
        order = ("floor", "logger") if i % 2 == 0 else ("logger", "floor")
        for key in order:
            elapsed[key] += asyncio.run(_send(gateways[key], CHUNK))
    out = {}
    for key, gateway in gateways.items():
        out[key] = REQUESTS / elapsed[key]
        out[f"{key}_cpu_ms"] = (_cpu_s(gateway) - cpu_before[key]) / REQUESTS * 1000
    return out


def _stored(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM requests WHERE is_health_check = 0").fetchone()[0]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="aidash-bench-logger-") as tmp:
        workdir = Path(tmp)
        store = workdir / "history.sqlite"
        print("starting two proxies (prometheus only; prometheus + aidash logger) ...")
        floor_gw = start_logged_litellm(workdir, workdir / "unused.sqlite", name="floor",
                                        aidash=False)
        logged_gw = None
        try:
            logged_gw = start_logged_litellm(workdir, store, name="aidash")
            asyncio.run(_send(floor_gw, WARMUP))
            asyncio.run(_send(logged_gw, WARMUP))
            passes = []
            for i in range(PASSES):
                passes.append(_one_pass(floor_gw, logged_gw))
                p = passes[-1]
                print(f"pass {i + 1}: prometheus only {p['floor']:.1f} req/s "
                      f"({p['floor_cpu_ms']:.1f} ms CPU/request), with aidash logger "
                      f"{p['logger']:.1f} req/s ({p['logger_cpu_ms']:.1f} ms CPU/request)")
            expected = WARMUP + PASSES * REQUESTS
            deadline = time.monotonic() + 10
            while _stored(store) < expected and time.monotonic() < deadline:
                time.sleep(0.2)
            print(f"records written by the logger: {_stored(store)} of {expected} requests")
        finally:
            floor_gw.gateway.server.stop()
            if logged_gw is not None:
                logged_gw.gateway.server.stop()
    value = statistics.median(p["logger"] for p in passes)
    floor = statistics.median(p["floor"] for p in passes)
    cpu_value = statistics.median(p["logger_cpu_ms"] for p in passes)
    cpu_floor = statistics.median(p["floor_cpu_ms"] for p in passes)
    print(f"{MODEL}, {REQUESTS} requests per proxy and pass at concurrency {CONCURRENCY}, "
          f"median of {PASSES} passes: {value:.1f} vs {floor:.1f} req/s; "
          f"proxy CPU per request {cpu_value:.2f} vs {cpu_floor:.2f} ms "
          f"(ratio {cpu_floor / cpu_value:.3f})")
    print(json.dumps({"name": "logger_overhead", "value": round(value, 2),
                      "floor": round(floor, 2), "ratio": round(value / floor, 3),
                      "target": TARGET, "unit": "req/s"}))


if __name__ == "__main__":
    main()
