"""LiteLLM's logging payloads and `/spend/logs` rows -> `RequestRecord`, one per attempt.

Pure functions over plain mappings, with the standard library only: they run inside the
gateway's process (through `aidash_lib.gateway_logger`) and in unit tests without LiteLLM.
Only the fields a dashboard needs are read; prompts, responses and keys are never copied.

Where things are in litellm 1.108.7's callback `kwargs` (see shared/fixtures/litellm/README.md):

- `kwargs["standard_logging_object"]` holds the attempt: status, deployment, times, tokens,
  cost, error information. Its `model_group` is the group that *served* the attempt: on a
  fallback that is the fallback's group, not the one the client asked for.
- `kwargs["litellm_params"]["metadata"]` is the router's own metadata. Its
  `original_model_group` is the group the client asked for (the same on the failed primary
  and on every fallback) and `attempted_fallbacks` / `attempted_retries` count what the router
  did before this attempt. Proxy-level errors (unknown model) have neither.

`latency_s` is what the gateway's `litellm_request_total_latency_metric` observes: the
attempt's `endTime - startTime` plus `queue_time_seconds` (from the request's arrival at the
proxy to the start of processing: authentication, pre-call hooks), so percentiles from the
records and from the gateway's histograms measure the same thing.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from aidash_lib.store.schema import RequestRecord

if TYPE_CHECKING:
    from aidash_lib.sources.gateway import SpendLogEntry

__all__ = [
    "HEALTH_CHECK_ALIAS",
    "hash_key_alias",
    "record_from_callback_kwargs",
    "record_from_logging_object",
    "record_from_spend_log",
    "records_from_spend_logs",
    "router_metadata",
    "short_error_message",
]

#: The key alias, team and request tag LiteLLM gives its own `/health` probe calls.
HEALTH_CHECK_ALIAS = "litellm-internal-health-check"

#: Keys of the router's metadata that are copied (everything else there is left alone:
#: it holds the caller's key, headers and the deployment's parameters).
ROUTER_METADATA_KEYS: tuple[str, ...] = (
    "original_model_group", "model_group", "attempted_fallbacks", "attempted_retries", "api_base",
    "queue_time_seconds",
)

_MESSAGE_LIMIT = 300
_KEY_HASH_CHARS = 16
_SECRET_TOKEN = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{4,}")
_MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def hash_key_alias(alias: str | None) -> str | None:
    """A short, stable sha256 digest of a key alias (never the alias or the key itself)."""
    if not alias:
        return None
    return hashlib.sha256(f"aidash-key-alias:{alias}".encode()).hexdigest()[:_KEY_HASH_CHARS]


def short_error_message(text: Any, limit: int = _MESSAGE_LIMIT) -> str | None:
    """The first line of an error, without a traceback, object addresses or key-like tokens."""
    if text is None:
        return None
    first = str(text).split("stack trace:", 1)[0].strip()
    first = first.splitlines()[0].strip() if first else ""
    if not first:
        return None
    first = _SECRET_TOKEN.sub(lambda m: f"{m.group(1)}-…", first)
    first = _MEMORY_ADDRESS.sub("", first)
    return first if len(first) <= limit else first[: limit - 1] + "…"


def router_metadata(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The few router fields of a callback's `kwargs` that a record needs, copied."""
    params = kwargs.get("litellm_params")
    if not isinstance(params, Mapping):
        return {}
    out: dict[str, Any] = {}
    for bucket in ("metadata", "litellm_metadata"):
        meta = params.get(bucket)
        if isinstance(meta, Mapping):
            for key in ROUTER_METADATA_KEYS:
                if key not in out and meta.get(key) is not None:
                    out[key] = meta[key]
    return out


def record_from_callback_kwargs(kwargs: Mapping[str, Any]) -> RequestRecord | None:
    """The record of one callback event; None when it carries no logging payload."""
    slo = kwargs.get("standard_logging_object")
    if not isinstance(slo, Mapping):
        return None
    return record_from_logging_object(
        slo, router=router_metadata(kwargs), call_id=_text(kwargs.get("litellm_call_id")),
    )


def record_from_logging_object(
    slo: Mapping[str, Any],
    router: Mapping[str, Any] | None = None,
    *,
    call_id: str | None = None,
) -> RequestRecord:
    """One `StandardLoggingPayload` (plus the router's metadata, if known) as a record."""
    router = router or {}
    metadata = _mapping(slo.get("metadata"))
    hidden = _mapping(slo.get("hidden_params"))
    headers = _mapping(hidden.get("additional_headers"))
    error = _mapping(slo.get("error_information"))

    started = _number(slo.get("startTime"))
    ended = _number(slo.get("endTime"))
    first_token = _number(slo.get("completionStartTime"))
    latency = ended - started if started is not None and ended is not None else None
    if latency is None or latency < 0:
        latency = _number(slo.get("response_time"))
    queued = _number(router.get("queue_time_seconds"))
    if latency is not None and queued is not None and queued > 0:
        latency += queued  # as litellm_request_total_latency_metric: arrival to end
    if started is None:
        started = ended if ended is not None else time.time()
    if ended is None or ended < started:
        ended = started
    stream = slo.get("stream") is True
    ttft = None
    # LiteLLM sets completionStartTime to endTime when no first chunk was timed.
    if stream and first_token is not None and started <= first_token < ended:
        ttft = first_token - started

    deployment = _text(slo.get("model_id")) or _text(hidden.get("model_id"))
    alias = _text(metadata.get("user_api_key_alias"))
    status = _text(slo.get("status")) or "failure"
    failed = status != "success"
    message = error.get("error_message") or slo.get("error_str")

    return RequestRecord(
        call_id=(_text(slo.get("litellm_call_id")) or call_id or _text(slo.get("id"))
                 or str(uuid.uuid4())),
        started_s=started,
        ended_s=ended,
        requested_group=_requested_group(slo, router, deployment),
        deployment_id=deployment,
        model=_text(slo.get("model")),
        provider=_text(slo.get("custom_llm_provider")) or _text(error.get("llm_provider")),
        api_base=(_clean_url(slo.get("api_base")) or _clean_url(hidden.get("api_base"))
                  or _clean_url(router.get("api_base"))),
        status=status,
        latency_s=latency,
        ttft_s=ttft,
        prompt_tokens=_count(slo.get("prompt_tokens")),
        completion_tokens=_count(slo.get("completion_tokens")),
        cost_usd=_number(slo.get("response_cost")) or 0.0,
        error_class=(_text(error.get("error_class")) or None) if failed else None,
        error_code=(_text(error.get("error_code")) or None) if failed else None,
        normalized_error=(_text(error.get("normalized_error")) or None) if failed else None,
        error_message=short_error_message(message) if failed else None,
        attempted_fallbacks=_first_count(
            router.get("attempted_fallbacks"), headers.get("x-litellm-attempted-fallbacks")),
        attempted_retries=_first_count(
            router.get("attempted_retries"), headers.get("x-litellm-attempted-retries")),
        cache_hit=slo.get("cache_hit") if isinstance(slo.get("cache_hit"), bool) else None,
        stream=stream,
        call_type=_text(slo.get("call_type")),
        key_alias_hash=hash_key_alias(alias),
        is_health_check=_is_health_check(slo, metadata),
        source="logger",
    )


def record_from_spend_log(entry: SpendLogEntry) -> RequestRecord:
    """One `/spend/logs` row (the gateway's database) as a record.

    The database keeps one row per request, not per attempt: `requested_group` is the group
    that served it, and no error, time to first token or fallback count is known.
    """
    started = entry.started_at if entry.started_at is not None else entry.ended_at
    if started is None:
        started = time.time()
    ended = entry.ended_at if entry.ended_at is not None else started
    latency = entry.duration_s if entry.duration_s is not None else max(ended - started, 0.0)
    status = (entry.status or "success").lower()
    return RequestRecord(
        call_id=entry.request_id,
        started_s=started,
        ended_s=ended,
        requested_group=entry.model_group,
        deployment_id=entry.model_id,
        model=entry.model,
        provider=entry.provider,
        api_base=_clean_url(entry.api_base),
        status="success" if status == "success" else "failure",
        latency_s=latency,
        prompt_tokens=entry.prompt_tokens,
        completion_tokens=entry.completion_tokens,
        cost_usd=entry.spend_usd,
        cache_hit=entry.cache_hit,
        call_type=entry.call_type,
        is_health_check=HEALTH_CHECK_ALIAS in entry.request_tags,
        source="spend_logs",
    )


def records_from_spend_logs(entries: Iterable[SpendLogEntry]) -> Iterator[RequestRecord]:
    """`record_from_spend_log` over many rows."""
    return (record_from_spend_log(entry) for entry in entries)


def _requested_group(
    slo: Mapping[str, Any], router: Mapping[str, Any], deployment: str | None,
) -> str | None:
    original = _text(router.get("original_model_group"))
    if original:
        return original
    served = _text(slo.get("model_group")) or _text(router.get("model_group"))
    if served:
        return served
    # A proxy-level error (unknown model) never reached the router: `model` is what was asked.
    if not deployment and not _is_health_check(slo, _mapping(slo.get("metadata"))):
        return _text(slo.get("model"))
    return None


def _is_health_check(slo: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    if HEALTH_CHECK_ALIAS in (metadata.get("user_api_key_alias"),
                              metadata.get("user_api_key_team_id")):
        return True
    tags = slo.get("request_tags")
    return isinstance(tags, list | tuple) and HEALTH_CHECK_ALIAS in tags


def _clean_url(value: Any) -> str | None:
    """A base URL without credentials or query (some providers take a key in the query)."""
    text = _text(value)
    return _clean_url_text(text) if text else None


@functools.lru_cache(maxsize=512)
def _clean_url_text(text: str) -> str | None:
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return text if "@" not in text and "?" not in text else None
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _count(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None and number > 0 else 0


def _first_count(*values: Any) -> int:
    for value in values:
        if _number(value) is not None:
            return _count(value)
    return 0
