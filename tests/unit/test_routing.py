"""The routing graph: what it reads, its chains, its problems (each located), what-if."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aidash_lib.routing import (
    FailureKind,
    LiveState,
    NodeKind,
    format_graph,
    format_what_if,
    litellm_deployment_id,
    load_graph,
    overlay,
)
from aidash_lib.settings import REPO_CONFIG
from aidash_lib.sources.gateway import deployment_states, parse_metrics
from aidash_lib.yamlfile import Severity
from tests.unit.test_routing_helpers import deployment, graph_of, problems_with, write

CONFIG_DIR = REPO_CONFIG.parent
REPO_ROUTING = [CONFIG_DIR / name for name in
                ("litellm-config.yaml", "providers.yaml", "model-mappings.yaml")]

TWO_GROUPS = (
    "model_list:\n"
    + deployment("a", "a-1")
    + deployment("a", "a-2", "azure/gpt-4o-mini", "api_base: http://10.0.0.1:8000")
    + deployment("b", "b-1", "anthropic/claude-haiku-4-5")
    + deployment("c", "c-1", "ollama/llama3", "api_base: http://127.0.0.1:11434")
)


# --- what it reads ------------------------------------------------------------------------------


def test_captured_fixture_config(shared_fixtures: Path) -> None:
    graph = load_graph([shared_fixtures / "litellm" / "config.yaml"], environ={})
    assert list(graph.groups) == ["gpt-4o-mini", "claude-haiku", "llama3-local", "flaky-model",
                                  "small-context-model"]
    assert graph.groups["gpt-4o-mini"].deployment_ids == (
        "gpt-4o-mini-a", "gpt-4o-mini-b", "gpt-4o-mini-c")
    c = graph.deployments["gpt-4o-mini-c"]
    assert (c.provider, c.litellm_provider, c.api_base) == (
        "azure@127.0.0.1:9", "azure", "http://127.0.0.1:9")
    assert graph.deployments["flaky-model-1"].mock_error is FailureKind.GENERAL
    assert graph.chain("flaky-model") == ("claude-haiku",)
    assert graph.chain("small-context-model", FailureKind.CONTEXT_WINDOW) == ("claude-haiku",)
    assert graph.policy.num_retries == 0 and graph.policy.cooldown_time_s == 30
    assert graph.problems == ()


def test_repository_routing_files_have_no_errors() -> None:
    environ = {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x", "LITELLM_MASTER_KEY": "x"}
    graph = load_graph(REPO_ROUTING, environ=environ)
    assert graph.problems == ()
    assert graph.deployments["llama3.1-8b-vllm"].provider == "gpu-box-vllm"
    assert graph.deployments["gpt-4o-openai"].provider == "openai"  # by litellm_providers
    assert graph.providers["llama-cpp"].health_url == "http://127.0.0.1:8080/health"
    assert graph.route("chat").served_by == "llama3.1-8b"


def test_router_settings_defaults_and_litellm_settings(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "litellm_settings:\n"
        "  num_retries: 4\n"
        "  fallbacks: [{a: [b]}]\n"
    ))
    policy = graph.policy
    assert (policy.routing_strategy, policy.num_retries, policy.allowed_fails,
            policy.cooldown_time_s, policy.max_fallbacks) == ("simple-shuffle", 4, 3, 5.0, 5)
    assert graph.chain("a") == ("b",)
    assert graph.chain_setting(FailureKind.CONTEXT_WINDOW) == "fallbacks"


def test_router_settings_win_over_litellm_settings(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  fallbacks: [{a: [c]}]\n"
        "litellm_settings:\n"
        "  fallbacks: [{a: [b]}]\n"
    ))
    assert graph.chain("a") == ("c",)
    [ignored] = problems_with(graph, "ignored")
    assert (ignored.line, ignored.severity) == (27, Severity.WARNING)
    assert "litellm_settings.fallbacks: ignored, router_settings.fallbacks is set" in str(ignored)


# --- chains -------------------------------------------------------------------------------------


def test_chains_per_failure_kind(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  fallbacks: [{a: [b, c]}]\n"
        "  context_window_fallbacks: [{a: [c]}]\n"
        "  content_policy_fallbacks: [{'*': [b]}]\n"
    ))
    assert graph.chain("a") == ("b", "c")
    assert graph.chain("a", FailureKind.CONTEXT_WINDOW) == ("c",)
    # the context window list is set: a group without an entry gets no fallback at all
    assert graph.chain("b", FailureKind.CONTEXT_WINDOW) == ()
    assert graph.chain("c", FailureKind.CONTENT_POLICY) == ("b",)
    assert graph.chain("b") == ()


def test_context_window_uses_the_general_list_when_its_own_is_unset(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + "router_settings:\n  fallbacks: [{a: [b]}]\n")
    assert graph.chain("a", FailureKind.CONTEXT_WINDOW) == ("b",)
    assert graph.chain_setting(FailureKind.CONTENT_POLICY) == "fallbacks"


def test_default_fallbacks_apply_to_groups_without_their_own(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  fallbacks: [{a: [b]}]\n"
        "litellm_settings:\n"
        "  default_fallbacks: [c]\n"
    ))
    assert graph.chain("a") == ("b",)
    assert graph.chain("b") == ("c",)


def test_expanded_chain_is_depth_first_and_tries_each_group_once(tmp_path: Path) -> None:
    text = "model_list:\n" + "".join(deployment(g, f"{g}-1") for g in "abcde") + (
        "router_settings:\n"
        "  fallbacks:\n"
        "    - a: [b, c]\n"
        "    - b: [d, a]\n"
        "    - d: [c, e]\n"
    )
    graph = graph_of(tmp_path, text)
    steps = [(s.name, s.depth) for s in graph.expanded_chain("a")]
    # b fails -> b's own list (d, then a: already tried) -> d's list (c, e); c is never retried
    assert steps == [("a", 0), ("b", 1), ("d", 2), ("c", 3), ("e", 4)]


def test_max_fallbacks_bounds_the_depth(tmp_path: Path) -> None:
    text = "model_list:\n" + "".join(deployment(g, f"{g}-1") for g in "abcd") + (
        "router_settings:\n"
        "  max_fallbacks: 2\n"
        "  fallbacks: [{a: [b]}, {b: [c]}, {c: [d]}]\n"
    )
    graph = graph_of(tmp_path, text)
    assert [s.name for s in graph.expanded_chain("a")] == ["a", "b", "c"]


def test_a_hop_without_a_list_resumes_the_original_groups_list(tmp_path: Path) -> None:
    text = "model_list:\n" + "".join(deployment(g, f"{g}-1") for g in "abcx") + (
        "router_settings:\n"
        "  fallbacks: [{a: [b, c]}]\n"
        "litellm_settings:\n"
        "  default_fallbacks: [x]\n"
    )
    graph = graph_of(tmp_path, text)
    # b has no list: LiteLLM looks up b, then the original a (not '*'), so x is never tried
    assert [s.name for s in graph.expanded_chain("a")] == ["a", "b", "c"]


def test_provider_stripped_names_match_fallback_keys(tmp_path: Path) -> None:
    text = "model_list:\n" + deployment("openai/*", "wild", "openai/*") + deployment("b", "b-1") + (
        "router_settings:\n"
        "  fallbacks: [{gpt-4o: [b]}]\n"
    )
    graph = graph_of(tmp_path, text)
    assert graph.chain("openai/gpt-4o") == ("b",)
    assert graph.chain("openai/gpt-4.1") == ()


# --- aliases and wildcards ----------------------------------------------------------------------


def test_aliases_resolve_one_level_and_use_their_own_fallbacks(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  model_group_alias:\n"
        "    fast: a\n"
        "    quiet: {model: b, hidden: true}\n"
        "  fallbacks: [{a: [b]}, {fast: [c]}]\n"
    ))
    assert graph.resolve("fast") == "a"
    assert graph.aliases["quiet"].hidden
    assert graph.chain("fast") == ("c",)  # not a's
    route = graph.route("fast", down=["a"])
    assert route.served_by == "c"
    assert graph.route("quiet", down=["b"]).lost


def test_alias_problems(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  model_group_alias:\n"
        "    ghost: nowhere\n"
        "    double: fast\n"
        "    fast: a\n"
        "    a: b\n"
        "    broken: {hidden: true}\n"
    ))
    [ghost] = problems_with(graph, "'ghost' points to 'nowhere'")
    assert ghost.line == 26 and ghost.severity is Severity.ERROR
    [double] = problems_with(graph, "'double' points to 'fast'")
    assert "an alias of an alias" in double.message and double.line == 27
    [shadow] = problems_with(graph, "has the name of a model group")
    assert shadow.line == 29 and shadow.severity is Severity.WARNING
    assert graph.resolve("a") == "b"  # the alias wins over the group, as in LiteLLM
    [broken] = problems_with(graph, "model_group_alias.broken")
    assert broken.line == 30


def test_wildcard_groups_serve_by_pattern_most_specific_first(tmp_path: Path) -> None:
    text = "model_list:\n" + (
        deployment("*", "catch-all")
        + deployment("openai/*", "openai-any", "openai/*")
        + deployment("openai/gpt-4*", "openai-gpt4", "openai/gpt-4*")
        + deployment("b", "b-1")
    ) + "router_settings:\n  fallbacks: [{b: [openai/gpt-4o, anything]}]\n"
    graph = graph_of(tmp_path, text)
    assert graph.resolve("openai/gpt-4o") == "openai/gpt-4*"
    assert graph.resolve("openai/o3") == "openai/*"
    assert graph.resolve("mistral/large") == "*"
    assert graph.resolve("b") == "b"
    assert graph.groups["*"].wildcard
    assert graph.problems == ()  # both fallback targets are served (by wildcards)
    assert graph.route("b", down=["b-1"]).deployments == ("openai-gpt4",)


# --- deployments: ids, providers, secrets -------------------------------------------------------


def test_litellm_generated_id_is_litellms_own() -> None:
    # captured from the real proxy (1.108.7): a deployment of group `no-id` without model_info.id
    params = {"model": "openai/gpt-4o-mini", "api_key": "sk-fake-env",
              "mock_response": "from no-id", "mock_delay": 0.01, "max_tokens": 50}
    assert litellm_deployment_id("no-id", params) == (
        "9aa87fd303387a8a8b7a9e4ff220c01884f616e88697402f1ca82055d87b8a47")


def test_deployment_without_id_gets_litellms_id_from_the_environment(tmp_path: Path) -> None:
    text = (
        "model_list:\n"
        "  - model_name: no-id\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        "      api_key: os.environ/FAKE_KEY\n"
        "      mock_response: from no-id\n"
        "      mock_delay: 0.01\n"
        "      max_tokens: 50\n"
    )
    graph = graph_of(tmp_path, text, environ={"FAKE_KEY": "sk-fake-env"})
    [only] = graph.deployments.values()
    assert only.deployment_id.startswith("9aa87fd3") and only.id_source == "litellm"
    assert only.id_exact
    unset = graph_of(tmp_path, text, environ={})
    [guess] = unset.deployments.values()
    assert not guess.id_exact and guess.deployment_id != only.deployment_id


def test_env_references_are_resolved_or_reported_never_printed(tmp_path: Path) -> None:
    text = (
        "model_list:\n"
        + deployment("a", "a-1", extra="api_key: os.environ/SECRET_A\n"
                     "api_base: os.environ/BASE_A")
        + deployment("b", "b-1", extra="api_key: os.environ/SECRET_A")
        + deployment("c", "c-1", extra="api_key: sk-literal-secret-value")
        + "general_settings:\n  master_key: os.environ/MASTER\n"
    )
    environ = {"SECRET_A": "sk-very-secret-value", "BASE_A": "http://user:pw@10.1.1.1:8000/v1"}
    graph = graph_of(tmp_path, text, environ=environ)
    assert [(e.variable, e.setting, e.is_set) for e in graph.env] == [
        ("SECRET_A", "model_list.0.litellm_params.api_key", True),
        ("BASE_A", "model_list.0.litellm_params.api_base", True),
        ("SECRET_A", "model_list.1.litellm_params.api_key", True),
        ("MASTER", "general_settings.master_key", False),
    ]
    [unset] = graph.problems
    assert (unset.line, unset.severity) == (22, Severity.WARNING)
    assert "environment variable MASTER is not set here" in unset.message
    a = graph.deployments["a-1"]
    assert a.api_base == "os.environ/BASE_A" and a.provider == "openai@10.1.1.1:8000"
    shown = format_graph(graph) + json.dumps(graph.to_dict())
    for secret in ("sk-very-secret-value", "user:pw", "sk-literal-secret-value"):
        assert secret not in shown


def test_unset_variable_is_reported_once_per_variable(tmp_path: Path) -> None:
    text = "model_list:\n" + "".join(
        deployment(g, f"{g}-1", extra="api_key: os.environ/KEY") for g in "abc")
    [problem] = graph_of(tmp_path, text).problems
    assert problem.line == 5 and "used by model_list.0.litellm_params.api_key and 2 more" in str(
        problem)


def test_providers_from_the_providers_file(tmp_path: Path) -> None:
    providers = """
        providers:
          box:
            type: vllm
            base_url: http://10.0.0.1:8000/v1
          box-root:
            type: openai-compatible
            base_url: http://10.0.0.1:8000
          cloud:
            type: anthropic
            litellm_providers: [anthropic]
    """
    graph = graph_of(tmp_path, TWO_GROUPS, providers)
    assert graph.deployments["a-2"].provider == "box-root"  # api_base http://10.0.0.1:8000
    assert graph.deployments["b-1"].provider == "cloud"
    assert graph.deployments["c-1"].provider == "ollama@127.0.0.1:11434"
    assert graph.deployments["a-1"].provider == "openai"
    assert graph.providers["box"].defined and not graph.providers["openai"].defined
    assert graph.provider_deployments("box-root") == ("a-2",)


# --- problems, each located ---------------------------------------------------------------------


def test_fallback_to_a_group_that_does_not_exist(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  fallbacks:\n"
        "    - a:\n"
        "        - b\n"
        "        - missing\n"
        "  context_window_fallbacks: [{a: [gone]}]\n"
    ))
    [missing, gone] = problems_with(graph, "which no model group")
    assert (missing.line, missing.severity) == (28, Severity.ERROR)
    assert missing.message == ("fallbacks: 'a' falls back to 'missing', which no model group,"
                               " alias or wildcard group serves")
    assert gone.line == 29 and gone.message.startswith("context_window_fallbacks: 'a'")


def test_fallbacks_for_a_group_that_does_not_exist(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + "router_settings:\n  fallbacks: [{typo: [a]}]\n")
    [problem] = graph.problems
    assert problem.line == 25
    assert "fallbacks are set for 'typo', which no model group" in problem.message


def test_fallback_cycles_and_self_fallbacks(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  fallbacks:\n"
        "    - a: [b]\n"
        "    - b: [c]\n"
        "    - c: [a, c]\n"
    ))
    [cycle] = problems_with(graph, "cycle")
    assert cycle.line == 26 and cycle.severity is Severity.WARNING
    assert "fallbacks: fallback cycle a → b → c → a" in cycle.message
    [itself] = problems_with(graph, "falls back to itself")
    assert itself.line == 28 and itself.severity is Severity.WARNING
    assert [s.name for s in graph.expanded_chain("a")] == ["a", "b", "c"]


def test_group_with_no_usable_deployment(tmp_path: Path) -> None:
    text = TWO_GROUPS + (
        "  - model_name: empty\n"
        "    litellm_params:\n"
        "      api_base: http://x\n"
    )
    graph = graph_of(tmp_path, text)
    [problem] = graph.problems
    assert problem.line == 24
    assert problem.message == (
        "model group 'empty' has no usable deployment (no litellm_params.model)")
    assert graph.route("empty").lost


def test_duplicate_deployment_ids(tmp_path: Path) -> None:
    same = (
        "  - model_name: twin\n"
        "    litellm_params:\n"
        "      model: openai/x\n"
    )
    graph = graph_of(tmp_path, TWO_GROUPS + deployment("b", "a-2") + same + same)
    [literal] = problems_with(graph, "is used twice")
    assert literal.line == 28
    assert literal.message == ("model_list.4.model_info.id: model_info.id 'a-2' is used twice"
                               " (first on line 12)")
    [generated] = problems_with(graph, "same LiteLLM id")
    assert generated.line == 32 and "the deployment on line 29" in generated.message


def test_provider_referenced_but_not_defined(tmp_path: Path) -> None:
    litellm = TWO_GROUPS + (
        "  - model_name: d\n"
        "    litellm_params: {model: openai/x}\n"
        "    model_info:\n"
        "      id: d-1\n"
        "      provider: nowhere\n"
    )
    providers = "providers:\n  box: {type: vllm, base_url: 'http://10.0.0.1:8000'}\n"
    mappings = """
        mappings:
          m:
            targets:
              - provider: elsewhere
                model: llama
    """
    graph = graph_of(tmp_path, litellm, providers, mappings)
    [mapping_ref, deployment_ref] = problems_with(graph, "is not defined in the providers file")
    assert deployment_ref.path.endswith("proxy.yaml") and deployment_ref.line == 28
    assert mapping_ref.path.endswith("mappings.yaml") and mapping_ref.line == 4
    # without a providers file, the references are not judged
    assert not problems_with(graph_of(tmp_path, litellm), "not defined")


def test_unreachable_mappings_and_groups(tmp_path: Path) -> None:
    mappings = """
        mappings:
          good:
            targets: [a]
            fallbacks: [alias-b]
          dead:
            targets: [ghost]
            fallbacks: [also-dead]
          also-dead:
            targets: [nothing]
            fallbacks: [dead]
    """
    litellm = TWO_GROUPS + "router_settings:\n  model_group_alias: {alias-b: b}\n"
    graph = graph_of(tmp_path, litellm, mappings=mappings)
    unreachable = problems_with(graph, "unreachable")
    assert [(p.line, p.severity) for p in unreachable] == [(5, Severity.ERROR),
                                                           (8, Severity.ERROR)]
    assert "mappings.dead: unreachable: no target or fallback leads to a deployment" in str(
        unreachable[0])
    [target] = problems_with(graph, "target 'ghost'")
    assert target.line == 5
    [not_reached] = problems_with(graph, "is not reached from any mapping")
    assert "'c'" in not_reached.message and not_reached.line == 18
    assert not_reached.severity is Severity.WARNING


def test_malformed_fallback_lists(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  fallbacks:\n"
        "    - a: b\n"
        "    - {a: [b], c: [b]}\n"
        "    - just-a-name\n"
        "  content_policy_fallbacks: {a: [b]}\n"
    ))
    lines = [(p.line, p.message) for p in graph.problems]
    assert lines[0] == (26, "router_settings.fallbacks.0: the fallbacks of 'a' must be a list"
                            " of group names")
    assert [line for line, _ in lines] == [26, 27, 28, 29]
    assert all(p.severity is Severity.ERROR for p in graph.problems)


# --- what-if --------------------------------------------------------------------------------------


def test_what_if_deployments_providers_and_groups_down(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  fallbacks: [{a: [b, c]}, {b: [c]}]\n"
    ))
    assert graph.route("a").deployments == ("a-1", "a-2")
    partial = graph.what_if(["a-1"])
    assert partial.routes["a"].deployments == ("a-2",) and not partial.routes["a"].rerouted
    provider_down = graph.what_if(["openai", "azure@10.0.0.1:8000"])
    assert provider_down.down.deployments == {"a-1", "a-2"}
    route = provider_down.routes["a"]
    assert (route.served_by, route.deployments, route.rerouted) == ("b", ("b-1",), True)
    everything = graph.what_if(["a", "b", "c"])
    assert everything.lost == ("a", "b", "c")
    assert [s.name for s in everything.routes["a"].attempts] == ["a", "b", "c"]
    assert graph.down_set(["nope", "a-1"]).unknown == ("nope",)


def test_what_if_uses_order_levels_and_mock_errors(tmp_path: Path) -> None:
    text = "model_list:\n" + (
        deployment("o", "o-1", extra="order: 1\nmock_response: litellm.RateLimitError")
        + deployment("o", "o-2", extra="order: 2")
        + deployment("o", "o-none")
        + deployment("cw", "cw-1", extra="mock_response: litellm.ContextWindowExceededError")
        + deployment("big", "big-1")
    ) + "router_settings:\n  context_window_fallbacks: [{cw: [big]}]\n"
    graph = graph_of(tmp_path, text)
    # order 1 fails (a mock rate limit): order 2 serves; deployments without order never do
    assert graph.route("o").deployments == ("o-2",)
    assert graph.route("o", mock_errors=False).deployments == ("o-1",)
    route = graph.route("cw")
    assert route.attempts[0].failure is FailureKind.CONTEXT_WINDOW
    assert route.served_by == "big"
    # forcing a failure kind: the general list (unset) gives nothing
    assert graph.route("big", failure=FailureKind.GENERAL).lost


def test_what_if_mappings_with_provider_targets(tmp_path: Path) -> None:
    providers = "providers:\n  box: {type: ollama, base_url: 'http://127.0.0.1:11434'}\n"
    mappings = """
        mappings:
          chat:
            targets: [a, {provider: box, model: llama3}]
            fallbacks: [backup]
          backup:
            targets: [b]
            fallbacks: [chat]
    """
    graph = graph_of(tmp_path, TWO_GROUPS, providers, mappings)
    assert graph.route("chat").served_by == "a"
    assert graph.route("chat", down=["a"]).served_by == "box:llama3"
    route = graph.route("chat", down=["a", "box"])
    assert route.served_by == "b" and route.deployments == ("b-1",)
    assert graph.deployments["c-1"].provider == "box"  # its api_base is box's
    lost = graph.what_if(["a", "box", "b"])
    assert set(lost.lost) == {"a", "b", "c", "chat", "backup"}


def test_format_what_if(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + "router_settings:\n  fallbacks: [{a: [b]}]\n")
    text = format_what_if(graph.what_if(["a", "c-1"]))
    assert text.splitlines() == [
        "down: deployments a-1, a-2, c-1; groups a",
        "  a  → b [b-1] (after a)",
        "  b  b [b-1]",
        "  c  LOST (tried c)",
        "lose service: c",
    ]


# --- live state, drawing, size ------------------------------------------------------------------


def test_overlay_marks_states_and_active_routes(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + "router_settings:\n  fallbacks: [{c: [b]}]\n")
    states = {"a-1": "healthy", "a-2": "partial", "b-1": "healthy", "c-1": "cooled_down"}
    live = overlay(graph, states, {"a-1": 12, "b-1": 3}, {("c", "b"): 3})
    assert live.deployments["a-2"].state is LiveState.PARTIAL
    assert live.deployments["a-1"].active and not live.deployments["a-2"].active
    assert live.groups == {"a": LiveState.PARTIAL, "b": LiveState.HEALTHY, "c": LiveState.OUTAGE}
    assert live.providers["ollama@127.0.0.1:11434"] is LiveState.OUTAGE
    active = {(e.edge.source, e.edge.target, e.edge.kind) for e in live.active_edges}
    assert active == {
        ("group:a", "deployment:a-1", "deployment"),
        ("deployment:a-1", "provider:openai", "provider"),
        ("group:b", "deployment:b-1", "deployment"),
        ("deployment:b-1", "provider:anthropic", "provider"), ("group:c", "group:b", "fallback"),
    }
    assert live.now.routes["c"].served_by == "b"
    unknown = overlay(graph, {}, {})
    assert unknown.groups["a"] is LiveState.UNKNOWN


def test_overlay_with_the_gateways_own_readings(shared_fixtures: Path) -> None:
    # captured from a real proxy after a deployment of mixed-group was cooled down
    metrics = parse_metrics((shared_fixtures / "litellm" / "metrics_with_cooldown.txt").read_text())
    traffic = metrics.totals_by("litellm_deployment_total_requests_total", "model_id")
    graph = load_graph([shared_fixtures / "litellm" / "config_variant.yaml"], environ={})
    live = overlay(graph, deployment_states(metrics), traffic)
    assert live.deployments["mixed-broken"].state is LiveState.OUTAGE
    assert live.deployments["mixed-broken"].traffic == 2 and live.deployments["mixed-broken"].active
    assert live.groups["mixed-group"] is LiveState.PARTIAL
    assert live.now.routes["mixed-group"].deployments == ("mixed-healthy",)
    assert live.now.down.deployments == {"mixed-broken"}
    assert not live.deployments["gpt-4o-mini-a"].active


def test_nodes_and_edges_for_drawing(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + (
        "router_settings:\n"
        "  model_group_alias: {fast: a}\n"
        "  fallbacks: [{a: [b, nowhere]}]\n"
    ))
    nodes = {n.node_id: n for n in graph.nodes()}
    assert nodes["alias:fast"].column == 1 and nodes["provider:openai"].column == 4
    assert nodes["missing:nowhere"].kind is NodeKind.MISSING
    fallback = [(e.target, e.position) for e in graph.edges()
                if e.kind == "fallback" and e.source == "group:a"]
    assert fallback == [("group:b", 0), ("missing:nowhere", 1)]


def test_fifty_groups_and_150_deployments_are_fast(tmp_path: Path) -> None:
    items = []
    for g in range(50):
        for d in range(3):
            items.append(deployment(f"group-{g}", f"g{g}-d{d}", extra=(
                f"api_base: http://10.0.{g}.{d}:8000/v1")))
    rules = "".join(f"    - group-{g}: [group-{(g + 1) % 50}, group-{(g + 7) % 50}]\n"
                    for g in range(50))
    text = "model_list:\n" + "".join(items) + "router_settings:\n  fallbacks:\n" + rules
    path = write(tmp_path, "big.yaml", text)
    started = time.perf_counter()
    graph = load_graph([path], environ={})
    what_if = graph.what_if([f"group-{g}" for g in range(0, 50, 2)])
    edges = graph.edges()
    format_graph(graph)
    elapsed = time.perf_counter() - started
    assert len(graph.deployments) == 150 and len(edges) == 150 + 150 + 100
    assert not what_if.lost
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_to_dict_is_json(tmp_path: Path) -> None:
    graph = graph_of(tmp_path, TWO_GROUPS + "router_settings:\n  fallbacks: [{a: [b]}]\n")
    data = json.loads(json.dumps(graph.to_dict()))
    assert data["groups"]["a"]["fallbacks"]["general"] == ["b"]
    assert data["deployments"]["a-2"]["provider"] == "azure@10.0.0.1:8000"
    assert json.loads(json.dumps(graph.what_if(["b"]).to_dict()))["lost"] == ["b"]


@pytest.mark.parametrize("kind", list(FailureKind))
def test_failure_kind_settings(kind: FailureKind) -> None:
    assert kind.setting.endswith("fallbacks")
