"""Readings to `Sample`s: rates and percentiles from the gateway's counters, machine and GPU values.

Pure functions, no I/O: the recorder calls them and writes what they return. Every metric name
says its unit; labels are sorted `(name, value)` pairs. What the recorder writes:

Gateway traffic, derived from two consecutive scrapes of `/metrics/` (one sample per interval,
stamped with the time of the second scrape). Three levels, one name prefix each, so that a
reader filtering on `model_group` never mixes a group with its deployments:

- `gateway_group_*{model_group}`: the attempts served by the group's deployments;
- `gateway_deployment_*{deployment_id, model_group}`: one deployment's attempts;
- `gateway_*` (no labels): the whole gateway.

Suffixes (the LiteLLM counter each comes from in brackets):

- `requests_per_min`: attempts per minute [`litellm_deployment_total_requests`]; for the
  gateway, requests clients sent [`litellm_proxy_total_requests_metric`].
- `errors_per_min`: failed attempts per minute [`litellm_deployment_failure_responses`]; for
  the gateway, requests that failed in the end [`litellm_proxy_failed_requests_metric`].
- `error_rate_percent`: errors / requests × 100; absent when the interval had no request.
- `latency_p50_s`, `latency_p95_s`, `latency_p99_s`: end-to-end latency quantiles of the
  interval's successful requests (LiteLLM observes latency on success only), from the
  increase of each bucket of `litellm_request_total_latency_metric`, interpolated inside a
  bucket as PromQL's `histogram_quantile` does; absent without observations.
- `latency_mean_s`: the interval's exact mean latency (sum / count increases).
- `input_tokens_per_s`, `output_tokens_per_s`, `tokens_per_s`: token throughput
  [`litellm_{input,output,total}_tokens_metric`].
- `spend_usd_per_h`: LiteLLM's cost estimate per hour [`litellm_spend_metric`].
- `cooldowns`: times deployments were put in cooldown in the interval
  [`litellm_deployment_cooled_down`].
- `fallbacks`, `failed_fallbacks` (group and gateway only): fallbacks away from the group in
  the interval [`litellm_deployment_{successful,failed}_fallbacks` by `requested_model`].

A group counts the attempts its deployments served (and those that failed inside it before a
deployment was chosen). Requests that reached no group (an unknown model, a bad key) count only
in the gateway's totals. A deployment's group comes from `/model/info` when the recorder has it,
else from the scrape's own labels (`unknown` when neither says).

Also per group: `gateway_group_client_requests_per_min{model_group}` and
`gateway_group_client_error_rate_percent{model_group}`: the requests clients sent naming that
group and the share that failed after every fallback (`litellm_proxy_*` by `requested_model`).
With fallbacks the two views differ: a dead group has a 100 % attempt error rate while its
clients see no error.

Gateway gauges, from each scrape alone: `gateway_deployment_state{deployment_id, model_group}`
(0 healthy, 1 partial outage, 2 complete outage; the worst when LiteLLM keeps two series),
`gateway_in_flight_requests`. From the other gateway readings: `gateway_ready` (1 when
`/health/readiness` says healthy, 0 when it says otherwise or cannot be reached),
`gateway_readiness_response_s` (how long it took to answer), `gateway_deployment_count`.
The deployments themselves are not numbers: the recorder stores the list as an
`Event(kind="deployments", subject=<gateway url>, detail=<JSON list>)`.

Machine: `system_cpu_percent`, `system_load_1m`, `system_memory_used_percent`,
`system_memory_used_bytes`, `system_memory_total_bytes`, `system_swap_used_percent`,
`system_disk_used_percent{path}`, `system_disk_used_bytes{path}`, `system_disk_read_bytes_per_s`,
`system_disk_write_bytes_per_s`, `system_net_rx_bytes_per_s`, `system_net_tx_bytes_per_s`,
`system_process_count`.

GPUs, labelled `{gpu}` (the NVML index as text): `gpu_utilization_percent`,
`gpu_memory_utilization_percent`, `gpu_memory_used_bytes`, `gpu_memory_total_bytes`,
`gpu_memory_used_percent`, `gpu_temperature_c`, `gpu_power_w`, `gpu_power_limit_w`,
`gpu_clock_sm_mhz`, `gpu_fan_percent`. A value NVML cannot give is left out, not written as 0.

Other servers and services: `prometheus_ready`, `alertmanager_ready` (1/0),
`service_running{service}` (1 running, 0 stopped; left out when the state is unknown).

Counter resets. A counter lower than in the previous scrape means the gateway restarted inside
the interval: that series' increase is its new value (what it counted since the restart), as
Prometheus's `rate()` does, so a restart never gives a negative rate nor a spike. A series absent
from the previous scrape counts from zero (LiteLLM creates a series on its first request). A
histogram series is reset as a whole when its count or any bucket went down. Two limits: a
restart after which a counter has already grown past its old value cannot be seen (the interval
then undercounts); and a gateway with several workers must share its metrics
(`PROMETHEUS_MULTIPROC_DIR`), or each scrape reads another worker's counters.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from aidash_lib.sources.base import Reading, ServerStatus
from aidash_lib.sources.gateway import Deployment, GatewayReadiness
from aidash_lib.sources.gateway_metrics import (
    GatewayMetrics,
    HistogramBuckets,
    MetricSample,
    deployment_states,
)
from aidash_lib.sources.gpu import GpuSnapshot
from aidash_lib.sources.services import ServiceState, ServiceStatus
from aidash_lib.sources.system import SystemSnapshot
from aidash_lib.store.schema import Sample

K = TypeVar("K", bound=Hashable)

#: The quantiles written for latency, by metric suffix.
LATENCY_QUANTILES: tuple[tuple[str, float], ...] = (
    ("latency_p50_s", 0.50), ("latency_p95_s", 0.95), ("latency_p99_s", 0.99),
)

#: A deployment's group when neither the deployments list nor the scrape names it.
UNKNOWN_GROUP = "unknown"

LATENCY_FAMILY = "litellm_request_total_latency_metric"
DEPLOYMENT_REQUESTS = "litellm_deployment_total_requests_total"
DEPLOYMENT_FAILURES = "litellm_deployment_failure_responses_total"
PROXY_REQUESTS = "litellm_proxy_total_requests_metric_total"
PROXY_FAILURES = "litellm_proxy_failed_requests_metric_total"
INPUT_TOKENS = "litellm_input_tokens_metric_total"
OUTPUT_TOKENS = "litellm_output_tokens_metric_total"
TOTAL_TOKENS = "litellm_total_tokens_metric_total"
SPEND = "litellm_spend_metric_total"
COOLDOWNS = "litellm_deployment_cooled_down_total"
FALLBACKS = "litellm_deployment_successful_fallbacks_total"
FAILED_FALLBACKS = "litellm_deployment_failed_fallbacks_total"

_NO_ID = ("", "None")

Labels = tuple[tuple[str, str], ...]


def labels(**values: str) -> Labels:
    """Sample labels: sorted `(name, value)` pairs."""
    return tuple(sorted(values.items()))


# -- counters and histograms between two scrapes --------------------------------------------


def counter_increase(previous: float | None, current: float) -> float:
    """How much a counter grew; a counter that went down was reset, so its new value is the
    increase. Never negative; NaN counts as no increase."""
    if math.isnan(current) or current < 0:
        return 0.0
    if previous is None or math.isnan(previous) or current < previous:
        return current
    return current - previous


def counter_increases(
    previous: GatewayMetrics,
    current: GatewayMetrics,
    name: str,
    key: Callable[[MetricSample], K | None],
) -> tuple[dict[K, float], bool]:
    """The increase of counter `name` per series, summed by `key` (None drops a series), and
    whether any series was reset."""
    before = {s.labels: s.value for s in previous.samples(name)}
    out: dict[K, float] = defaultdict(float)
    reset = False
    for sample in current.samples(name):
        old = before.get(sample.labels)
        if old is not None and sample.value < old:
            reset = True
        k = key(sample)
        if k is not None:
            out[k] += counter_increase(old, sample.value)
    return dict(out), reset


@dataclass
class _Series:
    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    sum_value: float = 0.0
    first: MetricSample | None = None


def _histogram_series(metrics: GatewayMetrics, family: str) -> dict[Labels, _Series]:
    """One entry per histogram series (its labels without `le`)."""
    series: dict[Labels, _Series] = defaultdict(_Series)
    for sample in metrics.samples(f"{family}_bucket"):
        le = sample.label("le")
        if le is None:
            continue
        entry = series[tuple(kv for kv in sample.labels if kv[0] != "le")]
        entry.buckets[float(le)] = sample.value
        entry.first = entry.first or sample
    for suffix in ("count", "sum"):
        for sample in metrics.samples(f"{family}_{suffix}"):
            entry = series[sample.labels]
            if suffix == "count":
                entry.count = sample.value
            else:
                entry.sum_value = sample.value
            entry.first = entry.first or sample
    return series


def histogram_increases(
    previous: GatewayMetrics,
    current: GatewayMetrics,
    family: str,
    key: Callable[[MetricSample], K | None],
) -> tuple[dict[K, HistogramBuckets], bool]:
    """The observations histogram `family` gained between two scrapes, merged by `key`, and
    whether any series was reset (then its current content is the increase)."""
    before = _histogram_series(previous, family)
    merged: dict[K, _Series] = defaultdict(_Series)
    reset = False
    for series_labels, now in _histogram_series(current, family).items():
        if now.first is None:
            continue
        k = key(now.first)
        old = before.get(series_labels)
        series_reset = old is not None and (
            now.count < old.count
            or any(value < old.buckets.get(le, 0.0) for le, value in now.buckets.items())
        )
        reset = reset or series_reset
        if k is None:
            continue
        base = _Series() if old is None or series_reset else old
        target = merged[k]
        for le, value in now.buckets.items():
            target.buckets[le] = target.buckets.get(le, 0.0) + max(
                0.0, value - base.buckets.get(le, 0.0))
        target.count += max(0.0, now.count - base.count)
        target.sum_value += max(0.0, now.sum_value - base.sum_value)
    return {
        k: HistogramBuckets((), tuple(sorted(s.buckets.items())), s.count, s.sum_value)
        for k, s in merged.items()
    }, reset


# -- who belongs to which group --------------------------------------------------------------


def deployment_groups(
    metrics: GatewayMetrics, deployments: Iterable[Deployment] = (),
) -> dict[str, str]:
    """Deployment id -> model group: from `/model/info` when given, else from the scrape's
    series that carry both labels."""
    groups: dict[str, str] = {}
    for name in (DEPLOYMENT_REQUESTS, f"{LATENCY_FAMILY}_count",
                 "litellm_deployment_success_responses_total", DEPLOYMENT_FAILURES):
        for sample in metrics.samples(name):
            model_id, group = sample.label("model_id", ""), sample.label("model_group", "")
            if model_id not in _NO_ID and group and model_id not in groups:
                groups[model_id] = group
    groups.update({d.deployment_id: d.group for d in deployments})
    return groups


def _deployment_id(sample: MetricSample) -> str | None:
    model_id = sample.label("model_id", "")
    return None if model_id in _NO_ID else model_id


# -- one interval ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One reading of the gateway's `/metrics/` and when it was taken (epoch seconds)."""

    metrics: GatewayMetrics
    time_s: float


@dataclass(frozen=True)
class TrafficStats:
    """What a model group, a deployment or the whole gateway did during one interval.

    Counts are increases over the interval (floats: counters are floats); `latency` holds the
    interval's observations (bucket increases), or None when it had none.
    """

    interval_s: float
    requests: float = 0.0
    failures: float = 0.0
    latency: HistogramBuckets | None = None
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    total_tokens: float = 0.0
    spend_usd: float = 0.0
    cooldowns: float = 0.0
    fallbacks: float = 0.0
    failed_fallbacks: float = 0.0

    @property
    def requests_per_min(self) -> float:
        return self.requests * 60.0 / self.interval_s

    @property
    def errors_per_min(self) -> float:
        return self.failures * 60.0 / self.interval_s

    @property
    def error_rate_percent(self) -> float | None:
        """Failures / requests × 100, capped at 100; None without requests."""
        if self.requests <= 0:
            return None
        return min(100.0, 100.0 * self.failures / self.requests)

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of the interval's latencies, in seconds; None without any."""
        if self.latency is None or self.latency.count <= 0:
            return None
        return self.latency.quantile(q)

    @property
    def latency_mean_s(self) -> float | None:
        return self.latency.mean if self.latency is not None else None

    @property
    def tokens_per_s(self) -> float:
        return self.total_tokens / self.interval_s

    @property
    def input_tokens_per_s(self) -> float:
        return self.input_tokens / self.interval_s

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.interval_s

    @property
    def spend_usd_per_h(self) -> float:
        return self.spend_usd * 3600.0 / self.interval_s

    def samples(
        self, prefix: str, sample_labels: Labels, time_s: float, *, fallbacks: bool,
    ) -> list[Sample]:
        """These stats as samples named `{prefix}_{suffix}`."""
        values: list[tuple[str, float | None]] = [
            ("requests_per_min", self.requests_per_min),
            ("errors_per_min", self.errors_per_min),
            ("error_rate_percent", self.error_rate_percent),
            *((name, self.latency_quantile(q)) for name, q in LATENCY_QUANTILES),
            ("latency_mean_s", self.latency_mean_s),
            ("input_tokens_per_s", self.input_tokens_per_s),
            ("output_tokens_per_s", self.output_tokens_per_s),
            ("tokens_per_s", self.tokens_per_s),
            ("spend_usd_per_h", self.spend_usd_per_h),
            ("cooldowns", self.cooldowns),
        ]
        if fallbacks:
            values += [("fallbacks", self.fallbacks), ("failed_fallbacks", self.failed_fallbacks)]
        return [
            Sample(f"{prefix}_{name}", sample_labels, time_s, float(value))
            for name, value in values
            if value is not None and math.isfinite(value)
        ]


@dataclass(frozen=True)
class ClientStats:
    """Requests clients sent naming one group, and how many failed after every fallback."""

    interval_s: float
    requests: float = 0.0
    failures: float = 0.0

    @property
    def requests_per_min(self) -> float:
        return self.requests * 60.0 / self.interval_s

    @property
    def error_rate_percent(self) -> float | None:
        if self.requests <= 0:
            return None
        return min(100.0, 100.0 * self.failures / self.requests)


@dataclass(frozen=True)
class GatewayInterval:
    """The gateway's traffic between two scrapes, per group, per deployment and in total."""

    start_s: float
    end_s: float
    total: TrafficStats
    groups: Mapping[str, TrafficStats]
    deployments: Mapping[tuple[str, str], TrafficStats]  # (model_group, deployment_id)
    clients: Mapping[str, ClientStats]  # requested model group
    counter_reset: bool = False

    @property
    def interval_s(self) -> float:
        return self.end_s - self.start_s

    def samples(self) -> list[Sample]:
        """Every derived value as a sample stamped at the end of the interval."""
        t = self.end_s
        out = self.total.samples("gateway", (), t, fallbacks=True)
        for group, stats in sorted(self.groups.items()):
            out += stats.samples("gateway_group", labels(model_group=group), t, fallbacks=True)
        for (group, deployment_id), stats in sorted(self.deployments.items()):
            out += stats.samples(
                "gateway_deployment", labels(model_group=group, deployment_id=deployment_id), t,
                fallbacks=False,
            )
        for group, client in sorted(self.clients.items()):
            group_labels = labels(model_group=group)
            out.append(Sample("gateway_group_client_requests_per_min", group_labels, t,
                              client.requests_per_min))
            if client.error_rate_percent is not None:
                out.append(Sample("gateway_group_client_error_rate_percent", group_labels, t,
                                  client.error_rate_percent))
        return out


def gateway_interval(
    previous: Scrape, current: Scrape, deployments: Iterable[Deployment] = (),
) -> GatewayInterval | None:
    """The traffic between two scrapes; None when they are not in time order."""
    elapsed = current.time_s - previous.time_s
    if elapsed <= 0:
        return None
    before, now = previous.metrics, current.metrics
    group_of = deployment_groups(now, deployments)
    resets: list[bool] = []

    def increases(name: str, key: Callable[[MetricSample], K | None]) -> dict[K, float]:
        values, reset = counter_increases(before, now, name, key)
        resets.append(reset)
        return values

    def group_key(sample: MetricSample) -> str | None:
        model_id = _deployment_id(sample)
        if model_id is not None and model_id in group_of:
            return group_of[model_id]
        return sample.label("model_group") or None

    def deployment_key(sample: MetricSample) -> tuple[str, str] | None:
        model_id = _deployment_id(sample)
        if model_id is None:
            return None
        return (group_key(sample) or UNKNOWN_GROUP, model_id)

    def everything(sample: MetricSample) -> str:
        return ""

    def requested(sample: MetricSample) -> str | None:
        return sample.label("requested_model") or None

    per_deployment: dict[str, dict[tuple[str, str], float]] = {}
    per_group: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for field_name, counter in (
        ("requests", DEPLOYMENT_REQUESTS), ("failures", DEPLOYMENT_FAILURES),
        ("input_tokens", INPUT_TOKENS), ("output_tokens", OUTPUT_TOKENS),
        ("total_tokens", TOTAL_TOKENS), ("spend_usd", SPEND), ("cooldowns", COOLDOWNS),
    ):
        per_deployment[field_name] = increases(counter, deployment_key)
        per_group[field_name] = increases(counter, group_key)
        totals[field_name] = increases(counter, everything).get("", 0.0)
    for field_name, counter in (("fallbacks", FALLBACKS), ("failed_fallbacks", FAILED_FALLBACKS)):
        per_group[field_name] = increases(counter, requested)
        totals[field_name] = increases(counter, everything).get("", 0.0)
    # The gateway as clients see it: requests they sent, and those that failed in the end.
    totals["requests"] = increases(PROXY_REQUESTS, everything).get("", 0.0)
    totals["failures"] = increases(PROXY_FAILURES, everything).get("", 0.0)
    client_requests = increases(PROXY_REQUESTS, requested)
    client_failures = increases(PROXY_FAILURES, requested)

    latency_by_deployment, reset = histogram_increases(before, now, LATENCY_FAMILY, deployment_key)
    resets.append(reset)
    latency_by_group, _ = histogram_increases(before, now, LATENCY_FAMILY, group_key)
    latency_total, _ = histogram_increases(before, now, LATENCY_FAMILY, everything)

    known_groups = set(group_of.values()) | {g for d in per_group.values() for g in d}
    known_groups |= set(latency_by_group)
    known_deployments = {(g, i) for i, g in group_of.items()}
    known_deployments |= {k for d in per_deployment.values() for k in d}
    known_deployments |= set(latency_by_deployment)

    def stats(values: Mapping[str, Mapping[K, float]], k: K,
              latency: HistogramBuckets | None) -> TrafficStats:
        return TrafficStats(
            elapsed, latency=latency, **{name: d.get(k, 0.0) for name, d in values.items()},
        )

    return GatewayInterval(
        start_s=previous.time_s,
        end_s=current.time_s,
        total=TrafficStats(elapsed, latency=latency_total.get(""), **totals),
        groups={g: stats(per_group, g, latency_by_group.get(g)) for g in known_groups},
        deployments={
            k: stats(per_deployment, k, latency_by_deployment.get(k)) for k in known_deployments
        },
        clients={
            g: ClientStats(elapsed, client_requests.get(g, 0.0), client_failures.get(g, 0.0))
            for g in set(client_requests) | set(client_failures)
        },
        counter_reset=any(resets),
    )


def gateway_gauge_samples(
    scrape: Scrape, deployments: Iterable[Deployment] = (),
) -> list[Sample]:
    """What one scrape says on its own: each deployment's state, requests in flight."""
    group_of = deployment_groups(scrape.metrics, deployments)
    out = [
        Sample(
            "gateway_deployment_state",
            labels(deployment_id=model_id, model_group=group_of.get(model_id, UNKNOWN_GROUP)),
            scrape.time_s,
            float(state.severity),
        )
        for model_id, state in deployment_states(scrape.metrics).items()
    ]
    in_flight = scrape.metrics.samples("litellm_in_flight_requests")
    if in_flight:
        value = math.fsum(s.value for s in in_flight)
        if math.isfinite(value):
            out.append(Sample("gateway_in_flight_requests", (), scrape.time_s, value))
    return out


# -- readiness, machine, GPUs, services ------------------------------------------------------


def readiness_samples(reading: Reading[GatewayReadiness]) -> list[Sample]:
    """`gateway_ready` 1/0 (0 too when the gateway cannot be reached) and its response time."""
    ready = reading.ok and reading.value is not None and reading.value.healthy
    out = [Sample("gateway_ready", (), reading.taken_at, 1.0 if ready else 0.0)]
    if reading.ok:
        out.append(Sample("gateway_readiness_response_s", (), reading.taken_at, reading.elapsed_s))
    return out


def server_ready_samples(metric: str, reading: Reading[ServerStatus]) -> list[Sample]:
    """`{metric}` 1 when a Prometheus-style server says it is ready, else 0."""
    ready = reading.ok and reading.value is not None and reading.value.ready
    return [Sample(metric, (), reading.taken_at, 1.0 if ready else 0.0)]


def _finite(metric: str, sample_labels: Labels, time_s: float,
            value: float | None) -> list[Sample]:
    if value is None or not math.isfinite(value):
        return []
    return [Sample(metric, sample_labels, time_s, float(value))]


def system_samples(snapshot: SystemSnapshot, time_s: float) -> list[Sample]:
    """The machine's values; rates are absent on the first read (no previous counters)."""
    out: list[Sample] = []
    for metric, value in (
        ("system_cpu_percent", snapshot.cpu_percent),
        ("system_load_1m", snapshot.load_average_1m),
        ("system_memory_used_percent", snapshot.memory_used_percent),
        ("system_memory_used_bytes", snapshot.memory_used_bytes),
        ("system_memory_total_bytes", snapshot.memory_total_bytes),
        ("system_swap_used_percent", snapshot.swap_used_percent),
        ("system_disk_read_bytes_per_s", snapshot.disk_read_bytes_per_s),
        ("system_disk_write_bytes_per_s", snapshot.disk_write_bytes_per_s),
        ("system_net_rx_bytes_per_s", snapshot.net_rx_bytes_per_s),
        ("system_net_tx_bytes_per_s", snapshot.net_tx_bytes_per_s),
        ("system_process_count", snapshot.process_count),
    ):
        out += _finite(metric, (), time_s, value)
    for disk in snapshot.disks:
        disk_labels = labels(path=disk.path)
        out += _finite("system_disk_used_percent", disk_labels, time_s, disk.used_percent)
        out += _finite("system_disk_used_bytes", disk_labels, time_s, disk.used_bytes)
    return out


def gpu_samples(snapshot: GpuSnapshot, time_s: float) -> list[Sample]:
    """Each GPU's values, labelled by index; values NVML cannot give are left out."""
    out: list[Sample] = []
    for gpu in snapshot.gpus:
        gpu_labels = labels(gpu=str(gpu.index))
        for metric, value in (
            ("gpu_utilization_percent", gpu.utilization_gpu_percent),
            ("gpu_memory_utilization_percent", gpu.utilization_memory_percent),
            ("gpu_memory_used_bytes", gpu.memory_used_bytes),
            ("gpu_memory_total_bytes", gpu.memory_total_bytes),
            ("gpu_memory_used_percent", gpu.memory_used_percent),
            ("gpu_temperature_c", gpu.temperature_c),
            ("gpu_power_w", gpu.power_w),
            ("gpu_power_limit_w", gpu.power_limit_w),
            ("gpu_clock_sm_mhz", gpu.clock_sm_mhz),
            ("gpu_fan_percent", gpu.fan_percent),
        ):
            out += _finite(metric, gpu_labels, time_s, value)
    return out


def service_samples(statuses: Iterable[ServiceStatus], time_s: float) -> list[Sample]:
    """`service_running{service}`: 1 running, 0 stopped; unknown states are left out."""
    return [
        Sample("service_running", labels(service=s.name), time_s,
               1.0 if s.state is ServiceState.RUNNING else 0.0)
        for s in statuses
        if s.state is not ServiceState.UNKNOWN
    ]
