"""Readings, faults and the one HTTP helper every source shares.

A source never raises for a fault of the outside world: it returns a `Reading` whose `fault`
says why there is no value (unreachable, timeout, HTTP status, malformed payload...). Every
reading is stamped with the time it was taken, so a panel can say how old its data is.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

T = TypeVar("T")

#: Default timeouts for calls to monitored servers: fail fast, a dashboard must not hang.
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class FaultKind(enum.StrEnum):
    """Why a reading has no value."""

    UNREACHABLE = "unreachable"  # connection refused, DNS, reset
    TIMEOUT = "timeout"  # connected (or not) but no answer in time
    HTTP_STATUS = "http_status"  # the server answered with an error status
    MALFORMED = "malformed"  # the server answered 2xx but the payload is not what we expect
    NOT_AVAILABLE = "not_available"  # the thing does not exist here (no GPU, no database, no key)
    RATE_LIMITED = "rate_limited"  # we refused to call it again so soon (explicit /health)
    QUERY_ERROR = "query_error"  # the server understood the call and refused the query (PromQL)


@dataclass(frozen=True)
class Fault:
    """Why a source could not produce its value, in words an operator can act on."""

    kind: FaultKind
    message: str
    url: str | None = None
    status_code: int | None = None

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        status = f"HTTP {self.status_code}: " if self.status_code is not None else ""
        return f"{self.kind.value}{where}: {status}{self.message}"


@dataclass(frozen=True)
class Reading(Generic[T]):
    """One observation of one source: a value, or a fault, at a time.

    `taken_at` is seconds since the epoch (UTC) when the reading was completed;
    `elapsed_s` is how long it took to obtain.
    """

    source: str
    taken_at: float
    value: T | None = None
    fault: Fault | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.fault is None

    @classmethod
    def success(cls, source: str, value: T, started: float | None = None) -> Reading[T]:
        now = time.time()
        return cls(source, now, value=value, elapsed_s=_elapsed(started, now))

    @classmethod
    def failure(cls, source: str, fault: Fault, started: float | None = None) -> Reading[T]:
        now = time.time()
        return cls(source, now, fault=fault, elapsed_s=_elapsed(started, now))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their values)."""
        return to_jsonable(self)


def _elapsed(started: float | None, now: float) -> float:
    return round(now - started, 6) if started is not None else 0.0


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, tuples and mappings to plain JSON types, recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Reading):
            out["ok"] = obj.ok
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


@dataclass(frozen=True)
class HttpAnswer:
    """A successful HTTP exchange: status 2xx, the body as text and, if it parsed, as JSON."""

    status_code: int
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.text)


def server_message(response: httpx.Response, limit: int = 300) -> str:
    """The server's own words for an error response, shortened to one readable line."""
    text = response.text.strip()
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            inner = body.get(key)
            if isinstance(inner, dict):
                inner = inner.get("message") or inner.get("error") or inner
            if inner:
                text = inner if isinstance(inner, str) else json.dumps(inner)
                break
    elif isinstance(body, str):
        text = body
    text = " ".join(text.split())
    if not text:
        text = response.reason_phrase or "no message"
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def http_get(
    client: httpx.AsyncClient,
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | float | None = None,
    method: str = "GET",
) -> HttpAnswer | Fault:
    """One HTTP call that never raises for the outside world's faults.

    Returns the answer when the status is 2xx, else a `Fault` naming the URL and the reason.
    Redirects are followed (LiteLLM redirects `/metrics` to `/metrics/`).
    """
    try:
        response = await client.request(
            method,
            url,
            params=params,
            headers=headers,
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
            follow_redirects=True,
        )
    except httpx.TimeoutException as exc:
        return Fault(FaultKind.TIMEOUT, f"no answer in time ({type(exc).__name__})", url=url)
    except httpx.TransportError as exc:
        return Fault(FaultKind.UNREACHABLE, _transport_message(exc), url=url)
    if response.status_code >= 400:
        return Fault(
            FaultKind.HTTP_STATUS, server_message(response), url=url,
            status_code=response.status_code,
        )
    return HttpAnswer(response.status_code, response.text, dict(response.headers))


def _transport_message(exc: httpx.TransportError) -> str:
    """The root cause in plain words: anyio wraps a refusal in "All connection attempts
    failed", so walk the chain of causes for the operating system's own error."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"host name not resolved ({cause.strerror})"
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    return "connection refused" if "Errno 111" in text else text


async def http_get_json(
    client: httpx.AsyncClient,
    url: str,
    **kwargs: Any,
) -> Any | Fault:
    """`http_get`, then JSON: a body that does not parse is a MALFORMED fault."""
    answer = await http_get(client, url, **kwargs)
    if isinstance(answer, Fault):
        return answer
    try:
        return answer.json()
    except ValueError as exc:
        preview = " ".join(answer.text[:80].split())
        return Fault(FaultKind.MALFORMED, f"not JSON ({exc.msg}): {preview!r}", url=url)


@dataclass(frozen=True)
class ServerStatus:
    """What a server's readiness endpoint said: ready or not, in its own words.

    A 503 answer is not a fault: the server is up and says it is not ready yet (Prometheus
    while it replays its WAL, for instance).
    """

    ready: bool
    message: str
    url: str


async def server_ready(
    client: httpx.AsyncClient, source: str, base_url: str, timeout: httpx.Timeout | float
) -> Reading[ServerStatus]:
    """Read a Prometheus-style `/-/ready` endpoint (Prometheus, Alertmanager)."""
    started = time.time()
    url = f"{base_url}/-/ready"
    answer = await http_get(client, url, timeout=timeout)
    if isinstance(answer, Fault):
        if answer.status_code == 503:
            return Reading.success(source, ServerStatus(False, answer.message, url), started)
        return Reading.failure(source, answer, started)
    message = " ".join(answer.text.split()) or "ready"
    return Reading.success(source, ServerStatus(True, message, url), started)


class PrometheusStyleServer:
    """A server of the Prometheus family (Prometheus, Alertmanager): a base URL, a client, a
    timeout, and `/-/ready`."""

    source = "server"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def ready(self) -> Reading[ServerStatus]:
        """Whether the server says it is ready (`/-/ready`)."""
        return await server_ready(self.client, self.source, self.base_url, self.timeout)


def malformed(url: str | None, what: str) -> Fault:
    """A fault for a payload that parsed but does not have the expected shape."""
    return Fault(FaultKind.MALFORMED, what, url=url)
