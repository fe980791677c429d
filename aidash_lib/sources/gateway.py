"""The LiteLLM proxy (the gateway): liveness, readiness, models, routing, metrics, health.

Shapes are those of litellm 1.108.7 (see `shared/fixtures/litellm/README.md`). Every method
returns a `Reading`; faults of the gateway (down, slow, an error status, an odd payload) are
values, never exceptions. The key is sent as a bearer token and never shown: `repr` masks it and
fault messages are scrubbed of it. Credentials in `/model/info` are dropped, not masked.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx

from aidash_lib.sources.base import (
    DEFAULT_TIMEOUT,
    Fault,
    FaultKind,
    HttpAnswer,
    Reading,
    http_get,
    http_get_json,
    malformed,
    server_message,
)
from aidash_lib.sources.gateway_metrics import (
    OPERATOR_FAMILIES,
    DeploymentState,
    GatewayMetrics,
    HistogramBuckets,
    MetricSample,
    deployment_states,
    parse_metrics,
)

__all__ = [
    "OPERATOR_FAMILIES",
    "Deployment",
    "DeploymentState",
    "GatewayLiveliness",
    "GatewayMetrics",
    "GatewayReadiness",
    "GatewaySource",
    "HealthCheck",
    "HealthEndpoint",
    "HistogramBuckets",
    "MetricSample",
    "ModelGroup",
    "RouterSettings",
    "SpendLogEntry",
    "deployment_states",
    "mask_key",
    "parse_metrics",
]

SOURCE = "gateway"
KEY_HINT = "set AIDASH_GATEWAY_KEY (or LITELLM_MASTER_KEY) to the gateway's master key"
_ERROR_LIMIT = 300

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class GatewayLiveliness:
    """`/health/liveliness`: the process answers HTTP."""

    alive: bool
    message: str


@dataclass(frozen=True)
class GatewayReadiness:
    """`/health/readiness`, and with a key `/health/readiness/details`."""

    status: str
    healthy: bool
    db: str
    db_connected: bool
    litellm_version: str | None = None
    success_callbacks: tuple[str, ...] = ()
    cache: str | None = None
    details_error: str | None = None  # why the details are missing (no key, refused, ...)


@dataclass(frozen=True)
class ModelGroup:
    """One entry of `/v1/models`: a public model name, which may have several deployments."""

    name: str
    mode: str | None = None
    owned_by: str | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Deployment:
    """One deployment of `/model/info`, without any credential."""

    group: str
    deployment_id: str
    provider: str | None
    model: str
    api_base: str | None = None
    api_version: str | None = None
    mode: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_tokens: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    input_cost_per_token_usd: float | None = None
    output_cost_per_token_usd: float | None = None
    is_mock: bool = False
    params: tuple[tuple[str, Scalar], ...] = ()  # other scalar litellm_params, credentials dropped


@dataclass(frozen=True)
class RouterSettings:
    """`/router/settings` current values; fallbacks as group -> fallback groups, in order."""

    routing_strategy: str | None
    num_retries: int | None
    allowed_fails: int | None
    cooldown_time_s: float | None
    timeout_s: float | None = None
    retry_after_s: float | None = None
    max_fallbacks: int | None = None
    enable_pre_call_checks: bool | None = None
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    context_window_fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    content_policy_fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_fallbacks: tuple[str, ...] = ()
    model_group_alias: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthEndpoint:
    """One deployment's result in an explicit `/health` check."""

    model: str
    model_id: str | None
    healthy: bool
    api_base: str | None = None
    error: str | None = None  # the first line of LiteLLM's error, no stack trace
    exception_status: int | None = None


@dataclass(frozen=True)
class HealthCheck:
    """An explicit `/health` check: LiteLLM really called each deployment."""

    model: str | None
    healthy_endpoints: tuple[HealthEndpoint, ...]
    unhealthy_endpoints: tuple[HealthEndpoint, ...]

    @property
    def healthy_count(self) -> int:
        return len(self.healthy_endpoints)

    @property
    def unhealthy_count(self) -> int:
        return len(self.unhealthy_endpoints)


@dataclass(frozen=True)
class SpendLogEntry:
    """One row of `/spend/logs` (needs the gateway's database). Times are epoch seconds."""

    request_id: str
    call_type: str | None = None
    model: str | None = None
    model_group: str | None = None
    model_id: str | None = None
    provider: str | None = None
    api_base: str | None = None
    spend_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    user: str | None = None
    team_id: str | None = None
    end_user: str | None = None
    status: str | None = None
    cache_hit: bool | None = None
    request_tags: tuple[str, ...] = ()


def mask_key(key: str | None) -> str:
    """A key as it may be shown: its first four characters at most."""
    if not key:
        return "None"
    return f"{key[:4]}…" if len(key) >= 12 else "***"


class _Secret:
    """Holds the key so that no repr, vars() dump or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return mask_key(self._value)


class GatewaySource:
    """Reads one LiteLLM proxy. Cheap endpoints may be polled; `health_check` may not."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        health_check_min_interval_s: float = 60.0,
    ) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        self._key = _Secret(api_key) if api_key else None
        self.timeout = timeout
        self.health_check_min_interval_s = health_check_min_interval_s
        self._last_health_check: float | None = None

    def __repr__(self) -> str:
        key = mask_key(self._key.reveal()) if self._key else None
        return f"GatewaySource(base_url={self.base_url!r}, api_key={key!r})"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    async def liveliness(self) -> Reading[GatewayLiveliness]:
        """`/health/liveliness` (no auth): is the process up at all."""
        started = time.time()
        answer = await self._get("/health/liveliness", auth=False)
        if isinstance(answer, Fault):
            return self._failed("liveliness", answer, started)
        try:
            body = answer.json()
        except ValueError:
            body = answer.text
        message = body if isinstance(body, str) else answer.text
        return Reading.success(f"{SOURCE}.liveliness", GatewayLiveliness(True, message.strip()),
                               started)

    async def readiness(self) -> Reading[GatewayReadiness]:
        """`/health/readiness`; with a key also the version, callbacks and cache from
        `/health/readiness/details`. Missing details do not fail the reading."""
        started = time.time()
        url = self._url("/health/readiness")
        body = await http_get_json(self._client, url, timeout=self.timeout)
        if isinstance(body, Fault):
            return self._failed("readiness", body, started)
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            return self._failed("readiness", malformed(url, "expected {status, db}"), started)
        details: Any = None
        details_error: str | None = f"no key: {KEY_HINT}"
        if self.has_key:
            details = await self._get_json("/health/readiness/details")
            details_error = None
            if isinstance(details, Fault):
                details_error = str(self._explain(details))
                details = None
            elif not isinstance(details, dict):
                details_error = "details were not a JSON object"
                details = None
        merged = {**body, **(details or {})}
        status = str(merged.get("status"))
        db = str(merged.get("db", "unknown"))
        callbacks = merged.get("success_callbacks") or ()
        return Reading.success(f"{SOURCE}.readiness", GatewayReadiness(
            status=status,
            healthy=status.lower() == "healthy",
            db=db,
            db_connected=db.lower() == "connected",
            litellm_version=_opt_str(merged.get("litellm_version")),
            success_callbacks=tuple(str(c) for c in callbacks) if isinstance(callbacks, list)
            else (),
            cache=_cache_name(merged.get("cache")),
            details_error=details_error,
        ), started)

    async def model_groups(self) -> Reading[tuple[ModelGroup, ...]]:
        """`/v1/models`: one entry per public model name (group), not per deployment."""
        started = time.time()
        items = await self._get_data_list("/v1/models")
        if isinstance(items, Fault):
            return self._failed("model_groups", items, started)
        groups = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                return self._failed("model_groups", malformed(
                    self._url("/v1/models"), "a model entry has no string 'id'"), started)
            groups.append(ModelGroup(
                name=item["id"],
                mode=_opt_str(item.get("mode")),
                owned_by=_opt_str(item.get("owned_by")),
                max_input_tokens=_opt_int(item.get("max_input_tokens")),
                max_output_tokens=_opt_int(item.get("max_output_tokens")),
            ))
        return Reading.success(f"{SOURCE}.model_groups", tuple(groups), started)

    async def deployments(self) -> Reading[tuple[Deployment, ...]]:
        """`/model/info`: every deployment with its limits and prices, credentials dropped."""
        started = time.time()
        items = await self._get_data_list("/model/info")
        if isinstance(items, Fault):
            return self._failed("deployments", items, started)
        out = []
        for item in items:
            deployment = _deployment(item)
            if deployment is None:
                return self._failed("deployments", malformed(
                    self._url("/model/info"),
                    "a deployment lacks model_name, litellm_params.model or model_info.id",
                ), started)
            out.append(deployment)
        return Reading.success(f"{SOURCE}.deployments", tuple(out), started)

    async def router_settings(self) -> Reading[RouterSettings]:
        """`/router/settings`: strategy, retries, cooldowns and fallback chains."""
        started = time.time()
        url = self._url("/router/settings")
        body = await self._get_json("/router/settings")
        if isinstance(body, Fault):
            return self._failed("router_settings", body, started)
        values = body.get("current_values") if isinstance(body, dict) else None
        if not isinstance(values, dict):
            return self._failed("router_settings", malformed(url, "no 'current_values' object"),
                                started)
        try:
            settings = RouterSettings(
                routing_strategy=_opt_str(values.get("routing_strategy")),
                num_retries=_opt_int(values.get("num_retries")),
                allowed_fails=_opt_int(values.get("allowed_fails")),
                cooldown_time_s=_opt_float(values.get("cooldown_time")),
                timeout_s=_opt_float(values.get("timeout")),
                retry_after_s=_opt_float(values.get("retry_after")),
                max_fallbacks=_opt_int(values.get("max_fallbacks")),
                enable_pre_call_checks=_opt_bool(values.get("enable_pre_call_checks")),
                fallbacks=_fallbacks(values.get("fallbacks")),
                context_window_fallbacks=_fallbacks(values.get("context_window_fallbacks")),
                content_policy_fallbacks=_fallbacks(values.get("content_policy_fallbacks")),
                default_fallbacks=_names(values.get("default_fallbacks")),
                model_group_alias=_aliases(values.get("model_group_alias")),
            )
        except (TypeError, ValueError) as exc:
            return self._failed("router_settings", malformed(url, str(exc)), started)
        return Reading.success(f"{SOURCE}.router_settings", settings, started)

    async def metrics(self) -> Reading[GatewayMetrics]:
        """`/metrics/` parsed (in a worker thread: a busy gateway exposes ~400 KB)."""
        started = time.time()
        answer = await self._get("/metrics/")
        if isinstance(answer, Fault):
            if answer.status_code == 404:
                answer = Fault(FaultKind.HTTP_STATUS, "the gateway serves no /metrics: add "
                               '"prometheus" to litellm_settings.callbacks', answer.url, 404)
            return self._failed("metrics", answer, started)
        try:
            parsed = await asyncio.to_thread(parse_metrics, answer.text)
        except Exception as exc:  # the parser raises several types on foreign text
            return self._failed("metrics", malformed(
                self._url("/metrics/"), f"not Prometheus text ({type(exc).__name__}: {exc})"[:200],
            ), started)
        if not parsed.all_samples and "litellm_" not in answer.text:
            return self._failed("metrics", malformed(
                self._url("/metrics/"), "no LiteLLM metrics in the answer"), started)
        return Reading.success(f"{SOURCE}.metrics", parsed, started)

    async def health_check(self, model: str | None = None) -> Reading[HealthCheck]:
        """An explicit `/health`: LiteLLM calls every deployment (or those of `model`) for
        real, which costs provider requests. Never call it on a timer: a second call within
        `health_check_min_interval_s` is refused here, without reaching the gateway."""
        started = time.time()
        source = f"{SOURCE}.health_check"
        url = self._url("/health")
        now = time.monotonic()
        if self._last_health_check is not None:
            wait_s = self.health_check_min_interval_s - (now - self._last_health_check)
            if wait_s > 0:
                again_s = max(1, round(wait_s))
                return Reading.failure(source, Fault(
                    FaultKind.RATE_LIMITED,
                    f"a health check calls every deployment; try again in {again_s} s", url,
                ), started)
        self._last_health_check = now
        params = {"model": model} if model else None
        answer = await self._get("/health", params=params, allow_status=(503,))
        if isinstance(answer, Fault):
            if answer.kind is FaultKind.UNREACHABLE:  # no deployment was called: no need to wait
                self._last_health_check = None
            return self._failed("health_check", answer, started)
        try:
            body = answer.json()
        except ValueError:
            return self._failed("health_check", malformed(url, "not JSON"), started)
        check = _health_check(body, model)
        if check is None:
            return self._failed("health_check", malformed(
                url, "expected {healthy_endpoints, unhealthy_endpoints}"), started)
        if answer.status_code == 503 and not check.healthy_endpoints \
                and not check.unhealthy_endpoints:
            return self._failed("health_check", Fault(
                FaultKind.HTTP_STATUS, f"the gateway has no deployment for model {model!r}",
                url, 503), started)
        return Reading.success(source, check, started)

    async def spend_logs(
        self,
        *,
        start_date: date | str | None = None,
        end_date: date | str | None = None,
        request_id: str | None = None,
        user_id: str | None = None,
    ) -> Reading[tuple[SpendLogEntry, ...]]:
        """`/spend/logs`, newest first (LiteLLM caps it at 10,000 rows). Needs the gateway's
        database: without one the reading is NOT_AVAILABLE. Dates are whole days (UTC)."""
        if (start_date is None) != (end_date is None):
            raise ValueError("give both start_date and end_date, or neither")
        started = time.time()
        url = self._url("/spend/logs")
        params: dict[str, str] = {}
        if start_date is not None and end_date is not None:
            params = {"start_date": _day(start_date), "end_date": _day(end_date),
                      "summarize": "false"}
        if request_id:
            params["request_id"] = request_id
        if user_id:
            params["user_id"] = user_id
        body = await self._get_json("/spend/logs", params=params or None)
        if isinstance(body, Fault):
            if body.kind is FaultKind.HTTP_STATUS and _NO_DB.search(body.message):
                body = Fault(FaultKind.NOT_AVAILABLE,
                             "the gateway has no database; spend logs need one", url,
                             body.status_code)
            return self._failed("spend_logs", body, started)
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            body = body["data"]
        if not isinstance(body, list):
            return self._failed("spend_logs", malformed(url, "expected a list of rows"), started)
        rows = []
        for row in body:
            entry = _spend_entry(row)
            if entry is None:
                return self._failed("spend_logs", malformed(url, "a row has no request_id"),
                                    started)
            rows.append(entry)
        return Reading.success(f"{SOURCE}.spend_logs", tuple(rows), started)

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _headers(self) -> dict[str, str] | None:
        return {"Authorization": f"Bearer {self._key.reveal()}"} if self._key else None

    async def _get(
        self,
        path: str,
        *,
        params: dict[str, str] | None = None,
        auth: bool = True,
        allow_status: tuple[int, ...] = (),
    ) -> HttpAnswer | Fault:
        """GET with the key; statuses in `allow_status` come back as answers, not faults."""
        if not allow_status:
            return await http_get(self._client, self._url(path), params=params,
                                  headers=self._headers() if auth else None, timeout=self.timeout)
        url = self._url(path)
        try:
            response = await self._client.get(
                url, params=params, headers=self._headers() if auth else None,
                timeout=self.timeout, follow_redirects=True,
            )
        except httpx.TimeoutException as exc:
            return Fault(FaultKind.TIMEOUT, f"no answer in time ({type(exc).__name__})", url)
        except httpx.TransportError as exc:
            text = str(exc) or type(exc).__name__
            refused = "Connection refused" in text or "Errno 111" in text
            return Fault(FaultKind.UNREACHABLE, "connection refused" if refused else text, url)
        if response.status_code >= 400 and response.status_code not in allow_status:
            return Fault(FaultKind.HTTP_STATUS, server_message(response), url,
                         response.status_code)
        return HttpAnswer(response.status_code, response.text, dict(response.headers))

    async def _get_json(self, path: str, *, params: dict[str, str] | None = None) -> Any:
        return await http_get_json(self._client, self._url(path), params=params,
                                   headers=self._headers(), timeout=self.timeout)

    async def _get_data_list(self, path: str) -> list[Any] | Fault:
        body = await self._get_json(path)
        if isinstance(body, Fault):
            return body
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return malformed(self._url(path), "expected {data: [...]}")
        return body["data"]

    def _explain(self, fault: Fault) -> Fault:
        """Say what an operator can do about auth faults; scrub the key from every message."""
        message = fault.message
        if fault.status_code == 401:
            message = (f"the gateway needs a key: {KEY_HINT} ({message})" if not self.has_key
                       else f"the gateway refused the key ({message})")
        elif fault.status_code == 400 and self.has_key and "no connected db" in message.lower():
            message = ("the gateway does not know this key; without a database only its master "
                       f"key works ({message})")
        return Fault(fault.kind, self._scrub(message), fault.url, fault.status_code)

    def _failed(self, what: str, fault: Fault, started: float) -> Reading[Any]:
        return Reading.failure(f"{SOURCE}.{what}", self._explain(fault), started)

    def _scrub(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key.reveal(), repr(self._key))
        return _SK_KEY.sub("sk-…", text)


_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{4,}")
_NO_DB = re.compile(r"(database|\bdb\b) not (connected|initiali[sz]ed)|no (connected )?db"
                    r"|prisma client is not initiali[sz]ed", re.IGNORECASE)
_CREDENTIAL_NAME = re.compile(r"key|secret|token|credential|passw|auth|cert|private|signature"
                              r"|session|cookie|bearer", re.IGNORECASE)
_TYPED_PARAMS = frozenset({"model", "api_base", "api_version", "rpm", "tpm", "mock_response"})


def _deployment(item: Any) -> Deployment | None:
    if not isinstance(item, dict):
        return None
    params = item.get("litellm_params") or {}
    info = item.get("model_info") or {}
    if not isinstance(params, dict) or not isinstance(info, dict):
        return None
    group, model, deployment_id = item.get("model_name"), params.get("model"), info.get("id")
    if not (isinstance(group, str) and isinstance(model, str) and deployment_id is not None):
        return None
    provider = _opt_str(info.get("litellm_provider")) or (
        model.split("/", 1)[0] if "/" in model else None)
    return Deployment(
        group=group,
        deployment_id=str(deployment_id),
        provider=provider,
        model=model,
        api_base=_clean_url(params.get("api_base")),
        api_version=_opt_str(params.get("api_version")),
        mode=_opt_str(info.get("mode")),
        rpm_limit=_opt_int(params.get("rpm", info.get("rpm"))),
        tpm_limit=_opt_int(params.get("tpm", info.get("tpm"))),
        max_tokens=_opt_int(info.get("max_tokens")),
        max_input_tokens=_opt_int(info.get("max_input_tokens")),
        max_output_tokens=_opt_int(info.get("max_output_tokens")),
        input_cost_per_token_usd=_opt_float(info.get("input_cost_per_token")),
        output_cost_per_token_usd=_opt_float(info.get("output_cost_per_token")),
        is_mock=params.get("mock_response") is not None,
        params=tuple(sorted(
            (name, value) for name, value in params.items()
            if name not in _TYPED_PARAMS and not _CREDENTIAL_NAME.search(name)
            and _is_safe_scalar(value)
        )),
    )


def _is_safe_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return not (value.startswith(("sk-", "Bearer ")) or _SK_KEY.search(value))
    return value is None or isinstance(value, bool | int | float)


def _clean_url(value: Any) -> str | None:
    """A URL without user info or query string, where credentials sometimes hide."""
    if not isinstance(value, str) or not value:
        return None
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        return None
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _fallbacks(value: Any) -> dict[str, tuple[str, ...]]:
    """LiteLLM's `[{group: [fallback, ...]}, ...]` (or a plain mapping) to one ordered dict."""
    if value is None:
        return {}
    entries = value if isinstance(value, list) else [value]
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise TypeError(f"a fallback entry is {type(entry).__name__}, not a mapping")
        for group, targets in entry.items():
            out[str(group)] = out.get(str(group), ()) + _names(targets)
    return out


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise TypeError(f"expected a list of model names, got {type(value).__name__}")


def _aliases(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for alias, target in value.items():
        if isinstance(target, dict):
            target = target.get("model")
        if target is not None:
            out[str(alias)] = str(target)
    return out


def _health_check(body: Any, model: str | None) -> HealthCheck | None:
    if not isinstance(body, dict):
        return None
    healthy, unhealthy = body.get("healthy_endpoints"), body.get("unhealthy_endpoints")
    if not isinstance(healthy, list) or not isinstance(unhealthy, list):
        return None
    return HealthCheck(
        model=model,
        healthy_endpoints=tuple(_endpoint(e, True) for e in healthy if isinstance(e, dict)),
        unhealthy_endpoints=tuple(_endpoint(e, False) for e in unhealthy if isinstance(e, dict)),
    )


def _endpoint(entry: dict[str, Any], healthy: bool) -> HealthEndpoint:
    return HealthEndpoint(
        model=str(entry.get("model", "")),
        model_id=_opt_str(entry.get("model_id")),
        healthy=healthy,
        api_base=_clean_url(entry.get("api_base")),
        error=None if healthy else _first_line(entry.get("error")),
        exception_status=_opt_int(entry.get("exception_status")),
    )


def _first_line(error: Any, limit: int = _ERROR_LIMIT) -> str | None:
    """The first line of an error text, without LiteLLM's appended stack trace."""
    if error is None:
        return None
    text = str(error).split("stack trace:", 1)[0].strip()
    text = text.splitlines()[0].strip() if text else ""
    text = _SK_KEY.sub("sk-…", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _spend_entry(row: Any) -> SpendLogEntry | None:
    if not isinstance(row, dict) or not row.get("request_id"):
        return None
    started_at, ended_at = _epoch(row.get("startTime")), _epoch(row.get("endTime"))
    duration_ms = _opt_float(row.get("request_duration_ms"))
    if duration_ms is None and started_at is not None and ended_at is not None:
        duration_ms = (ended_at - started_at) * 1000.0
    tags = row.get("request_tags")
    cache_hit = row.get("cache_hit")
    return SpendLogEntry(
        request_id=str(row["request_id"]),
        call_type=_opt_str(row.get("call_type")),
        model=_opt_str(row.get("model")) or None,
        model_group=_opt_str(row.get("model_group")) or None,
        model_id=_opt_str(row.get("model_id")) or None,
        provider=_opt_str(row.get("custom_llm_provider")) or None,
        api_base=_clean_url(row.get("api_base")),
        spend_usd=_opt_float(row.get("spend")) or 0.0,
        prompt_tokens=_opt_int(row.get("prompt_tokens")) or 0,
        completion_tokens=_opt_int(row.get("completion_tokens")) or 0,
        total_tokens=_opt_int(row.get("total_tokens")) or 0,
        started_at=started_at,
        ended_at=ended_at,
        duration_s=duration_ms / 1000.0 if duration_ms is not None else None,
        user=_opt_str(row.get("user")) or None,
        team_id=_opt_str(row.get("team_id")),
        end_user=_opt_str(row.get("end_user")) or None,
        status=_opt_str(row.get("status")),
        cache_hit=(str(cache_hit).lower() == "true") if cache_hit not in (None, "") else None,
        request_tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
    )


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # LiteLLM stores UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _day(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _cache_name(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("type", value)
    return str(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _opt_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
