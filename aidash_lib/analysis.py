"""Analysis of history in pandas: percentiles, throughput, error rates, provider comparison,
downsampling for charts.

Every function takes the frames of `aidash_lib.store.history` (the requests frame, the series
frame) and returns a new frame with the columns its docstring lists. Health-check attempts
(`is_health_check`) are left out unless `include_health_checks=True`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from aidash_lib.store.history import (
    DEFAULT_QUANTILES,
    check_quantiles,
    quantile_column,
)


def _attempts(
    requests: pd.DataFrame, *, include_health_checks: bool, status: str | None = None
) -> pd.DataFrame:
    frame = requests
    if not include_health_checks and "is_health_check" in frame.columns:
        frame = frame[~frame["is_health_check"].astype(bool)]
    if status is not None:
        frame = frame[frame["status"] == status]
    return frame


def _by(by: Sequence[str] | str | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def _as_category(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    for name in columns:
        if not isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype("category")
    return frame


def latency_percentiles(
    requests: pd.DataFrame,
    by: Sequence[str] | str | None = ("requested_group",),
    q: Sequence[float] = DEFAULT_QUANTILES,
    *,
    status: str | None = "success",
    include_health_checks: bool = False,
    column: str = "latency_s",
) -> pd.DataFrame:
    """Exact percentiles of `column` (latency_s, or ttft_s) by any grouping.

    Linear interpolation between closest ranks, as numpy and pandas do. By default only
    successful attempts count. Columns: the `by` columns (category), `requests` (int64), one
    float64 column per quantile (`p50_s`, `p95_s`, `p99_s`); one row per observed group,
    sorted. With `by=None`, one row over everything.
    """
    qs = check_quantiles(q)
    keys = _by(by)
    frame = _attempts(requests, include_health_checks=include_health_checks, status=status)
    frame = frame[[*keys, column]].dropna(subset=[column])
    names = [quantile_column(x) for x in qs]
    if not keys:
        values = np.quantile(frame[column].to_numpy(), qs) if len(frame) else [np.nan] * len(qs)
        result = pd.DataFrame({"requests": [len(frame)]}, dtype="int64")
        for name, value in zip(names, values, strict=True):
            result[name] = float(value)
        result.attrs["exact"] = True
        return result
    if frame.empty:
        result = pd.DataFrame({name: pd.Categorical([]) for name in keys})
        result["requests"] = pd.Series(dtype="int64")
        for name in names:
            result[name] = pd.Series(dtype="float64")
        result.attrs["exact"] = True
        return result
    frame = _as_category(frame.copy(), keys)
    grouped = frame.groupby(keys, observed=True, sort=True)[column]
    counts = grouped.size()
    table = grouped.quantile(list(qs)).unstack(level=-1)
    table.columns = names
    result = table.join(counts.rename("requests")).reset_index()
    result = result[[*keys, "requests", *names]]
    result["requests"] = result["requests"].astype("int64")
    result = _as_category(result, keys)
    result.attrs["exact"] = True
    return result


def _interval_seconds(interval: str | pd.Timedelta) -> float:
    return pd.Timedelta(interval).total_seconds()


def throughput(
    requests: pd.DataFrame,
    interval: str | pd.Timedelta = "1min",
    *,
    by: Sequence[str] | str | None = None,
    include_health_checks: bool = False,
) -> pd.DataFrame:
    """Attempts and tokens per interval (by start time), with empty intervals as zeros.

    Columns: `time` (datetime64[ns, UTC], the interval's start), the `by` columns (category),
    `requests`, `failures`, `prompt_tokens`, `completion_tokens` (int64), `requests_per_s`,
    `completion_tokens_per_s` (float64).
    """
    keys = _by(by)
    seconds = _interval_seconds(interval)
    frame = _attempts(requests, include_health_checks=include_health_checks).copy()
    frame["time"] = frame["started"].dt.floor(pd.Timedelta(seconds=seconds))
    frame["failures"] = (frame["status"] == "failure").astype("int64")
    frame = _as_category(frame, keys)
    grouped = frame.groupby(["time", *keys], observed=True, sort=True)
    table = grouped.agg(
        requests=("status", "size"),
        failures=("failures", "sum"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
    )
    if len(table):
        times = pd.date_range(
            frame["time"].min(), frame["time"].max(), freq=pd.Timedelta(seconds=seconds)
        )
        if keys:
            groups = table.reset_index()[keys].drop_duplicates()
            full = pd.MultiIndex.from_frame(
                pd.DataFrame({"time": times}).merge(groups, how="cross")
            )
        else:
            full = pd.Index(times, name="time")
        table = table.reindex(full, fill_value=0)
    result = table.reset_index()
    for name in ("requests", "failures", "prompt_tokens", "completion_tokens"):
        result[name] = result[name].astype("int64")
    result["requests_per_s"] = result["requests"] / seconds
    result["completion_tokens_per_s"] = result["completion_tokens"] / seconds
    return _as_category(result[["time", *keys, *table.columns,
                                "requests_per_s", "completion_tokens_per_s"]], keys)


def _failed_calls(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per call: its last attempt (a call fails when its last attempt failed)."""
    order = ["ended", "id"] if "id" in frame.columns else ["ended"]
    return frame.sort_values(order).drop_duplicates("call_id", keep="last")


def error_rates(
    requests: pd.DataFrame,
    by: Sequence[str] | str | None = ("requested_group",),
    *,
    interval: str | pd.Timedelta | None = None,
    per: str = "attempt",
    include_health_checks: bool = False,
) -> pd.DataFrame:
    """Failures as a fraction of attempts (`per="attempt"`) or of calls (`per="call"`: a call
    whose fallback succeeded is not a failure), by group and optionally per interval.

    Columns: `time` (with `interval`), the `by` columns (category), `requests`, `failures`
    (int64), `error_rate` (float64, 0..1), `top_error` (category: the most frequent
    `normalized_error`, else `error_class`, among the failures; missing when none).
    """
    if per not in ("attempt", "call"):
        raise ValueError(f"per must be 'attempt' or 'call', not {per!r}")
    keys = _by(by)
    frame = _attempts(requests, include_health_checks=include_health_checks)
    if per == "call":
        frame = _failed_calls(frame)
    frame = frame.copy()
    group = list(keys)
    if interval is not None:
        frame["time"] = frame["started"].dt.floor(pd.Timedelta(interval))
        group = ["time", *keys]
    frame["failures"] = (frame["status"] == "failure").astype("int64")
    error = frame["normalized_error"].astype("object").where(
        frame["normalized_error"].notna(), frame["error_class"].astype("object")
    )
    frame["error"] = error.where(frame["failures"] == 1)
    frame = _as_category(frame, keys)
    if not group:
        frame["_all"] = 0
        group = ["_all"]
    grouped = frame.groupby(group, observed=True, sort=True)
    table = grouped.agg(requests=("status", "size"), failures=("failures", "sum"))
    table["error_rate"] = table["failures"] / table["requests"]
    top = frame.dropna(subset=["error"]).groupby(group, observed=True)["error"].agg(
        lambda s: s.value_counts().index[0]
    )
    table["top_error"] = top.reindex(table.index).astype("category")
    result = table.reset_index().drop(columns=["_all"], errors="ignore")
    result["requests"] = result["requests"].astype("int64")
    result["failures"] = result["failures"].astype("int64")
    return _as_category(result, keys)


#: The keys of the provider comparison and of `request_totals`.
COMPARISON_KEYS: tuple[str, str] = ("requested_group", "deployment_id")


def request_totals(
    requests: pd.DataFrame,
    *,
    q: Sequence[float] = DEFAULT_QUANTILES,
    include_health_checks: bool = False,
) -> pd.DataFrame:
    """Model group × deployment totals of a requests frame: what `History.request_totals`
    computes in the store (see the totals frame in `aidash_lib.store.history`).

    One row per (requested_group, deployment_id) seen, sorted (a missing deployment last).
    """
    qs = check_quantiles(q)
    keys = list(COMPARISON_KEYS)
    frame = _attempts(requests, include_health_checks=include_health_checks).copy()
    frame = _as_category(frame, [*keys, "model", "provider"])
    frame["failures"] = (frame["status"] == "failure").astype("int64")
    ok = frame["status"] == "success"
    frame["ok_latency"] = frame["latency_s"].where(ok)
    frame["ok_tokens"] = frame["completion_tokens"].where(ok, 0)
    frame["tokens"] = frame["prompt_tokens"] + frame["completion_tokens"]
    grouped = frame.groupby(keys, observed=True, sort=True, dropna=False)
    table = grouped.agg(
        model=("model", "first"),
        provider=("provider", "first"),
        requests=("status", "size"),
        failures=("failures", "sum"),
        ok_seconds=("ok_latency", "sum"),
        ok_completion_tokens=("ok_tokens", "sum"),
        tokens=("tokens", "sum"),
        cost_usd=("cost_usd", "sum"),
    )
    latencies = grouped["ok_latency"].quantile(list(qs)).unstack(level=-1)
    for quantile in qs:
        table[quantile_column(quantile)] = (
            latencies[quantile].reindex(table.index) if quantile in latencies.columns else np.nan
        )
    result = table.reset_index()
    for name in ("requests", "failures", "ok_completion_tokens", "tokens"):
        result[name] = result[name].astype("int64")
    for name in ("ok_seconds", "cost_usd"):
        result[name] = result[name].astype("float64")
    return _as_category(result, [*keys, "model", "provider"])


def comparison_from_totals(totals: pd.DataFrame) -> pd.DataFrame:
    """The provider comparison (see `provider_comparison`) from a totals frame, whether the
    store computed it (`History.request_totals`) or pandas did (`request_totals`)."""
    keys = list(COMPARISON_KEYS)
    quantiles = [c for c in totals.columns if re.fullmatch(r"p[0-9.]+_s", c)]
    columns = [
        *keys, "model", "provider", "requests", "failures", "share_of_group", "share_of_total",
        "error_rate", *quantiles, "tokens_per_s", "cost_per_1k_tokens_usd",
    ]
    table = totals.copy()
    requests = table["requests"].astype("float64")
    group_total = requests.groupby(table["requested_group"].astype("object"),
                                   dropna=False).transform("sum")
    table["share_of_group"] = requests / group_total
    table["share_of_total"] = requests / max(float(requests.sum()), 1.0)
    table["error_rate"] = table["failures"] / requests
    table["tokens_per_s"] = (table["ok_completion_tokens"] / table["ok_seconds"]).where(
        table["ok_seconds"] > 0
    )
    table["cost_per_1k_tokens_usd"] = (1000 * table["cost_usd"] / table["tokens"]).where(
        table["tokens"] > 0
    )
    result = table[columns].reset_index(drop=True)
    for name in ("requests", "failures"):
        result[name] = result[name].astype("int64")
    return _as_category(result, [*keys, "model", "provider"])


def provider_comparison(
    requests: pd.DataFrame,
    *,
    q: Sequence[float] = DEFAULT_QUANTILES,
    include_health_checks: bool = False,
) -> pd.DataFrame:
    """Model group × deployment: how each deployment serves each group.

    One row per (requested_group, deployment_id) seen, sorted. Columns: `requested_group`,
    `deployment_id`, `model`, `provider` (category), `requests`, `failures` (int64),
    `share_of_group` (its fraction of the group's attempts), `share_of_total`, `error_rate`
    (0..1), the latency percentiles of its successes (`p50_s`, `p95_s`, `p99_s`),
    `tokens_per_s` (completion tokens over seconds of successful attempts),
    `cost_per_1k_tokens_usd` (cost over prompt + completion tokens, × 1000), all float64.
    Attempts that reached no deployment have a missing `deployment_id`. Over a store, the same
    comparison without reading every record: `comparison_from_totals(await
    history.request_totals(start, end))`.
    """
    return comparison_from_totals(
        request_totals(requests, q=q, include_health_checks=include_health_checks))


def downsample_indices(times: np.ndarray, values: np.ndarray, points: int) -> np.ndarray:
    """Indices of at most `points` samples that keep each time bucket's min and max.

    `times` must be sorted. The range is cut into `(points - 2) // 2` equal time buckets;
    each keeps its lowest and highest value (first of ties), plus the first and last sample,
    so every peak and trough survives. NaN values are kept only where a bucket has nothing
    else. Vectorised: a million samples take milliseconds.
    """
    n = len(values)
    if points < 4:
        raise ValueError(f"points must be at least 4, not {points}")
    if n <= points:
        return np.arange(n)
    x = np.asarray(times)
    x = x.astype("int64") if x.dtype.kind == "M" else x.astype("float64", copy=False)
    y = np.asarray(values, dtype="float64")
    buckets = (points - 2) // 2
    span = float(x[-1]) - float(x[0])
    if span > 0:
        bucket = ((x - x[0]) * (buckets / span)).astype("int64")
    else:
        bucket = np.arange(n) * buckets // n
    np.clip(bucket, 0, buckets - 1, out=bucket)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    sizes = np.diff(np.r_[starts, n])
    nan = np.isnan(y)
    high = np.where(nan, -np.inf, y)
    low = np.where(nan, np.inf, y)
    owner = np.repeat(np.arange(len(starts)), sizes)

    def first_where(mask: np.ndarray) -> np.ndarray:
        hits = np.flatnonzero(mask)
        _, first = np.unique(owner[hits], return_index=True)
        return hits[first]

    at_max = first_where(high == np.repeat(np.maximum.reduceat(high, starts), sizes))
    at_min = first_where(low == np.repeat(np.minimum.reduceat(low, starts), sizes))
    return np.unique(np.concatenate([at_min, at_max, [0, n - 1]]))


def _time_values(times: pd.Series) -> np.ndarray:
    """Times as numbers (datetime64[ns] naive UTC for datetimes) for bucketing."""
    if isinstance(times.dtype, pd.DatetimeTZDtype) or times.dtype.kind == "M":
        return times.to_numpy(dtype="datetime64[ns]")
    return times.to_numpy(dtype="float64")


def downsample(series: pd.DataFrame, points: int) -> pd.DataFrame:
    """A series frame thinned to at most `points` rows per series, keeping its peaks.

    Min/max per time bucket (see `downsample_indices`), for each combination of label
    columns separately; the rows kept are the original rows (same columns and dtypes).
    """
    labels = [c for c in series.columns if c not in ("time", "value")]
    if not labels:
        frame = series.sort_values("time", kind="stable")
        keep = downsample_indices(_time_values(frame["time"]), frame["value"].to_numpy(), points)
        return frame.iloc[keep].reset_index(drop=True)
    parts = []
    for _, group in series.groupby(labels, observed=True, sort=False, dropna=False):
        group = group.sort_values("time", kind="stable")
        keep = downsample_indices(_time_values(group["time"]), group["value"].to_numpy(), points)
        parts.append(group.iloc[keep])
    if not parts:
        return series.iloc[:0].copy()
    return pd.concat(parts).reset_index(drop=True)
