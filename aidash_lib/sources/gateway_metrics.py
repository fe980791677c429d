"""LiteLLM's Prometheus exposition (`/metrics/`) as typed, immutable samples.

Parsing is done by `prometheus_client`'s own parser. What is kept: the families an operator
reads (requests and failures, latency histograms, deployment state, tokens, spend, fallbacks,
cooldowns, in-flight requests); what is dropped: `*_created` timestamps and every sample of
LiteLLM's own health probes (`api_key_alias` / `team` = "litellm-internal-health-check"),
which would otherwise count as traffic.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cached_property

from prometheus_client.parser import text_string_to_metric_families

#: The label value LiteLLM puts on the samples of its own `/health` probes.
HEALTH_CHECK_LABEL = "litellm-internal-health-check"

#: Families kept from `/metrics/`, by the parser's family name (counters without `_total`).
OPERATOR_FAMILIES: frozenset[str] = frozenset({
    # requests and failures
    "litellm_deployment_total_requests",
    "litellm_deployment_success_responses",
    "litellm_deployment_failure_responses",
    "litellm_proxy_total_requests_metric",
    "litellm_proxy_failed_requests_metric",
    "litellm_requests_metric",
    "litellm_llm_api_failed_requests_metric",
    # latency histograms (seconds)
    "litellm_request_total_latency_metric",
    "litellm_llm_api_latency_metric",
    "litellm_llm_api_time_to_first_token_metric",
    "litellm_overhead_latency_metric",
    "litellm_request_queue_time_seconds",
    "litellm_deployment_latency_per_output_token",
    # deployment health, fallbacks and cooldowns
    "litellm_deployment_state",
    "litellm_deployment_successful_fallbacks",
    "litellm_deployment_failed_fallbacks",
    "litellm_deployment_cooled_down",
    # tokens and spend
    "litellm_input_tokens_metric",
    "litellm_output_tokens_metric",
    "litellm_total_tokens_metric",
    "litellm_spend_metric",
    # load and limits
    "litellm_in_flight_requests",
    "litellm_deployment_rpm_limit",
    "litellm_deployment_tpm_limit",
    "litellm_remaining_requests_metric",
    "litellm_remaining_tokens_metric",
    "litellm_cache_hits_metric",
    "litellm_cache_misses_metric",
})

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricSample:
    """One sample line: `name` as exposed (`..._total`, `..._bucket`), labels sorted by name."""

    family: str
    name: str
    labels: Labels
    value: float
    kind: str  # the family's type: counter, gauge, histogram, summary, ...

    def label(self, key: str, default: str | None = None) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return default

    def matches(self, wanted: dict[str, str]) -> bool:
        """True when every wanted label has the wanted value."""
        return all(self.label(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class HistogramBuckets:
    """A cumulative histogram: `(le, count)` pairs in ascending `le`, `+Inf` last."""

    labels: Labels
    buckets: tuple[tuple[float, float], ...]
    count: float
    sum_value: float

    @property
    def mean(self) -> float | None:
        return self.sum_value / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile by linear interpolation inside a bucket, as PromQL's
        `histogram_quantile` does; None without observations."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if not self.buckets or self.buckets[-1][1] <= 0:
            return None
        rank = q * self.buckets[-1][1]
        lower_le, lower_count = 0.0, 0.0
        for le, count in self.buckets:
            if count >= rank:
                if math.isinf(le):
                    return lower_le
                if count == lower_count:
                    return le
                return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
            lower_le, lower_count = le, count
        return lower_le


@dataclass(frozen=True)
class GatewayMetrics:
    """One scrape of the gateway's `/metrics/`, health-probe samples already removed."""

    all_samples: tuple[MetricSample, ...]
    dropped_health_check_samples: int = 0
    scrape_bytes: int = 0

    @cached_property
    def _by_name(self) -> dict[str, tuple[MetricSample, ...]]:
        index: dict[str, list[MetricSample]] = defaultdict(list)
        for sample in self.all_samples:
            index[sample.name].append(sample)
        return {k: tuple(v) for k, v in index.items()}

    def names(self) -> tuple[str, ...]:
        """The sample names present, sorted."""
        return tuple(sorted(self._by_name))

    def samples(self, name: str, **labels: str) -> tuple[MetricSample, ...]:
        """Samples called `name` whose labels have the given values."""
        found = self._by_name.get(name, ())
        return tuple(s for s in found if s.matches(labels)) if labels else found

    def total(self, name: str, **labels: str) -> float:
        """The sum of the matching samples (0.0 when there are none)."""
        return math.fsum(s.value for s in self.samples(name, **labels))

    def totals_by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """The matching samples summed per value of `label`."""
        out: dict[str, float] = defaultdict(float)
        for sample in self.samples(name, **labels):
            out[sample.label(label, "")] += sample.value
        return dict(out)

    def histogram(
        self, family: str, by: Iterable[str] = ("model_group",), **labels: str,
    ) -> dict[tuple[str, ...], HistogramBuckets]:
        """The histogram `family` merged per combination of the `by` labels.

        Keys are the `by` label values in order; `by=()` merges everything under `()`.
        """
        by = tuple(by)
        buckets: dict[tuple[str, ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
        counts: dict[tuple[str, ...], float] = defaultdict(float)
        sums: dict[tuple[str, ...], float] = defaultdict(float)
        for sample in self.samples(f"{family}_bucket", **labels):
            le = sample.label("le")
            if le is None:
                continue
            key = tuple(sample.label(b, "") or "" for b in by)
            buckets[key][float(le)] += sample.value
        for sample in self.samples(f"{family}_count", **labels):
            counts[tuple(sample.label(b, "") or "" for b in by)] += sample.value
        for sample in self.samples(f"{family}_sum", **labels):
            sums[tuple(sample.label(b, "") or "" for b in by)] += sample.value
        return {
            key: HistogramBuckets(
                labels=tuple(zip(by, key, strict=True)),
                buckets=tuple(sorted(per_le.items())),
                count=counts.get(key, 0.0),
                sum_value=sums.get(key, 0.0),
            )
            for key, per_le in sorted(buckets.items())
        }


class DeploymentState(enum.StrEnum):
    """`litellm_deployment_state`: 0 healthy, 1 partial outage, 2 complete outage."""

    HEALTHY = "healthy"
    PARTIAL = "partial"
    OUTAGE = "outage"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def from_value(cls, value: float) -> DeploymentState:
        if value >= 2:
            return cls.OUTAGE
        return cls.PARTIAL if value >= 1 else cls.HEALTHY


_SEVERITY = {DeploymentState.HEALTHY: 0, DeploymentState.PARTIAL: 1, DeploymentState.OUTAGE: 2}


def deployment_states(metrics: GatewayMetrics) -> dict[str, DeploymentState]:
    """Deployment id -> state. LiteLLM may keep two series for one id (provider model and
    group name as `litellm_model_name`): the worst wins. Series without an id are skipped."""
    states: dict[str, DeploymentState] = {}
    for sample in metrics.samples("litellm_deployment_state"):
        model_id = sample.label("model_id") or ""
        if model_id in ("", "None") or math.isnan(sample.value):
            continue
        state = DeploymentState.from_value(sample.value)
        if model_id not in states or state.severity > states[model_id].severity:
            states[model_id] = state
    return dict(sorted(states.items()))


def parse_metrics(
    text: str, families: Collection[str] | None = OPERATOR_FAMILIES,
) -> GatewayMetrics:
    """Parse exposition text; keep `families` (None: all). Raises ValueError on bad text."""
    kept: list[MetricSample] = []
    dropped = 0
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue
        if families is not None and family.name not in families:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = sample.labels
            if HEALTH_CHECK_LABEL in (labels.get("api_key_alias"), labels.get("team")):
                dropped += 1
                continue
            kept.append(MetricSample(
                family=family.name,
                name=sample.name,
                labels=tuple(sorted(labels.items())),
                value=float(sample.value),
                kind=family.type,
            ))
    return GatewayMetrics(tuple(kept), dropped, len(text.encode()))
