"""The history interface: one protocol, whichever backend answers (SQLite store or Prometheus).

Every method is a coroutine returning a pandas DataFrame with the columns documented below, so
a panel, a notebook cell or a postmortem can call it without blocking the kernel's event loop
(`await history.requests("-1h", "now")` in a notebook). Times accept a `datetime` (naive means
UTC), a pandas `Timestamp`, epoch seconds (int or float), an ISO-8601 string, `"now"`, or a
relative string such as `"-15m"`, `"-1h"`, `"-2d"`, `"now-30s"` (units s, m, h, d, w).

Implementations: `aidash_lib.store.sqlite.SqliteHistory(path)` (the embedded store) and
`aidash_lib.store.prometheus.PrometheusHistory(source)`; `open_history` picks one from the
settings.

Requests frame (`History.requests`), one row per attempt, ordered by `started`:

| column | dtype | meaning |
| --- | --- | --- |
| id | int64 | the store's id of the attempt (stable across compaction) |
| call_id | str | shared by an attempt and its fallbacks |
| started, ended | datetime64[ns, UTC] | when the attempt started and ended |
| requested_group | category | the model group the client asked for |
| deployment_id, model, provider, api_base | category | the deployment that answered |
| status | category | "success" or "failure" |
| latency_s, ttft_s | float64 | seconds; NaN when unknown |
| prompt_tokens, completion_tokens | int64 | tokens |
| cost_usd | float64 | LiteLLM's cost estimate |
| error_class, error_code, normalized_error | category | missing on success |
| error_message | str | first line of the error, missing on success |
| attempted_fallbacks, attempted_retries | int64 | counts |
| cache_hit | boolean | nullable: unknown is `<NA>` |
| stream, is_health_check | bool | flags |
| call_type, source | category | e.g. "acompletion"; "logger" or "spend_logs" |
| key_alias_hash | str | a hash of the key alias, never the key |

Series frame (`History.series`): `time` (datetime64[ns, UTC]), `value` (float64), then one
`category` column per label (sorted by name; missing where a series lacks that label), ordered
by labels then time.

Events frame (`History.events`): `time` (datetime64[ns, UTC]), `kind` (category), `subject`
(str), `detail` (str), ordered by time.

Percentiles frame (`History.latency_percentiles`, `analysis.latency_percentiles`): the `by`
columns (category), `requests` (int64, rows counted), then one float64 column per quantile
named `p50_s`, `p95_s`, `p99_s` (`p99.9_s` for 0.999). `frame.attrs["exact"]` says whether the
figures are exact (from records) or interpolated inside histogram buckets (Prometheus).

Totals frame (`History.request_totals`, `analysis.request_totals`), one row per
(requested_group, deployment_id) seen, sorted, a missing deployment last: those two, `model`
and `provider` (category, the first known), `requests` and `failures` (int64, attempts),
`ok_seconds` (float64, summed latency of successes), `ok_completion_tokens` and `tokens`
(int64, completion tokens of successes; prompt + completion tokens of all), `cost_usd`
(float64), then the latency percentiles of successes (`p50_s`, ...). The provider comparison
is made from it (`analysis.comparison_from_totals`) without reading every record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from aidash_lib.sources.prometheus import PrometheusSource

#: What a caller may pass as a time.
TimeArg = datetime | pd.Timestamp | float | int | str

#: Columns of the requests frame, in order, and their dtypes.
REQUEST_FRAME_DTYPES: dict[str, str] = {
    "id": "int64",
    "call_id": "str",
    "started": "datetime64[ns, UTC]",
    "ended": "datetime64[ns, UTC]",
    "requested_group": "category",
    "deployment_id": "category",
    "model": "category",
    "provider": "category",
    "api_base": "category",
    "status": "category",
    "latency_s": "float64",
    "ttft_s": "float64",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "cost_usd": "float64",
    "error_class": "category",
    "error_code": "category",
    "normalized_error": "category",
    "error_message": "str",
    "attempted_fallbacks": "int64",
    "attempted_retries": "int64",
    "cache_hit": "boolean",
    "stream": "bool",
    "call_type": "category",
    "key_alias_hash": "str",
    "is_health_check": "bool",
    "source": "category",
}

#: Columns a requests query may group or filter by (all the categorical ones).
GROUPABLE_COLUMNS: frozenset[str] = frozenset(
    name for name, dtype in REQUEST_FRAME_DTYPES.items() if dtype == "category"
)

#: Default quantiles for latency percentiles.
DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)

Filter = str | Sequence[str] | None


class HistoryError(Exception):
    """A history query could not be answered; the message says why."""


class NotAvailable(HistoryError):
    """This backend cannot answer this kind of query (e.g. requests from Prometheus)."""


class QueryFailed(HistoryError):
    """The backend was asked and failed (server unreachable, query refused)."""


@runtime_checkable
class History(Protocol):
    """What panels, notebooks and postmortems read history through (see module docstring)."""

    async def requests(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        model_group: Filter = None,
        deployment: Filter = None,
        provider: Filter = None,
        status: Filter = None,
        error_text: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Attempts that started in `[start, end]`, filtered; the requests frame."""
        ...

    async def series(
        self,
        metric: str,
        start: TimeArg,
        end: TimeArg,
        *,
        labels: Mapping[str, str] | None = None,
        step_s: float | None = None,
        points: int | None = None,
    ) -> pd.DataFrame:
        """One metric's series in `[start, end]`, optionally at a step; the series frame."""
        ...

    async def events(self, start: TimeArg, end: TimeArg, kind: Filter = None) -> pd.DataFrame:
        """Events in `[start, end]`, optionally of some kinds; the events frame."""
        ...

    async def latency_percentiles(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        by: Sequence[str] = ("requested_group",),
        q: Sequence[float] = DEFAULT_QUANTILES,
    ) -> pd.DataFrame:
        """Latency percentiles of successful, non-health-check attempts; percentiles frame."""
        ...

    async def request_totals(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        model_group: Filter = None,
        provider: Filter = None,
        q: Sequence[float] = DEFAULT_QUANTILES,
        include_health_checks: bool = False,
    ) -> pd.DataFrame:
        """Model group × deployment totals of the attempts in `[start, end]`; totals frame."""
        ...


_RELATIVE = re.compile(r"^(?:now)?\s*([+-])\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def to_epoch_s(when: TimeArg, *, now_s: float | None = None) -> float:
    """Epoch seconds for any accepted time (see module docstring); naive times are UTC."""
    if isinstance(when, bool):
        raise TypeError("a time cannot be a bool")
    if isinstance(when, int | float | np.integer | np.floating):
        return float(when)
    if isinstance(when, pd.Timestamp):
        stamp = when if when.tzinfo is not None else when.tz_localize("UTC")
        return stamp.value / 1e9
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    if isinstance(when, str):
        text = when.strip().lower()
        now = time.time() if now_s is None else now_s
        if text == "now":
            return now
        match = _RELATIVE.match(text)
        if match:
            sign = -1.0 if match.group(1) == "-" else 1.0
            return now + sign * float(match.group(2)) * _UNIT_S[match.group(3)]
        try:
            return to_epoch_s(pd.Timestamp(when.strip()))
        except ValueError:
            pass
        raise ValueError(
            f"cannot read {when!r} as a time: use a datetime, epoch seconds, an ISO-8601 "
            "string, 'now', or a relative time such as '-1h', '-15m', '-2d'"
        )
    raise TypeError(f"cannot read a {type(when).__name__} as a time")


def window(start: TimeArg, end: TimeArg, *, now_s: float | None = None) -> tuple[float, float]:
    """`(start_s, end_s)` in epoch seconds, both relative to one `now`; checks the order."""
    now = time.time() if now_s is None else now_s
    start_s, end_s = to_epoch_s(start, now_s=now), to_epoch_s(end, now_s=now)
    if end_s < start_s:
        raise ValueError(f"end ({end!r}) is before start ({start!r})")
    return start_s, end_s


def as_filter(value: Filter) -> tuple[str, ...] | None:
    """A filter argument as a tuple of accepted values (None: no filter)."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    values = tuple(value)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"filter values must be strings, not {values!r}")
    return values


def check_quantiles(q: Sequence[float]) -> tuple[float, ...]:
    """The quantiles as floats in [0, 1], or a ValueError."""
    qs = tuple(float(x) for x in q)
    if not qs:
        raise ValueError("give at least one quantile")
    bad = [x for x in qs if not 0.0 <= x <= 1.0]
    if bad:
        raise ValueError(f"quantiles must be between 0 and 1, not {bad}")
    return qs


def check_by(by: Sequence[str] | str) -> tuple[str, ...]:
    """The grouping columns, each one of `GROUPABLE_COLUMNS`."""
    columns = (by,) if isinstance(by, str) else tuple(by)
    unknown = [c for c in columns if c not in GROUPABLE_COLUMNS]
    if unknown:
        raise ValueError(
            f"cannot group requests by {unknown}: choose from {sorted(GROUPABLE_COLUMNS)}"
        )
    return columns


def quantile_column(q: float) -> str:
    """The percentiles frame's column name for quantile `q` (0.95 -> `p95_s`)."""
    return f"p{round(q * 100, 6):g}_s"


def epoch_to_time(seconds: np.ndarray | Sequence[float]) -> pd.DatetimeIndex:
    """Epoch seconds as `datetime64[ns, UTC]`, rounded to the microsecond."""
    micros = np.rint(np.asarray(seconds, dtype="float64") * 1e6).astype("int64")
    return pd.to_datetime(micros, unit="us", utc=True).as_unit("ns")


def time_to_epoch(times: pd.Series) -> np.ndarray:
    """A time column (aware or naive UTC, any unit) as epoch seconds: `epoch_to_time`'s
    inverse."""
    return times.to_numpy("datetime64[ns]").astype("int64") / 1e9


def empty_requests_frame() -> pd.DataFrame:
    """A requests frame with no rows and the documented dtypes."""
    return pd.DataFrame(
        {name: pd.Series(dtype=dtype) for name, dtype in REQUEST_FRAME_DTYPES.items()}
    )


def series_frame(
    times_s: np.ndarray, values: np.ndarray, labels: Mapping[str, Sequence[str | None]]
) -> pd.DataFrame:
    """A series frame from epoch seconds, values and label columns (made categorical)."""
    return coded_series_frame(
        times_s, values, {name: pd.Categorical(list(labels[name])) for name in labels}
    )


def coded_series_frame(
    times_s: np.ndarray, values: np.ndarray, labels: Mapping[str, pd.Categorical]
) -> pd.DataFrame:
    """A series frame from epoch seconds, values and ready-made categorical label columns:
    a store that knows each row's series builds them from codes, without reading a string
    per row."""
    columns: dict[str, object] = {
        "time": epoch_to_time(times_s), "value": np.asarray(values, dtype="float64"),
    }
    for name in sorted(labels):
        columns[name] = labels[name]
    return pd.DataFrame(columns)


def empty_series_frame(label_names: Sequence[str] = ()) -> pd.DataFrame:
    """A series frame with no rows."""
    return series_frame(np.empty(0), np.empty(0), {name: [] for name in label_names})


def empty_events_frame() -> pd.DataFrame:
    """An events frame with no rows."""
    return pd.DataFrame(
        {
            "time": pd.Series(dtype="datetime64[ns, UTC]"),
            "kind": pd.Series(dtype="category"),
            "subject": pd.Series(dtype="str"),
            "detail": pd.Series(dtype="str"),
        }
    )


def open_history(
    store_path: str | Path | None = None,
    *,
    prometheus: PrometheusSource | None = None,
) -> History:
    """The history to read: Prometheus when a `PrometheusSource` is given (requests and events
    then still come from the store at `store_path`, if any), else the SQLite store."""
    from aidash_lib.store.sqlite import SqliteHistory

    store = SqliteHistory(store_path) if store_path is not None else None
    if prometheus is not None:
        from aidash_lib.store.prometheus import PrometheusHistory

        return PrometheusHistory(prometheus, store=store)
    if store is None:
        raise ValueError("give a store path, a PrometheusSource, or both")
    return store
