"""Prometheus's HTTP API: readiness, instant and range PromQL queries as pandas DataFrames.

Every query answers a `Reading[pd.DataFrame]` in one long format (one row per series and
timestamp), so the same frame feeds a chart, a table and a postmortem whatever the result type.
Bad PromQL and failed executions are `QUERY_ERROR` faults carrying Prometheus's own message,
so an operator sees what Prometheus said, not a bare HTTP 400.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from aidash_lib.sources.base import (
    Fault,
    FaultKind,
    PrometheusStyleServer,
    Reading,
    http_get_json,
    malformed,
)

#: Prometheus refuses a range query whose (end - start) / step exceeds this.
MAX_POINTS = 11_000

#: Points asked of a range query when neither a step nor a number of points is given.
DEFAULT_POINTS = 250

#: Steps a person reads easily, in seconds; `choose_step` rounds to one of these.
NICE_STEPS_S: tuple[float, ...] = (
    1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800,
    3600, 7200, 10800, 21600, 43200, 86400,
)

#: The first columns of every query frame; label columns follow, sorted.
BASE_COLUMNS: tuple[str, str] = ("timestamp", "value")

#: Labels whose names would clash with the fixed columns are renamed with this prefix.
LABEL_PREFIX = "label_"

# Statuses with which Prometheus refuses a query: 400 bad_data (parse errors, bad parameters,
# too many points) and 422 execution (e.g. duplicate label sets).
_QUERY_ERROR_STATUSES = frozenset({400, 422})

TimeLike = float | int | datetime


def choose_step(start: TimeLike, end: TimeLike, points: int) -> float:
    """A query_range step in seconds giving about `points` points over `[start, end]`.

    The step is at least 1 s, rounded to the nearest of `NICE_STEPS_S` (whole days beyond),
    and always large enough that Prometheus's limit of 11,000 points per series holds.
    """
    if points < 1:
        raise ValueError(f"points must be at least 1, not {points}")
    span_s = _epoch_s(end) - _epoch_s(start)
    if span_s < 0:
        raise ValueError("end is before start")
    raw_s = span_s / max(points - 1, 1)
    if raw_s <= NICE_STEPS_S[0]:
        step_s = float(NICE_STEPS_S[0])
    elif raw_s <= NICE_STEPS_S[-1]:
        step_s = float(min(NICE_STEPS_S, key=lambda nice: abs(math.log(nice / raw_s))))
    else:
        step_s = float(round(raw_s / 86400) * 86400)
    if span_s / step_s > MAX_POINTS:
        floor_s = span_s / MAX_POINTS
        larger = [nice for nice in NICE_STEPS_S if nice >= floor_s]
        step_s = float(larger[0]) if larger else float(math.ceil(floor_s / 86400) * 86400)
    return step_s


class PrometheusSource(PrometheusStyleServer):
    """Reads one Prometheus server through its HTTP API (`/-/ready`, `/api/v1/query[_range]`).

    Query frames have these columns, in this order:

    - `timestamp`: `datetime64[ns, UTC]`, the sample's time (Prometheus's milliseconds kept);
    - `value`: `float64`; `NaN`, `+Inf` and `-Inf` are kept as the floats they are;
    - one column per label, sorted by name; `__name__` is called `metric`. A label named
      `timestamp`, `value` or `metric` is renamed `label_timestamp`, `label_value`,
      `label_metric`. A series without a label another series has gets a missing value there.

    Rows are grouped by series in the order Prometheus returned them, then by time. An empty
    result is an empty frame with just `timestamp` and `value`; a scalar result is
    one row without label columns. `frame.attrs` holds `result_type` and Prometheus's
    `warnings` (a tuple, empty when none).
    """

    source = "prometheus"


    async def query(self, promql: str, at: TimeLike | None = None) -> Reading[pd.DataFrame]:
        """An instant query, evaluated at `at` (epoch seconds or datetime; default: now).

        A naive datetime is taken as UTC. See the class docstring for the frame's columns.
        """
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = _format_time(at)
        return await self._query("/api/v1/query", params)

    async def query_range(
        self,
        promql: str,
        start: TimeLike,
        end: TimeLike,
        *,
        step_s: float | None = None,
        points: int | None = None,
    ) -> Reading[pd.DataFrame]:
        """A range query over `[start, end]`, with either `step_s` or about `points` points.

        Without either, about `DEFAULT_POINTS` points are asked for (see `choose_step`).
        See the class docstring for the frame's columns.
        """
        if step_s is not None and points is not None:
            raise ValueError("give step_s or points, not both")
        if step_s is None:
            step_s = choose_step(start, end, points if points is not None else DEFAULT_POINTS)
        elif step_s <= 0:
            raise ValueError(f"step_s must be positive, not {step_s}")
        params = {
            "query": promql,
            "start": _format_time(start),
            "end": _format_time(end),
            "step": f"{step_s:g}",
        }
        return await self._query("/api/v1/query_range", params)

    async def _query(self, path: str, params: Mapping[str, Any]) -> Reading[pd.DataFrame]:
        started = time.time()
        url = f"{self.base_url}{path}"
        body = await http_get_json(self.client, url, params=params, timeout=self.timeout)
        if isinstance(body, Fault):
            if body.kind is FaultKind.HTTP_STATUS and body.status_code in _QUERY_ERROR_STATUSES:
                body = Fault(FaultKind.QUERY_ERROR, body.message, url, body.status_code)
            return Reading.failure(self.source, body, started)
        if not isinstance(body, dict):
            return Reading.failure(self.source, malformed(url, "answer is not an object"), started)
        if body.get("status") != "success":
            message = str(body.get("error") or f"status {body.get('status')!r}")
            return Reading.failure(
                self.source, Fault(FaultKind.QUERY_ERROR, message, url), started
            )
        try:
            frame = frame_from_data(body.get("data"))
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            return Reading.failure(
                self.source, malformed(url, f"unexpected query result: {exc}"), started
            )
        frame.attrs["warnings"] = tuple(str(w) for w in body.get("warnings") or ())
        return Reading.success(self.source, frame, started)


def frame_from_data(data: Any) -> pd.DataFrame:
    """The `data` object of a query answer as a long frame (columns: see `PrometheusSource`).

    Raises ValueError (or TypeError, KeyError) when `data` does not have the API's shape.
    """
    if not isinstance(data, dict):
        raise ValueError("no data object")
    result_type = data["resultType"]
    result = data["result"]
    if result_type == "scalar":
        series: list[tuple[Mapping[str, Any], list[Any]]] = [({}, [result])]
    elif result_type == "vector":
        series = [(item["metric"], [item["value"]]) for item in result]
    elif result_type == "matrix":
        series = [(item["metric"], item.get("values") or []) for item in result]
    else:
        raise ValueError(f"unknown resultType {result_type!r}")

    labels = sorted({_column_name(name) for metric, _ in series for name in metric})
    times: list[float] = []
    values: list[float] = []
    columns: dict[str, list[Any]] = {name: [] for name in labels}
    for metric, samples in series:
        if not isinstance(metric, dict):
            raise TypeError("metric is not an object")
        renamed = {_column_name(name): value for name, value in metric.items()}
        for ts, value in samples:
            times.append(float(ts))
            values.append(float(value))
        for name in labels:
            columns[name].extend([renamed.get(name)] * len(samples))

    millis = np.rint(np.asarray(times, dtype="float64") * 1000).astype("int64")
    timestamps = pd.to_datetime(millis, unit="ms", utc=True).as_unit("ns")
    frame = pd.DataFrame(
        {
            "timestamp": timestamps,
            "value": np.asarray(values, dtype="float64"),
            **columns,
        }
    )
    frame.attrs["result_type"] = result_type
    return frame


def _column_name(label: str) -> str:
    if label == "__name__":
        return "metric"
    if label in (*BASE_COLUMNS, "metric"):
        return LABEL_PREFIX + label
    return label


def _epoch_s(when: TimeLike) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return float(when)


def _format_time(when: TimeLike) -> str:
    """Epoch seconds with millisecond precision, as Prometheus's API accepts them."""
    return f"{_epoch_s(when):.3f}"
