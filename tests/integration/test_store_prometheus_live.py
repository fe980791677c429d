"""PrometheusHistory against real Prometheus servers.

The session's `prometheus_server` has a seeded gauge and scrapes node_exporter. A second
Prometheus, started here, holds LiteLLM-shaped history written by `promtool` from known
requests, which also go into a SQLite store: the percentiles from the histogram and the exact
ones from the records must agree within the bucket width.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from aidash_lib.sources.prometheus import PrometheusSource
from aidash_lib.store.prometheus import PROMQL_METRICS, PrometheusHistory
from aidash_lib.store.schema import RequestRecord
from aidash_lib.store.sqlite import SqliteHistory, SqliteStore
from tests.servers.process import ServerProcess, free_port, require_binary, start_server
from tests.servers.prometheus import INSTALL, PrometheusServer

pytestmark = pytest.mark.integration

#: LiteLLM's latency buckets (litellm/types/integrations/prometheus.py).
BUCKETS: tuple[float, ...] = (
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5,
    *(x / 2 for x in range(2, 21)), 15.0, 20.0, 25.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0,
)
GROUPS = ("llama-3.1-8b-instruct", "qwen2.5-coder-32b")
SCRAPE_S = 15


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


# -- the session's Prometheus ----------------------------------------------------------------


async def test_series_of_seeded_history(
    client: httpx.AsyncClient, prometheus_server: PrometheusServer
) -> None:
    seed = prometheus_server.seed
    history = PrometheusHistory(PrometheusSource(client, prometheus_server.base_url))
    frame = await history.series(seed.metric, seed.start_s, seed.end_s, step_s=seed.step_s)
    assert list(frame.columns) == ["time", "value", "pattern"]
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["pattern"].dtype) == "category"
    expected_times = [pd.Timestamp(t, unit="s", tz="UTC") for t in seed.timestamps_s]
    for pattern, values in seed.values.items():
        part = frame[frame["pattern"] == pattern]
        assert part["value"].tolist() == list(values)
        assert part["time"].tolist() == expected_times

    square = await history.series(
        seed.metric, seed.start_s, seed.end_s, labels={"pattern": "square"}, points=31
    )
    assert set(square["pattern"]) == {"square"} and 25 <= len(square) <= 35


async def test_machine_metric_by_its_aidash_name(
    client: httpx.AsyncClient, prometheus_server: PrometheusServer
) -> None:
    history = PrometheusHistory(PrometheusSource(client, prometheus_server.base_url))
    instance = prometheus_server.node_exporter_url.removeprefix("http://")
    deadline = time.monotonic() + 30
    while True:
        frame = await history.series("system_cpu_percent", "-2m", "now", step_s=5)
        if len(frame) >= 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert list(frame.columns) == ["time", "value", "instance"]
    assert set(frame["instance"]) == {instance}
    assert frame["value"].between(0, 100).all()
    memory = await history.series(
        "system_memory_used_percent", "-1m", "now", labels={"instance": instance}, step_s=5
    )
    assert memory["value"].between(0, 100).all() and len(memory) > 0


# -- a Prometheus holding LiteLLM's histograms, and the same requests in SQLite ---------------


@dataclass(frozen=True)
class GatewayHistory:
    prometheus_url: str
    store_path: Path
    start_s: float  # the first scrape (all counters zero)
    end_s: float  # the last scrape
    records: tuple[RequestRecord, ...]


def make_records(start_s: float, end_s: float) -> list[RequestRecord]:
    """Two requests a second per group, lognormal latencies, all ended before `end_s`."""
    rng = np.random.default_rng(11)
    records = []
    for g, group in enumerate(GROUPS):
        starts = np.arange(start_s + 1, end_s - 60, 0.5)
        latencies = rng.lognormal(0.3 + g * 0.6, 0.5, len(starts))
        for k, (started, latency) in enumerate(zip(starts, latencies, strict=True)):
            records.append(
                RequestRecord(
                    call_id=f"{g}-{k}", started_s=float(started),
                    ended_s=float(started + latency), requested_group=group,
                    deployment_id=f"{group}-0", model=group, provider="hosted_vllm",
                    api_base="http://127.0.0.1:8001/v1", status="success",
                    latency_s=float(latency),
                )
            )
    return records


def openmetrics(records: list[RequestRecord], scrapes: np.ndarray) -> str:
    """The gateway's latency histogram and request counter as Prometheus would have scraped
    them every `SCRAPE_S`, as OpenMetrics text for `promtool tsdb create-blocks-from`."""
    hist = "litellm_request_total_latency_metric"
    total = "litellm_proxy_total_requests_metric"
    lines = [f"# HELP {hist} latency", f"# TYPE {hist} histogram"]
    counters = [f"# HELP {total} requests", f"# TYPE {total} counter"]
    edges = np.array(BUCKETS)
    for group in GROUPS:
        mine = [r for r in records if r.requested_group == group]
        ended = np.array([r.ended_s for r in mine])
        latency = np.array([r.latency_s for r in mine])
        labels = f'model="{group}",requested_model="{group}"'
        for ts in scrapes:
            done = np.sort(latency[ended <= ts])
            counts = np.searchsorted(done, edges, side="right")
            for le, count in zip(BUCKETS, counts, strict=True):
                lines.append(f'{hist}_bucket{{{labels},le="{le}"}} {count} {ts}')
            lines.append(f'{hist}_bucket{{{labels},le="+Inf"}} {len(done)} {ts}')
            lines.append(f"{hist}_count{{{labels}}} {len(done)} {ts}")
            lines.append(f"{hist}_sum{{{labels}}} {done.sum():.6f} {ts}")
            counters.append(f'{total}_total{{requested_model="{group}"}} {len(done)} {ts}')
    return "\n".join([*lines, *counters, "# EOF"]) + "\n"


@pytest.fixture(scope="module")
def gateway_history(
    tmp_path_factory: pytest.TempPathFactory, server_logs: Path
) -> Iterator[GatewayHistory]:
    binary = require_binary("prometheus", INSTALL)
    promtool = require_binary("promtool", INSTALL)
    root = tmp_path_factory.mktemp("prometheus-gateway")
    end_s = math.floor(time.time() / SCRAPE_S) * SCRAPE_S - 120
    start_s = end_s - 40 * 60
    records = make_records(start_s, end_s)
    (root / "history.om").write_text(
        openmetrics(records, np.arange(start_s, end_s + 1, SCRAPE_S))
    )
    data = root / "data"
    made = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"),
         str(data)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if made.returncode != 0:
        pytest.fail(f"promtool could not seed the TSDB:\n{made.stdout}{made.stderr}")
    store_path = root / "history.sqlite"
    SqliteStore(store_path).write_requests(records)

    (root / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    process: ServerProcess = start_server(
        "prometheus-gateway-history",
        [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d"],
        log_dir=server_logs, base_url=f"http://127.0.0.1:{port}", ready_path="/-/ready",
    )
    yield GatewayHistory(
        f"http://127.0.0.1:{port}", store_path, float(start_s), float(end_s), tuple(records)
    )
    process.stop()


def bucket_width(value: float) -> float:
    edges = (0.0, *BUCKETS)
    upper = next(k for k, edge in enumerate(edges) if edge >= value)
    return edges[upper] - edges[upper - 1]


async def test_histogram_and_record_percentiles_agree(
    client: httpx.AsyncClient, gateway_history: GatewayHistory
) -> None:
    records = SqliteHistory(gateway_history.store_path)
    prometheus = PrometheusHistory(
        PrometheusSource(client, gateway_history.prometheus_url), store=records
    )
    start, end = gateway_history.start_s - 5, gateway_history.end_s
    exact = await records.latency_percentiles(start, end)
    estimated = await prometheus.latency_percentiles(start, end)
    assert exact.attrs["exact"] and not estimated.attrs["exact"]
    assert list(estimated.columns) == list(exact.columns)
    assert {str(t) for t in estimated.dtypes} == {str(t) for t in exact.dtypes}
    assert estimated["requested_group"].tolist() == list(GROUPS)
    assert estimated["requests"].tolist() == exact["requests"].tolist()
    for column in ("p50_s", "p95_s", "p99_s"):
        for want, got in zip(exact[column], estimated[column], strict=True):
            assert abs(want - got) <= bucket_width(want), (column, want, got)
    # The store's requests through the Prometheus history.
    assert len(await prometheus.requests(start, end)) == len(gateway_history.records)


async def test_gateway_metrics_by_their_aidash_names(
    client: httpx.AsyncClient, gateway_history: GatewayHistory
) -> None:
    history = PrometheusHistory(PrometheusSource(client, gateway_history.prometheus_url))
    start, end = gateway_history.start_s + 300, gateway_history.end_s - 300
    rate = await history.series("gateway_group_client_requests_per_min", start, end, step_s=60)
    assert list(rate.columns) == ["time", "value", "model_group"]
    assert set(rate["model_group"]) == set(GROUPS)
    assert np.allclose(rate["value"], 120.0, rtol=0.05)  # two a second
    total = await history.series("gateway_requests_per_min", start, end, points=10)
    assert list(total.columns) == ["time", "value"]
    assert np.allclose(total["value"], 240.0, rtol=0.05)
    p95 = await history.series(
        "gateway_group_latency_p95_s", start, end, step_s=60, labels={"model_group": GROUPS[1]}
    )
    assert set(p95["model_group"]) == {GROUPS[1]}
    exact = np.quantile([r.latency_s for r in gateway_history.records
                         if r.requested_group == GROUPS[1]], 0.95)
    assert abs(p95["value"].median() - exact) <= 2 * bucket_width(exact)


async def test_every_aidash_name_is_valid_promql(
    client: httpx.AsyncClient, prometheus_server: PrometheusServer
) -> None:
    history = PrometheusHistory(PrometheusSource(client, prometheus_server.base_url))
    for name in PROMQL_METRICS:
        for labels in (None, {"model_group": "a", "instance": "b"}):
            frame = await history.series(name, "-2m", "now", step_s=30, labels=labels)
            assert list(frame.columns[:2]) == ["time", "value"], name
