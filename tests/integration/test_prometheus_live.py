"""PrometheusSource and AlertmanagerSource against real servers started by the fixtures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import httpx
import pandas as pd
import pytest

from aidash_lib.sources.alertmanager import Alert, AlertmanagerSource
from aidash_lib.sources.base import FaultKind
from aidash_lib.sources.prometheus import PrometheusSource, choose_step
from tests.servers.process import ServerProcess, closed_port
from tests.servers.prometheus import DEAD_JOB, TEST_ALERT_NAME, PrometheusServer

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def prom(client: httpx.AsyncClient, prometheus_server: PrometheusServer) -> PrometheusSource:
    return PrometheusSource(client, prometheus_server.base_url)


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within_s: float = 20.0, every_s: float = 0.5,
) -> T | None:
    """Calls `check()` until it returns something other than None, or None when time is up."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result is not None or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every_s)


async def test_ready(prom: PrometheusSource) -> None:
    reading = await prom.ready()
    assert reading.ok, reading.fault
    assert reading.value.ready
    assert reading.value.message == "Prometheus Server is Ready."


async def test_instant_up_has_node_and_prometheus(
    prom: PrometheusSource, prometheus_server: PrometheusServer,
) -> None:
    async def scraped() -> pd.DataFrame | None:
        reading = await prom.query("up")
        assert reading.ok, reading.fault
        frame = reading.value
        return frame if {"node", "prometheus", DEAD_JOB} <= set(frame.get("job", ())) else None

    frame = await eventually(scraped)
    assert frame is not None, prometheus_server.log_tail()
    assert list(frame.columns[:2]) == ["timestamp", "value"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert set(frame["metric"]) == {"up"}
    values = frame.set_index("job")["value"]
    assert values["node"] == 1.0
    assert values["prometheus"] == 1.0
    assert values[DEAD_JOB] == 0.0
    assert frame.set_index("job")["instance"]["node"] == (
        prometheus_server.node_exporter_url.removeprefix("http://")
    )
    age = pd.Timestamp.now(tz="UTC") - frame["timestamp"].iloc[0]
    assert abs(age) < pd.Timedelta(seconds=30)


async def test_instant_query_at_a_seeded_time(
    prom: PrometheusSource, prometheus_server: PrometheusServer,
) -> None:
    seed = prometheus_server.seed
    at = seed.start_s + 10 * seed.step_s
    frame = (await prom.query(f'{seed.metric}{{pattern="ramp"}}', at=at)).value
    assert frame["value"].tolist() == [10.0]
    assert frame["timestamp"].iloc[0] == pd.Timestamp(at, unit="s", tz="UTC")


async def test_range_query_over_seeded_history(
    prom: PrometheusSource, prometheus_server: PrometheusServer,
) -> None:
    seed = prometheus_server.seed
    reading = await prom.query_range(seed.metric, seed.start_s, seed.end_s, step_s=seed.step_s)
    assert reading.ok, reading.fault
    frame = reading.value
    assert list(frame.columns) == ["timestamp", "value", "metric", "pattern"]
    assert frame.groupby("pattern").size().to_dict() == {"ramp": 61, "square": 61}
    for pattern, expected in seed.values.items():
        series = frame[frame["pattern"] == pattern]
        assert series["value"].tolist() == list(expected)
        assert series["timestamp"].tolist() == [
            pd.Timestamp(ts, unit="s", tz="UTC") for ts in seed.timestamps_s
        ]


async def test_range_query_with_chosen_step(
    prom: PrometheusSource, prometheus_server: PrometheusServer,
) -> None:
    seed = prometheus_server.seed
    end = seed.end_s
    start = end - 3600
    assert choose_step(start, end, 60) == 60
    frame = (await prom.query_range(seed.metric, start, end, points=60)).value
    sizes = frame.groupby("pattern").size()
    assert set(sizes.index) == {"ramp", "square"}
    assert all(55 <= n <= 65 for n in sizes), sizes
    ramp = frame[frame["pattern"] == "ramp"]["value"]
    assert ramp.is_monotonic_increasing and ramp.iloc[-1] == 60.0


async def test_range_query_of_live_data(prom: PrometheusSource) -> None:
    end = time.time()
    frame = (await prom.query_range('up{job="prometheus"}', end - 30, end, step_s=1)).value
    assert not frame.empty
    assert (frame["value"] == 1.0).all()


async def test_empty_result(prom: PrometheusSource) -> None:
    reading = await prom.query("aidash_metric_that_does_not_exist")
    assert reading.ok
    assert reading.value.empty
    assert list(reading.value.columns) == ["timestamp", "value"]


async def test_scalar(prom: PrometheusSource) -> None:
    frame = (await prom.query("scalar(vector(42))")).value
    assert list(frame.columns) == ["timestamp", "value"]
    assert frame["value"].tolist() == [42.0]


async def test_nan_and_infinities(prom: PrometheusSource) -> None:
    frame = (await prom.query('label_replace(vector(1/0), "k", "pos", "", "") or '
                              'label_replace(vector(-1/0), "k", "neg", "", "") or '
                              'label_replace(vector(0/0), "k", "nan", "", "")')).value
    values = frame.set_index("k")["value"]
    assert values["pos"] == float("inf")
    assert values["neg"] == float("-inf")
    assert pd.isna(values["nan"])


async def test_bad_promql_is_query_error(prom: PrometheusSource) -> None:
    reading = await prom.query("sum(rate(up[1m]")
    assert not reading.ok
    assert reading.fault.kind is FaultKind.QUERY_ERROR
    assert reading.fault.status_code == 400
    assert "parse error" in reading.fault.message
    assert "unclosed left parenthesis" in reading.fault.message


async def test_execution_error_is_query_error(prom: PrometheusSource) -> None:
    reading = await prom.query('{__name__=~"up|scrape_duration_seconds"} + 0')
    assert reading.fault.kind is FaultKind.QUERY_ERROR
    assert reading.fault.status_code == 422
    assert "same labelset" in reading.fault.message


async def test_too_many_points_is_query_error(prom: PrometheusSource) -> None:
    end = time.time()
    reading = await prom.query_range("up", end - 20_000, end, step_s=1)
    assert reading.fault.kind is FaultKind.QUERY_ERROR
    assert "11,000 points" in reading.fault.message


async def test_closed_port_is_unreachable(client: httpx.AsyncClient) -> None:
    source = PrometheusSource(client, f"http://127.0.0.1:{closed_port()}")
    for reading in (await source.query("up"), await source.ready()):
        assert reading.fault.kind is FaultKind.UNREACHABLE
    am = AlertmanagerSource(client, f"http://127.0.0.1:{closed_port()}")
    assert (await am.active_alerts()).fault.kind is FaultKind.UNREACHABLE


async def test_alertmanager_ready(client: httpx.AsyncClient, alertmanager: ServerProcess) -> None:
    reading = await AlertmanagerSource(client, alertmanager.base_url).ready()
    assert reading.ok and reading.value.ready and reading.value.message == "OK"


async def test_alertmanager_has_the_firing_test_alert(
    client: httpx.AsyncClient,
    alertmanager: ServerProcess,
    prometheus_server: PrometheusServer,
) -> None:
    source = AlertmanagerSource(client, alertmanager.base_url)

    async def firing() -> list[Alert] | None:
        reading = await source.active_alerts()
        assert reading.ok, reading.fault
        return [a for a in reading.value if a.name == TEST_ALERT_NAME] or None

    alerts = await eventually(firing, within_s=25)
    assert alerts, f"no {TEST_ALERT_NAME} after 25 s:\n{prometheus_server.log_tail()}"
    alert = alerts[0]
    assert alert.state == "active"
    assert alert.severity == "critical"
    assert alert.labels["instance"] == prometheus_server.dead_target
    assert alert.labels["job"] == DEAD_JOB
    assert alert.summary == f"Target {prometheus_server.dead_target} (job {DEAD_JOB}) is down"
    assert alert.generator_url.startswith(prometheus_server.base_url + "/graph?")
    assert alert.silenced_by == ()
    assert time.time() - 120 < alert.starts_at <= time.time()

    narrowed = await source.active_alerts(matchers=[f'alertname="{TEST_ALERT_NAME}"'])
    assert [a.fingerprint for a in narrowed.value] == [alert.fingerprint]
    bad = await source.active_alerts(matchers=["foo"])
    assert bad.fault.kind is FaultKind.QUERY_ERROR
    assert bad.fault.message == "bad matcher format: foo"
