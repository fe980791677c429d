"""What several panels read from the store besides plain series: the last deployments list,
which sources are in a fault now, the request totals of a window, the last value of a metric,
and rates summed over a window.

Everything here reads the `History` interface only (never a source). Inside `shared_reads()`
(one refresh of the whole dashboard) each of these reads is made once and shared by the panels.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from aidash_lib.store.history import History, time_to_epoch

#: How far back the panels look for state kept as events (deployments, source faults).
STATE_LOOKBACK_S = 30 * 86400.0

#: A reading older than this many recorder intervals counts as stale.
STALE_INTERVALS = 3.0

T = TypeVar("T")

_SHARED: contextvars.ContextVar[dict[tuple[Any, ...], asyncio.Future[Any]] | None] = (
    contextvars.ContextVar("aidash_shared_reads", default=None)
)


#: How old the last process list (machine or GPU) may be and still be shown.
PROCESSES_MAX_AGE_S = 900.0


@contextlib.contextmanager
def shared_reads() -> Iterator[None]:
    """Within this block (and the tasks started in it), the reads below are made once."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


async def _shared(key: tuple[Any, ...], make: Callable[[], Awaitable[T]]) -> T:
    cache = _SHARED.get()
    if cache is None:
        return await make()
    future = cache.get(key)
    if future is None:
        future = asyncio.ensure_future(make())
        cache[key] = future
    return await asyncio.shield(future)


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment as the recorder last listed it (the `deployments` event), no secrets."""

    deployment_id: str
    group: str
    provider: str | None = None
    model: str | None = None
    api_base: str | None = None
    is_mock: bool = False


@dataclass(frozen=True)
class SourceFault:
    """A source in a fault episode: since when, and why."""

    source: str
    since_s: float
    reason: str


def _epoch(value: Any) -> float:
    return pd.Timestamp(value).value / 1e9


def parse_deployments(detail: str) -> list[DeploymentInfo]:
    """The detail of a `deployments` event (a JSON list of `sources.gateway.Deployment`)."""
    try:
        items = json.loads(detail)
    except ValueError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not item.get("deployment_id"):
            continue
        out.append(DeploymentInfo(
            deployment_id=str(item["deployment_id"]),
            group=str(item.get("group") or "unknown"),
            provider=item.get("provider") or None,
            model=item.get("model") or None,
            api_base=item.get("api_base") or None,
            is_mock=bool(item.get("is_mock")),
        ))
    return out


async def latest_deployments(
    history: History, end_s: float
) -> tuple[list[DeploymentInfo], float | None]:
    """The last deployments list the recorder stored before `end_s`, and its time."""
    return await _shared((id(history), "deployments"),
                         lambda: _latest_deployments(history, end_s))


async def _latest_deployments(
    history: History, end_s: float
) -> tuple[list[DeploymentInfo], float | None]:
    events = await history.events(end_s - STATE_LOOKBACK_S, end_s, kind="deployments")
    if events.empty:
        return [], None
    last = events.iloc[-1]
    return parse_deployments(str(last["detail"])), _epoch(last["time"])


async def request_totals(
    history: History,
    window: tuple[float, float],
    *,
    model_group: str | None = None,
    provider: str | None = None,
) -> pd.DataFrame:
    """`History.request_totals` over `window` (health checks left out), read once per refresh
    for each filter: the provider comparison and the deployments table both use it."""
    key = (id(history), "request_totals", round(window[1] - window[0]), model_group, provider)
    return await _shared(key, lambda: history.request_totals(
        *window, model_group=model_group, provider=provider))


async def open_faults(history: History, end_s: float) -> dict[str, SourceFault]:
    """Sources whose last fault event (`source_fault`) is not followed by a recovery."""
    return await _shared((id(history), "faults"), lambda: _open_faults(history, end_s))


async def _open_faults(history: History, end_s: float) -> dict[str, SourceFault]:
    events = await history.events(
        end_s - STATE_LOOKBACK_S, end_s, kind=["source_fault", "source_recovered"]
    )
    faults: dict[str, SourceFault] = {}
    for row in events.itertuples(index=False):
        if row.kind == "source_fault":
            faults[str(row.subject)] = SourceFault(str(row.subject), _epoch(row.time),
                                                   str(row.detail))
        else:
            faults.pop(str(row.subject), None)
    return faults


def _positions(frame: pd.DataFrame, by: str | None) -> dict[str, np.ndarray]:
    """Row positions per value of label `by` (all rows under "" without one)."""
    if not by or by not in frame.columns:
        return {"": np.arange(len(frame))}
    found = frame.groupby(by, observed=True, sort=True).indices
    return {str(key[0] if isinstance(key, tuple) else key): rows for key, rows in found.items()}


def last_value(frame: pd.DataFrame) -> tuple[float | None, float | None]:
    """(value, time) of the newest row of a series frame, or (None, None)."""
    if frame.empty:
        return None, None
    times = time_to_epoch(frame["time"])
    newest = int(np.argmax(times))
    return float(frame["value"].to_numpy("float64")[newest]), float(times[newest])


def last_values(frame: pd.DataFrame, by: str) -> dict[str, tuple[float, float]]:
    """The newest (value, time) per value of label `by`."""
    if frame.empty or by not in frame.columns:
        return {}
    times, values = time_to_epoch(frame["time"]), frame["value"].to_numpy("float64")
    out = {}
    for key, rows in _positions(frame, by).items():
        newest = rows[np.argmax(times[rows])]
        out[key] = (float(values[newest]), float(times[newest]))
    return out


def rate_total(frame: pd.DataFrame, per_s: float = 60.0, by: str | None = None
               ) -> dict[str, float]:
    """How many events a rate series adds up to (a per-minute rate with `per_s=60`), per value
    of label `by` (key "" without): each value times the time since the previous sample
    (the first sample counts one typical interval). Gaps longer than three intervals count
    one interval."""
    out: dict[str, float] = {}
    if frame.empty:
        return out
    all_times, all_values = time_to_epoch(frame["time"]), frame["value"].to_numpy("float64")
    for key, rows in _positions(frame, by).items():
        order = rows[np.argsort(all_times[rows], kind="stable")]
        times, values = all_times[order], all_values[order]
        if len(times) == 0:
            continue
        dt = np.diff(times)
        typical = float(np.median(dt)) if len(dt) else 15.0
        dt = np.where(dt > 3 * typical, typical, dt)
        spans = np.concatenate([[typical], dt])
        out[key] = float(np.nansum(values * spans) / per_s)
    return out


def window_mean(frame: pd.DataFrame, by: str | None = None) -> dict[str, float]:
    """The mean value per value of label `by` (key "" without)."""
    if frame.empty:
        return {}
    if by and by in frame.columns:
        means = frame.groupby(by, observed=True)["value"].mean()
        return {str(k): float(v) for k, v in means.items() if math.isfinite(v)}
    value = float(frame["value"].mean())
    return {"": value} if math.isfinite(value) else {}


def filter_labels(frame: pd.DataFrame, **allowed: Iterable[str] | None) -> pd.DataFrame:
    """Rows whose label columns take one of the allowed values (None: any)."""
    for name, values in allowed.items():
        if values is None or name not in frame.columns:
            continue
        frame = frame[frame[name].astype("object").isin(list(values))]
    return frame


def deployments_of(
    deployments: Iterable[DeploymentInfo],
    *,
    model_group: str | None = None,
    provider: str | None = None,
) -> list[DeploymentInfo]:
    """The deployments matching the view's filters."""
    return [
        d for d in deployments
        if (model_group is None or d.group == model_group)
        and (provider is None or d.provider == provider)
    ]


def provider_map(deployments: Iterable[DeploymentInfo]) -> Mapping[str, str | None]:
    return {d.deployment_id: d.provider for d in deployments}


@dataclass(frozen=True)
class GatewayHealth:
    """The gateway as the recorder last saw it.

    `state`: "ready", "not ready", "unreachable" (no answer: the recorder's fault names why),
    "stale" (no reading for a while: is the recorder running?) or "unknown" (never read).
    """

    state: str
    since_s: float | None = None
    last_s: float | None = None
    reason: str | None = None
    url: str | None = None

    @property
    def down(self) -> bool:
        return self.state in ("not ready", "unreachable")

    def problem(self) -> str | None:
        """The line a gateway panel shows while the gateway is down, or None."""
        if not self.down:
            return None
        from aidash_lib.ui.base import fmt_when

        where = f" at {self.url}" if self.url else ""
        since = f" since {fmt_when(self.since_s)}" if self.since_s else ""
        # The recorder's reason reads "unreachable (URL): connection refused": keep the why.
        reason = re.sub(r"^[a-z_]+ \([^)]*\): ", "", self.reason or "")
        why = f": {reason}" if reason else ""
        return f"Gateway{where} {self.state}{since}{why}"


async def gateway_health(
    history: History, end_s: float, *, readiness_interval_s: float = 10.0, url: str | None = None
) -> GatewayHealth:
    """Ready or not, since when and why, from `gateway_ready` and the recorder's faults."""
    return await _shared(
        (id(history), "gateway", readiness_interval_s, url),
        lambda: _gateway_health(history, end_s, readiness_interval_s, url),
    )


async def _gateway_health(
    history: History, end_s: float, readiness_interval_s: float, url: str | None
) -> GatewayHealth:
    day = await history.series("gateway_ready", end_s - 86400, end_s, step_s=60)
    recent = await history.series("gateway_ready", end_s - 600, end_s)
    value, last_s = last_value(recent)
    if value is None:
        value, last_s = last_value(day)
    if value is None or last_s is None:
        return GatewayHealth("unknown", url=url)
    faults = await open_faults(history, end_s)
    fault = faults.get("gateway.readiness") or faults.get("gateway.metrics")
    ready = value >= 1.0
    since = _since(day, recent, ready)
    if end_s - last_s > max(STALE_INTERVALS * readiness_interval_s, 60.0):
        return GatewayHealth("stale", since, last_s, None, url)
    if ready:
        return GatewayHealth("ready", since, last_s, None, url)
    reason = fault.reason if fault is not None and fault.since_s <= last_s + 1 else None
    unreachable = reason is not None and reason.startswith(("unreachable", "timeout"))
    return GatewayHealth("unreachable" if unreachable else "not ready", since, last_s,
                         reason, url)


def _since(day: pd.DataFrame, recent: pd.DataFrame, ready: bool) -> float | None:
    """When the gateway last entered its current state (ready: value 1; else below 1)."""
    frame = pd.concat([day, recent]) if not recent.empty else day
    if frame.empty:
        return None
    frame = frame.sort_values("time")
    times = time_to_epoch(frame["time"])
    state = frame["value"].to_numpy("float64") >= 1.0
    other = np.flatnonzero(state != ready)
    if not len(other):
        return float(times[0])
    after = other[-1] + 1
    return float(times[after]) if after < len(times) else float(times[-1])
