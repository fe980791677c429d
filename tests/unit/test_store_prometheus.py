"""PrometheusHistory's PromQL and frames, on answers captured from a real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from aidash_lib.sources.prometheus import PrometheusSource, frame_from_data
from aidash_lib.store.history import History, NotAvailable
from aidash_lib.store.prometheus import (
    PROMQL_METRICS,
    PrometheusHistory,
    _series_from_query,
)
from aidash_lib.store.sqlite import SqliteHistory


@pytest.fixture
def history() -> PrometheusHistory:
    source = PrometheusSource(httpx.AsyncClient(), "http://127.0.0.1:9")
    return PrometheusHistory(source)


def test_aidash_names_become_promql(history: PrometheusHistory) -> None:
    assert isinstance(history, History)
    assert history.promql("gateway_latency_p95_s", window_s=15) == (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(litellm_request_total_latency_metric_bucket[60s])))"
    )
    assert history.promql("gateway_group_latency_p95_s", window_s=120) == (
        "histogram_quantile(0.95, sum by (le, requested_model) "
        "(rate(litellm_request_total_latency_metric_bucket[120s])))"
    )
    assert history.promql(
        "gateway_group_client_requests_per_min", labels={"model_group": 'we"ird'}, window_s=300
    ) == (
        'sum by (requested_model) (rate(litellm_proxy_total_requests_metric_total'
        '{requested_model="we\\"ird"}[300s])) * 60'
    )
    assert history.promql("system_disk_used_percent", labels={"path": "/"}).count(
        'mountpoint="/"'
    ) == 2
    assert history.promql("system_cpu_percent", labels={"instance": "h:9100"}) == (
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle",'
        'instance="h:9100"}[60s])))'
    )
    assert history.promql("up == 0") == "up == 0"  # not a name: PromQL as it is
    for name, metric in PROMQL_METRICS.items():
        rendered = metric.render({"x": "y"}, 60)
        assert "$" not in rendered and rendered.count("(") == rendered.count(")"), name


def test_query_frames_become_series_frames(shared_fixtures: Path) -> None:
    data = json.loads((shared_fixtures / "prometheus" / "query_range_p95_latency.json").read_text())
    frame = _series_from_query(frame_from_data(data["data"]))
    assert list(frame.columns) == ["time", "value", "model"]
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["model"].dtype) == "category"
    assert frame.groupby("model", observed=True)["time"].apply(
        lambda t: t.is_monotonic_increasing
    ).all()

    data = json.loads((shared_fixtures / "prometheus" / "query_deployment_state.json").read_text())
    frame = _series_from_query(frame_from_data(data["data"]))
    assert {"deployment_id", "model", "provider", "api_base"} <= set(frame.columns)
    assert "metric" not in frame.columns


async def test_requests_and_events_need_the_store(
    history: PrometheusHistory, tmp_path: Path
) -> None:
    with pytest.raises(NotAvailable, match="requests\\(\\) needs the SQLite store"):
        await history.requests("-1h", "now")
    with pytest.raises(NotAvailable, match="events\\(\\) needs the SQLite store"):
        await history.events("-1h", "now")
    with pytest.raises(NotAvailable, match="request_totals\\(\\) needs the SQLite store"):
        await history.request_totals("-1h", "now")
    with pytest.raises(NotAvailable, match="no label for \\['provider'\\]"):
        await history.latency_percentiles("-1h", "now", by=("provider",))
    from aidash_lib.store.sqlite import SqliteStore
    from tests.unit.test_store_sqlite import NOW, record

    SqliteStore(tmp_path / "h.sqlite").write_requests([record(1)])
    with_store = PrometheusHistory(history.source, store=SqliteHistory(tmp_path / "h.sqlite"))
    assert len(await with_store.requests(NOW - 7200, NOW)) == 1
    assert len(await with_store.events(NOW - 7200, NOW)) == 0
    totals = await with_store.request_totals(NOW - 7200, NOW)
    assert totals["requests"].tolist() == [1]
