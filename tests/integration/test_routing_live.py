"""The routing graph's predictions against a real LiteLLM proxy (1.108.7).

For each kind of fallback, a request is sent through the proxy and the deployment that served
it (the `x-litellm-model-id` response header) must be the one the graph predicted from the same
config. Deployments on the closed port 127.0.0.1:9 are really down; mock errors are predicted
from their `mock_response`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from aidash_lib.routing import FailureKind, RoutingGraph, load_graph
from tests.servers.litellm import LiteLLMGateway
from tests.servers.litellm_routing import ROUTING_CONFIG, ROUTING_ENV, start_routing_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(server_logs: Path) -> Iterator[LiteLLMGateway]:
    started = start_routing_gateway(server_logs)
    try:
        yield started
    finally:
        started.server.stop()


@pytest.fixture(scope="module")
def graph() -> RoutingGraph:
    return load_graph([ROUTING_CONFIG], environ=ROUTING_ENV)


@pytest.fixture(scope="module")
def client(gateway: LiteLLMGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers, timeout=30) as c:
        yield c


def closed_port_deployments(graph: RoutingGraph) -> list[str]:
    """Deployments that really call 127.0.0.1:9 (mocks never connect)."""
    return [d.deployment_id for d in graph.deployments.values()
            if d.api_base and urlsplit(d.api_base).port == 9 and not d.is_mock]


def ask(client: httpx.Client, model: str) -> httpx.Response:
    return client.post("/v1/chat/completions",
                       json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_the_config_has_no_problems(graph: RoutingGraph) -> None:
    assert graph.problems == ()
    assert closed_port_deployments(graph) == ["primary-down-1", "also-down-1", "ordered-1"]


@pytest.mark.parametrize(("model", "first_failure", "expected"), [
    # general, connection refused twice: primary-down -> also-down (down) -> also-down's own
    # list -> backup-b, before primary-down's second entry backup-a
    ("primary-down", FailureKind.GENERAL, "backup-b-1"),
    # general, mock RateLimitError
    ("rate-limited", FailureKind.GENERAL, "backup-a-1"),
    # context window: its own list (big-context), not the general one (backup-a)
    ("small-context", FailureKind.CONTEXT_WINDOW, "big-context-1"),
    # content policy: an Azure content filter, its own list
    ("policy-strict", FailureKind.CONTENT_POLICY, "policy-lenient-1"),
    # no list of its own: default_fallbacks
    ("orphan-limited", FailureKind.GENERAL, "default-target-1"),
    # an alias: the alias's chain (here the default one), not its group's (backup-a)
    ("fast", FailureKind.GENERAL, "default-target-1"),
    # a fallback that only a wildcard group serves
    ("wild-source", FailureKind.GENERAL, "wildcard-1"),
    # resume-mid fails and has no list: the original group's list goes on (resume-end), the
    # default list (default-target) is not used
    ("resume-src", FailureKind.GENERAL, "resume-end-1"),
    # the order-1 deployment is down: order 2 serves, no fallback to another group
    ("ordered", None, "ordered-2"),
])
def test_the_deployment_that_serves_is_the_predicted_one(
    client: httpx.Client, graph: RoutingGraph, model: str, first_failure: FailureKind | None,
    expected: str,
) -> None:
    route = graph.route(model, down=closed_port_deployments(graph))
    assert route.attempts[0].failure == first_failure
    assert route.deployments == (expected,)
    response = ask(client, model)
    assert response.status_code == 200, response.text
    assert response.headers["x-litellm-model-id"] == expected
    assert response.headers["x-litellm-model-group"] in (route.served_by, "mock/some-model")


def test_context_window_without_an_entry_of_its_own_gets_no_fallback(
    client: httpx.Client, graph: RoutingGraph,
) -> None:
    # cw-orphan has general fallbacks and default_fallbacks, but context_window_fallbacks is set
    # without an entry for it: the proxy does not fall back, as the graph says
    route = graph.route("cw-orphan", down=closed_port_deployments(graph))
    assert route.lost
    assert graph.chain("cw-orphan", FailureKind.CONTEXT_WINDOW) == ()
    assert graph.chain("cw-orphan", FailureKind.GENERAL) == ("backup-a",)
    response = ask(client, "cw-orphan")
    assert response.status_code == 400
    assert "No fallback was attempted" in response.text


def test_deployment_ids_match_the_proxy_including_litellms_own(
    client: httpx.Client, graph: RoutingGraph,
) -> None:
    served = client.get("/model/info").json()["data"]
    assert {entry["model_info"]["id"] for entry in served} == set(graph.deployments)
    generated = [d for d in graph.deployments.values() if d.id_source == "litellm"]
    assert len(generated) == 1 and generated[0].id_exact
    response = ask(client, "no-id")
    assert response.headers["x-litellm-model-id"] == generated[0].deployment_id


def test_first_level_chains_match_the_proxys_fallback_endpoint(
    client: httpx.Client, graph: RoutingGraph,
) -> None:
    for name in (n for n in graph.entry_names if "/" not in n):  # a path segment
        for kind in FailureKind:
            answer = client.get(f"/fallback/{name}", params={"fallback_type": kind.value})
            proxy_chain = tuple(answer.json()["fallback_models"]) if answer.status_code == 200 \
                else ()
            assert graph.chain(name, kind) == proxy_chain, (name, kind)
