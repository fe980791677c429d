"""The Prometheus backend of the history interface: metric history computed by PromQL.

For people who have outgrown one machine: the gateway's own counters and histograms, DCGM's
GPU gauges and node_exporter's machine metrics live in Prometheus, and each aidash metric name
(`gateway_group_requests_per_min`, `gateway_group_latency_p95_s`, `gpu_temperature_c`, ...: the
names the recorder writes into the SQLite store) maps to a PromQL expression evaluated there
(`PROMQL_METRICS`), with the same labels (`model_group`, `deployment_id`, `gpu`, `path`; and
`host` or `instance` for fleets). Any other name is sent as PromQL as it
is, so `series("rate(http_requests_total[5m])", ...)` works too.

Per-request records and aidash's events are not in Prometheus: `requests()` and `events()`
answer from the SQLite store when one is given, else raise `NotAvailable`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from string import Template

import numpy as np
import pandas as pd

from aidash_lib.sources.prometheus import DEFAULT_POINTS, PrometheusSource, choose_step
from aidash_lib.store.history import (
    DEFAULT_QUANTILES,
    Filter,
    History,
    NotAvailable,
    QueryFailed,
    TimeArg,
    check_quantiles,
    empty_series_frame,
    quantile_column,
    window,
)

#: Prometheus label names and the names aidash uses for them in frames.
LABEL_NAMES: Mapping[str, str] = {
    "requested_model": "model_group",
    "model_id": "deployment_id",
    "litellm_model_name": "model",
    "api_provider": "provider",
    "Hostname": "host",
    "mountpoint": "path",
}

#: Shortest rate window: four scrapes at LiteLLM's usual 15 s interval.
MIN_RATE_WINDOW_S = 60.0

_TOTAL = "litellm_proxy_total_requests_metric_total"
_FAILED = "litellm_proxy_failed_requests_metric_total"
_LATENCY = "litellm_request_total_latency_metric"
_TTFT = "litellm_llm_api_time_to_first_token_metric"


@dataclass(frozen=True)
class PromqlMetric:
    """An aidash metric as a PromQL template.

    In `expr`, `$sel` becomes a label matcher block (`{name="value"}`, or nothing) and `$and`
    the same matchers after a comma (for selectors that have matchers already); `$w` is the
    rate window (e.g. `60s`).
    """

    expr: str
    unit: str
    description: str

    def render(self, matchers: Mapping[str, str], window_s: float) -> str:
        """The PromQL for these label matchers (Prometheus names) and rate window."""
        inner = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(matchers.items()))
        return Template(self.expr).substitute(
            sel=f"{{{inner}}}" if inner else "",
            **{"and": f",{inner}" if inner else ""},
            w=f"{max(math.ceil(window_s), 1)}s",
        )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _by(labels: str) -> str:
    return f"sum by ({labels}) " if labels else "sum "


def _gateway_level(prefix: str, by: str) -> dict[str, PromqlMetric]:
    """The recorder's gateway metrics at one level (`gateway`, `gateway_group`) as PromQL:
    the same names, values and labels it derives from two scrapes."""
    level = f"by {by}" if by else "for the whole gateway"
    sel = "$sel[$w]"
    # The whole gateway counts the requests clients sent; a group, its deployments' attempts.
    total, failed = (
        (_TOTAL, _FAILED) if not by else
        ("litellm_deployment_total_requests_total", "litellm_deployment_failure_responses_total")
    )
    metrics = {
        "requests_per_min": PromqlMetric(
            f"{_by(by)}(rate({total}{sel})) * 60", "1/min", f"requests per minute {level}"),
        "errors_per_min": PromqlMetric(
            f"{_by(by)}(rate({failed}{sel})) * 60", "1/min", f"failures per minute {level}"),
        "error_rate_percent": PromqlMetric(
            f"100 * {_by(by)}(rate({failed}{sel})) / {_by(by)}(rate({total}{sel}))", "%",
            f"failures as a percentage of requests {level}"),
        "latency_mean_s": PromqlMetric(
            f"{_by(by)}(rate({_LATENCY}_sum{sel})) / {_by(by)}(rate({_LATENCY}_count{sel}))",
            "s", f"mean latency of successful requests {level}"),
        "input_tokens_per_s": PromqlMetric(
            f"{_by(by)}(rate(litellm_input_tokens_metric_total{sel}))", "1/s",
            f"prompt tokens per second {level}"),
        "output_tokens_per_s": PromqlMetric(
            f"{_by(by)}(rate(litellm_output_tokens_metric_total{sel}))", "1/s",
            f"completion tokens per second {level}"),
        "tokens_per_s": PromqlMetric(
            f"{_by(by)}(rate(litellm_total_tokens_metric_total{sel}))", "1/s",
            f"tokens per second {level}"),
        "fallbacks": PromqlMetric(
            f"{_by(by)}(increase(litellm_deployment_successful_fallbacks_total{sel}))", "",
            f"fallbacks in each step {level}"),
        "failed_fallbacks": PromqlMetric(
            f"{_by(by)}(increase(litellm_deployment_failed_fallbacks_total{sel}))", "",
            f"failed fallbacks in each step {level}"),
    }
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        group = f"le, {by}" if by else "le"
        metrics[f"latency_{name}_s"] = PromqlMetric(
            f"histogram_quantile({q}, sum by ({group}) (rate({_LATENCY}_bucket{sel})))", "s",
            f"P{q * 100:g} latency of successful requests {level}, interpolated inside buckets",
        )
    return {f"{prefix}_{name}": metric for name, metric in metrics.items()}


def _dcgm(expr: str, unit: str, description: str) -> PromqlMetric:
    return PromqlMetric(expr, unit, f"{description} (DCGM)")


def _node(expr: str, unit: str, description: str) -> PromqlMetric:
    return PromqlMetric(expr, unit, f"{description} (node_exporter)")


_FS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs"$and'

#: aidash metric names (those the recorder writes, see `aidash_lib.derive`) and their PromQL
#: over LiteLLM's, DCGM's and node_exporter's metrics, with the same labels.
PROMQL_METRICS: Mapping[str, PromqlMetric] = {
    **_gateway_level("gateway", ""),
    **_gateway_level("gateway_group", "requested_model"),
    "gateway_spend_usd_per_h": PromqlMetric(
        "sum(rate(litellm_spend_metric_total$sel[$w])) * 3600", "USD/h",
        "LiteLLM's cost estimate per hour for the whole gateway",
    ),
    "gateway_group_client_requests_per_min": PromqlMetric(
        f"sum by (requested_model) (rate({_TOTAL}$sel[$w])) * 60", "1/min",
        "requests clients sent naming each model group, per minute",
    ),
    "gateway_group_client_error_rate_percent": PromqlMetric(
        f"100 * sum by (requested_model) (rate({_FAILED}$sel[$w])) "
        f"/ sum by (requested_model) (rate({_TOTAL}$sel[$w]))",
        "%", "requests naming each group that failed after every fallback, percent",
    ),
    "gateway_deployment_requests_per_min": PromqlMetric(
        "sum by (requested_model, model_id) "
        "(rate(litellm_deployment_total_requests_total$sel[$w])) * 60",
        "1/min", "attempts per minute by deployment",
    ),
    "gateway_deployment_errors_per_min": PromqlMetric(
        "sum by (requested_model, model_id) "
        "(rate(litellm_deployment_failure_responses_total$sel[$w])) * 60",
        "1/min", "failed attempts per minute by deployment",
    ),
    "gateway_deployment_error_rate_percent": PromqlMetric(
        "100 * sum by (requested_model, model_id) "
        "(rate(litellm_deployment_failure_responses_total$sel[$w])) "
        "/ sum by (requested_model, model_id) "
        "(rate(litellm_deployment_total_requests_total$sel[$w]))",
        "%", "failed attempts as a percentage, by deployment",
    ),
    "gateway_deployment_cooldowns": PromqlMetric(
        "sum by (model_id) (increase(litellm_deployment_cooled_down_total$sel[$w]))", "",
        "cooldowns in each step, by deployment",
    ),
    "gateway_deployment_state": PromqlMetric(
        "max by (model_id) (litellm_deployment_state$sel)", "",
        "0 healthy, 1 partial outage, 2 complete outage",
    ),
    "gpu_utilization_percent": _dcgm(
        "avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL$sel)", "%", "GPU utilisation"),
    "gpu_memory_utilization_percent": _dcgm(
        "avg by (Hostname, gpu) (DCGM_FI_DEV_MEM_COPY_UTIL$sel)", "%",
        "memory controller utilisation"),
    "gpu_memory_used_bytes": _dcgm(
        "avg by (Hostname, gpu) (DCGM_FI_DEV_FB_USED$sel) * 1048576", "B",
        "framebuffer memory used"),
    "gpu_memory_total_bytes": _dcgm(
        "(avg by (Hostname, gpu) (DCGM_FI_DEV_FB_USED$sel) + avg by (Hostname, gpu) "
        "(DCGM_FI_DEV_FB_FREE$sel)) * 1048576", "B", "framebuffer memory"),
    "gpu_memory_used_percent": _dcgm(
        "100 * avg by (Hostname, gpu) (DCGM_FI_DEV_FB_USED$sel) / (avg by (Hostname, gpu) "
        "(DCGM_FI_DEV_FB_USED$sel) + avg by (Hostname, gpu) (DCGM_FI_DEV_FB_FREE$sel))",
        "%", "framebuffer memory used, percent"),
    "gpu_temperature_c": _dcgm(
        "avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_TEMP$sel)", "°C", "GPU temperature"),
    "gpu_power_w": _dcgm(
        "avg by (Hostname, gpu) (DCGM_FI_DEV_POWER_USAGE$sel)", "W", "power draw"),
    "system_cpu_percent": _node(
        '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"$and}[$w])))',
        "%", "CPU busy, all cores"),
    "system_load_1m": _node("avg by (instance) (node_load1$sel)", "", "1-minute load average"),
    "system_memory_used_percent": _node(
        "100 * (1 - avg by (instance) (node_memory_MemAvailable_bytes$sel) "
        "/ avg by (instance) (node_memory_MemTotal_bytes$sel))", "%", "memory in use"),
    "system_memory_used_bytes": _node(
        "avg by (instance) (node_memory_MemTotal_bytes$sel) "
        "- avg by (instance) (node_memory_MemAvailable_bytes$sel)", "B", "memory in use"),
    "system_memory_total_bytes": _node(
        "avg by (instance) (node_memory_MemTotal_bytes$sel)", "B", "memory"),
    "system_swap_used_percent": _node(
        "100 * (1 - avg by (instance) (node_memory_SwapFree_bytes$sel) "
        "/ avg by (instance) (node_memory_SwapTotal_bytes$sel))", "%", "swap in use"),
    "system_disk_used_percent": _node(
        f"100 * (1 - max by (instance, mountpoint) (node_filesystem_avail_bytes{{{_FS}}}) "
        f"/ max by (instance, mountpoint) (node_filesystem_size_bytes{{{_FS}}}))",
        "%", "filesystem in use, by mount point (`path`)"),
    "system_disk_used_bytes": _node(
        f"max by (instance, mountpoint) (node_filesystem_size_bytes{{{_FS}}}) "
        f"- max by (instance, mountpoint) (node_filesystem_free_bytes{{{_FS}}})",
        "B", "filesystem in use, by mount point (`path`)"),
    "system_disk_read_bytes_per_s": _node(
        "sum by (instance) (rate(node_disk_read_bytes_total$sel[$w]))", "B/s",
        "disk bytes read per second"),
    "system_disk_write_bytes_per_s": _node(
        "sum by (instance) (rate(node_disk_written_bytes_total$sel[$w]))", "B/s",
        "disk bytes written per second"),
    "system_net_rx_bytes_per_s": _node(
        'sum by (instance) (rate(node_network_receive_bytes_total{device!="lo"$and}[$w]))',
        "B/s", "network bytes received per second"),
    "system_net_tx_bytes_per_s": _node(
        'sum by (instance) (rate(node_network_transmit_bytes_total{device!="lo"$and}[$w]))',
        "B/s", "network bytes sent per second"),
}

#: `by` columns of `latency_percentiles` and the histogram label each one is.
PERCENTILE_GROUPS: Mapping[str, str] = {"requested_group": "requested_model", "model": "model"}


@dataclass(frozen=True)
class PrometheusHistory:
    """The history interface over a Prometheus server (see the module docstring).

    `store` (a `SqliteHistory`, or any `History`) answers `requests`, `request_totals` and
    `events`; `metrics` may add or replace metric names.
    """

    source: PrometheusSource
    store: History | None = None
    metrics: Mapping[str, PromqlMetric] = field(
        default_factory=lambda: dict(PROMQL_METRICS), repr=False
    )

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
        """Per-request records: from the SQLite store (Prometheus holds only aggregates)."""
        return await self._records_store("requests").requests(
            start, end, model_group=model_group, deployment=deployment, provider=provider,
            status=status, error_text=error_text, limit=limit,
        )

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
        """Totals of per-request records: from the SQLite store (as `requests`)."""
        return await self._records_store("request_totals").request_totals(
            start, end, model_group=model_group, provider=provider, q=q,
            include_health_checks=include_health_checks,
        )

    def _records_store(self, method: str) -> History:
        """The store that answers `method` with per-request records, or why there is none."""
        if self.store is None:
            raise NotAvailable(
                f"{method}() needs the SQLite store: Prometheus keeps counters and histograms, "
                "not per-request records. Pass store=SqliteHistory(path) to PrometheusHistory."
            )
        return self.store

    async def events(self, start: TimeArg, end: TimeArg, kind: Filter = None) -> pd.DataFrame:
        """aidash's events: from the SQLite store."""
        if self.store is None:
            raise NotAvailable(
                "events() needs the SQLite store: alert transitions, config saves and service "
                "actions are recorded there. Pass store=SqliteHistory(path) to PrometheusHistory."
            )
        return await self.store.events(start, end, kind)

    def promql(
        self, metric: str, *, labels: Mapping[str, str] | None = None, window_s: float = 60.0
    ) -> str:
        """The PromQL asked for `metric` (an aidash name, else taken as PromQL as it is)."""
        spec = self.metrics.get(metric)
        if spec is None:
            return metric
        prom_names = {aidash: prom for prom, aidash in LABEL_NAMES.items()}
        matchers = {prom_names.get(k, k): str(v) for k, v in (labels or {}).items()}
        return spec.render(matchers, max(window_s, MIN_RATE_WINDOW_S))

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
        """`metric` evaluated every `step_s` over `[start, end]` (the series frame).

        Without `step_s`, about `points` points (default `DEFAULT_POINTS`). Rates are taken
        over the step (at least `MIN_RATE_WINDOW_S`). NaN values (no traffic for a quantile)
        are kept. Label columns use aidash's names (`model_group`, `deployment_id`, `host`).
        """
        start_s, end_s = window(start, end)
        if step_s is not None and points is not None:
            raise ValueError("give step_s or points, not both")
        if step_s is None:
            step_s = choose_step(start_s, end_s, points if points is not None else DEFAULT_POINTS)
        promql = self.promql(metric, labels=labels, window_s=step_s)
        reading = await self.source.query_range(promql, start_s, end_s, step_s=step_s)
        if not reading.ok or reading.value is None:
            raise QueryFailed(f"Prometheus could not answer {metric!r} ({promql}): {reading.fault}")
        frame = _series_from_query(reading.value)
        if metric not in self.metrics and labels:
            for name, value in labels.items():
                if name not in frame.columns:
                    return empty_series_frame()
                frame = frame[frame[name] == value]
            frame = _categorical_labels(frame.reset_index(drop=True))
        return frame

    async def latency_percentiles(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        by: Sequence[str] = ("requested_group",),
        q: Sequence[float] = DEFAULT_QUANTILES,
    ) -> pd.DataFrame:
        """Latency percentiles over `[start, end]` from the gateway's histogram
        (`histogram_quantile` of the buckets' increase), grouped by `requested_group` or
        `model`. Interpolated inside buckets: `attrs["exact"]` is False."""
        start_s, end_s = window(start, end)
        columns = (by,) if isinstance(by, str) else tuple(by)
        unknown = [c for c in columns if c not in PERCENTILE_GROUPS]
        if unknown:
            raise NotAvailable(
                f"Prometheus's latency histogram has no label for {unknown}: group by "
                f"{sorted(PERCENTILE_GROUPS)}, or read percentiles from the SQLite store"
            )
        qs = check_quantiles(q)
        labels = [PERCENTILE_GROUPS[c] for c in columns]
        group = ", ".join(labels)
        span = f"{max(math.ceil(end_s - start_s), 1)}s"
        increase = f"increase({_LATENCY}_bucket[{span}])"
        queries = [f"sum by ({group}) (increase({_LATENCY}_count[{span}]))"] + [
            f"histogram_quantile({quantile}, sum by (le{', ' if group else ''}{group}) "
            f"({increase}))"
            for quantile in qs
        ]
        readings = await asyncio.gather(*(self.source.query(p, at=end_s) for p in queries))
        for promql, reading in zip(queries, readings, strict=True):
            if not reading.ok or reading.value is None:
                raise QueryFailed(f"Prometheus could not answer {promql}: {reading.fault}")
        frames = [reading.value for reading in readings if reading.value is not None]

        def keyed(frame: pd.DataFrame) -> pd.Series:
            index = [tuple(row) for row in frame[labels].itertuples(index=False)] if labels \
                else [()] * len(frame)
            return pd.Series(frame["value"].to_numpy(), index=pd.Index(index, tupleize_cols=False))

        counts = keyed(frames[0]) if len(frames[0]) else pd.Series(dtype="float64")
        counts = counts[counts > 0].sort_index()
        result = pd.DataFrame(
            {name: [key[i] for key in counts.index] for i, name in enumerate(columns)}
        )
        for name in columns:
            result[name] = result[name].astype("category")
        result["requests"] = np.rint(counts.to_numpy()).astype("int64")
        for quantile, frame in zip(qs, frames[1:], strict=True):
            values = keyed(frame) if len(frame) else pd.Series(dtype="float64")
            result[quantile_column(quantile)] = values.reindex(counts.index).to_numpy(
                dtype="float64"
            )
        result.attrs["exact"] = False
        return result


def _categorical_labels(frame: pd.DataFrame) -> pd.DataFrame:
    for name in frame.columns[2:]:
        frame[name] = frame[name].astype("category")
    return frame


def _series_from_query(frame: pd.DataFrame) -> pd.DataFrame:
    """A `PrometheusSource` query frame as a series frame (time, value, aidash labels)."""
    frame = frame.drop(columns=[c for c in ("metric",) if c in frame.columns])
    frame = frame.rename(columns={"timestamp": "time", **LABEL_NAMES})
    labels = sorted(c for c in frame.columns if c not in ("time", "value"))
    frame = frame[["time", "value", *labels]]
    if labels:
        frame = frame.sort_values([*labels, "time"], kind="stable")
    frame = frame.reset_index(drop=True)
    frame["time"] = frame["time"].astype("datetime64[ns, UTC]")
    frame["value"] = frame["value"].astype("float64")
    return _categorical_labels(frame)
