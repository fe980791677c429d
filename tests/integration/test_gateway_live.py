"""GatewaySource against a real LiteLLM proxy (1.108.7), and its faults against real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from aidash_lib.sources.base import FaultKind
from aidash_lib.sources.gateway import (
    DeploymentState,
    GatewayMetrics,
    GatewaySource,
    deployment_states,
)
from tests.servers.litellm import GROUPS, LITELLM_VERSION, LiteLLMGateway
from tests.servers.misbehaving import ERROR_MESSAGE, MisbehavingServer
from tests.servers.process import closed_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
def gateway(client: httpx.AsyncClient, litellm_gateway: LiteLLMGateway) -> GatewaySource:
    return GatewaySource(client, litellm_gateway.base_url, litellm_gateway.master_key)


async def scrape(gateway: GatewaySource) -> GatewayMetrics:
    reading = await gateway.metrics()
    assert reading.ok, reading.fault
    return reading.value


async def eventually(
    gateway: GatewaySource, check: Callable[[GatewayMetrics], bool], timeout_s: float = 10.0,
) -> GatewayMetrics:
    """Scrape until `check` holds: LiteLLM updates its counters in a callback after the
    response has gone out."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = await scrape(gateway)
        if check(metrics) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.2)


# -- reading the live gateway ------------------------------------------------------------------


async def test_liveliness_and_readiness(gateway: GatewaySource, client: httpx.AsyncClient,
                                        litellm_gateway: LiteLLMGateway) -> None:
    alive = await gateway.liveliness()
    assert alive.ok and alive.value.alive and alive.value.message == "I'm alive!"
    ready = await gateway.readiness()
    assert ready.ok and ready.value.healthy, ready
    assert ready.value.litellm_version == LITELLM_VERSION
    assert "PrometheusLogger" in ready.value.success_callbacks
    assert ready.value.db == "Not connected" and not ready.value.db_connected
    anonymous = await GatewaySource(client, litellm_gateway.base_url).readiness()
    assert anonymous.ok and anonymous.value.litellm_version is None
    assert "AIDASH_GATEWAY_KEY" in anonymous.value.details_error


async def test_model_groups_and_deployments(gateway: GatewaySource,
                                            litellm_gateway: LiteLLMGateway) -> None:
    groups = await gateway.model_groups()
    assert groups.ok
    assert sorted(g.name for g in groups.value) == sorted(GROUPS)
    deployments = await gateway.deployments()
    assert deployments.ok
    got = {d.deployment_id: (d.group, d.provider) for d in deployments.value}
    assert got == {
        "gpt-4o-mini-a": ("gpt-4o-mini", "openai"),
        "gpt-4o-mini-b": ("gpt-4o-mini", "openai"),
        "gpt-4o-mini-c": ("gpt-4o-mini", "azure"),
        "claude-haiku-1": ("claude-haiku", "anthropic"),
        "llama3-local-1": ("llama3-local", "ollama"),
        "flaky-model-1": ("flaky-model", "openai"),
        "small-context-model-1": ("small-context-model", "openai"),
    }
    llama = next(d for d in deployments.value if d.deployment_id == "llama3-local-1")
    assert llama.api_base == "http://127.0.0.1:9" and not llama.is_mock
    text = repr(deployments) + json.dumps(deployments.to_dict())
    for secret in ("api_key", "sk-fake", "fake-azure-key", "sk-ant", litellm_gateway.master_key):
        assert secret not in text
    assert litellm_gateway.master_key not in repr(gateway)


async def test_router_settings(gateway: GatewaySource) -> None:
    reading = await gateway.router_settings()
    assert reading.ok, reading.fault
    settings = reading.value
    assert settings.routing_strategy == "simple-shuffle"
    assert (settings.num_retries, settings.allowed_fails, settings.cooldown_time_s) == (0, 3, 30)
    assert settings.fallbacks == {"llama3-local": ("gpt-4o-mini",),
                                  "flaky-model": ("claude-haiku",)}
    assert settings.context_window_fallbacks == {"small-context-model": ("claude-haiku",)}


async def test_metrics_count_traffic(gateway: GatewaySource,
                                     litellm_gateway: LiteLLMGateway) -> None:
    requests = "litellm_deployment_total_requests_total"
    before = await scrape(gateway)
    responses = await asyncio.to_thread(litellm_gateway.chat, 4, "gpt-4o-mini")
    assert [r.status_code for r in responses] == [200] * 4
    wanted = before.total(requests, model_group="gpt-4o-mini") + 4
    after = await eventually(
        gateway, lambda m: m.total(requests, model_group="gpt-4o-mini") >= wanted)
    assert after.total(requests, model_group="gpt-4o-mini") == wanted
    assert after.total("litellm_deployment_success_responses_total", model_group="gpt-4o-mini") \
        >= before.total("litellm_deployment_success_responses_total",
                        model_group="gpt-4o-mini") + 4
    assert after.total("litellm_proxy_total_requests_metric_total",
                       route="/v1/chat/completions", requested_model="gpt-4o-mini") > 0
    latency = after.histogram("litellm_request_total_latency_metric")[("gpt-4o-mini",)]
    assert latency.count >= 4 and latency.buckets[-1][0] == float("inf")
    served = {r.headers["x-litellm-model-id"] for r in responses}
    states = deployment_states(after)
    assert served <= set(states)
    assert all(states[d] is DeploymentState.HEALTHY for d in served)
    assert not [s for s in after.all_samples
                if "litellm-internal-health-check" in dict(s.labels).values()]


async def test_unreachable_deployment_falls_back_and_shows(
        gateway: GatewaySource, litellm_gateway: LiteLLMGateway) -> None:
    """What the real proxy does with a request to llama3-local (127.0.0.1:9, refused): the
    attempt fails, the fallback to gpt-4o-mini answers 200, the deployment is marked
    partially down, and the failure and fallback counters rise."""
    failures = "litellm_deployment_failure_responses_total"
    fallbacks = "litellm_deployment_successful_fallbacks_total"
    before = await scrape(gateway)
    (response,) = await asyncio.to_thread(litellm_gateway.chat, 1, "llama3-local")
    assert response.status_code == 200
    assert response.headers["x-litellm-attempted-fallbacks"] == "1"
    assert response.headers["x-litellm-model-group"] == "gpt-4o-mini"
    wanted = before.total(failures, model_id="llama3-local-1") + 1
    after = await eventually(gateway, lambda m: m.total(failures, model_id="llama3-local-1")
                             >= wanted and "llama3-local-1" in deployment_states(m))
    assert after.total(failures, model_id="llama3-local-1") == wanted
    (status,) = {s.label("exception_status") for s in after.samples(failures,
                                                                       model_id="llama3-local-1")}
    assert status == "500"
    assert after.total(fallbacks, requested_model="llama3-local", fallback_model="gpt-4o-mini") \
        == before.total(fallbacks, requested_model="llama3-local",
                        fallback_model="gpt-4o-mini") + 1
    assert deployment_states(after)["llama3-local-1"] is not DeploymentState.HEALTHY


async def test_metrics_without_key_asks_for_one(client: httpx.AsyncClient,
                                                litellm_gateway: LiteLLMGateway) -> None:
    reading = await GatewaySource(client, litellm_gateway.base_url).metrics()
    assert reading.fault.kind is FaultKind.HTTP_STATUS and reading.fault.status_code == 401
    assert "AIDASH_GATEWAY_KEY" in reading.fault.message


async def test_health_check_once_then_rate_limited(gateway: GatewaySource) -> None:
    first = await gateway.health_check()
    assert first.ok, first.fault
    check = first.value
    assert {e.model_id for e in check.healthy_endpoints} >= {"gpt-4o-mini-a", "claude-haiku-1"}
    unhealthy = {e.model_id: e for e in check.unhealthy_endpoints}
    assert set(unhealthy) == {"llama3-local-1", "flaky-model-1", "small-context-model-1"}
    llama = unhealthy["llama3-local-1"]
    assert llama.exception_status == 500 and "APIConnectionError" in llama.error
    assert "\n" not in llama.error and "Traceback" not in llama.error
    second = await gateway.health_check()
    assert second.fault.kind is FaultKind.RATE_LIMITED and "try again in" in second.fault.message


async def test_health_check_of_the_down_group(client: httpx.AsyncClient,
                                              litellm_gateway: LiteLLMGateway) -> None:
    gateway = GatewaySource(client, litellm_gateway.base_url, litellm_gateway.master_key)
    reading = await gateway.health_check("llama3-local")  # LiteLLM answers 503 here
    assert reading.ok, reading.fault
    assert reading.value.healthy_count == 0
    assert [e.model_id for e in reading.value.unhealthy_endpoints] == ["llama3-local-1"]


async def test_spend_logs_need_a_database(gateway: GatewaySource) -> None:
    reading = await gateway.spend_logs()
    assert reading.fault.kind is FaultKind.NOT_AVAILABLE
    assert reading.fault.message == "the gateway has no database; spend logs need one"


# -- faults against real sockets ---------------------------------------------------------------


async def test_closed_port_is_unreachable(client: httpx.AsyncClient) -> None:
    port = closed_port()
    gateway = GatewaySource(client, f"http://127.0.0.1:{port}", "sk-whatever-key")
    for reading in (await gateway.liveliness(), await gateway.metrics(),
                    await gateway.health_check()):
        assert reading.fault.kind is FaultKind.UNREACHABLE
        assert f"127.0.0.1:{port}" in str(reading.fault)


async def test_slow_gateway_times_out(client: httpx.AsyncClient,
                                      misbehaving_server: MisbehavingServer) -> None:
    gateway = GatewaySource(client, misbehaving_server.url("/slow"),
                            timeout=httpx.Timeout(0.5))
    started = time.monotonic()
    reading = await gateway.model_groups()
    assert reading.fault.kind is FaultKind.TIMEOUT
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(("path", "kind", "status"), [
    ("/malformed", FaultKind.MALFORMED, None),
    ("/wrongshape", FaultKind.MALFORMED, None),
    ("/error500", FaultKind.HTTP_STATUS, 500),
    ("/drop", FaultKind.UNREACHABLE, None),
])
async def test_misbehaving_gateway(client: httpx.AsyncClient,
                                   misbehaving_server: MisbehavingServer,
                                   path: str, kind: FaultKind, status: int | None) -> None:
    gateway = GatewaySource(client, misbehaving_server.url(path), "sk-test-key-123456")
    for reading in (await gateway.model_groups(), await gateway.deployments(),
                    await gateway.router_settings()):
        assert reading.fault.kind is kind, reading
        assert reading.fault.status_code == status
        if status == 500:
            assert reading.fault.message == ERROR_MESSAGE


async def test_gateway_killed_mid_run(
        client: httpx.AsyncClient,
        litellm_gateway_factory: Callable[[], LiteLLMGateway]) -> None:
    private = await asyncio.to_thread(litellm_gateway_factory)
    gateway = GatewaySource(client, private.base_url, private.master_key)
    assert (await gateway.liveliness()).ok
    assert (await gateway.model_groups()).ok
    private.server.kill()  # SIGKILL: no goodbye on the kept-alive connection
    for reading in (await gateway.liveliness(), await gateway.model_groups(),
                    await gateway.metrics()):
        assert reading.fault.kind is FaultKind.UNREACHABLE, reading
        assert private.base_url in reading.fault.url
