"""What the request inspector reads: one row per request, its filters, counts, pages and chain.

The store keeps one record per *attempt*; a failed attempt and the fallback or retry that
followed share a call id. The inspector shows one row per *request* (call id): its final
attempt (the one that served it, or the last one that failed), with

- `request_started` (the first attempt's start) and `request_latency_s` (from the first
  attempt's start to the final attempt's end: `latency_s + started_s - request_started_s`,
  so a slow primary before a fallback counts);
- `attempts` (how many attempts it took) and `failed_attempts` (e.g. `"flaky-model-1
  (RateLimitError)"` for each earlier attempt that failed; empty when none).

Filters (`RequestFilter`): the window (requests whose final attempt started in it), the model
group asked for, the status (`"success"`, `"error"` or `"fallback"`: served after a fallback),
the minimum request latency, and three that match *any* attempt of the request: a deployment
(id or model name), a provider and a text in the error (class, code, normalized error or
message, case-insensitive). So `deployment="llama3-local-1"` lists the requests that failed
there and were served elsewhere. LiteLLM's own health checks are left out unless asked for.

A chain is made of the attempts in the window that share a call id; a fallback or retry is
known by its `attempted_fallbacks` / `attempted_retries` (as aidash's logger records them).

Over the embedded store (`SqliteHistory.query_requests`) the work is done in DuckDB where the
rows are. Plain successes (no failure, fallback or retry: almost every row) are requests of
their own, so they are filtered, counted and ordered with no join; the few failures, fallbacks
and retries are read once per (immutable) segment file and kept, chained and filtered apart;
the page's ids come from the newest row groups when the counts say they suffice, and only the
page's rows are read whole. Over any other `History` the window's records are read with
`requests()` and the same rules are applied in pandas (`select_requests`), which is also the
reference the DuckDB path is tested against.
"""

from __future__ import annotations

import asyncio
import base64
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from aidash_lib.store.history import (
    REQUEST_FRAME_DTYPES,
    Filter,
    History,
    TimeArg,
    as_filter,
    empty_requests_frame,
    epoch_to_time,
    window,
)
from aidash_lib.ui.base import mask_secrets

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

T = TypeVar("T")

#: Values of `RequestFilter.status`.
STATUSES: tuple[str, ...] = ("success", "error", "fallback")
#: Percentiles shown above the table.
QUANTILES: tuple[float, float, float] = (0.5, 0.95, 0.99)
#: Columns a request row adds to the requests frame of `store.history`.
EXTRA_COLUMNS: dict[str, str] = {
    "request_started": "datetime64[ns, UTC]",
    "request_latency_s": "float64",
    "attempts": "int64",
    "failed_attempts": "str",
}
#: How far around a request its chain of attempts is looked for.
CHAIN_SPAN_S = 900.0

_ERROR_FIELDS = ("error_class", "error_code", "normalized_error", "error_message")
#: What is read of the failures, fallbacks and retries (the rows that can form a chain).
_SMALL_COLUMNS = (
    "id", "call_id", "started_s", "status", "attempted_fallbacks", "attempted_retries",
    "deployment_id", "model", "provider", *_ERROR_FIELDS, "requested_group", "latency_s",
    "is_health_check",
)


@dataclass(frozen=True)
class RequestFilter:
    """Which requests to show (see the module docstring for what each field matches)."""

    start: TimeArg = "-1h"
    end: TimeArg = "now"
    model_group: Filter = None
    deployment: Filter = None
    provider: Filter = None
    status: str | None = None
    min_latency_s: float | None = None
    error_text: str | None = None
    include_health_checks: bool = False

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.min_latency_s is not None and (
            not math.isfinite(self.min_latency_s) or self.min_latency_s < 0
        ):
            raise ValueError(f"min_latency_s must be a number >= 0, not {self.min_latency_s}")

    def window(self, now_s: float | None = None) -> tuple[float, float]:
        """(start, end) in epoch seconds."""
        return window(self.start, self.end, now_s=now_s)

    def with_(self, **changes: Any) -> RequestFilter:
        return replace(self, **changes)

    @property
    def error_needle(self) -> str | None:
        text = (self.error_text or "").strip().lower()
        return text or None


@dataclass(frozen=True)
class RequestCounts:
    """The filtered set in numbers: requests, errors (final attempt failed), served after a
    fallback, retried, and exact percentiles of the request latency (None when no latency)."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    retried: int = 0
    percentiles: dict[float, float | None] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        """Errors per request (0..1), None without requests."""
        return self.errors / self.requests if self.requests else None

    def percentile(self, q: float) -> float | None:
        return self.percentiles.get(q)


@dataclass(frozen=True)
class RequestPage:
    """One page of request rows (newest first) and the counts of the whole filtered set."""

    rows: pd.DataFrame
    counts: RequestCounts
    offset: int
    limit: int
    start_s: float
    end_s: float
    #: Model groups, deployments and providers seen: all of the window's when
    #: `options_complete`, else those of the page and of the window's failures and fallbacks.
    options: dict[str, list[str]] = field(default_factory=dict)
    options_complete: bool = False

    @property
    def total(self) -> int:
        return self.counts.requests


# -- the rules, in pandas (any History; and the reference the SQL path is tested against) ----


def _error_blob(frame: pd.DataFrame) -> pd.Series:
    """The error fields of each row joined by spaces, lower-cased ("" for none)."""
    blob = pd.Series("", index=frame.index, dtype=object)
    for name in _ERROR_FIELDS:
        values = frame[name].astype(object)
        present = values.notna().to_numpy()
        if present.any():
            text = values[present].astype(str)
            current = blob[present]
            blob[present] = np.where(current == "", text, current + " " + text)
    return blob.str.lower()


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _attempt_match(frame: pd.DataFrame, flt: RequestFilter) -> np.ndarray | None:
    """Rows matching the attempt-level filters (deployment, provider, error text); None when
    none of them is set."""
    masks = []
    deployments = as_filter(flt.deployment)
    if deployments is not None:
        masks.append(frame["deployment_id"].astype(object).isin(deployments).to_numpy()
                     | frame["model"].astype(object).isin(deployments).to_numpy())
    providers = as_filter(flt.provider)
    if providers is not None:
        masks.append(frame["provider"].astype(object).isin(providers).to_numpy())
    needle = flt.error_needle
    if needle is not None:
        masks.append(_error_blob(frame).str.contains(needle, regex=False).to_numpy(dtype=bool))
    if not masks:
        return None
    return np.logical_and.reduce(masks)


def _is_failure(frame: pd.DataFrame) -> np.ndarray:
    return (frame["status"].astype(object) == "failure").to_numpy(dtype=bool)


def _is_small(frame: pd.DataFrame) -> np.ndarray:
    """Failures, fallbacks and retries: the attempts that can belong to a chain."""
    tries = frame["attempted_fallbacks"].to_numpy() + frame["attempted_retries"].to_numpy()
    return _is_failure(frame) | (tries > 0)


@dataclass
class _Chains:
    """Requests of several attempts (among the failures, fallbacks and retries; a fallback or
    retry is known by its `attempted_fallbacks` / `attempted_retries`): the failed attempts
    that were superseded, and per final attempt id the offset of its request's start, its
    attempt count and what failed before it."""

    superseded: np.ndarray
    delta_s: pd.Series  # final id -> its start - the first attempt's start
    attempts: pd.Series  # final id -> attempts
    failed: pd.Series  # final id -> "deployment (ErrorClass); ..."
    earlier_failed: pd.DataFrame  # the superseded attempts
    final_of: pd.Series  # call id -> final id

    def matched(self, flt: RequestFilter) -> np.ndarray:
        """Final ids of requests with an earlier failed attempt matching the attempt-level
        filters (empty when no such filter is set)."""
        mask = _attempt_match(self.earlier_failed, flt)
        if mask is None or not mask.any():
            return np.empty(0, dtype="int64")
        calls = self.earlier_failed["call_id"].astype(object)[mask].unique()
        return self.final_of.loc[calls].to_numpy(dtype="int64")


def _chains(small: pd.DataFrame) -> _Chains:
    """The chains among `small` (attempts that failed or were a fallback or retry)."""
    multi = small[small["call_id"].duplicated(keep=False).to_numpy()]
    if multi.empty:
        no = pd.Series([], dtype="int64")
        return _Chains(np.empty(0, dtype="int64"), no.astype("float64"), no,
                       no.astype(object), small.iloc[:0], pd.Series([], dtype="int64"))
    multi = multi.sort_values(["call_id", "started_s", "id"])
    is_last = ~multi["call_id"].duplicated(keep="last").to_numpy()
    is_first = ~multi["call_id"].duplicated(keep="first").to_numpy()
    last, earlier = multi[is_last], multi[~is_last]
    first_s = pd.Series(multi["started_s"].to_numpy()[is_first],
                        index=multi["call_id"].to_numpy()[is_first])
    calls = last["call_id"].to_numpy()
    final_ids = last["id"].to_numpy(dtype="int64")
    earlier_failed = earlier[_is_failure(earlier)]
    where = earlier_failed["deployment_id"].astype(object).fillna(
        earlier_failed["model"].astype(object)).fillna("?")
    what = earlier_failed["error_class"].astype(object).fillna("error")
    labels: dict[str, str] = {}
    for call, where_, what_ in zip(earlier_failed["call_id"].tolist(), where.tolist(),
                                   what.tolist(), strict=True):
        label = f"{where_} ({what_})"
        labels[call] = f"{labels[call]}; {label}" if call in labels else label
    sizes = multi.groupby("call_id", sort=False).size()
    return _Chains(
        superseded=earlier_failed["id"].to_numpy(dtype="int64"),
        delta_s=pd.Series(last["started_s"].to_numpy() - first_s.loc[calls].to_numpy(),
                          index=final_ids),
        attempts=pd.Series(sizes.loc[calls].to_numpy(dtype="int64"), index=final_ids),
        failed=pd.Series([labels.get(c, "") for c in calls], index=final_ids, dtype=object),
        earlier_failed=earlier_failed,
        final_of=pd.Series(final_ids, index=calls),
    )


def _finals(frame: pd.DataFrame, chains: _Chains) -> pd.DataFrame:
    """`frame` (with `started_s`) without superseded attempts, with `_delta` (request start
    offset), `_lat` (request latency), `attempts` and `failed_attempts`."""
    frame = frame[~frame["id"].isin(chains.superseded).to_numpy()]
    ids = frame["id"]
    delta = ids.map(chains.delta_s).fillna(0.0).to_numpy(dtype="float64")
    return frame.assign(
        _delta=delta,
        _lat=frame["latency_s"].to_numpy(dtype="float64") + delta,
        attempts=ids.map(chains.attempts).fillna(1).to_numpy(dtype="int64"),
        failed_attempts=ids.map(chains.failed).fillna("").to_numpy(dtype=object),
    )


def _request_mask(frame: pd.DataFrame, flt: RequestFilter, chains: _Chains) -> np.ndarray:
    """Which final attempts (from `_finals`) the filter keeps (window and health checks
    aside)."""
    mask = np.ones(len(frame), dtype=bool)
    groups = as_filter(flt.model_group)
    if groups is not None:
        mask &= frame["requested_group"].astype(object).isin(groups).to_numpy()
    own = _attempt_match(frame, flt)
    if own is not None:
        mask &= own | frame["id"].isin(chains.matched(flt)).to_numpy()
    ok = (frame["status"].astype(object) == "success").to_numpy()
    if flt.status == "success":
        mask &= ok
    elif flt.status == "error":
        mask &= _is_failure(frame)
    elif flt.status == "fallback":
        mask &= ok & (frame["attempted_fallbacks"].to_numpy() > 0)
    if flt.min_latency_s is not None:
        mask &= np.nan_to_num(frame["_lat"].to_numpy(dtype="float64"), nan=-1.0) >= (
            flt.min_latency_s)
    return mask


def select_requests(attempts: pd.DataFrame, flt: RequestFilter,
                    start_s: float | None = None, end_s: float | None = None) -> pd.DataFrame:
    """The filtered requests (one row each, newest first) from a requests frame of attempts,
    with the columns of `EXTRA_COLUMNS` added. `start_s`/`end_s` default to the filter's."""
    if start_s is None or end_s is None:
        start_s, end_s = flt.window()
    started_s = attempts["started"].astype("int64").to_numpy() / 1e9
    keep = (started_s >= start_s - 1e-6) & (started_s <= end_s + 1e-6)
    if not flt.include_health_checks:
        keep &= ~attempts["is_health_check"].to_numpy(dtype=bool)
    frame = attempts[keep].assign(started_s=started_s[keep])
    chains = _chains(frame[_is_small(frame)])
    frame = _finals(frame, chains)
    frame = frame[_request_mask(frame, flt, chains)]
    rs = frame["started_s"].to_numpy() - frame["_delta"].to_numpy()
    frame = frame.iloc[np.lexsort((-frame["id"].to_numpy(), -rs))]
    frame = frame.assign(
        request_started=epoch_to_time(frame["started_s"] - frame["_delta"]),
        request_latency_s=frame["_lat"],
    ).reset_index(drop=True)
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in the documented order and dtypes (requests frame + `EXTRA_COLUMNS`)."""
    out: dict[str, Any] = {}
    for name, dtype in {**REQUEST_FRAME_DTYPES, **EXTRA_COLUMNS}.items():
        column = frame[name]
        if dtype == "category":
            values = column.astype(object).where(column.notna(), None)
            cat = pd.Series(values, dtype="category", index=frame.index)
            out[name] = cat.cat.reorder_categories(sorted(cat.cat.categories))
        elif dtype == "str":
            out[name] = column.astype(object).where(column.notna(), None).astype("str")
        elif dtype == "boolean":
            out[name] = column.astype("boolean")
        elif dtype.startswith("datetime"):
            out[name] = column
        else:
            out[name] = column.astype(dtype)
    return pd.DataFrame(out, index=frame.index)


def count_requests(frame: pd.DataFrame, q: Sequence[float] = QUANTILES) -> RequestCounts:
    """The counts of a frame from `select_requests` (percentiles exact, numpy's linear)."""
    latencies = frame["request_latency_s"].to_numpy(dtype="float64")
    latencies = latencies[~np.isnan(latencies)]
    values = list(np.quantile(latencies, list(q))) if len(latencies) else [None] * len(q)
    ok = (frame["status"].astype(object) == "success").to_numpy()
    return RequestCounts(
        requests=len(frame),
        errors=int(_is_failure(frame).sum()),
        fallbacks=int((ok & (frame["attempted_fallbacks"].to_numpy() > 0)).sum()),
        retried=int((frame["attempted_retries"].to_numpy() > 0).sum()),
        percentiles={x: (None if v is None else float(v)) for x, v in zip(q, values, strict=True)},
    )


#: The dropdowns' keys and the columns their choices come from.
OPTION_COLUMNS: dict[str, str] = {
    "model_group": "requested_group", "deployment": "deployment_id", "provider": "provider",
}


def observed_options(*frames: pd.DataFrame) -> dict[str, list[str]]:
    """Model groups, deployments and providers seen in requests frames."""
    return {key: sorted({str(v) for frame in frames for v in frame[name].dropna().astype(object)})
            for key, name in OPTION_COLUMNS.items()}


# -- the SQL path (the embedded store) -------------------------------------------------------


def _sql_frame(table: pa.Table) -> pd.DataFrame:
    """Rows with the segment columns (and, for request rows, `request_started_s`, `attempts`,
    `failed_attempts`) as a typed request frame, converted in Arrow (a page must be quick)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return empty_frame()
    if "request_started_s" not in table.column_names:
        table = (table.append_column("request_started_s", table.column("started_s"))
                 .append_column("attempts", pa.array([1] * table.num_rows, pa.int64()))
                 .append_column("failed_attempts", pa.array([""] * table.num_rows)))
    started = table.column("started_s").to_numpy()
    request_started = table.column("request_started_s").to_numpy()
    columns: dict[str, Any] = {}
    for name, dtype in {**REQUEST_FRAME_DTYPES, **EXTRA_COLUMNS}.items():
        if dtype.startswith("datetime") or name == "request_latency_s":
            continue
        column = table.column(name)
        if dtype == "category":
            column = pc.dictionary_encode(column.cast(pa.string()))
        columns[name] = column
    frame = pa.table(columns).to_pandas(
        types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    frame["stream"] = frame["stream"].fillna(False).astype(bool)
    frame["is_health_check"] = frame["is_health_check"].fillna(False).astype(bool)
    frame.insert(2, "started", epoch_to_time(started))
    frame.insert(3, "ended", epoch_to_time(table.column("ended_s").to_numpy()))
    frame["request_started"] = epoch_to_time(request_started)
    frame["request_latency_s"] = (table.column("latency_s").to_numpy(zero_copy_only=False)
                                  .astype("float64") + (started - request_started))
    return frame[list({**REQUEST_FRAME_DTYPES, **EXTRA_COLUMNS})]


def empty_frame() -> pd.DataFrame:
    """A request frame with no rows."""
    frame = empty_requests_frame()
    for name, dtype in EXTRA_COLUMNS.items():
        frame[name] = pd.Series(dtype=dtype)
    return frame


def _arrow(relation: Any) -> pa.Table:
    """A DuckDB relation's rows as an Arrow table (the method's name varies by version)."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        method = getattr(relation, name, None)
        if method is not None:
            result = method()
            return result.read_all() if hasattr(result, "read_all") else result
    raise RuntimeError("this DuckDB cannot return Arrow tables")


_SMALL_WHERE = "(status = 'failure' OR attempted_fallbacks + attempted_retries > 0)"


class _SmallCache:
    """The failures, fallbacks and retries of each segment file (files never change), so that
    a query reads them from the 1,000,000 rows once, not every time."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[str, pa.Table] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, duck: duckdb.DuckDBPyConnection, path: str) -> pa.Table:
        with self._lock:
            if path in self._items:
                self._items.move_to_end(path)
                return self._items[path]
        quoted = path.replace("'", "''")
        table = _arrow(duck.sql(f"SELECT {', '.join(_SMALL_COLUMNS)} FROM "
                                f"read_parquet('{quoted}') WHERE {_SMALL_WHERE}"))
        with self._lock:
            self._items[path] = table
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return table


_SMALL_CACHE = _SmallCache()

#: The chains among the failures, fallbacks and retries (`aidash_small_all`), as `_chains`
#: and `_finals` make them in pandas: every attempt but the superseded failures, a chain's
#: last one with its request's start and latency, attempt count, what failed before, and
#: whether an earlier failed attempt matched the attempt-level filters (`{own}`).
_CHAINS_SQL = """
WITH s AS (
  SELECT *, {own} AS own FROM aidash_small_all
  WHERE started_s >= $start AND started_s <= $end AND {health}
), g AS (
  SELECT call_id, count(*) AS n_att, min(started_s) AS first_s,
    max({{'s': started_s, 'i': id}}).i AS last_id
  FROM s GROUP BY call_id HAVING count(*) > 1
), e AS (
  SELECT s.call_id,
    string_agg(coalesce(s.deployment_id, s.model, '?') || ' (' || coalesce(s.error_class, 'error')
               || ')', '; ' ORDER BY s.started_s, s.id) AS failed,
    bool_or(s.own) AS matched
  FROM s JOIN g ON g.call_id = s.call_id
  WHERE s.status = 'failure' AND s.id <> g.last_id GROUP BY s.call_id
)
SELECT s.id, s.started_s, s.requested_group, s.status, s.attempted_fallbacks,
  s.attempted_retries,
  s.started_s - CASE WHEN s.id = g.last_id THEN s.started_s - g.first_s ELSE 0.0 END AS rs,
  s.latency_s + CASE WHEN s.id = g.last_id THEN s.started_s - g.first_s ELSE 0.0 END AS lat,
  CASE WHEN s.id = g.last_id THEN g.n_att ELSE 1 END AS attempts,
  CASE WHEN s.id = g.last_id THEN coalesce(e.failed, '') ELSE '' END AS failed,
  s.own OR (s.id = g.last_id AND coalesce(e.matched, false)) AS any_own
FROM s LEFT JOIN g ON g.call_id = s.call_id LEFT JOIN e ON e.call_id = s.call_id
WHERE NOT (g.last_id IS NOT NULL AND s.id <> g.last_id AND s.status = 'failure')
"""


class _Sql:
    """The statements of one inspector query, on one snapshot of the store.

    A request's row is its final attempt. Plain successes (no failure, no fallback, no retry:
    almost every row) are each a request of their own, so they are filtered, counted and
    ordered in DuckDB with no join; the few failures, fallbacks and retries (read once per
    segment file, `_SMALL_CACHE`) are put into chains and filtered by `_CHAINS_SQL` into one
    small table (`aidash_small`), joined to the plain rows for the counts, the percentiles,
    the order and the page.
    """

    def __init__(self, duck: duckdb.DuckDBPyConnection, source: str, files: list[str],
                 flt: RequestFilter, start_s: float, end_s: float) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.duck = duck
        self.source = source
        self.flt = flt
        self.registered: list[str] = []
        self.params: dict[str, Any] = {}
        own = self._attempt_where()
        head = self.table(f"SELECT {', '.join(_SMALL_COLUMNS)} FROM aidash_request_head "
                          f"WHERE {_SMALL_WHERE}")
        parts = [_SMALL_CACHE.get(duck, path) for path in files]
        small_all = pa.concat_tables([p.cast(head.schema) for p in parts] + [head])
        self.register("aidash_small_all", small_all)
        self.small_options = {
            key: sorted(v for v in pc.unique(small_all.column(name)).to_pylist() if v)
            for key, name in OPTION_COLUMNS.items()
        }
        health = "true" if flt.include_health_checks else "NOT is_health_check"
        keep = ["any_own"] if own is not None else []
        keep += self._request_where("")
        chains = _CHAINS_SQL.format(own=own or "true", health=health)
        small = self.table(f"SELECT * FROM ({chains}) WHERE {' AND '.join(keep) or 'true'}",
                           {**self.params, "start": start_s, "end": end_s})
        self.unregister("aidash_small_all")
        self.n_small = small.num_rows
        if self.n_small:
            self.duck.register("aidash_small", small)
            self.registered.append("aidash_small")
        self.plain = self._plain_where(own)
        self.start_s, self.end_s = start_s, end_s
        self.plain_count: int | None = None

    def table(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        used = {k: v for k, v in (params or {}).items() if f"${k}" in sql}
        return _arrow(self.duck.sql(sql, params=used or None))

    def register(self, name: str, table: pa.Table) -> None:
        self.duck.register(name, table)
        self.registered.append(name)

    def unregister(self, name: str) -> None:
        self.duck.unregister(name)
        self.registered.remove(name)

    def close(self) -> None:
        for name in self.registered:
            self.duck.unregister(name)
        self.registered.clear()

    def _attempt_where(self) -> str | None:
        """The attempt-level filters (deployment, provider, error text) as SQL, or None."""
        flt, params = self.flt, self.params
        where = []
        deployments = as_filter(flt.deployment)
        if deployments is not None:
            where.append("(list_contains($deployments, deployment_id) "
                         "OR list_contains($deployments, model))")
            params["deployments"] = list(deployments)
        providers = as_filter(flt.provider)
        if providers is not None:
            where.append("list_contains($providers, provider)")
            params["providers"] = list(providers)
        if flt.error_needle is not None:
            where.append("contains(lower(concat_ws(' ', error_class, error_code, "
                         "normalized_error, error_message)), $needle)")
            params["needle"] = flt.error_needle
        return f"coalesce({' AND '.join(where)}, false)" if where else None

    def _request_where(self, latency: str) -> list[str]:
        """The request-level filters (group, status, latency) on a final attempt; `latency`
        names its request latency column ("" for `lat`)."""
        flt, params = self.flt, self.params
        where = []
        groups = as_filter(flt.model_group)
        if groups is not None:
            where.append("list_contains($groups, requested_group)")
            params["groups"] = list(groups)
        if flt.status == "success":
            where.append("status = 'success'")
        elif flt.status == "error":
            where.append("status = 'failure'")
        elif flt.status == "fallback":
            where.append("status = 'success' AND attempted_fallbacks > 0")
        if flt.min_latency_s is not None:
            where.append(f"{latency or 'lat'} >= $min_latency")
            params["min_latency"] = float(flt.min_latency_s)
        return where

    def _plain_where(self, own: str | None) -> str | None:
        """The filter on plain successes, or None when it keeps none of them (a success
        carries no error: the logger records the error fields of failures only)."""
        if self.flt.status in ("error", "fallback") or self.flt.error_needle is not None:
            return None
        where = [f"NOT {_SMALL_WHERE}"]
        if not self.flt.include_health_checks:
            where.append("NOT is_health_check")
        if own is not None:
            where.append(own)
        where += self._request_where("latency_s")
        return " AND ".join(where)

    def _union(self, plain: str, small: str) -> str | None:
        """`plain` over the filtered plain rows UNION ALL `small` over `aidash_small`."""
        parts = []
        if self.plain is not None:
            parts.append(f"SELECT {plain} FROM {self.source} WHERE {self.plain}")
        if self.n_small:
            parts.append(f"SELECT {small} FROM aidash_small")
        return " UNION ALL ".join(parts) or None

    def counts(self, q: Sequence[float] = QUANTILES) -> RequestCounts:
        union = self._union(
            "latency_s AS lat, false AS failed, false AS fb, false AS retried",
            "lat, status = 'failure' AS failed, status = 'success' AND attempted_fallbacks > 0 "
            "AS fb, attempted_retries > 0 AS retried")
        if union is None:
            return RequestCounts(percentiles=dict.fromkeys(q))
        row = self.table(
            "SELECT count(*) AS n, count(*) FILTER (WHERE failed) AS errors, "
            "count(*) FILTER (WHERE fb) AS fallbacks, count(*) FILTER (WHERE retried) AS "
            f"retried, quantile_cont(lat, $q) AS q FROM ({union})",
            {**self.params, "q": list(q)}).to_pylist()[0]
        self.plain_count = int(row["n"]) - self.n_small
        values = row["q"] or [None] * len(q)
        return RequestCounts(
            requests=int(row["n"]), errors=int(row["errors"]), fallbacks=int(row["fallbacks"]),
            retried=int(row["retried"]),
            percentiles={x: (None if v is None else float(v))
                         for x, v in zip(q, values, strict=True)},
        )

    def _keys(self, limit: int | None, offset: int = 0) -> pa.Table:
        """(id, started_s) of the filtered requests, newest request first. With a limit, each
        side is cut to its own top rows first (so the plain side can skip row groups)."""
        import pyarrow as pa

        order = " ORDER BY rs DESC, id DESC"
        top = f"{order} LIMIT {int(limit) + int(offset)}" if limit is not None else ""
        parts = []
        if self.plain is not None:
            recent = self._recent_plain(limit + offset) if limit is not None else None
            parts.append(recent or f"(SELECT id, started_s, started_s AS rs FROM {self.source} "
                                   f"WHERE {self.plain}{top})")
        if self.n_small:
            parts.append(f"(SELECT id, started_s, rs FROM aidash_small{top})")
        if not parts:
            return pa.table({"id": pa.array([], pa.int64()),
                             "started_s": pa.array([], pa.float64())})
        tail = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        return self.table(
            f"SELECT id, started_s FROM ({' UNION ALL '.join(parts)}){order}{tail}", self.params)

    def _recent_plain(self, want: int) -> str | None:
        """The newest `want` plain rows read from the end of the window only (Parquet row
        groups before it are skipped by their statistics), as a registered table's name; None
        when that would not save much (then the whole window is read). The first guess of how
        far back from the newest record they reach assumes the counted rows spread evenly over
        the window; each miss looks eight times further back."""
        if not self.plain_count or want >= self.plain_count / 4:
            return None
        window = self.end_s - self.start_s
        newest = self.table("SELECT max(started_s) AS t FROM aidash_request_head").column(0)[0]
        anchor = min(self.end_s, newest.as_py() or self.end_s)
        span = window * min(1.0, 4.0 * want / self.plain_count) + 1.0
        while span < window / 2:
            rows = self.table(
                f"SELECT id, started_s, started_s AS rs FROM {self.source} WHERE {self.plain} "
                f"AND started_s >= {anchor - span!r} ORDER BY started_s DESC, id DESC "
                f"LIMIT {int(want)}", self.params)
            if rows.num_rows == want:
                self.register("aidash_recent", rows)
                return "(SELECT id, started_s, rs FROM aidash_recent)"
            span *= 8
        return None

    def _rows(self, keys: pa.Table) -> pd.DataFrame:
        """The whole rows of `keys`, in their order, with the request columns."""
        import pyarrow as pa

        if keys.num_rows == 0:
            return empty_frame()
        starts = keys.column("started_s").to_numpy()
        self.register("aidash_keys", pa.table({"id": keys.column("id"),
                                               "rank": np.arange(keys.num_rows)}))
        if self.n_small:
            join = " LEFT JOIN aidash_small AS s ON s.id = r.id"
            extra = ("coalesce(s.rs, r.started_s) AS request_started_s, "
                     "coalesce(s.attempts, 1) AS attempts, coalesce(s.failed, '') AS "
                     "failed_attempts")
        else:
            join = ""
            extra = "r.started_s AS request_started_s, 1 AS attempts, '' AS failed_attempts"
        rows = _sql_frame(self.table(
            f"SELECT r.*, {extra} FROM {self.source} AS r JOIN aidash_keys AS k ON k.id = r.id"
            f"{join} WHERE r.started_s >= {float(starts.min())!r} "
            f"AND r.started_s <= {float(starts.max())!r} ORDER BY k.rank"))
        self.unregister("aidash_keys")
        return rows

    def page(self, offset: int, limit: int) -> pd.DataFrame:
        """The page's keys from narrow columns, then only those rows whole."""
        return self._rows(self._keys(limit, offset))

    def all(self, limit: int | None = None) -> pd.DataFrame:
        """The whole filtered set (newest first), up to `limit` rows."""
        return self._rows(self._keys(limit))

    def options(self) -> dict[str, list[str]]:
        table = self.table(
            f"SELECT DISTINCT requested_group, deployment_id, provider FROM {self.source} "
            "WHERE NOT is_health_check"
        )
        out = {}
        for key, name in (("model_group", "requested_group"), ("deployment", "deployment_id"),
                          ("provider", "provider")):
            out[key] = sorted({v for v in table.column(name).to_pylist() if v is not None})
        return out


def _sql_history(history: History) -> Any | None:
    """The object answering `query_requests` for this history (itself, or its store)."""
    for candidate in (history, getattr(history, "store", None)):
        if candidate is not None and hasattr(candidate, "query_requests_now"):
            return candidate
    return None


def _run_sql(history: Any, flt: RequestFilter, start_s: float, end_s: float,
             work: Callable[[_Sql], T]) -> T:
    def run(duck: duckdb.DuckDBPyConnection, source: str, files: list[str]) -> T:
        sql = _Sql(duck, source, files, flt, start_s, end_s)
        try:
            return work(sql)
        finally:
            sql.close()

    return history.query_requests_now(run, start_s, end_s)


# -- what the widget calls -------------------------------------------------------------------


async def load_page(history: History, flt: RequestFilter, *, offset: int = 0, limit: int = 50,
                    options: bool = False, now_s: float | None = None) -> RequestPage:
    """One page of the filtered requests (newest first) with the counts of the whole set."""
    if offset < 0 or limit <= 0:
        raise ValueError(f"offset must be >= 0 and limit > 0, not {offset}, {limit}")
    start_s, end_s = flt.window(now_s)
    store = _sql_history(history)
    if store is not None:
        def work(sql: _Sql) -> RequestPage:
            counts = sql.counts()
            rows = sql.page(offset, limit) if offset < counts.requests else empty_frame()
            seen = sql.options() if options else _merge(sql.small_options, observed_options(rows))
            return RequestPage(rows, counts, offset, limit, start_s, end_s, seen, options)

        return await asyncio.to_thread(_run_sql, store, flt, start_s, end_s, work)
    attempts = await history.requests(start_s, end_s)
    selected = select_requests(attempts, flt, start_s, end_s)
    return RequestPage(
        selected.iloc[offset:offset + limit].reset_index(drop=True), count_requests(selected),
        offset, limit, start_s, end_s, observed_options(attempts), True,
    )


def _merge(*options: dict[str, list[str]]) -> dict[str, list[str]]:
    return {key: sorted({v for o in options for v in o.get(key, [])}) for key in OPTION_COLUMNS}


async def load_frame(history: History, flt: RequestFilter, *, limit: int | None = None,
                     now_s: float | None = None) -> pd.DataFrame:
    """The whole filtered set as a DataFrame (newest first), up to `limit` rows."""
    start_s, end_s = flt.window(now_s)
    store = _sql_history(history)
    if store is not None:
        return await asyncio.to_thread(
            _run_sql, store, flt, start_s, end_s, lambda sql: sql.all(limit))
    selected = select_requests(await history.requests(start_s, end_s), flt, start_s, end_s)
    return selected if limit is None else selected.iloc[:limit]


async def load_attempts(history: History, call_id: str, around_s: float,
                        span_s: float = CHAIN_SPAN_S) -> pd.DataFrame:
    """Every attempt of one request (its call id), oldest first: the requests frame."""
    start_s, end_s = around_s - span_s, around_s + span_s
    store = _sql_history(history)
    if store is not None:
        def run(duck: duckdb.DuckDBPyConnection, source: str, files: list[str]
                ) -> pd.DataFrame:
            table = _arrow(duck.sql(
                f"SELECT * FROM {source} WHERE call_id = $call ORDER BY started_s, id",
                params={"call": call_id}))
            return _sql_frame(table)[list(REQUEST_FRAME_DTYPES)].reset_index(drop=True)

        return await asyncio.to_thread(store.query_requests_now, run, start_s, end_s)
    attempts = await history.requests(start_s, end_s)
    chain = attempts[attempts["call_id"].astype(object) == call_id]
    return chain.sort_values(["started", "id"]).reset_index(drop=True)


async def latest_request_id(history: History) -> int | None:
    """The newest request id the store has written, or None where the backend cannot say."""
    store = _sql_history(history)
    if store is None or not hasattr(store, "latest_request_id"):
        return None
    return int(await store.latest_request_id())


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running event loop
    (a notebook cell): in a worker thread with a loop of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="aidash-inspector-frame")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# -- presentation ----------------------------------------------------------------------------


def error_summary(row: Any) -> str:
    """"ErrorClass · NORMALIZED_ERROR" of an attempt ("" when it succeeded)."""
    parts = [str(v) for v in (getattr(row, "error_class", None),
                              getattr(row, "normalized_error", None))
             if v is not None and not _isna(v) and str(v)]
    return " · ".join(dict.fromkeys(parts))


def first_line(text: Any, limit: int = 300) -> str:
    """The first line of a message, secrets masked, never a traceback."""
    if text is None or _isna(text):
        return ""
    line = str(text).split("stack trace:", 1)[0].split("Traceback (most recent", 1)[0]
    line = line.strip().splitlines()[0].strip() if line.strip() else ""
    line = mask_secrets(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


#: Columns of the CSV export, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "request_started", "call_id", "requested_group", "deployment_id", "model", "provider",
    "status", "request_latency_s", "latency_s", "ttft_s", "prompt_tokens", "completion_tokens",
    "cost_usd", "attempts", "attempted_fallbacks", "attempted_retries", "failed_attempts",
    "error_class", "error_code", "normalized_error", "error_message", "stream", "cache_hit",
    "call_type", "api_base", "started", "ended", "id",
)


def to_csv(frame: pd.DataFrame) -> str:
    """The request rows as CSV text (UTC ISO-8601 times; error text first line, masked)."""
    out = frame[[c for c in CSV_COLUMNS if c in frame.columns]].copy()
    for name in ("request_started", "started", "ended"):
        if name in out.columns:
            out[name] = out[name].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for name in ("error_message", "api_base", "failed_attempts"):
        if name in out.columns:
            out[name] = [first_line(v) for v in out[name].astype(object)]
    return out.to_csv(index=False)


def csv_data_uri(text: str) -> str:
    """A `data:` URI of CSV text, for a download link that needs no server route."""
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(text.encode()).decode()


def csv_file_name(now_s: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now_s is None else now_s))
    return f"aidash-requests-{stamp}.csv"
