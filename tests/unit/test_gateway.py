"""GatewaySource against payloads captured from a real LiteLLM 1.108.7 proxy (shared fixtures),
served through httpx.MockTransport; faults built the same way."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from aidash_lib.sources.base import FaultKind
from aidash_lib.sources.gateway import (
    DeploymentState,
    GatewayMetrics,
    GatewaySource,
    MetricSample,
    deployment_states,
    mask_key,
    parse_metrics,
)

KEY = "sk-test-master"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def litellm_dir(shared_fixtures: Path) -> Path:
    return shared_fixtures / "litellm"


class Fake:
    """A gateway made of canned responses per path, recording every request."""

    def __init__(self, routes: dict[str, httpx.Response | Handler]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get(request.url.path)
        if route is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        return route(request) if callable(route) else route

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def source(routes: dict[str, httpx.Response | Handler], key: str | None = KEY,
           **kwargs) -> tuple[GatewaySource, Fake]:
    fake = Fake(routes)
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return GatewaySource(client, "http://gateway.test:4000/", key, **kwargs), fake


def file_response(path: Path, status: int = 200) -> httpx.Response:
    media = "text/plain; version=0.0.4" if path.suffix == ".txt" else "application/json"
    return httpx.Response(status, content=path.read_bytes(), headers={"content-type": media})


def metrics_routes(path: Path) -> dict[str, httpx.Response | Handler]:
    """`/metrics` redirects to `/metrics/`, which wants the key, as the real proxy does."""

    def metrics(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json="Unauthorized access to metrics endpoint: "
                                  "Authentication Error, No api key passed in.")
        return file_response(path)

    return {"/metrics": httpx.Response(307, headers={"location": "/metrics/"}),
            "/metrics/": metrics}


# -- liveliness and readiness ------------------------------------------------------------------


async def test_liveliness_from_fixture(litellm_dir: Path) -> None:
    gateway, fake = source({"/health/liveliness": file_response(
        litellm_dir / "health_liveliness.json")})
    reading = await gateway.liveliness()
    assert reading.ok and reading.source == "gateway.liveliness"
    assert reading.value.alive and reading.value.message == "I'm alive!"
    assert "authorization" not in fake.requests[0].headers


async def test_readiness_with_key_adds_details(litellm_dir: Path) -> None:
    gateway, fake = source({
        "/health/readiness": file_response(litellm_dir / "health_readiness.json"),
        "/health/readiness/details": file_response(litellm_dir / "health_readiness_details.json"),
    })
    reading = await gateway.readiness()
    ready = reading.value
    assert reading.ok and ready.healthy and ready.status == "healthy"
    assert ready.db == "Not connected" and not ready.db_connected
    assert ready.litellm_version == "1.108.7"
    assert "PrometheusLogger" in ready.success_callbacks
    assert ready.cache is None and ready.details_error is None
    assert fake.requests[1].headers["authorization"] == f"Bearer {KEY}"


async def test_readiness_without_key_skips_details(litellm_dir: Path) -> None:
    gateway, fake = source(
        {"/health/readiness": file_response(litellm_dir / "health_readiness.json")}, key=None)
    reading = await gateway.readiness()
    assert reading.ok and reading.value.healthy and reading.value.litellm_version is None
    assert "AIDASH_GATEWAY_KEY" in reading.value.details_error
    assert fake.paths() == ["/health/readiness"]


async def test_readiness_details_refused_still_ready(litellm_dir: Path) -> None:
    gateway, _ = source({
        "/health/readiness": file_response(litellm_dir / "health_readiness.json"),
        "/health/readiness/details": httpx.Response(401, json={"error": {
            "message": "Authentication Error, Invalid proxy server token passed.",
            "type": "auth_error", "code": "401"}}),
    })
    reading = await gateway.readiness()
    assert reading.ok and reading.value.litellm_version is None
    assert "refused the key" in reading.value.details_error


# -- models and deployments --------------------------------------------------------------------

GROUPS = ["gpt-4o-mini", "claude-haiku", "llama3-local", "flaky-model", "small-context-model"]


@pytest.mark.parametrize("name", ["models.json", "v1_models.json"])
async def test_model_groups_from_fixture(litellm_dir: Path, name: str) -> None:
    gateway, _ = source({"/v1/models": file_response(litellm_dir / name)})
    reading = await gateway.model_groups()
    assert reading.ok
    assert [g.name for g in reading.value] == GROUPS
    haiku = reading.value[1]
    assert haiku.mode == "chat" and haiku.max_input_tokens == 200000
    assert haiku.max_output_tokens == 64000


@pytest.mark.parametrize("name", ["model_info.json", "v1_model_info.json"])
async def test_deployments_from_fixture(litellm_dir: Path, name: str) -> None:
    gateway, _ = source({"/model/info": file_response(litellm_dir / name)})
    reading = await gateway.deployments()
    assert reading.ok
    by_id = {d.deployment_id: d for d in reading.value}
    assert list(by_id) == ["gpt-4o-mini-a", "gpt-4o-mini-b", "gpt-4o-mini-c", "claude-haiku-1",
                           "llama3-local-1", "flaky-model-1", "small-context-model-1"]
    assert [d.group for d in reading.value][:3] == ["gpt-4o-mini"] * 3
    assert by_id["gpt-4o-mini-c"].provider == "azure"
    assert by_id["gpt-4o-mini-c"].api_base == "http://127.0.0.1:9"
    assert by_id["gpt-4o-mini-c"].api_version == "2024-10-21"
    assert by_id["claude-haiku-1"].provider == "anthropic"
    assert by_id["claude-haiku-1"].model == "anthropic/claude-haiku-4-5"
    llama = by_id["llama3-local-1"]
    assert (llama.provider, llama.api_base, llama.is_mock) == ("ollama", "http://127.0.0.1:9",
                                                               False)
    mini = by_id["gpt-4o-mini-a"]
    assert mini.is_mock and mini.api_base is None and mini.mode == "chat"
    assert mini.input_cost_per_token_usd == pytest.approx(1.5e-7)
    assert mini.output_cost_per_token_usd == pytest.approx(6e-7)
    assert (mini.max_tokens, mini.max_input_tokens, mini.max_output_tokens) == (16384, 128000,
                                                                                16384)
    assert mini.rpm_limit is None and mini.tpm_limit is None
    assert dict(by_id["gpt-4o-mini-b"].params)["mock_delay"] == 0.2
    text = repr(reading.value) + json.dumps(reading.to_dict())
    assert "api_key" not in text and "sk-" not in text


async def test_deployments_drop_every_credential() -> None:
    entry = {
        "model_name": "bedrock-group",
        "litellm_params": {
            "model": "bedrock/claude", "api_key": "sk-live-123456", "rpm": 60, "tpm": "1000",
            "aws_secret_access_key": "AKIASECRET", "aws_access_key_id": "AKIAID",
            "vertex_credentials": "{\"private_key\": \"x\"}", "azure_ad_token": "eyJtoken",
            "client_secret": "s3cr3t", "password": "hunter2", "timeout": 30,
            "organization": "sk-org-abcdef", "extra": {"nested_key": "sk-nested-999"},
            "api_base": "https://user:pa55@bedrock.example/v1?key=abc123#frag",
        },
        "model_info": {"id": "bedrock-1", "key": "claude", "litellm_provider": "bedrock"},
    }
    gateway, _ = source({"/model/info": httpx.Response(200, json={"data": [entry]})})
    reading = await gateway.deployments()
    assert reading.ok
    (deployment,) = reading.value
    assert deployment.api_base == "https://bedrock.example/v1"
    assert (deployment.rpm_limit, deployment.tpm_limit) == (60, 1000)
    assert dict(deployment.params) == {"timeout": 30}
    text = repr(reading) + json.dumps(reading.to_dict())
    for secret in ("sk-", "AKIA", "private_key", "eyJ", "s3cr3t", "hunter2", "pa55", "abc123"):
        assert secret not in text


# -- router settings ---------------------------------------------------------------------------


async def test_router_settings_from_fixture(litellm_dir: Path) -> None:
    gateway, _ = source({"/router/settings": file_response(litellm_dir / "router_settings.json")})
    reading = await gateway.router_settings()
    settings = reading.value
    assert reading.ok
    assert settings.routing_strategy == "simple-shuffle"
    assert (settings.num_retries, settings.allowed_fails) == (0, 3)
    assert settings.cooldown_time_s == 30.0 and settings.timeout_s == 10.0
    assert settings.max_fallbacks == 5
    assert settings.fallbacks == {"llama3-local": ("gpt-4o-mini",),
                                  "flaky-model": ("claude-haiku",)}
    assert settings.context_window_fallbacks == {"small-context-model": ("claude-haiku",)}
    assert settings.content_policy_fallbacks == {} and settings.default_fallbacks == ()


async def test_router_settings_normalises_other_fallback_forms() -> None:
    values = {"routing_strategy": "latency-based-routing", "fallbacks": {"a": "b", "c": ["d", "e"]},
              "default_fallbacks": ["z"], "model_group_alias": {"gpt4": {"model": "gpt-4o"}}}
    gateway, _ = source({"/router/settings": httpx.Response(200, json={"current_values": values})})
    settings = (await gateway.router_settings()).value
    assert settings.fallbacks == {"a": ("b",), "c": ("d", "e")}
    assert settings.default_fallbacks == ("z",)
    assert settings.model_group_alias == {"gpt4": "gpt-4o"}


async def test_router_settings_wrong_fallback_shape_is_malformed() -> None:
    gateway, _ = source({"/router/settings": httpx.Response(
        200, json={"current_values": {"fallbacks": ["llama3-local"]}})})
    reading = await gateway.router_settings()
    assert not reading.ok and reading.fault.kind is FaultKind.MALFORMED


# -- metrics -----------------------------------------------------------------------------------


async def test_metrics_from_fixture(litellm_dir: Path) -> None:
    gateway, fake = source(metrics_routes(litellm_dir / "metrics.txt"))
    reading = await gateway.metrics()
    assert reading.ok, reading.fault
    metrics = reading.value
    assert fake.paths() == ["/metrics/"]
    assert metrics.scrape_bytes == (litellm_dir / "metrics.txt").stat().st_size
    assert not [n for n in metrics.names() if n.endswith("_created")]
    for sample in metrics.all_samples:
        labels = dict(sample.labels)
        assert "litellm-internal-health-check" not in (labels.get("api_key_alias"),
                                                       labels.get("team"))
    assert metrics.dropped_health_check_samples > 0

    by_id = metrics.totals_by("litellm_deployment_total_requests_total", "model_id")
    assert by_id["gpt-4o-mini-a"] == 5 and by_id["gpt-4o-mini-b"] == 10
    assert by_id["llama3-local-1"] == 6 and by_id["claude-haiku-1"] == 8
    assert metrics.total("litellm_deployment_failure_responses_total",
                         model_id="llama3-local-1") == 6
    assert metrics.total("litellm_deployment_success_responses_total",
                         model_group="gpt-4o-mini") == 20
    # Proxy-level failures have no model_id; the health probes' 7 (2 + 2 + 3) are not counted.
    assert metrics.total("litellm_deployment_failure_responses_total", model_id="") == 11
    assert metrics.total("litellm_deployment_successful_fallbacks_total",
                         requested_model="llama3-local", fallback_model="gpt-4o-mini") == 5
    assert metrics.total("litellm_proxy_total_requests_metric_total",
                         route="/v1/chat/completions", status_code="200") > 0
    assert metrics.total("litellm_in_flight_requests") == 1
    assert metrics.total("litellm_spend_metric_total") > 0
    assert metrics.total("litellm_input_tokens_metric_total") > 0

    states = deployment_states(metrics)
    assert states["gpt-4o-mini-a"] is DeploymentState.HEALTHY
    assert states["llama3-local-1"] is DeploymentState.PARTIAL
    assert states["flaky-model-1"] is DeploymentState.PARTIAL
    assert "" not in states and len(states) == 7

    latency = metrics.histogram("litellm_request_total_latency_metric")
    mini = latency[("gpt-4o-mini",)]
    assert mini.count == 20 and mini.buckets[-1] == (float("inf"), 20.0)
    assert [le for le, _ in mini.buckets][:3] == [0.005, 0.01, 0.025]
    assert 0 < mini.quantile(0.5) <= mini.quantile(0.95) <= 600
    assert mini.mean == pytest.approx(mini.sum_value / 20)
    overall = metrics.histogram("litellm_request_total_latency_metric", by=())
    assert overall[()].count == sum(h.count for h in latency.values())
    bucket = metrics.samples("litellm_llm_api_latency_metric_bucket", le="+Inf")[0]
    assert bucket.kind == "histogram" and bucket.family == "litellm_llm_api_latency_metric"


async def test_metrics_with_cooldown_fixture(litellm_dir: Path) -> None:
    gateway, _ = source(metrics_routes(litellm_dir / "metrics_with_cooldown.txt"))
    metrics = (await gateway.metrics()).value
    assert metrics.total("litellm_deployment_cooled_down_total", model_id="mixed-broken") == 1
    # mixed-broken has two series (1 and 2): the worst one wins.
    assert len(metrics.samples("litellm_deployment_state", model_id="mixed-broken")) == 2
    states = deployment_states(metrics)
    assert states == {"mixed-broken": DeploymentState.OUTAGE,
                      "mixed-healthy": DeploymentState.HEALTHY}


async def test_metrics_before_traffic(litellm_dir: Path) -> None:
    gateway, _ = source(metrics_routes(litellm_dir / "metrics_before_traffic.txt"))
    reading = await gateway.metrics()
    assert reading.ok and reading.value.total("litellm_in_flight_requests") == 1
    assert deployment_states(reading.value) == {}


async def test_metrics_without_key_says_a_key_is_needed(litellm_dir: Path) -> None:
    gateway, _ = source(metrics_routes(litellm_dir / "metrics.txt"), key=None)
    reading = await gateway.metrics()
    assert reading.fault.kind is FaultKind.HTTP_STATUS and reading.fault.status_code == 401
    assert "needs a key" in reading.fault.message
    assert "AIDASH_GATEWAY_KEY" in reading.fault.message
    assert "LITELLM_MASTER_KEY" in reading.fault.message


async def test_metrics_not_enabled_and_not_prometheus_text() -> None:
    gateway, _ = source({})
    reading = await gateway.metrics()
    assert reading.fault.status_code == 404 and "prometheus" in reading.fault.message
    gateway, _ = source({"/metrics/": httpx.Response(200, text="<html><body>hi</body></html>")})
    reading = await gateway.metrics()
    assert reading.fault.kind is FaultKind.MALFORMED


def test_parse_metrics_keeps_only_operator_families() -> None:
    text = (
        "# TYPE litellm_deployment_state gauge\n"
        'litellm_deployment_state{model_id="x",litellm_model_name="a"} 0.0\n'
        'litellm_deployment_state{model_id="x",litellm_model_name="g"} 1.0\n'
        'litellm_deployment_state{model_id="y",litellm_model_name="g"} 7.0\n'
        "# TYPE python_gc_objects_collected_total counter\n"
        'python_gc_objects_collected_total{generation="0"} 5.0\n'
    )
    metrics = parse_metrics(text)
    assert metrics.names() == ("litellm_deployment_state",)
    assert deployment_states(metrics) == {"x": DeploymentState.PARTIAL,
                                          "y": DeploymentState.OUTAGE}
    assert len(parse_metrics(text, families=None).names()) == 2


def test_metric_samples_are_immutable() -> None:
    sample = MetricSample("f", "f_total", (("a", "1"),), 1.0, "counter")
    with pytest.raises(AttributeError):
        sample.value = 2.0  # type: ignore[misc]
    assert GatewayMetrics((sample,)).total("f_total", a="1") == 1.0
    assert GatewayMetrics((sample,)).total("f_total", a="2") == 0.0


# -- explicit health check ---------------------------------------------------------------------


async def test_health_check_from_fixture(litellm_dir: Path) -> None:
    gateway, _ = source({"/health": file_response(litellm_dir / "health.json")})
    reading = await gateway.health_check()
    check = reading.value
    assert reading.ok and check.healthy_count == 4 and check.unhealthy_count == 3
    assert {e.model_id for e in check.healthy_endpoints} == {
        "gpt-4o-mini-a", "gpt-4o-mini-b", "gpt-4o-mini-c", "claude-haiku-1"}
    llama = next(e for e in check.unhealthy_endpoints if e.model_id == "llama3-local-1")
    assert llama.exception_status == 500 and llama.api_base == "http://127.0.0.1:9"
    assert llama.error.startswith("litellm.APIConnectionError: OllamaException")
    flaky = next(e for e in check.unhealthy_endpoints if e.model_id == "flaky-model-1")
    assert flaky.error == "litellm.RateLimitError: this is a mock rate limit error"
    text = json.dumps(reading.to_dict())
    assert "Traceback" not in text and "stack trace" not in text and "raw_request" not in text
    assert all("\n" not in e.error for e in check.unhealthy_endpoints)


async def test_health_check_of_a_down_group_is_a_result(litellm_dir: Path) -> None:
    gateway, fake = source({"/health": file_response(
        litellm_dir / "health_model_llama3_local.json", status=503)})
    reading = await gateway.health_check("llama3-local")
    assert reading.ok and reading.value.model == "llama3-local"
    assert reading.value.healthy_count == 0 and reading.value.unhealthy_count == 1
    assert fake.requests[0].url.params["model"] == "llama3-local"


async def test_health_check_of_an_unknown_group() -> None:
    empty = {"healthy_endpoints": [], "unhealthy_endpoints": [], "healthy_count": 0,
             "unhealthy_count": 0}
    gateway, _ = source({"/health": httpx.Response(503, json=empty)})
    reading = await gateway.health_check("nope")
    assert reading.fault.kind is FaultKind.HTTP_STATUS and "'nope'" in reading.fault.message


async def test_health_check_is_rate_limited(litellm_dir: Path) -> None:
    gateway, fake = source({"/health": file_response(litellm_dir / "health.json")},
                           health_check_min_interval_s=60.0)
    assert (await gateway.health_check()).ok
    second = await gateway.health_check("gpt-4o-mini")
    assert second.fault.kind is FaultKind.RATE_LIMITED
    assert "try again in 60 s" in second.fault.message
    assert fake.paths() == ["/health"]


async def test_health_check_allowed_again_after_the_interval(litellm_dir: Path) -> None:
    gateway, fake = source({"/health": file_response(litellm_dir / "health.json")},
                           health_check_min_interval_s=0.0)
    assert (await gateway.health_check()).ok
    assert (await gateway.health_check()).ok
    assert len(fake.requests) == 2


# -- spend logs --------------------------------------------------------------------------------


async def test_spend_logs_without_database(litellm_dir: Path) -> None:
    gateway, _ = source({"/spend/logs": file_response(litellm_dir / "spend_logs.json", 500)})
    reading = await gateway.spend_logs()
    assert reading.fault.kind is FaultKind.NOT_AVAILABLE
    assert reading.fault.message == "the gateway has no database; spend logs need one"


async def test_spend_logs_rows() -> None:
    row = {"request_id": "chatcmpl-1", "call_type": "acompletion", "api_key": "88dc28d0f030c5",
           "spend": 0.00012, "total_tokens": 30, "prompt_tokens": 10, "completion_tokens": 20,
           "startTime": "2026-11-29T07:00:00.000Z", "endTime": "2026-11-29T07:00:00.250Z",
           "request_duration_ms": 250, "model": "gpt-4o-mini", "model_id": "gpt-4o-mini-a",
           "model_group": "gpt-4o-mini", "custom_llm_provider": "openai", "api_base": "",
           "user": "", "cache_hit": "False", "request_tags": ["prod"], "status": "success"}
    gateway, fake = source({"/spend/logs": httpx.Response(200, json=[row])})
    reading = await gateway.spend_logs(start_date="2026-11-28", end_date="2026-11-29")
    (entry,) = reading.value
    assert entry.request_id == "chatcmpl-1" and entry.model_id == "gpt-4o-mini-a"
    assert entry.spend_usd == pytest.approx(0.00012) and entry.total_tokens == 30
    assert entry.duration_s == pytest.approx(0.25)
    assert entry.ended_at - entry.started_at == pytest.approx(0.25)
    assert entry.cache_hit is False and entry.request_tags == ("prod",)
    assert entry.provider == "openai" and entry.api_base is None and entry.user is None
    assert "88dc28d0f030c5" not in json.dumps(reading.to_dict())
    assert dict(fake.requests[0].url.params) == {
        "start_date": "2026-11-28", "end_date": "2026-11-29", "summarize": "false"}
    with pytest.raises(ValueError):
        await gateway.spend_logs(start_date="2026-11-28")


# -- faults ------------------------------------------------------------------------------------


async def test_http_500_carries_the_server_message() -> None:
    gateway, _ = source({"/v1/models": httpx.Response(500, json={"error": {
        "message": "Internal failure in router", "type": "internal_error", "code": "500"}})})
    reading = await gateway.model_groups()
    assert reading.fault.kind is FaultKind.HTTP_STATUS and reading.fault.status_code == 500
    assert reading.fault.message == "Internal failure in router"
    assert reading.fault.url == "http://gateway.test:4000/v1/models"


async def test_malformed_json_and_wrong_shape() -> None:
    gateway, _ = source({
        "/v1/models": httpx.Response(200, text='{"data": [', headers={
            "content-type": "application/json"}),
        "/model/info": httpx.Response(200, json={"models": []}),
        "/health/readiness": httpx.Response(200, json=["healthy"]),
        "/router/settings": httpx.Response(200, json={"fields": []}),
        "/health": httpx.Response(200, json={"healthy": True}),
    }, health_check_min_interval_s=0.0)
    for reading in (await gateway.model_groups(), await gateway.deployments(),
                    await gateway.readiness(), await gateway.router_settings(),
                    await gateway.health_check()):
        assert reading.fault.kind is FaultKind.MALFORMED, reading
    gateway, _ = source({"/model/info": httpx.Response(200, json={"data": [{"model_name": "x"}]})})
    assert (await gateway.deployments()).fault.kind is FaultKind.MALFORMED


async def test_transport_faults_never_raise() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    gateway, _ = source({"/health/liveliness": refuse, "/health": refuse})
    reading = await gateway.liveliness()
    assert reading.fault.kind is FaultKind.UNREACHABLE
    assert reading.fault.url == "http://gateway.test:4000/health/liveliness"
    # An unreachable gateway called no deployment, so a retry is not rate-limited.
    assert (await gateway.health_check()).fault.kind is FaultKind.UNREACHABLE
    assert (await gateway.health_check()).fault.kind is FaultKind.UNREACHABLE
    gateway, _ = source({"/metrics/": stall, "/health": stall})
    assert (await gateway.metrics()).fault.kind is FaultKind.TIMEOUT
    assert (await gateway.health_check()).fault.kind is FaultKind.TIMEOUT


# -- the key is never shown --------------------------------------------------------------------


async def test_key_never_in_repr_or_faults() -> None:
    secret = "sk-test-master-aidash"
    gateway, _ = source({"/router/settings": httpx.Response(401, json={"error": {
        "message": f"Invalid proxy server token passed. Received API Key = {secret}"}})},
        key=secret)
    assert secret not in repr(gateway) and "sk-t…" in repr(gateway)
    assert secret not in str(vars(gateway))
    reading = await gateway.router_settings()
    assert reading.fault.status_code == 401 and "refused the key" in reading.fault.message
    assert secret not in json.dumps(reading.to_dict()) and secret not in repr(reading)
    assert mask_key(None) == "None" and mask_key("short") == "***"
