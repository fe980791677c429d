"""AlertmanagerSource against answers captured from a real Alertmanager 0.25 (shared fixtures)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from aidash_lib.sources.alertmanager import Alert, AlertmanagerSource, parse_time
from aidash_lib.sources.base import FaultKind, to_jsonable

BASE = "http://am.test:9093"
SILENCE_ID = "69192481-36c1-41a4-90b6-4f5f7a3db18f"


@pytest.fixture
def captured(shared_fixtures: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        return (shared_fixtures / "prometheus" / name).read_bytes()

    return read


def source_answering(
    body: bytes | str, status: int = 200, seen: list[httpx.Request] | None = None,
    content_type: str = "application/json",
) -> AlertmanagerSource:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    return AlertmanagerSource(httpx.AsyncClient(transport=httpx.MockTransport(handler)), BASE)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def test_active_alerts_parsed(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    reading = await source_answering(captured("alertmanager_v2_alerts.json"), seen=seen) \
        .active_alerts()
    assert reading.ok and reading.source == "alertmanager"
    alerts = reading.value
    assert isinstance(alerts, tuple) and len(alerts) == 3
    assert [a.name for a in alerts] == [
        "LiteLLMHighP95Latency", "TargetDown", "LiteLLMHighP95Latency",
    ]
    down = alerts[1]
    assert down == Alert(
        name="TargetDown",
        state="active",
        severity="critical",
        labels=down.labels,
        summary="Target 127.0.0.1:9401 (job dcgm) is down",
        description="Prometheus could not scrape 127.0.0.1:9401 for more than 4s.",
        starts_at=epoch("2026-11-29T06:52:44.045"),
        ends_at=down.ends_at,
        fingerprint="c4113311a14e566b",
        generator_url="http://127.0.0.1:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
        silenced_by=(),
        inhibited_by=(),
        annotations=down.annotations,
    )
    assert dict(down.labels) == {
        "alertname": "TargetDown", "environment": "ci", "gpu_node": "gpu-node-02",
        "instance": "127.0.0.1:9401", "job": "dcgm", "severity": "critical",
    }
    assert down.ends_at is not None and down.ends_at > down.starts_at
    assert not down.silenced and not down.inhibited

    latency = alerts[0]
    assert latency.severity == "warning"
    assert latency.labels["model"] == "llama-3.1-70b-instruct"
    assert latency.summary == "P95 latency of llama-3.1-70b-instruct is 6.125s"
    assert latency.description is None
    assert latency.starts_at == epoch("2026-11-29T06:52:50.045")

    params = seen[0].url.params
    assert seen[0].url.path == "/api/v2/alerts"
    assert (params["active"], params["silenced"], params["inhibited"]) == ("true", "false", "false")
    assert "filter" not in params


async def test_alerts_are_immutable(captured: Callable[[str], bytes]) -> None:
    alert = (await source_answering(captured("alertmanager_v2_alerts.json")).active_alerts()) \
        .value[0]
    with pytest.raises(TypeError):
        alert.labels["severity"] = "info"  # type: ignore[index]
    with pytest.raises(AttributeError):
        alert.state = "resolved"  # type: ignore[misc]
    assert hash(alert) == hash(alert)
    assert to_jsonable(alert)["labels"]["alertname"] == "LiteLLMHighP95Latency"


async def test_silenced_alert(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    source = source_answering(captured("alertmanager_v2_alerts_after_silence.json"), seen=seen)
    alerts = (await source.active_alerts(include_silenced=True)).value
    down = next(a for a in alerts if a.name == "TargetDown")
    assert down.state == "suppressed"
    assert down.silenced_by == (SILENCE_ID,)
    assert down.silenced
    assert [a.state for a in alerts if a.name != "TargetDown"] == ["active", "active"]
    params = seen[0].url.params
    assert (params["silenced"], params["inhibited"]) == ("true", "true")


async def test_active_only(captured: Callable[[str], bytes]) -> None:
    alerts = (await source_answering(captured("alertmanager_v2_alerts_active_only.json"))
              .active_alerts()).value
    assert [a.name for a in alerts] == ["LiteLLMHighP95Latency"] * 2
    assert {a.labels["model"] for a in alerts} == {
        "llama-3.1-70b-instruct", "qwen2.5-coder-32b",
    }
    assert all(a.state == "active" and not a.silenced_by for a in alerts)


async def test_no_alerts() -> None:
    reading = await source_answering(b"[]").active_alerts()
    assert reading.ok and reading.value == ()


async def test_matchers_are_sent_as_filters(captured: Callable[[str], bytes]) -> None:
    seen: list[httpx.Request] = []
    source = source_answering(captured("alertmanager_v2_alerts_active_only.json"), seen=seen)
    await source.active_alerts(matchers=['severity="warning"', 'model=~"llama.*"'])
    assert seen[0].url.params.get_list("filter") == ['severity="warning"', 'model=~"llama.*"']


async def test_bad_filter_message_extracted(captured: Callable[[str], bytes]) -> None:
    body = captured("alertmanager_v2_error_bad_filter.json")
    reading = await source_answering(body, status=400).active_alerts(matchers=["foo"])
    assert reading.fault.kind is FaultKind.QUERY_ERROR
    assert reading.fault.status_code == 400
    assert reading.fault.message == "bad matcher format: foo" == json.loads(body)
    assert reading.fault.url == f"{BASE}/api/v2/alerts"


async def test_server_error_is_http_status() -> None:
    reading = await source_answering(b'"internal trouble"', status=500).active_alerts()
    assert reading.fault.kind is FaultKind.HTTP_STATUS
    assert reading.fault.message == "internal trouble"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"alerts": []}',
        b'[{"labels": {"alertname": "x"}}]',
        b'[{"labels": {"alertname": "x"}, "startsAt": "yesterday", "fingerprint": "f"}]',
        b"[42]",
    ],
)
async def test_malformed(body: bytes) -> None:
    reading = await source_answering(body).active_alerts()
    assert reading.fault.kind is FaultKind.MALFORMED


async def test_unreachable_and_timeout() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    for handler, kind in ((refuse, FaultKind.UNREACHABLE), (slow, FaultKind.TIMEOUT)):
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        source = AlertmanagerSource(client, BASE)
        assert (await source.active_alerts()).fault.kind is kind
        assert (await source.ready()).fault.kind is kind


async def test_ready(captured: Callable[[str], bytes]) -> None:
    source = source_answering(captured("alertmanager_ready.txt"), content_type="text/plain")
    reading = await source.ready()
    assert reading.ok and reading.value.ready and reading.value.message == "OK"
    assert reading.value.url == f"{BASE}/-/ready"


def test_parse_time_precision() -> None:
    assert parse_time("2026-11-29T06:52:50.045Z") == epoch("2026-11-29T06:52:50.045")
    assert parse_time("2026-11-29T06:52:50.123456789Z") == epoch("2026-11-29T06:52:50.123456")
    assert parse_time("2026-11-29T07:52:50+01:00") == epoch("2026-11-29T06:52:50")


def test_module_does_not_import_pandas() -> None:
    code = (
        "import sys, aidash_lib.sources.alertmanager; "
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
