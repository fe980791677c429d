"""PrometheusSource against answers captured from a real Prometheus 2.42 (shared fixtures)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from aidash_lib.sources.base import FaultKind
from aidash_lib.sources.prometheus import (
    MAX_POINTS,
    NICE_STEPS_S,
    PrometheusSource,
    choose_step,
    frame_from_data,
)

BASE = "http://prom.test:9090"
CAPTURED_AT = pd.Timestamp(1795935717850, unit="ms", tz="UTC")


@pytest.fixture
def captured(shared_fixtures: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        return (shared_fixtures / "prometheus" / name).read_bytes()

    return read


def source_answering(
    body: bytes | str, status: int = 200, seen: list[httpx.Request] | None = None,
    content_type: str = "application/json",
) -> PrometheusSource:
    """A source whose every request gets `body` with `status`; requests land in `seen`."""

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return PrometheusSource(client, BASE)


def source_raising(exc: Exception) -> PrometheusSource:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return PrometheusSource(httpx.AsyncClient(transport=httpx.MockTransport(handler)), BASE)


def assert_frame_types(frame: pd.DataFrame) -> None:
    assert list(frame.columns[:2]) == ["timestamp", "value"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["value"].dtype == np.float64
    labels = list(frame.columns[2:])
    assert labels == sorted(labels)


async def test_instant_vector_up(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    reading = await source_answering(captured("query_up.json"), seen=seen).query("up")

    assert reading.ok and reading.source == "prometheus"
    frame = reading.value
    assert_frame_types(frame)
    assert list(frame.columns) == [
        "timestamp", "value", "gpu_node", "instance", "job", "metric", "service",
    ]
    assert len(frame) == 6
    assert (frame["timestamp"] == CAPTURED_AT).all()
    assert set(frame["metric"]) == {"up"}
    by_instance = frame.set_index("instance")["value"].to_dict()
    assert by_instance["127.0.0.1:9401"] == 0.0
    assert by_instance["127.0.0.1:9090"] == 1.0
    assert frame.loc[frame["job"] == "litellm", "service"].tolist() == ["litellm-proxy"]
    assert frame.loc[frame["job"] == "node", "service"].isna().all()
    assert frame.attrs["result_type"] == "vector"
    assert frame.attrs["warnings"] == ()

    request = seen[0]
    assert request.url.path == "/api/v1/query"
    assert request.url.params["query"] == "up"
    assert "time" not in request.url.params


async def test_instant_vector_values_are_exact(captured: Callable[[str], bytes]) -> None:
    reading = await source_answering(captured("query_p95_latency.json")).query("p95")
    frame = reading.value
    assert list(frame.columns) == ["timestamp", "value", "model"]
    values = frame.set_index("model")["value"].to_dict()
    assert values == {
        "llama-3.1-8b-instruct": 1.4260869565217391,
        "qwen2.5-coder-32b": 3.2458333333333313,
        "llama-3.1-70b-instruct": 5.466666666666666,
    }


async def test_gpu_gauge_keeps_every_label(captured: Callable[[str], bytes]) -> None:
    frame = (await source_answering(captured("query_gpu_util.json")).query("x")).value
    assert list(frame.columns) == [
        "timestamp", "value", "DCGM_FI_DRIVER_VERSION", "Hostname", "UUID", "device", "gpu",
        "gpu_node", "instance", "job", "metric", "modelName", "pci_bus_id",
    ]
    assert frame.set_index("gpu")["value"].to_dict() == {"0": 100.0, "1": 68.0}
    assert set(frame["modelName"]) == {"NVIDIA A100-SXM4-80GB"}


async def test_nan_values_are_kept(captured: Callable[[str], bytes]) -> None:
    frame = (await source_answering(captured("query_p95_latency_nan.json")).query("x")).value
    assert len(frame) == 3
    assert frame["value"].isna().all()
    assert frame["value"].dtype == np.float64
    assert set(frame["model"]) == {
        "llama-3.1-8b-instruct", "qwen2.5-coder-32b", "llama-3.1-70b-instruct",
    }


async def test_infinities_are_parsed(captured: Callable[[str], bytes]) -> None:
    body = json.loads(captured("query_p95_latency.json"))
    for item, value in zip(body["data"]["result"], ["+Inf", "-Inf", "NaN"], strict=True):
        item["value"][1] = value
    frame = (await source_answering(json.dumps(body)).query("x")).value
    assert frame["value"].iloc[0] == math.inf
    assert frame["value"].iloc[1] == -math.inf
    assert math.isnan(frame["value"].iloc[2])


async def test_scalar_gives_one_row(captured: Callable[[str], bytes]) -> None:
    frame = (await source_answering(captured("query_scalar.json")).query("scalar(x)")).value
    assert_frame_types(frame)
    assert list(frame.columns) == ["timestamp", "value"]
    assert len(frame) == 1
    assert frame["value"].iloc[0] == 5.0
    assert frame["timestamp"].iloc[0] == CAPTURED_AT
    assert frame.attrs["result_type"] == "scalar"


async def test_empty_result_gives_empty_frame(captured: Callable[[str], bytes]) -> None:
    reading = await source_answering(captured("query_empty_result.json")).query("nothing")
    assert reading.ok
    frame = reading.value
    assert frame.empty
    assert list(frame.columns) == ["timestamp", "value"]
    assert_frame_types(frame)


async def test_instant_query_of_range_selector_is_a_matrix(
    captured: Callable[[str], bytes],
) -> None:
    frame = (await source_answering(captured("query_matrix_instant.json")).query("x[10s]")).value
    assert_frame_types(frame)
    assert frame.attrs["result_type"] == "matrix"
    assert len(frame) == 10
    gpu1 = frame[frame["gpu"] == "1"]
    assert gpu1["value"].tolist() == [95.0, 94.0, 95.0, 93.0, 95.0]
    assert gpu1["timestamp"].iloc[0] == pd.Timestamp(1795935707908, unit="ms", tz="UTC")
    assert set(frame["metric"]) == {"DCGM_FI_DEV_GPU_TEMP"}


async def test_query_range_matrix(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    source = source_answering(captured("query_range_p95_latency.json"), seen=seen)
    reading = await source.query_range(
        "p95", 1795935417.85, 1795935717.85, step_s=15
    )
    frame = reading.value
    assert_frame_types(frame)
    assert list(frame.columns) == ["timestamp", "value", "model"]
    assert len(frame) == 3 * 21
    assert frame.groupby("model").size().to_dict() == {
        "llama-3.1-70b-instruct": 21, "llama-3.1-8b-instruct": 21, "qwen2.5-coder-32b": 21,
    }
    big = frame[frame["model"] == "llama-3.1-70b-instruct"]
    assert big["value"].iloc[0] == 5.258333333333333
    assert big["value"].iloc[-1] == 5.466666666666666
    assert big["timestamp"].iloc[-1] == CAPTURED_AT
    assert big["timestamp"].diff().dropna().eq(pd.Timedelta(seconds=15)).all()

    params = seen[0].url.params
    assert seen[0].url.path == "/api/v1/query_range"
    assert (params["query"], params["start"], params["end"], params["step"]) == (
        "p95", "1795935417.850", "1795935717.850", "15",
    )


async def test_query_range_up_every_series(captured: Callable[[str], bytes]) -> None:
    frame = (await source_answering(captured("query_range_up.json")).query_range(
        "up", 1795935417.85, 1795935717.85, step_s=15,
    )).value
    assert len(frame) == 6 * 21
    assert frame.groupby("instance")["value"].min().to_dict()["127.0.0.1:9090"] == 1.0
    assert (frame.loc[frame["instance"] == "127.0.0.1:9401", "value"] == 0.0).all()


async def test_query_range_chooses_step_from_points(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    source = source_answering(captured("query_range_up.json"), seen=seen)
    start = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
    end = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
    await source.query_range("up", start, end, points=60)
    await source.query_range("up", start, end)
    assert seen[0].url.params["step"] == "60"
    assert seen[0].url.params["start"] == f"{start.timestamp():.3f}"
    assert seen[1].url.params["step"] == "15"


async def test_query_range_refuses_step_and_points_together() -> None:
    source = source_answering(b"{}")
    with pytest.raises(ValueError):
        await source.query_range("up", 0, 3600, step_s=60, points=60)
    with pytest.raises(ValueError):
        await source.query_range("up", 0, 3600, step_s=0)


async def test_instant_query_time_parameter(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    source = source_answering(captured("query_up.json"), seen=seen)
    await source.query("up", at=1795935717.85)
    await source.query("up", at=datetime(2026, 11, 29, 7, 1, 57, 850000))  # naive = UTC
    assert seen[0].url.params["time"] == "1795935717.850"
    assert seen[1].url.params["time"] == "1795935717.850"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("error_bad_promql.json", 400),
        ("error_missing_query.json", 400),
        ("error_query_range_too_many_points.json", 400),
        ("error_execution_duplicate_labelset.json", 422),
    ],
)
async def test_query_errors_carry_prometheus_message(
    captured: Callable[[str], bytes], name: str, status: int,
) -> None:
    body = captured(name)
    reading = await source_answering(body, status=status).query("whatever")
    assert not reading.ok and reading.value is None
    fault = reading.fault
    assert fault.kind is FaultKind.QUERY_ERROR
    assert fault.status_code == status
    assert fault.message == json.loads(body)["error"]
    assert fault.url == f"{BASE}/api/v1/query"


async def test_bad_promql_message_is_prometheus_own(captured: Callable[[str], bytes]) -> None:
    reading = await source_answering(captured("error_bad_promql.json"), status=400).query(
        "sum(rate(litellm_proxy_total_requests_metric_total[1m]"
    )
    assert reading.fault.message == (
        'invalid parameter "query": 1:55: parse error: unclosed left parenthesis'
    )


async def test_server_error_is_http_status() -> None:
    body = b'{"status":"error","errorType":"internal","error":"boom"}'
    reading = await source_answering(body, status=500).query("up")
    assert reading.fault.kind is FaultKind.HTTP_STATUS
    assert reading.fault.status_code == 500
    assert reading.fault.message == "boom"


async def test_unreachable_and_timeout() -> None:
    refused = await source_raising(httpx.ConnectError("[Errno 111] Connection refused")).query(
        "up"
    )
    assert refused.fault.kind is FaultKind.UNREACHABLE
    slow = await source_raising(httpx.ReadTimeout("timed out")).query_range(
        "up", 0, 60, step_s=15
    )
    assert slow.fault.kind is FaultKind.TIMEOUT
    assert slow.fault.url == f"{BASE}/api/v1/query_range"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not prometheus</html>",
        b"[]",
        b'{"status":"success"}',
        b'{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"2"]}]}}',
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}',
        b'{"status":"success","data":{"resultType":"histogram","result":[]}}',
    ],
)
async def test_malformed_answers(body: bytes) -> None:
    reading = await source_answering(body).query("up")
    assert reading.fault.kind is FaultKind.MALFORMED


async def test_error_status_in_a_200_answer() -> None:
    body = b'{"status":"error","errorType":"bad_data","error":"odd"}'
    reading = await source_answering(body).query("up")
    assert reading.fault.kind is FaultKind.QUERY_ERROR
    assert reading.fault.message == "odd"


async def test_warnings_are_kept() -> None:
    body = json.dumps({
        "status": "success", "warnings": ["partial answer"],
        "data": {"resultType": "vector", "result": []},
    })
    frame = (await source_answering(body).query("up")).value
    assert frame.attrs["warnings"] == ("partial answer",)


def test_labels_clashing_with_fixed_columns_are_renamed() -> None:
    frame = frame_from_data({
        "resultType": "vector",
        "result": [
            {"metric": {"__name__": "m", "value": "v", "timestamp": "t"}, "value": [1, "2"]},
            {"metric": {"metric": "x"}, "value": [1, "3"]},
        ],
    })
    assert list(frame.columns) == [
        "timestamp", "value", "label_metric", "label_timestamp", "label_value", "metric",
    ]
    assert frame["value"].tolist() == [2.0, 3.0]
    assert frame["label_value"].iloc[0] == "v"
    assert frame["label_metric"].iloc[1] == "x"


async def test_ready(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    source = source_answering(captured("ready.txt"), seen=seen, content_type="text/plain")
    reading = await source.ready()
    assert reading.ok
    assert reading.value.ready is True
    assert reading.value.message == "Prometheus Server is Ready."
    assert seen[0].url.path == "/-/ready"


async def test_not_ready_yet_is_not_a_fault() -> None:
    source = source_answering(b"Service Unavailable", status=503, content_type="text/plain")
    reading = await source.ready()
    assert reading.ok
    assert reading.value.ready is False
    assert reading.value.message == "Service Unavailable"


async def test_ready_unreachable() -> None:
    reading = await source_raising(httpx.ConnectError("[Errno 111] Connection refused")).ready()
    assert reading.fault.kind is FaultKind.UNREACHABLE


def test_choose_step_one_hour_sixty_points() -> None:
    assert choose_step(0, 3600, 60) == 60.0
    assert 3600 / choose_step(0, 3600, 60) + 1 == 61


def test_choose_step_rounds_to_nice_steps() -> None:
    assert choose_step(0, 300, 21) == 15.0
    assert choose_step(0, 86400, 250) == 300.0
    assert choose_step(0, 7 * 86400, 500) == 1200.0
    for span in (10, 333, 3600, 12345, 86400, 30 * 86400):
        for points in (2, 7, 60, 250, 1000):
            step = choose_step(0, span, points)
            assert step in NICE_STEPS_S or step % 86400 == 0


def test_choose_step_beyond_a_day_is_whole_days() -> None:
    assert choose_step(0, 30 * 86400, 2) == 30 * 86400
    assert choose_step(0, 365 * 86400, 100) == 4 * 86400


def test_choose_step_at_least_one_second() -> None:
    assert choose_step(0, 10, 1000) == 1.0
    assert choose_step(5, 5, 60) == 1.0
    assert choose_step(0, 3600, 1) == 3600.0


def test_choose_step_never_over_prometheus_limit() -> None:
    for span in (11_001, 86400, 30 * 86400, 400 * 86400, 40 * 365 * 86400):
        step = choose_step(0, span, 1_000_000)
        assert span / step <= MAX_POINTS
        assert step >= 1


def test_choose_step_accepts_datetimes() -> None:
    start = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
    end = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
    assert choose_step(start, end, 60) == 60.0


def test_choose_step_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        choose_step(0, 3600, 0)
    with pytest.raises(ValueError):
        choose_step(3600, 0, 60)
