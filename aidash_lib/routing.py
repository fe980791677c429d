"""The routing graph: model groups, deployments, providers, aliases, mappings and fallbacks.

One graph is built from a LiteLLM proxy config and, when given, the project's `providers.yaml`
and `model-mappings.yaml` (schemas in `routing_files.py`). It answers what the router of the
pinned LiteLLM (1.108.7) does with a request, as read from its source and checked against a real
proxy (`tests/integration/test_routing_live.py`):

- a requested name goes to `model_group_alias`'s target first (one level), else to the group of
  that name, else to the most specific wildcard group whose pattern matches (`openai/*`, `*`);
- a group's live deployments with the lowest `order` serve; when none can, the router walks the
  fallback chain for the kind of failure. The chain is looked up under the *requested name* (so
  an alias uses the alias's own fallbacks or the default ones, not its target's), then a
  provider-stripped name, then `*` (`default_fallbacks`). Context-window and content-policy
  errors use their own lists when those lists are set at all (a group without an entry then gets
  no fallback), else the general list;
- each fallback that fails is itself followed through its own chain, depth first, never trying a
  group twice for one request, down to `max_fallbacks` levels.

A deployment without `model_info.id` gets LiteLLM's own id: the SHA-256 of the group name and
its `litellm_params` as LiteLLM computes it (`os.environ/` values resolved from this process's
environment; `id_exact` is False when a referenced variable is unset here). Secrets are never
kept: no `api_key` value is stored, and values that come from the environment are shown as
their `os.environ/NAME` reference.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aidash_lib.routing_files import (
    MappingTarget,
    parse_mappings,
    parse_providers,
)
from aidash_lib.settings import REPO_CONFIG
from aidash_lib.yamlfile import (
    Problem,
    Severity,
    UnusableInput,
    YamlDocument,
    line_of,
    load_yaml,
)

ENV_PREFIX = "os.environ/"
LITELLM_KEYS = frozenset({"model_list", "router_settings", "litellm_settings", "general_settings"})
PROVIDERS_KEY = "providers"
MAPPINGS_KEY = "mappings"

#: LiteLLM's defaults when a setting is absent (router.py, constants.py of 1.108.7).
DEFAULT_STRATEGY = "simple-shuffle"
DEFAULT_NUM_RETRIES = 2  # openai.DEFAULT_MAX_RETRIES
DEFAULT_ALLOWED_FAILS = 3
DEFAULT_COOLDOWN_S = 5.0
DEFAULT_MAX_FALLBACKS = 5

#: `litellm.provider_list` of 1.108.7: the prefixes of `litellm_params.model`.
LITELLM_PROVIDERS = frozenset({
    "a2a", "a2a_agent", "ai21", "ai21_chat", "aiml", "aiohttp_openai", "amazon_nova",
    "anthropic", "anthropic_text", "apertis", "assemblyai", "auto_router", "aws_polly",
    "aws_textract", "azure", "azure_ai", "azure_speech", "azure_text", "baseten", "bedrock",
    "bedrock_mantle", "bespoke", "black_forest_labs", "bytez", "cerebras", "charity_engine",
    "chatgpt", "chutes", "clarifai", "cloudflare", "codestral", "cognition", "cohere",
    "cohere_chat", "cometapi", "compactifai", "coralbricks", "cortecs", "cursor", "custom",
    "custom_openai", "darkbloom", "dashscope", "databricks", "databricks_agent", "datarobot",
    "deepgram", "deepinfra", "deepseek", "docker_model_runner", "dotprompt", "edenai",
    "elevenlabs", "empower", "fal_ai", "featherless_ai", "fireworks_ai", "friendliai",
    "galadriel", "gdc", "gemini", "gigachat", "github", "github_copilot", "gradient_ai", "groq",
    "helicone", "heroku", "hosted_vllm", "huggingface", "humanloop", "hyperbolic", "inception",
    "inferenceapis", "infinity", "jina_ai", "lambda_ai", "langflow", "langfuse", "langgraph",
    "laya", "lemonade", "libertai", "litellm_agent", "litellm_proxy", "llamafile", "lm_studio",
    "manus", "maritalk", "meta", "meta_llama", "microsoft_365_copilot", "milvus", "minimax",
    "mistral", "modelscope", "mongodb", "moonshot", "morph", "nadir", "nano-gpt", "nebius",
    "neosantara", "nlp_cloud", "novita", "nscale", "nvidia_nim", "nvidia_riva", "oci", "ollama",
    "ollama_chat", "oobabooga", "openai", "openai_like", "openrouter", "ovhcloud", "parasail",
    "perplexity", "petals", "pg_vector", "pinstripes", "poe", "predibase", "prism", "publicai",
    "qwen_ai_platform", "qwencloud", "ragflow", "recraft", "reducto", "reka", "replicate",
    "runwayml", "s3_vectors", "sagemaker", "sagemaker_chat", "sagemaker_nova", "sail",
    "sambanova", "sap", "scaledown", "scaleway", "scx-ai", "snowflake", "soniox", "stability",
    "strands_decider", "synthetic", "tencent", "tensormesh", "text-", "completion-codestral",
    "text-completion-inception", "text-completion-openai", "together_ai", "topaz", "transcribe",
    "triton", "typesafe", "v0", "valkey", "vercel_ai_gateway", "vertex_ai", "vertex_ai_beta",
    "vllm", "volcengine", "voyage", "wandb", "watsonx", "watsonx_text", "xai", "xiaomi_mimo",
    "xinference", "zai",
})

#: `mock_response` values that make LiteLLM raise instead of answering, and the failure kind.
_MOCK_ERRORS = {
    "litellm.RateLimitError": "general",
    "litellm.InternalServerError": "general",
    "litellm.ContextWindowExceededError": "context_window",
}
_MOCK_CONTENT_POLICY = "Exception: content_filter_policy"
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


class FailureKind(enum.StrEnum):
    """The kinds of failure LiteLLM keeps a fallback list for."""

    GENERAL = "general"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"

    @property
    def setting(self) -> str:
        return {"general": "fallbacks", "context_window": "context_window_fallbacks",
                "content_policy": "content_policy_fallbacks"}[self.value]

    @property
    def words(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class Where:
    """A place in a file (line 1-based, None when unknown)."""

    path: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass(frozen=True)
class EnvReference:
    """An `os.environ/NAME` value: which variable, for which setting, and whether it is set."""

    variable: str
    setting: str
    is_set: bool
    where: Where


@dataclass(frozen=True)
class Deployment:
    """One entry of `model_list`, without any credential."""

    deployment_id: str
    group: str
    model: str
    provider: str
    litellm_provider: str | None
    api_base: str | None = None  # user:password masked; `os.environ/NAME` when it comes from one
    id_source: str = "config"  # "config" (model_info.id) or "litellm" (LiteLLM's generated id)
    id_exact: bool = True  # False: a variable the generated id depends on is unset here
    order: int | None = None
    weight: float | None = None
    mock_error: FailureKind | None = None  # a mock_response that raises this kind of error
    is_mock: bool = False
    where: Where | None = None


@dataclass(frozen=True)
class ModelGroup:
    """A model group: the public name deployments share (`model_name`), maybe a wildcard."""

    name: str
    deployment_ids: tuple[str, ...]
    wildcard: bool = False
    where: Where | None = None


@dataclass(frozen=True)
class Provider:
    """A model server or API: described in providers.yaml, or implied by deployments."""

    name: str
    type: str
    base_url: str | None = None
    health_url: str | None = None
    defined: bool = False
    where: Where | None = None


@dataclass(frozen=True)
class FallbackRule:
    """One `{source: [targets]}` item of a fallback list (source `*`: every group)."""

    kind: FailureKind
    source: str
    targets: tuple[str, ...]
    origin: str  # router_settings, litellm_settings, or default_fallbacks
    where: Where | None = None
    target_lines: tuple[int | None, ...] = ()


@dataclass(frozen=True)
class Alias:
    """A `model_group_alias` entry: requests for `name` go to `target`."""

    name: str
    target: str
    hidden: bool = False
    where: Where | None = None


@dataclass(frozen=True)
class ModelMapping:
    """A mapping of model-mappings.yaml: an alias, its ordered targets, its fallbacks."""

    name: str
    targets: tuple[MappingTarget, ...]
    fallbacks: tuple[str, ...] = ()
    description: str | None = None
    where: Where | None = None


@dataclass(frozen=True)
class RouterPolicy:
    """The router settings in force (router_settings over litellm_settings over defaults)."""

    routing_strategy: str = DEFAULT_STRATEGY
    num_retries: int = DEFAULT_NUM_RETRIES
    allowed_fails: int = DEFAULT_ALLOWED_FAILS
    cooldown_time_s: float = DEFAULT_COOLDOWN_S
    disable_cooldowns: bool = False
    max_fallbacks: int = DEFAULT_MAX_FALLBACKS
    #: per kind: the rules, or None when that list is not set at all
    rules: dict[FailureKind, tuple[FallbackRule, ...] | None] = field(default_factory=dict)

    def table(self, kind: FailureKind) -> tuple[FailureKind, tuple[FallbackRule, ...]]:
        """The list LiteLLM consults for `kind`: its own when set, else the general one."""
        own = self.rules.get(kind)
        if own is not None:
            return kind, own
        return FailureKind.GENERAL, self.rules.get(FailureKind.GENERAL) or ()


@dataclass(frozen=True)
class DownSet:
    """What is marked down: deployments (every one a named provider or group holds), providers
    and groups, and the names that matched nothing."""

    deployments: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """One step of a route: a name tried, the group it went to, and how it ended."""

    name: str
    group: str | None  # None: no group serves this name
    depth: int  # 0: the request itself; n: the n-th fallback level
    failure: FailureKind | None  # None: it served
    via: str = "request"  # request, fallback, mapping target, mapping fallback


@dataclass(frozen=True)
class Route:
    """Where a request for `requested` goes: the attempts in order and who serves it."""

    requested: str
    attempts: tuple[Attempt, ...]
    served_by: str | None  # a group, or `provider:model` for a mapping's provider target
    deployments: tuple[str, ...] = ()

    @property
    def lost(self) -> bool:
        return self.served_by is None

    @property
    def rerouted(self) -> bool:
        """Served, but not by the first thing tried."""
        return self.served_by is not None and len(self.attempts) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested, "served_by": self.served_by,
            "deployments": list(self.deployments), "lost": self.lost, "rerouted": self.rerouted,
            "attempts": [
                {"name": a.name, "group": a.group, "depth": a.depth, "via": a.via,
                 "failure": a.failure.value if a.failure else None}
                for a in self.attempts
            ],
        }


@dataclass(frozen=True)
class WhatIf:
    """Where every group's, alias's and mapping's requests go with `down` marked down."""

    down: DownSet
    routes: dict[str, Route]

    @property
    def lost(self) -> tuple[str, ...]:
        """The names that lose service entirely."""
        return tuple(name for name, route in self.routes.items() if route.lost)

    @property
    def rerouted(self) -> tuple[str, ...]:
        return tuple(name for name, route in self.routes.items() if route.rerouted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "down": {
                "deployments": sorted(self.down.deployments),
                "providers": sorted(self.down.providers), "groups": sorted(self.down.groups),
                "unknown": list(self.down.unknown),
            },
            "lost": list(self.lost), "rerouted": list(self.rerouted),
            "routes": {name: route.to_dict() for name, route in self.routes.items()},
        }


class NodeKind(enum.StrEnum):
    MAPPING = "mapping"
    ALIAS = "alias"
    GROUP = "group"
    DEPLOYMENT = "deployment"
    PROVIDER = "provider"
    MISSING = "missing"  # a name something points to that nothing serves


@dataclass(frozen=True)
class Node:
    """A node for drawing: id `kind:name`; column 0 (mappings) to 4 (providers)."""

    node_id: str
    kind: NodeKind
    label: str
    column: int


@dataclass(frozen=True)
class Edge:
    """A route between two nodes: alias, deployment (group -> deployment), provider
    (deployment -> provider), fallback (with its kind and position), mapping_target,
    mapping_fallback."""

    source: str
    target: str
    kind: str
    failure: FailureKind | None = None
    position: int = 0


_COLUMNS = {NodeKind.MAPPING: 0, NodeKind.ALIAS: 1, NodeKind.GROUP: 2, NodeKind.MISSING: 2,
            NodeKind.DEPLOYMENT: 3, NodeKind.PROVIDER: 4}


def node_id(kind: NodeKind, name: str) -> str:
    return f"{kind.value}:{name}"


@dataclass(frozen=True)
class RoutingGraph:
    """The whole routing picture and its problems. Build it with `build_graph`/`load_graph`."""

    groups: dict[str, ModelGroup]
    deployments: dict[str, Deployment]
    providers: dict[str, Provider]
    aliases: dict[str, Alias]
    mappings: dict[str, ModelMapping]
    policy: RouterPolicy
    env: tuple[EnvReference, ...] = ()
    problems: tuple[Problem, ...] = ()
    files: tuple[str, ...] = ()
    patterns: tuple[tuple[str, str], ...] = ()  # (regex, wildcard group), most specific first
    has_gateway_config: bool = False
    has_providers_file: bool = False

    # --- names --------------------------------------------------------------------------------

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def entry_names(self) -> tuple[str, ...]:
        """Every name a request can use: groups, aliases, then mappings."""
        return (*self.groups, *(a for a in self.aliases if a not in self.groups),
                *(m for m in self.mappings if m not in self.groups and m not in self.aliases))

    def resolve(self, name: str) -> str | None:
        """The group a gateway request for `name` goes to, as LiteLLM resolves it."""
        alias = self.aliases.get(name)
        return self.group_named(alias.target if alias is not None else name)

    def group_named(self, name: str) -> str | None:
        """The group of that name, else the wildcard group that serves it (aliases aside)."""
        if name in self.groups:
            return name
        for regex, group in self.patterns:
            if re.match(regex, name):
                return group
        return None

    def provider_deployments(self, provider: str) -> tuple[str, ...]:
        return tuple(d.deployment_id for d in self.deployments.values() if d.provider == provider)

    # --- fallback chains ----------------------------------------------------------------------

    def chain(self, name: str, kind: FailureKind = FailureKind.GENERAL) -> tuple[str, ...]:
        """The fallback list LiteLLM picks when a request for `name` fails with `kind`."""
        return self._lookup(kind, (name,)) or ()

    def chain_setting(self, kind: FailureKind) -> str:
        """Which setting decides the chain for `kind` (the general list when its own is unset)."""
        used, _ = self.policy.table(kind)
        return used.setting

    def expanded_chain(
        self, name: str, kind: FailureKind = FailureKind.GENERAL,
    ) -> tuple[Attempt, ...]:
        """Every name tried, in order, when `name` and each fallback fail with `kind`."""
        attempts = [Attempt(name, self.resolve(name), 0, kind)]
        self._walk(name, kind, name, 0, set(), lambda _target: kind, attempts)
        return tuple(attempts)

    def _lookup(self, kind: FailureKind, lookups: Sequence[str]) -> tuple[str, ...] | None:
        """LiteLLM's `get_fallback_model_group_for_lookup_groups`: the first lookup name with a
        chain of its own wins; the generic `*` chain only when none has one."""
        _, rules = self.policy.table(kind)
        if not rules:
            return None
        generic: tuple[str, ...] | None = None
        for name in lookups:
            specific, star = _rule_for(rules, name)
            if specific is not None:
                return specific
            if generic is None:
                generic = star
        return generic

    def _walk(
        self, failed: str, kind: FailureKind, original: str, depth: int, attempted: set[str],
        outcome: Callable[[str], FailureKind | None], attempts: list[Attempt],
    ) -> str | None:
        """`run_async_fallback`, depth first: the target that serves, or None."""
        chain = self._lookup(kind, tuple(dict.fromkeys((failed, original))))
        if chain is None or depth >= self.policy.max_fallbacks:
            return None
        attempted.add(failed)
        for target in chain:
            if target == failed or target in attempted:
                continue
            attempted.add(target)
            depth += 1
            failure = outcome(target)
            attempts.append(Attempt(target, self.resolve(target), depth, failure, "fallback"))
            if failure is None:
                return target
            served = self._walk(target, failure, original, depth, attempted, outcome, attempts)
            if served is not None:
                return served
        return None

    # --- what-if ------------------------------------------------------------------------------

    def down_set(self, names: Iterable[str] | DownSet = ()) -> DownSet:
        """Names (deployment ids, providers, groups) as a `DownSet`; unknown names are kept."""
        if isinstance(names, DownSet):
            return names
        deployments: set[str] = set()
        providers: set[str] = set()
        groups: set[str] = set()
        unknown: list[str] = []
        for name in names:
            found = False
            if name in self.deployments:
                deployments.add(name)
                found = True
            if name in self.providers:
                providers.add(name)
                deployments.update(self.provider_deployments(name))
                found = True
            if name in self.groups:
                groups.add(name)
                deployments.update(self.groups[name].deployment_ids)
                found = True
            if not found:
                unknown.append(name)
        return DownSet(frozenset(deployments), frozenset(providers), frozenset(groups),
                       tuple(unknown))

    def outcome(
        self, name: str, down: Iterable[str] | DownSet = (), *, mock_errors: bool = True,
    ) -> tuple[FailureKind | None, tuple[str, ...]]:
        """How a gateway request for `name` ends without fallbacks: (None, serving deployments)
        or (the kind of failure, ()). Deployments whose `mock_response` raises fail with that
        kind when `mock_errors`; the lowest `order` among live deployments serves, and a level
        whose deployments all fail (general errors) passes to the next one."""
        down_set = self.down_set(down)
        group = self.resolve(name)
        if group is None or group in down_set.groups:
            return FailureKind.GENERAL, ()
        live = [self.deployments[d] for d in self.groups[group].deployment_ids
                if d not in down_set.deployments]
        orders = sorted({d.order for d in live if d.order is not None})
        levels = [[d for d in live if d.order == o] for o in orders] if orders else [live]
        for level in levels:
            serving = [d for d in level if not (mock_errors and d.mock_error)]
            if serving:
                return None, tuple(d.deployment_id for d in serving)
            kinds = {d.mock_error for d in level}
            kind = kinds.pop() if len(kinds) == 1 else FailureKind.GENERAL
            if kind is not FailureKind.GENERAL:
                return kind, ()
        return FailureKind.GENERAL, ()

    def route(
        self, name: str, *, down: Iterable[str] | DownSet = (),
        failure: FailureKind | None = None, mock_errors: bool = True,
    ) -> Route:
        """Where a request for `name` (a gateway name or a mapping) goes with `down` marked
        down. `failure` forces the first attempt to fail with that kind (e.g. a prompt too long
        for it); fallbacks that are down fail as general errors."""
        down_set = self.down_set(down)
        if name in self.mappings and name not in self.groups and name not in self.aliases:
            return self._route_mapping(name, down_set, mock_errors, set())
        return self._route_gateway(name, down_set, failure, mock_errors, "request", 0)

    def _route_gateway(
        self, name: str, down: DownSet, failure: FailureKind | None, mock_errors: bool,
        via: str, depth: int,
    ) -> Route:
        def outcome(target: str) -> FailureKind | None:
            return self.outcome(target, down, mock_errors=mock_errors)[0]

        own, serving = self.outcome(name, down, mock_errors=mock_errors)
        if failure is not None:
            own, serving = failure, ()
        attempts = [Attempt(name, self.resolve(name), depth, own, via)]
        if own is None:
            return Route(name, tuple(attempts), self.resolve(name), serving)
        served = self._walk(name, own, name, 0, set(), outcome, attempts)
        if served is None:
            return Route(name, tuple(attempts), None)
        _, serving = self.outcome(served, down, mock_errors=mock_errors)
        return Route(name, tuple(attempts), self.resolve(served), serving)

    def _route_mapping(
        self, name: str, down: DownSet, mock_errors: bool, visited: set[str],
    ) -> Route:
        visited.add(name)
        mapping = self.mappings[name]
        attempts: list[Attempt] = []
        for target in mapping.targets:
            if target.group is not None:
                sub = self._route_gateway(target.group, down, None, mock_errors,
                                          "mapping target", 0)
                attempts.extend(sub.attempts)
                if not sub.lost:
                    return Route(name, tuple(attempts), sub.served_by, sub.deployments)
                continue
            provider = str(target.provider)
            unknown = self.has_providers_file and provider not in self.providers
            failed = provider in down.providers or unknown
            attempts.append(Attempt(target.label, None, 0,
                                    FailureKind.GENERAL if failed else None, "mapping target"))
            if not failed:
                return Route(name, tuple(attempts), target.label)
        for fallback in mapping.fallbacks:
            if fallback in visited:
                continue
            if fallback in self.mappings:
                sub = self._route_mapping(fallback, down, mock_errors, visited)
            else:
                sub = self._route_gateway(fallback, down, None, mock_errors,
                                          "mapping fallback", 0)
            attempts.extend(sub.attempts)
            if not sub.lost:
                return Route(name, tuple(attempts), sub.served_by, sub.deployments)
        return Route(name, tuple(attempts), None)

    def what_if(
        self, down: Iterable[str] | DownSet = (), *, mock_errors: bool = True,
    ) -> WhatIf:
        """Where each group's, alias's and mapping's requests go with `down` marked down."""
        down_set = self.down_set(down)
        routes = {name: self.route(name, down=down_set, mock_errors=mock_errors)
                  for name in self.entry_names}
        return WhatIf(down_set, routes)

    # --- drawing ------------------------------------------------------------------------------

    def nodes(self) -> tuple[Node, ...]:
        """Every node, by column: mappings, aliases, groups (and missing names), deployments,
        providers."""
        found: dict[str, Node] = {}

        def add(kind: NodeKind, name: str) -> None:
            key = node_id(kind, name)
            if key not in found:
                found[key] = Node(key, kind, name, _COLUMNS[kind])

        for name in self.mappings:
            add(NodeKind.MAPPING, name)
        for name in self.aliases:
            add(NodeKind.ALIAS, name)
        for name in self.groups:
            add(NodeKind.GROUP, name)
        for edge in self.edges():
            if edge.target.startswith(NodeKind.MISSING.value + ":"):
                add(NodeKind.MISSING, edge.target.split(":", 1)[1])
        for deployment_id in self.deployments:
            add(NodeKind.DEPLOYMENT, deployment_id)
        for name in self.providers:
            add(NodeKind.PROVIDER, name)
        return tuple(sorted(found.values(), key=lambda node: node.column))

    def edges(self) -> tuple[Edge, ...]:
        """Every route: aliases, group -> deployment -> provider, fallbacks per kind (as the
        router would pick them for each group), mapping targets and fallbacks."""
        edges: list[Edge] = []
        for alias in self.aliases.values():
            edges.append(Edge(node_id(NodeKind.ALIAS, alias.name), self._name_node(alias.target),
                              "alias"))
        for group in self.groups.values():
            for position, deployment_id in enumerate(group.deployment_ids):
                edges.append(Edge(node_id(NodeKind.GROUP, group.name),
                                  node_id(NodeKind.DEPLOYMENT, deployment_id), "deployment",
                                  position=position))
        for deployment in self.deployments.values():
            edges.append(Edge(node_id(NodeKind.DEPLOYMENT, deployment.deployment_id),
                              node_id(NodeKind.PROVIDER, deployment.provider), "provider"))
        for name in (*self.groups, *self.aliases):
            source = node_id(NodeKind.GROUP if name in self.groups else NodeKind.ALIAS, name)
            for kind in FailureKind:
                if kind is not FailureKind.GENERAL and self.policy.rules.get(kind) is None:
                    continue
                for position, target in enumerate(self.chain(name, kind)):
                    edges.append(Edge(source, self._name_node(target), "fallback", kind,
                                      position))
        for mapping in self.mappings.values():
            source = node_id(NodeKind.MAPPING, mapping.name)
            for position, target in enumerate(mapping.targets):
                node = (self._name_node(target.group) if target.group is not None
                        else node_id(NodeKind.PROVIDER, str(target.provider)))
                edges.append(Edge(source, node, "mapping_target", position=position))
            for position, fallback in enumerate(mapping.fallbacks):
                node = (node_id(NodeKind.MAPPING, fallback) if fallback in self.mappings
                        else self._name_node(fallback))
                edges.append(Edge(source, node, "mapping_fallback", position=position))
        return tuple(edges)

    def _name_node(self, name: str) -> str:
        if name in self.aliases:
            return node_id(NodeKind.ALIAS, name)
        group = self.resolve(name)
        return node_id(NodeKind.GROUP, group) if group else node_id(NodeKind.MISSING, name)

    # --- export -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The graph as JSON-ready data (no secrets)."""
        policy = self.policy
        return {
            "files": list(self.files),
            "router": {
                "routing_strategy": policy.routing_strategy, "num_retries": policy.num_retries,
                "allowed_fails": policy.allowed_fails, "cooldown_time_s": policy.cooldown_time_s,
                "disable_cooldowns": policy.disable_cooldowns,
                "max_fallbacks": policy.max_fallbacks,
                "chain_settings": {kind.value: self.chain_setting(kind) for kind in FailureKind},
            },
            "groups": {
                name: {
                    "wildcard": group.wildcard, "deployments": list(group.deployment_ids),
                    "fallbacks": {kind.value: list(self.chain(name, kind)) for kind in FailureKind},
                }
                for name, group in self.groups.items()
            },
            "deployments": {
                key: {
                    "group": d.group, "model": d.model, "provider": d.provider,
                    "litellm_provider": d.litellm_provider, "api_base": d.api_base,
                    "id_source": d.id_source, "id_exact": d.id_exact, "order": d.order,
                    "weight": d.weight, "mock_error": d.mock_error.value if d.mock_error else None,
                    "is_mock": d.is_mock,
                }
                for key, d in self.deployments.items()
            },
            "providers": {
                name: {"type": p.type, "base_url": p.base_url, "health_url": p.health_url,
                       "defined": p.defined}
                for name, p in self.providers.items()
            },
            "aliases": {
                name: {"target": a.target, "hidden": a.hidden, "group": self.resolve(name),
                       "fallbacks": {kind.value: list(self.chain(name, kind))
                                     for kind in FailureKind}}
                for name, a in self.aliases.items()
            },
            "mappings": {
                name: {"targets": [t.label for t in m.targets], "fallbacks": list(m.fallbacks),
                       "description": m.description}
                for name, m in self.mappings.items()
            },
            "env": [{"variable": e.variable, "setting": e.setting, "is_set": e.is_set}
                    for e in self.env],
            "problems": [
                {"path": p.path, "line": p.line, "severity": p.severity.value,
                 "message": p.message}
                for p in self.problems
            ],
        }


def _rule_for(
    rules: Sequence[FallbackRule], name: str,
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """LiteLLM's `get_fallback_model_group` for one name: (a chain of its own: exact key, else
    the provider-stripped name; the generic `*` chain). The last `*` item wins, as there."""
    stripped: tuple[str, ...] | None = None
    generic: tuple[str, ...] | None = None
    for rule in rules:
        if rule.source == name:
            return rule.targets, None
        if _strips_to(name, rule.source):
            stripped = rule.targets
        elif rule.source == "*":
            generic = rule.targets
    return stripped, generic


def _strips_to(name: str, key: str) -> bool:
    """`openai/gpt-4o` matches a fallback keyed `gpt-4o` (wildcard routing)."""
    prefix, _, rest = name.partition("/")
    return bool(rest) and prefix in LITELLM_PROVIDERS and rest == key


# --- building ---------------------------------------------------------------------------------


def document_kind(doc: YamlDocument) -> str | None:
    """'litellm', 'providers' or 'mappings', told by a file's top-level keys; else None."""
    if not isinstance(doc.data, dict):
        return None
    keys = set(doc.data)
    if keys & LITELLM_KEYS:
        return "litellm"
    if PROVIDERS_KEY in keys:
        return "providers"
    if MAPPINGS_KEY in keys:
        return "mappings"
    return None


def load_graph(
    paths: Iterable[str | Path], environ: Mapping[str, str] | None = None,
) -> RoutingGraph:
    """Read routing files (kinds told by content) into one graph. `UnusableInput` for a file
    that cannot be read or parsed, is not a routing file, or is a second LiteLLM config."""
    found: dict[str, YamlDocument] = {}
    for path in paths:
        doc = load_yaml(path)
        kind = document_kind(doc)
        if kind is None:
            raise UnusableInput(Problem(doc.path, 1, (
                "not a routing file: expected a LiteLLM config (model_list:, router_settings:,"
                " ...), providers (providers:) or mappings (mappings:)")))
        if kind in found:
            raise UnusableInput(Problem(doc.path, 1, (
                f"a second {kind} file (the first is {found[kind].path}): give one of each")))
        found[kind] = doc
    return build_graph(found.get("litellm"), found.get("providers"), found.get("mappings"),
                       environ=environ)


def build_graph(
    litellm: YamlDocument | None = None,
    providers: YamlDocument | None = None,
    mappings: YamlDocument | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> RoutingGraph:
    """The routing graph of a LiteLLM config plus optional providers and mappings files."""
    return _Builder(os.environ if environ is None else environ).build(litellm, providers, mappings)


class _Builder:
    """Reads the documents once; collects the graph's parts and its located problems."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[Problem] = []
        self.deployments: dict[str, Deployment] = {}
        self.group_members: dict[str, list[str]] = {}
        self.group_where: dict[str, Where] = {}
        self.unusable_groups: dict[str, Where] = {}
        self.providers: dict[str, Provider] = {}
        self.defined_providers: dict[str, Any] = {}
        self.providers_loaded = False
        self.provider_refs: list[tuple[str, Where]] = []
        self.aliases: dict[str, Alias] = {}
        self.mappings: dict[str, ModelMapping] = {}
        self.env: list[EnvReference] = []
        self.rules: dict[FailureKind, tuple[FallbackRule, ...] | None] = {}
        self.policy = RouterPolicy()

    def problem(self, where: Where | None, message: str, warning: bool = False) -> None:
        severity = Severity.WARNING if warning else Severity.ERROR
        path, line = (where.path, where.line) if where else ("", None)
        self.problems.append(Problem(path, line, message, severity))

    # --- the files -----------------------------------------------------------------------

    def build(
        self, litellm: YamlDocument | None, providers: YamlDocument | None,
        mappings: YamlDocument | None,
    ) -> RoutingGraph:
        if providers is not None:
            self.read_providers(providers)
        if litellm is not None:
            self.read_env(litellm)
            self.read_model_list(litellm)
            self.read_router(litellm)
        if mappings is not None:
            self.read_mappings(mappings)
        groups = {
            name: ModelGroup(name, tuple(members), "*" in name, self.group_where.get(name))
            for name, members in self.group_members.items()
        }
        for name, where in self.unusable_groups.items():
            if name not in groups:
                groups[name] = ModelGroup(name, (), "*" in name, where)
        patterns = _wildcard_patterns(groups)
        graph = RoutingGraph(
            groups=groups, deployments=self.deployments, providers=self.providers,
            aliases=self.aliases, mappings=self.mappings, policy=self.policy,
            env=tuple(self.env), files=tuple(
                doc.path for doc in (litellm, providers, mappings) if doc is not None),
            patterns=patterns, has_gateway_config=litellm is not None,
            has_providers_file=self.providers_loaded,
        )
        if litellm is not None:
            self.check_gateway(graph)
        self.check_references(graph, has_gateway=litellm is not None)
        problems = tuple(sorted(dict.fromkeys(self.problems),
                                key=lambda p: (p.path, p.line or 0)))
        return dataclasses.replace(graph, problems=problems)

    def read_providers(self, doc: YamlDocument) -> None:
        parsed, problems = parse_providers(doc)
        self.problems.extend(problems)
        if parsed is None:
            return
        self.providers_loaded = True
        for name, spec in parsed.providers.items():
            self.defined_providers[name] = spec
            self.providers[name] = Provider(
                name, spec.type, _mask_url(spec.base_url), _mask_url(spec.health_url), True,
                Where(doc.path, line_of(doc.data, [PROVIDERS_KEY, name])),
            )

    def read_env(self, doc: YamlDocument) -> None:
        """Every `os.environ/NAME`; one warning per unset variable, at its first use."""
        for loc, value in _walk_strings(doc.data, ()):
            if value.startswith(ENV_PREFIX):
                variable = value[len(ENV_PREFIX):]
                self.env.append(EnvReference(
                    variable, ".".join(str(part) for part in loc), variable in self.environ,
                    Where(doc.path, line_of(doc.data, loc))))
        unset: dict[str, list[EnvReference]] = {}
        for ref in self.env:
            if not ref.is_set:
                unset.setdefault(ref.variable, []).append(ref)
        for variable, refs in unset.items():
            more = f" and {len(refs) - 1} more" if len(refs) > 1 else ""
            self.problem(refs[0].where, (
                f"environment variable {variable} is not set here (used by {refs[0].setting}"
                f"{more}; the gateway's environment may differ)"), warning=True)

    def read_model_list(self, doc: YamlDocument) -> None:
        model_list = doc.data.get("model_list")
        if not isinstance(model_list, list):
            return
        first_line: dict[str, tuple[int | None, bool]] = {}
        for index, entry in enumerate(model_list):
            loc: list[str | int] = ["model_list", index]
            where = Where(doc.path, line_of(doc.data, loc))
            if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
                continue
            group = entry["model_name"]
            params = entry.get("litellm_params")
            model = params.get("model") if isinstance(params, dict) else None
            if not isinstance(model, str) or not model:
                self.unusable_groups.setdefault(group, where)
                continue
            info = entry.get("model_info") if isinstance(entry.get("model_info"), dict) else {}
            deployment = self.deployment(doc, loc, group, _python(params), info, where)
            key = deployment.deployment_id
            if key in first_line:
                line, was_generated = first_line[key]
                if deployment.id_source == "litellm" or was_generated:
                    self.problem(where, (
                        f"model_list.{index}: gets the same LiteLLM id as the deployment on line"
                        f" {line} (same group and litellm_params): give each a model_info.id"))
                else:
                    id_loc = [*loc, "model_info", "id"]
                    self.problem(Where(doc.path, line_of(doc.data, id_loc)), (
                        f"{'.'.join(str(p) for p in id_loc)}: model_info.id {key!r} is used"
                        f" twice (first on line {line})"))
                continue
            id_line = line_of(doc.data, [*loc, "model_info", "id"]) if "id" in info else None
            first_line[key] = (id_line or where.line, deployment.id_source == "litellm")
            self.deployments[key] = deployment
            self.group_members.setdefault(group, []).append(key)
            self.group_where.setdefault(group, where)

    def deployment(
        self, doc: YamlDocument, loc: list[str | int], group: str, params: dict[str, Any],
        info: Mapping[str, Any], where: Where,
    ) -> Deployment:
        env_vars = [v[len(ENV_PREFIX):] for v in params.values()
                    if isinstance(v, str) and v.startswith(ENV_PREFIX)]
        if info.get("id") is not None:
            deployment_id, id_source, exact = str(info["id"]), "config", True
        else:
            resolved = {k: self.resolve_env(v) for k, v in params.items()}
            deployment_id = litellm_deployment_id(group, resolved)
            id_source, exact = "litellm", all(v in self.environ for v in env_vars)
        model = params["model"]
        prefix = params.get("custom_llm_provider") or _model_prefix(model)
        raw_base = params.get("api_base")
        base_value = self.resolve_env(raw_base) if isinstance(raw_base, str) else None
        shown_base = raw_base if isinstance(raw_base, str) and raw_base.startswith(
            ENV_PREFIX) else _mask_url(base_value)
        explicit = info.get("provider")
        if isinstance(explicit, str) and explicit:
            provider = explicit
            self.provider_refs.append(
                (explicit, Where(doc.path, line_of(doc.data, [*loc, "model_info", "provider"]))))
            if explicit not in self.providers:
                self.providers[explicit] = Provider(explicit, prefix or "unknown")
        else:
            provider = self.provider_for(prefix, base_value)
        order = params.get("order", info.get("order"))
        weight = params.get("weight")
        return Deployment(
            deployment_id=deployment_id, group=group, model=model, provider=provider,
            litellm_provider=prefix, api_base=shown_base, id_source=id_source, id_exact=exact,
            order=order if isinstance(order, int) and not isinstance(order, bool) else None,
            weight=float(weight) if isinstance(weight, int | float) else None,
            mock_error=_mock_error(params.get("mock_response")),
            is_mock="mock_response" in params, where=where,
        )

    def resolve_env(self, value: Any) -> Any:
        """A value as the proxy sees it: `os.environ/NAME` read from the environment (None when
        unset, as LiteLLM's get_secret gives)."""
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            return self.environ.get(value[len(ENV_PREFIX):])
        return value

    def provider_for(self, prefix: str | None, api_base: str | None) -> str:
        """The provider of a deployment: the providers.yaml entry whose base URL serves its
        api_base (longest path wins), else the one claiming its LiteLLM prefix, else an implied
        provider named after the prefix (and `@host:port` of its api_base)."""
        if api_base:
            base = urlsplit(api_base)
            best: tuple[int, str] | None = None
            for name, spec in self.defined_providers.items():
                if not spec.base_url:
                    continue
                candidate = urlsplit(spec.base_url)
                same_host = (candidate.scheme, candidate.hostname, _port(candidate)) == (
                    base.scheme, base.hostname, _port(base))
                if same_host and base.path.rstrip("/").startswith(candidate.path.rstrip("/")):
                    score = len(candidate.path.rstrip("/"))
                    if best is None or score > best[0]:
                        best = (score, name)
            if best is not None:
                return best[1]
        else:
            for name, spec in self.defined_providers.items():
                if prefix and prefix in spec.litellm_providers:
                    return name
        name = prefix or "unknown"
        if api_base:
            base = urlsplit(api_base)
            name = f"{name}@{base.hostname}:{_port(base)}"
        if name not in self.providers:
            self.providers[name] = Provider(
                name, prefix or "unknown", _mask_url(_origin(api_base)) if api_base else None)
        return name

    def read_router(self, doc: YamlDocument) -> None:
        router = doc.data.get("router_settings")
        router = router if isinstance(router, dict) else {}
        general = doc.data.get("litellm_settings")
        general = general if isinstance(general, dict) else {}

        def pick(key: str) -> Any:
            value = router.get(key)
            return value if value is not None else general.get(key)

        for kind in FailureKind:
            rules = self.read_rules(doc, kind, router, general)
            self.rules[kind] = rules
        default = self.read_default_fallbacks(doc, router, general)
        if default is not None:
            general_rules = self.rules.get(FailureKind.GENERAL) or ()
            self.rules[FailureKind.GENERAL] = (*general_rules, default)
        self.read_aliases(doc, router.get("model_group_alias"))
        retries = pick("num_retries")
        max_fallbacks = pick("max_fallbacks")
        allowed = pick("allowed_fails")
        cooldown = router.get("cooldown_time")
        self.policy = RouterPolicy(
            routing_strategy=str(router.get("routing_strategy") or DEFAULT_STRATEGY),
            num_retries=retries if isinstance(retries, int) else DEFAULT_NUM_RETRIES,
            allowed_fails=allowed if isinstance(allowed, int) else DEFAULT_ALLOWED_FAILS,
            cooldown_time_s=float(cooldown) if isinstance(cooldown, int | float) and cooldown
            else DEFAULT_COOLDOWN_S,
            disable_cooldowns=bool(router.get("disable_cooldowns")),
            max_fallbacks=max_fallbacks if isinstance(max_fallbacks, int)
            else DEFAULT_MAX_FALLBACKS,
            rules=self.rules,
        )

    def read_rules(
        self, doc: YamlDocument, kind: FailureKind, router: Mapping[str, Any],
        general: Mapping[str, Any],
    ) -> tuple[FallbackRule, ...] | None:
        """A fallback list: router_settings' when non-empty, else litellm_settings' (as the
        Router does: `fallbacks or litellm.fallbacks`); None when neither is set."""
        key = kind.setting
        chosen: str | None = None
        for section, values in (("router_settings", router), ("litellm_settings", general)):
            if values.get(key):
                if chosen is None:
                    chosen = section
                else:
                    self.problem(Where(doc.path, line_of(doc.data, [section, key])), (
                        f"{section}.{key}: ignored, router_settings.{key} is set"), warning=True)
        if chosen is None:
            return None
        items = (router if chosen == "router_settings" else general)[key]
        if not isinstance(items, list):
            self.problem(Where(doc.path, line_of(doc.data, [chosen, key])), (
                f"{chosen}.{key}: must be a list of {{group: [fallback groups]}}"))
            return ()
        rules = []
        for index, item in enumerate(items):
            loc: list[str | int] = [chosen, key, index]
            where = Where(doc.path, line_of(doc.data, loc))
            if not isinstance(item, dict) or len(item) != 1:
                self.problem(where, (f"{chosen}.{key}.{index}: each item must be one"
                                     " {group: [fallback groups]} (LiteLLM refuses to start)"))
                continue
            ((source, targets),) = item.items()
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                self.problem(where, (f"{chosen}.{key}.{index}: the fallbacks of {source!r} must"
                                     " be a list of group names"))
                continue
            lines = tuple(line_of(doc.data, [*loc, source, i]) for i in range(len(targets)))
            rules.append(FallbackRule(kind, str(source), tuple(targets), chosen, where, lines))
        return tuple(rules)

    def read_default_fallbacks(
        self, doc: YamlDocument, router: Mapping[str, Any], general: Mapping[str, Any],
    ) -> FallbackRule | None:
        for section, values in (("router_settings", router), ("litellm_settings", general)):
            value = values.get("default_fallbacks")
            if not value:
                continue
            loc: list[str | int] = [section, "default_fallbacks"]
            where = Where(doc.path, line_of(doc.data, loc))
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                self.problem(where, f"{section}.default_fallbacks: must be a list of group names")
                return None
            lines = tuple(line_of(doc.data, [*loc, i]) for i in range(len(value)))
            return FallbackRule(FailureKind.GENERAL, "*", tuple(value), "default_fallbacks",
                                where, lines)
        return None

    def read_aliases(self, doc: YamlDocument, aliases: Any) -> None:
        if aliases is None:
            return
        loc: list[str | int] = ["router_settings", "model_group_alias"]
        if not isinstance(aliases, dict):
            self.problem(Where(doc.path, line_of(doc.data, loc)),
                         "router_settings.model_group_alias: must be a mapping alias: group")
            return
        for name, value in aliases.items():
            where = Where(doc.path, line_of(doc.data, [*loc, name]))
            target = value.get("model") if isinstance(value, dict) else value
            hidden = bool(value.get("hidden")) if isinstance(value, dict) else False
            if not isinstance(target, str) or not target:
                self.problem(where, (f"router_settings.model_group_alias.{name}: give a group"
                                     " name, or {model: group, hidden: true}"))
                continue
            self.aliases[str(name)] = Alias(str(name), target, hidden, where)

    def read_mappings(self, doc: YamlDocument) -> None:
        parsed, problems = parse_mappings(doc)
        self.problems.extend(problems)
        if parsed is None:
            return
        for name, spec in parsed.mappings.items():
            where = Where(doc.path, line_of(doc.data, [MAPPINGS_KEY, name]))
            self.mappings[name] = ModelMapping(name, spec.targets, spec.fallbacks,
                                               spec.description, where)
            for index, target in enumerate(spec.targets):
                if target.provider is not None:
                    line = line_of(doc.data, [MAPPINGS_KEY, name, "targets", index, "provider"])
                    self.provider_refs.append((target.provider, Where(doc.path, line)))

    # --- problems needing the whole graph ----------------------------------------------------

    def check_gateway(self, graph: RoutingGraph) -> None:
        """Aliases, fallback lists and groups: the problems of the gateway's config."""
        for name, where in self.unusable_groups.items():
            if not graph.groups[name].deployment_ids:
                self.problem(where, f"model group {name!r} has no usable deployment"
                                    " (no litellm_params.model)")
        for alias in graph.aliases.values():
            if alias.name in graph.groups:
                self.problem(alias.where, (
                    f"model_group_alias {alias.name!r} has the name of a model group: its"
                    f" requests go to {alias.target!r}"), warning=True)
            if graph.group_named(alias.target) is not None:
                continue
            extra = (" (an alias of an alias: LiteLLM resolves one level only)"
                     if alias.target in graph.aliases else "")
            self.problem(alias.where, (
                f"model_group_alias {alias.name!r} points to {alias.target!r}, which no model"
                f" group or wildcard group serves{extra}"))
        for kind in FailureKind:
            for rule in graph.policy.rules.get(kind) or ():
                self.check_rule(graph, rule)
            self.check_cycles(graph, kind)

    def check_rule(self, graph: RoutingGraph, rule: FallbackRule) -> None:
        setting = ("default_fallbacks" if rule.origin == "default_fallbacks"
                   else rule.kind.setting)
        if rule.source != "*" and graph.resolve(rule.source) is None:
            self.problem(rule.where, (
                f"{setting}: fallbacks are set for {rule.source!r}, which no model group,"
                " alias or wildcard group serves"))
        for index, target in enumerate(rule.targets):
            line = rule.target_lines[index] if index < len(rule.target_lines) else None
            where = Where(rule.where.path, line or rule.where.line) if rule.where else None
            if graph.resolve(target) is None:
                self.problem(where, (
                    f"{setting}: {rule.source!r} falls back to {target!r}, which no model group,"
                    " alias or wildcard group serves"))
            elif target == rule.source:
                self.problem(where, f"{setting}: {rule.source!r} falls back to itself",
                             warning=True)

    def check_cycles(self, graph: RoutingGraph, kind: FailureKind) -> None:
        rules = [r for r in graph.policy.rules.get(kind) or () if r.source != "*"]
        edges = {r.source: [t for t in r.targets if t != r.source] for r in rules}
        where = {r.source: r.where for r in rules}
        for cycle in _cycles(edges):
            path = " → ".join([*cycle, cycle[0]])
            self.problem(where[cycle[0]], (
                f"{kind.setting}: fallback cycle {path} (LiteLLM tries each group once per"
                " request, so it ends, but the chain goes round)"), warning=True)

    def check_references(self, graph: RoutingGraph, has_gateway: bool) -> None:
        if self.providers_loaded:
            for name, where in self.provider_refs:
                if name not in self.defined_providers:
                    self.problem(where, f"provider {name!r} is not defined in the providers file")
        if not graph.mappings:
            return
        for mapping in graph.mappings.values():
            if has_gateway:
                for target in mapping.targets:
                    if target.group is not None and graph.resolve(target.group) is None:
                        self.problem(mapping.where, (
                            f"mappings.{mapping.name}: target {target.group!r} is no model"
                            " group, alias or wildcard group of the gateway"))
                for fallback in mapping.fallbacks:
                    if fallback not in graph.mappings and graph.resolve(fallback) is None:
                        self.problem(mapping.where, (
                            f"mappings.{mapping.name}: fallback {fallback!r} is no mapping,"
                            " model group, alias or wildcard group"))
            elif any(f not in graph.mappings for f in mapping.fallbacks) or any(
                    t.group is not None for t in mapping.targets):
                continue
            if not _can_serve(graph, mapping.name, set()):
                self.problem(mapping.where, (
                    f"mappings.{mapping.name}: unreachable: no target or fallback leads to a"
                    " deployment or a provider"))
            if mapping.name in graph.groups or mapping.name in graph.aliases:
                self.problem(mapping.where, (
                    f"mappings.{mapping.name}: has the name of a gateway model group or alias"),
                    warning=True)
        if has_gateway:
            reached = _reached_groups(graph)
            for group in graph.groups.values():
                if group.name not in reached and not group.wildcard:
                    self.problem(group.where, (
                        f"model group {group.name!r} is not reached from any mapping (directly,"
                        " through an alias or through fallbacks)"), warning=True)


def _can_serve(graph: RoutingGraph, name: str, seen: set[str]) -> bool:
    """Whether some target or fallback of a mapping leads to a deployment or a provider."""
    seen.add(name)
    mapping = graph.mappings[name]
    for target in mapping.targets:
        if target.provider is not None and (target.provider in graph.providers
                                             or not graph.has_providers_file):
            return True
        if target.group is not None and _gateway_can_serve(graph, target.group):
            return True
    for fallback in mapping.fallbacks:
        if fallback in graph.mappings:
            if fallback not in seen and _can_serve(graph, fallback, seen):
                return True
        elif _gateway_can_serve(graph, fallback):
            return True
    return False


def _gateway_can_serve(graph: RoutingGraph, name: str) -> bool:
    if not graph.has_gateway_config:
        return True  # not judged without the gateway's config
    chain = graph.expanded_chain(name)
    return any(a.group is not None and graph.groups[a.group].deployment_ids for a in chain)


def _reached_groups(graph: RoutingGraph) -> set[str]:
    """Groups a mapping leads to: targets, fallbacks, aliases, and every fallback chain."""
    reached: set[str] = set()
    names = [t.group for m in graph.mappings.values() for t in m.targets if t.group]
    names += [f for m in graph.mappings.values() for f in m.fallbacks if f not in graph.mappings]
    for name in names:
        for kind in FailureKind:
            reached.update(a.group for a in graph.expanded_chain(name, kind) if a.group)
    return reached


def _cycles(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each cycle of a directed graph once (Tarjan's strongly connected components of more than
    one node, each given as one loop through it from its first node in `edges` order)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    order = {name: i for i, name in enumerate(edges)}

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in edges:
        if node not in index:
            visit(node)
    loops = []
    for component in components:
        members = set(component)
        start = min(component, key=lambda n: order.get(n, len(order)))
        loop = [start]
        while True:
            nxt = next(n for n in edges.get(loop[-1], ()) if n in members)
            if nxt == start or nxt in loop:
                break
            loop.append(nxt)
        loops.append(loop)
    return loops


def litellm_deployment_id(group: str, litellm_params: Mapping[str, Any]) -> str:
    """LiteLLM's id for a deployment without `model_info.id` (`Router.generate_model_id`)."""
    parts = [group]
    for key, value in litellm_params.items():
        parts.append(key if isinstance(key, str) else str(key))
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            parts.append(json.dumps(value, default=lambda v: f"{type(v).__module__}."
                                    f"{type(v).__qualname__}"))
        else:
            parts.append(str(value))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _wildcard_patterns(groups: Mapping[str, ModelGroup]) -> tuple[tuple[str, str], ...]:
    """Wildcard groups as LiteLLM's PatternMatchRouter orders them: longest regex first, then
    the one with more regex characters; ties keep config order."""
    patterns = [(re.escape(name).replace(r"\*", "(.*)"), name)
                for name, group in groups.items() if group.wildcard and group.deployment_ids]

    def specificity(item: tuple[str, str]) -> tuple[int, int]:
        regex = item[0]
        return len(regex), sum(regex.count(c) for c in "*+?\\^$|()")

    return tuple(sorted(patterns, key=specificity, reverse=True))


def _walk_strings(data: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[list[str | int], str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _walk_strings(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _walk_strings(value, (*loc, index))
    elif isinstance(data, str):
        yield list(loc), data


def _python(data: Any) -> Any:
    """ruamel's values as plain Python ones (for hashing as LiteLLM does)."""
    if isinstance(data, dict):
        return {str(key): _python(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_python(value) for value in data]
    if isinstance(data, bool) or data is None:
        return data
    if isinstance(data, int):
        return int(data)
    if isinstance(data, float):
        return float(data)
    return str(data)


def _model_prefix(model: str) -> str | None:
    prefix, _, rest = model.partition("/")
    return prefix if rest and prefix in LITELLM_PROVIDERS else None


def _mock_error(value: Any) -> FailureKind | None:
    if not isinstance(value, str):
        return None
    if value.startswith(_MOCK_CONTENT_POLICY):
        return FailureKind.CONTENT_POLICY
    kind = _MOCK_ERRORS.get(value)
    return FailureKind(kind) if kind else None


def _port(url: Any) -> int | None:
    try:
        return url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:
        return None


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else url


def _mask_url(url: str | None) -> str | None:
    """A URL without user:password (and without a query, where keys sometimes go)."""
    if not url:
        return url
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = "***@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{userinfo}{host}{parts.path}"


# --- live state -------------------------------------------------------------------------------


class LiveState(enum.StrEnum):
    """A deployment's state as the gateway reports it (`litellm_deployment_state`, cooldowns)."""

    HEALTHY = "healthy"
    PARTIAL = "partial"
    OUTAGE = "outage"
    COOLED_DOWN = "cooled_down"
    UNKNOWN = "unknown"

    @property
    def serving(self) -> bool:
        """Whether the router still sends requests to it."""
        return self not in (LiveState.OUTAGE, LiveState.COOLED_DOWN)


@dataclass(frozen=True)
class LiveDeployment:
    deployment_id: str
    state: LiveState
    traffic: float
    active: bool


@dataclass(frozen=True)
class LiveEdge:
    """A route with its traffic in the window (None: no figure for this kind of route)."""

    edge: Edge
    traffic: float | None
    active: bool


@dataclass(frozen=True)
class LiveGraph:
    """The graph overlaid with live state: each node's state, each route's traffic, and where
    requests go now (deployments in outage or cooled down taken as down)."""

    graph: RoutingGraph
    deployments: dict[str, LiveDeployment]
    groups: dict[str, LiveState]
    providers: dict[str, LiveState]
    edges: tuple[LiveEdge, ...]
    now: WhatIf

    @property
    def active_edges(self) -> tuple[LiveEdge, ...]:
        return tuple(edge for edge in self.edges if edge.active)


def overlay(
    graph: RoutingGraph,
    states: Mapping[str, str],
    traffic: Mapping[str, float],
    fallback_traffic: Mapping[tuple[str, str], float] | None = None,
) -> LiveGraph:
    """Overlay deployment states (deployment id -> healthy, partial, outage, cooled_down; e.g.
    `gateway_metrics.deployment_states()`) and per-deployment request counts in the chosen
    window; `fallback_traffic` ((requested group, fallback group) -> count) marks fallback
    routes. A route is active when it carried traffic in the window."""
    fallbacks = fallback_traffic or {}
    live: dict[str, LiveDeployment] = {}
    for key in graph.deployments:
        raw = states.get(key)
        state = LiveState(str(raw)) if raw in set(LiveState) else LiveState.UNKNOWN
        count = float(traffic.get(key, 0.0))
        live[key] = LiveDeployment(key, state, count, count > 0)

    def summary(members: Iterable[str]) -> LiveState:
        known = [live[m].state for m in members if live[m].state is not LiveState.UNKNOWN]
        if not known:
            return LiveState.UNKNOWN
        if all(s is LiveState.HEALTHY for s in known):
            return LiveState.HEALTHY
        if not any(s.serving for s in known):
            return LiveState.OUTAGE
        return LiveState.PARTIAL

    groups = {name: summary(group.deployment_ids) for name, group in graph.groups.items()}
    providers = {name: summary(graph.provider_deployments(name)) for name in graph.providers}
    edges = []
    for edge in graph.edges():
        count: float | None = None
        if edge.kind in ("deployment", "provider"):
            key = (edge.target if edge.kind == "deployment" else edge.source).split(":", 1)[1]
            count = live[key].traffic
        elif edge.kind == "fallback":
            pair = (edge.source.split(":", 1)[1], edge.target.split(":", 1)[1])
            count = float(fallbacks.get(pair, 0.0))
        edges.append(LiveEdge(edge, count, bool(count)))
    down = [key for key, item in live.items() if not item.state.serving]
    return LiveGraph(graph, live, groups, providers, tuple(edges),
                     graph.what_if(graph.down_set(down)))


# --- text -------------------------------------------------------------------------------------


def format_graph(graph: RoutingGraph, model: str | None = None) -> str:
    """The graph as a person reads it: each group's deployments and fallback chains."""
    policy = graph.policy
    retries = "retry" if policy.num_retries == 1 else "retries"
    cooldowns = " (cooldowns disabled)" if policy.disable_cooldowns else ""
    header = (
        f"routing strategy {policy.routing_strategy}, {policy.num_retries} {retries}, cooldown"
        f" {policy.cooldown_time_s:g} s after {policy.allowed_fails} failures{cooldowns},"
        f" at most {policy.max_fallbacks} fallback levels"
        if graph.has_gateway_config else "no LiteLLM config: mappings and providers only"
    )
    lines = [header]
    names = [model] if model else list(graph.groups)
    for name in names:
        if name in graph.mappings and name not in graph.groups:
            lines.extend(_mapping_lines(graph, name))
            continue
        group_name = graph.resolve(name)
        title = name if name == group_name else f"{name} (→ {group_name or 'nothing'})"
        group = graph.groups.get(group_name or "")
        count = len(group.deployment_ids) if group else 0
        lines.append(f"\n{title}: {count} deployment{'s' if count != 1 else ''}"
                     f"{' (wildcard)' if group and group.wildcard else ''}")
        for deployment_id in group.deployment_ids if group else ():
            d = graph.deployments[deployment_id]
            extras = [f"provider {d.provider}"]
            if d.api_base:
                extras.append(d.api_base)
            if d.order is not None:
                extras.append(f"order {d.order}")
            if d.mock_error:
                extras.append(f"mock {d.mock_error.words} error")
            if d.id_source == "litellm":
                extras.append("LiteLLM's id" + ("" if d.id_exact else ", depends on unset vars"))
            lines.append(f"  {deployment_id}  {d.model}  ({', '.join(extras)})")
        lines.extend(_chain_lines(graph, name))
    if not model:
        for alias in graph.aliases.values():
            lines.append(f"\nalias {alias.name} → {alias.target}"
                         f"{' (hidden)' if alias.hidden else ''}")
            lines.extend(_chain_lines(graph, alias.name))
        for name in graph.mappings:
            lines.extend(_mapping_lines(graph, name))
        if graph.providers:
            lines.append("\nproviders")
            for provider in graph.providers.values():
                where = provider.base_url or "-"
                how = "providers file" if provider.defined else "implied by deployments"
                count = len(graph.provider_deployments(provider.name))
                lines.append(f"  {provider.name}  {provider.type}  {where}  ({how},"
                             f" {count} deployment{'s' if count != 1 else ''})")
    return "\n".join(lines)


def _chain_lines(graph: RoutingGraph, name: str) -> list[str]:
    lines = []
    for kind in FailureKind:
        attempts = graph.expanded_chain(name, kind)[1:]
        setting = graph.chain_setting(kind)
        if not attempts:
            if kind is FailureKind.GENERAL:
                lines.append("  on general error: no fallback")
            elif setting == kind.setting:
                lines.append(f"  on {kind.words} error: no fallback ({setting} is set, without"
                             " an entry for it)")
            continue
        note = "" if setting == kind.setting else f" (from {setting})"
        steps = " → ".join(a.name + ("" if a.group else " [nothing serves it]")
                           for a in attempts)
        lines.append(f"  on {kind.words} error{note}: {steps}")
    return lines


def _mapping_lines(graph: RoutingGraph, name: str) -> list[str]:
    mapping = graph.mappings[name]
    lines = [f"\nmapping {name}" + (f": {mapping.description}" if mapping.description else "")]
    lines.append("  targets: " + ", ".join(t.label for t in mapping.targets))
    if mapping.fallbacks:
        lines.append("  fallbacks: " + ", ".join(mapping.fallbacks))
    return lines


def format_what_if(what_if: WhatIf, model: str | None = None) -> str:
    """Where each name's requests go, and which lose service."""
    down = what_if.down
    parts = [f"{label} {', '.join(sorted(items))}" for label, items in (
        ("deployments", down.deployments), ("providers", down.providers),
        ("groups", down.groups)) if items]
    lines = ["down: " + ("; ".join(parts) if parts else "nothing")]
    names = [model] if model else list(what_if.routes)
    width = max((len(n) for n in names), default=0)
    for name in names:
        route = what_if.routes[name]
        tried = ", ".join(a.name for a in route.attempts if a.failure is not None)
        if route.lost:
            lines.append(f"  {name:<{width}}  LOST (tried {tried})")
        elif route.rerouted:
            lines.append(f"  {name:<{width}}  → {route.served_by}"
                         f" [{', '.join(route.deployments)}] (after {tried})")
        else:
            lines.append(f"  {name:<{width}}  {route.served_by} [{', '.join(route.deployments)}]")
    lost = [n for n in what_if.lost if n in names]
    lines.append("lose service: " + (", ".join(lost) if lost else "none"))
    return "\n".join(lines)


def routing_files(settings: Any) -> list[Path]:
    """The files `aidash routes` reads by default: the settings' `routing` section, relative
    to the settings file's folder (the repository's `config/` without one); missing ones are
    left out."""
    base = Path(settings.source_path).parent if settings.source_path else REPO_CONFIG.parent
    names = (settings.routing.litellm_config, settings.routing.providers,
             settings.routing.mappings)
    paths = [base / Path(os.path.expanduser(name)) for name in names]
    return [path for path in paths if path.exists()]
