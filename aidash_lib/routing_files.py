"""The project's own routing files: `providers.yaml` and `model-mappings.yaml` (schemas).

Both are validated with pydantic; every problem is located (`file:line: field: message`) through
`yamlfile.validation_problems`. The schemas are documented in the sample files in `config/` and
in the README's "Routing" section.

providers.yaml::

    providers:
      NAME:                       # letters, digits, '.', '_', '-'
        type: vllm                # ollama | vllm | llama.cpp | openai-compatible | openai |
                                  # anthropic | azure | other
        base_url: http://10.0.0.5:8000/v1   # required for ollama, vllm, llama.cpp,
                                  # openai-compatible
        health: /health           # optional: '/path' on base_url's host, 'path' under base_url,
                                  # or a full URL; default by type; null: no health endpoint
        litellm_providers: [openai]   # optional: deployments with this LiteLLM prefix and no
                                  # api_base belong to this provider (cloud APIs)
        api_key_env: VLLM_API_KEY # optional: the variable that holds its key (never the key)
        description: ...

model-mappings.yaml::

    mappings:
      ALIAS:                      # the name clients ask for
        targets:                  # in order; the first one that can serve, serves
          - gpt-4o-mini           # a name the gateway serves (group, alias, wildcard match)
          - provider: gpu-box     # or a provider of providers.yaml serving `model` itself
            model: llama3.1:8b
        fallbacks: [chat-small]   # optional: other mappings or gateway names, in order
        description: ...
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aidash_lib.yamlfile import Problem, YamlDocument, plain, validation_problems

ProviderType = Literal[
    "ollama", "vllm", "llama.cpp", "openai-compatible", "openai", "anthropic", "azure", "other",
]

#: Types that are servers of one's own: they need a base URL.
LOCAL_TYPES = frozenset({"ollama", "vllm", "llama.cpp", "openai-compatible"})

#: The health endpoint used when `health` is not given ('/x': on the host; 'x': under base_url).
DEFAULT_HEALTH: dict[str, str | None] = {
    "ollama": "/api/version",
    "vllm": "/health",
    "llama.cpp": "/health",
    "openai-compatible": "models",
    "openai": "models",
    "anthropic": None,
    "azure": None,
    "other": None,
}

_M = TypeVar("_M", bound=BaseModel)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSET = "(default)"


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def _check_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSpec(_Strict):
    """One provider: a model server or API behind the gateway."""

    type: ProviderType
    base_url: str | None = None
    health: str | None = _UNSET
    litellm_providers: tuple[str, ...] = ()
    api_key_env: str | None = None
    description: str | None = None

    _url_is_http = field_validator("base_url")(_check_url)

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderSpec:
        if self.type in LOCAL_TYPES and not self.base_url:
            raise ValueError(f"base_url is required for a provider of type {self.type!r}")
        if self.health not in (None, _UNSET) and "://" not in self.health and not self.base_url:
            raise ValueError("a relative health path needs base_url")
        return self

    @property
    def health_url(self) -> str | None:
        """The health endpoint as a full URL, or None when the provider has none."""
        health = DEFAULT_HEALTH[self.type] if self.health == _UNSET else self.health
        if health is None:
            return None
        if "://" in health:
            return health
        if self.base_url is None:
            return None
        if health.startswith("/"):
            scheme, rest = self.base_url.split("://", 1)
            return f"{scheme}://{rest.split('/', 1)[0]}{health}"
        return f"{self.base_url.rstrip('/')}/{health}"


def _provider_name(name: str) -> str:
    return _check_name(name, "provider name")


ProviderName = Annotated[str, AfterValidator(_provider_name)]


class ProvidersFile(_Strict):
    """`providers.yaml`: providers by name."""

    providers: dict[ProviderName, ProviderSpec] = Field(default_factory=dict)


class MappingTarget(_Strict):
    """A mapping's target: a name the gateway serves, or a provider serving a model itself."""

    group: str | None = None
    provider: str | None = None
    model: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> MappingTarget:
        if (self.group is None) == (self.provider is None):
            raise ValueError("give either group, or provider and model")
        if self.provider is not None and not self.model:
            raise ValueError("a provider target needs the model it serves")
        if self.group is not None and self.model is not None:
            raise ValueError("model goes with provider, not with group")
        return self

    @property
    def label(self) -> str:
        return self.group if self.group is not None else f"{self.provider}:{self.model}"


class MappingSpec(_Strict):
    """One mapping: an alias, its ordered targets, and its fallbacks."""

    targets: tuple[MappingTarget, ...] = Field(min_length=1)
    fallbacks: tuple[str, ...] = ()
    description: str | None = None

    @field_validator("targets", mode="before")
    @classmethod
    def _names_are_groups(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return [{"group": item} if isinstance(item, str) else item for item in value]
        return value


class MappingsFile(_Strict):
    """`model-mappings.yaml`: mappings by alias."""

    mappings: dict[str, MappingSpec] = Field(default_factory=dict)

    @field_validator("mappings")
    @classmethod
    def _names(cls, value: dict[str, MappingSpec]) -> dict[str, MappingSpec]:
        for name in value:
            if not name.strip():
                raise ValueError("a mapping needs a name")
        return value


def parse_providers(doc: YamlDocument) -> tuple[ProvidersFile | None, list[Problem]]:
    """The providers file's content, or None and its located problems."""
    return _parse(doc, ProvidersFile, "providers")


def parse_mappings(doc: YamlDocument) -> tuple[MappingsFile | None, list[Problem]]:
    """The mappings file's content, or None and its located problems."""
    return _parse(doc, MappingsFile, "mappings")


def _parse(
    doc: YamlDocument, model: type[_M], key: str,
) -> tuple[_M | None, list[Problem]]:
    data = plain(doc.data)
    if not isinstance(data, dict):
        return None, [Problem(doc.path, 1, f"must be a mapping with a `{key}:` section")]
    if data.get(key) is None:
        data = {**data, key: {}}
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, validation_problems(doc, exc)
