"""Rates and percentiles between two scrapes, from exposition text crafted with known deltas and
parsed by the real parser; machine, GPU and service snapshots to samples."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from aidash_lib import derive
from aidash_lib.derive import Scrape, counter_increase, gateway_interval
from aidash_lib.sources.base import Fault, FaultKind, Reading, ServerStatus
from aidash_lib.sources.gateway import Deployment, GatewayReadiness, parse_metrics
from aidash_lib.sources.gpu import GpuDevice, GpuSnapshot
from aidash_lib.sources.services import ServiceState, ServiceStatus
from aidash_lib.sources.system import DiskUsage, SystemSnapshot
from aidash_lib.store.schema import Sample

BUCKETS = (0.1, 0.5, 1.0, 5.0)
LATENCY = "litellm_request_total_latency_metric"
HEALTH = {"api_key_alias": "litellm-internal-health-check",
          "team": "litellm-internal-health-check"}


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


class Exposition:
    """Prometheus text as LiteLLM writes it, built family by family."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, list[str]]] = {}

    def _family(self, name: str, kind: str) -> list[str]:
        return self.families.setdefault(name, (kind, []))[1]

    def counter(self, family: str, value: float, **labels: str) -> Exposition:
        name = f"{family}_total"  # as prometheus_client writes it: TYPE names the _total
        self._family(name, "counter").append(f"{name}{{{_labels(labels)}}} {value}")
        return self

    def gauge(self, family: str, value: float, **labels: str) -> Exposition:
        self._family(family, "gauge").append(f"{family}{{{_labels(labels)}}} {value}")
        return self

    def histogram(self, family: str, per_bucket: Sequence[float], sum_value: float,
                  **labels: str) -> Exposition:
        """`per_bucket`: observations in each bucket (not cumulative), +Inf last."""
        lines = self._family(family, "histogram")
        cumulative = 0.0
        for le, count in zip((*BUCKETS, math.inf), per_bucket, strict=True):
            cumulative += count
            le_text = "+Inf" if math.isinf(le) else str(le)
            lines.append(f"{family}_bucket{{{_labels({**labels, 'le': le_text})}}} {cumulative}")
        lines.append(f"{family}_count{{{_labels(labels)}}} {cumulative}")
        lines.append(f"{family}_sum{{{_labels(labels)}}} {sum_value}")
        return self

    def text(self) -> str:
        out = []
        for name, (kind, lines) in self.families.items():
            out += [f"# HELP {name} test", f"# TYPE {name} {kind}", *lines]
        return "\n".join(out) + "\n"

    def scrape(self, time_s: float) -> Scrape:
        return Scrape(parse_metrics(self.text()), time_s)


def traffic(
    requests: Mapping[tuple[str, str], float],
    failures: Mapping[tuple[str, str], float] | None = None,
) -> Exposition:
    """Deployment request and failure counters for (group, deployment id) pairs."""
    e = Exposition()
    for (group, model_id), value in requests.items():
        e.counter("litellm_deployment_total_requests", value, model_group=group,
                  model_id=model_id, requested_model=group)
    for (group, model_id), value in (failures or {}).items():
        e.counter("litellm_deployment_failure_responses", value, model_group=group,
                  model_id=model_id, requested_model=group, exception_class="Openai.APIError")
    return e


def by_metric(samples: Sequence[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.metric, s.labels): s.value for s in samples}


GROUP = (("model_group", "gpt"),)
DEP_A = (("deployment_id", "gpt-a"), ("model_group", "gpt"))
DEP_B = (("deployment_id", "gpt-b"), ("model_group", "gpt"))


# -- counters --------------------------------------------------------------------------------


@pytest.mark.parametrize(("previous", "current", "increase"), [
    (None, 5.0, 5.0),  # a new series counts from zero
    (5.0, 8.0, 3.0),
    (8.0, 8.0, 0.0),
    (100.0, 3.0, 3.0),  # reset: what was counted since the restart
    (5.0, math.nan, 0.0),
    (math.nan, 4.0, 4.0),
])
def test_counter_increase(previous, current, increase):
    assert counter_increase(previous, current) == increase


def test_requests_per_minute_and_error_rate_from_known_deltas():
    before = traffic({("gpt", "gpt-a"): 10}, {("gpt", "gpt-a"): 1}).scrape(1000.0)
    after = traffic(
        {("gpt", "gpt-a"): 40, ("gpt", "gpt-b"): 20},  # gpt-b appeared: counts from zero
        {("gpt", "gpt-a"): 4},
    ).scrape(1060.0)
    interval = gateway_interval(before, after)
    assert interval is not None and interval.interval_s == 60.0
    values = by_metric(interval.samples())
    assert values[("gateway_deployment_requests_per_min", DEP_A)] == 30.0
    assert values[("gateway_deployment_errors_per_min", DEP_A)] == 3.0
    assert values[("gateway_deployment_error_rate_percent", DEP_A)] == 10.0
    assert values[("gateway_deployment_requests_per_min", DEP_B)] == 20.0
    assert values[("gateway_deployment_error_rate_percent", DEP_B)] == 0.0
    assert values[("gateway_group_requests_per_min", GROUP)] == 50.0
    assert values[("gateway_group_error_rate_percent", GROUP)] == pytest.approx(6.0)
    assert not interval.counter_reset


def test_rates_scale_with_the_interval():
    before = traffic({("gpt", "gpt-a"): 0}).scrape(0.0)
    after = traffic({("gpt", "gpt-a"): 10}).scrape(15.0)
    values = by_metric(gateway_interval(before, after).samples())
    assert values[("gateway_group_requests_per_min", GROUP)] == pytest.approx(40.0)


def test_an_idle_interval_has_zero_rates_and_no_error_rate_or_latency():
    e = traffic({("gpt", "gpt-a"): 10}).histogram(LATENCY, [10, 0, 0, 0, 0], 0.5,
                                                   model_group="gpt", model_id="gpt-a")
    values = by_metric(gateway_interval(e.scrape(0.0), e.scrape(30.0)).samples())
    assert values[("gateway_group_requests_per_min", GROUP)] == 0.0
    assert ("gateway_group_error_rate_percent", GROUP) not in values
    assert ("gateway_group_latency_p95_s", GROUP) not in values
    assert ("gateway_deployment_latency_p50_s", DEP_A) not in values


def test_scrapes_out_of_order_give_nothing():
    e = traffic({("gpt", "gpt-a"): 10})
    assert gateway_interval(e.scrape(10.0), e.scrape(10.0)) is None
    assert gateway_interval(e.scrape(10.0), e.scrape(5.0)) is None


# -- latency percentiles from bucket deltas ---------------------------------------------------


def test_percentiles_use_the_interval_s_buckets_not_the_totals():
    labels = {"model_group": "gpt", "model_id": "gpt-a"}
    # Before: 5 slow requests (1-5 s). During the interval: 50 under 0.1 s, 45 in 0.1-0.5 s,
    # 5 in 0.5-1 s. Percentiles must describe only those 100.
    before = Exposition().histogram(LATENCY, [0, 0, 0, 5, 0], 15.0, **labels).scrape(0.0)
    after = Exposition().histogram(LATENCY, [50, 45, 5, 5, 0], 30.0, **labels).scrape(60.0)
    interval = gateway_interval(before, after)
    stats = interval.deployments[("gpt", "gpt-a")]
    assert stats.latency.count == 100
    assert stats.latency_quantile(0.50) == pytest.approx(0.1)
    assert stats.latency_quantile(0.95) == pytest.approx(0.5)
    assert stats.latency_quantile(0.99) == pytest.approx(0.5 + 0.5 * 4 / 5)
    assert stats.latency_mean_s == pytest.approx(15.0 / 100)
    values = by_metric(interval.samples())
    assert values[("gateway_group_latency_p99_s", GROUP)] == pytest.approx(0.9)
    assert values[("gateway_latency_p99_s", ())] == pytest.approx(0.9)


def _bucketed(latencies: Sequence[float]) -> list[float]:
    counts = [0.0] * (len(BUCKETS) + 1)
    for value in latencies:
        counts[bisect.bisect_left(BUCKETS, value)] += 1
    return counts


def _exact_quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _bucket_width(value: float) -> float:
    index = bisect.bisect_left(BUCKETS, value)
    lower = BUCKETS[index - 1] if index else 0.0
    return BUCKETS[index] - lower


def test_percentiles_agree_with_the_exact_ones_within_the_bucket_width():
    rng = random.Random(7)
    earlier = [rng.uniform(2.0, 4.9) for _ in range(300)]  # slow, before the interval
    during = [rng.lognormvariate(-2.0, 0.8) for _ in range(2000)]
    during = [min(v, 4.9) for v in during]
    labels = {"model_group": "gpt", "model_id": "gpt-a"}
    before = Exposition().histogram(LATENCY, _bucketed(earlier), sum(earlier), **labels)
    after = Exposition().histogram(LATENCY, _bucketed(earlier + during), sum(earlier + during),
                                   **labels)
    stats = gateway_interval(before.scrape(0.0), after.scrape(15.0)).groups["gpt"]
    for q in (0.5, 0.95, 0.99):
        exact = _exact_quantile(during, q)
        derived = stats.latency_quantile(q)
        assert abs(derived - exact) <= _bucket_width(exact), (q, derived, exact)
    assert stats.latency_mean_s == pytest.approx(sum(during) / len(during))


def test_group_percentiles_merge_the_deployments_buckets():
    before = (Exposition()
              .histogram(LATENCY, [0, 0, 0, 0, 0], 0, model_group="gpt", model_id="gpt-a")
              .histogram(LATENCY, [0, 0, 0, 0, 0], 0, model_group="gpt", model_id="gpt-b"))
    after = (Exposition()
             .histogram(LATENCY, [10, 0, 0, 0, 0], 0.5, model_group="gpt", model_id="gpt-a")
             .histogram(LATENCY, [0, 0, 0, 10, 0], 30, model_group="gpt", model_id="gpt-b"))
    interval = gateway_interval(before.scrape(0.0), after.scrape(10.0))
    assert interval.groups["gpt"].latency.count == 20
    assert interval.groups["gpt"].latency_quantile(0.25) < 0.1
    assert interval.groups["gpt"].latency_quantile(0.75) > 1.0
    assert interval.deployments[("gpt", "gpt-a")].latency_quantile(0.99) <= 0.1


# -- counter resets (gateway restart) ---------------------------------------------------------


def test_a_reset_never_gives_negative_values_or_a_spike():
    labels = {"model_group": "gpt", "model_id": "gpt-a"}
    before = (traffic({("gpt", "gpt-a"): 1000}, {("gpt", "gpt-a"): 100})
              .counter("litellm_total_tokens_metric", 50000, model_id="gpt-a")
              .counter("litellm_spend_metric", 12.5, model_id="gpt-a")
              .histogram(LATENCY, [500, 300, 100, 100, 0], 900, **labels)).scrape(0.0)
    after = (traffic({("gpt", "gpt-a"): 6}, {("gpt", "gpt-a"): 1})
             .counter("litellm_total_tokens_metric", 300, model_id="gpt-a")
             .counter("litellm_spend_metric", 0.01, model_id="gpt-a")
             .histogram(LATENCY, [0, 5, 0, 0, 0], 1.5, **labels)).scrape(60.0)
    interval = gateway_interval(before, after)
    assert interval.counter_reset
    samples = interval.samples()
    assert samples and all(s.value >= 0 for s in samples)
    values = by_metric(samples)
    # What was counted since the restart, not the jump from 1000 to 6.
    assert values[("gateway_group_requests_per_min", GROUP)] == 6.0
    assert values[("gateway_group_error_rate_percent", GROUP)] == pytest.approx(100 / 6)
    assert values[("gateway_group_tokens_per_s", GROUP)] == pytest.approx(300 / 60)
    assert values[("gateway_group_spend_usd_per_h", GROUP)] == pytest.approx(0.01 * 60)
    p95 = values[("gateway_group_latency_p95_s", GROUP)]
    assert 0.1 <= p95 <= 0.5  # the 5 requests since the restart, all in 0.1-0.5 s


def test_a_reset_of_one_histogram_bucket_resets_that_series():
    labels = {"model_group": "gpt", "model_id": "gpt-a"}
    before = Exposition().histogram(LATENCY, [10, 10, 0, 0, 0], 3, **labels).scrape(0.0)
    # Count grew (20 -> 25) but the first bucket went down: only a restart explains it.
    after = Exposition().histogram(LATENCY, [2, 23, 0, 0, 0], 6, **labels).scrape(15.0)
    interval = gateway_interval(before, after)
    assert interval.counter_reset
    assert interval.groups["gpt"].latency.count == 25
    assert all(count >= 0 for _, count in interval.groups["gpt"].latency.buckets)


# -- tokens, spend, fallbacks, cooldowns, clients ---------------------------------------------


def full_exposition(scale: float) -> Exposition:
    e = traffic({("gpt", "gpt-a"): 10 * scale, ("claude", "claude-1"): 4 * scale},
                {("gpt", "gpt-a"): 2 * scale})
    # Token and spend counters have no model_group: the deployment id tells.
    e.counter("litellm_input_tokens_metric", 100 * scale, model_id="gpt-a", requested_model="gpt")
    e.counter("litellm_output_tokens_metric", 50 * scale, model_id="gpt-a", requested_model="gpt")
    e.counter("litellm_total_tokens_metric", 150 * scale, model_id="gpt-a", requested_model="gpt")
    e.counter("litellm_total_tokens_metric", 30 * scale, model_id="claude-1",
              requested_model="gpt")  # a fallback from gpt, served by claude
    e.counter("litellm_spend_metric", 0.5 * scale, model_id="gpt-a")
    e.counter("litellm_deployment_successful_fallbacks", 2 * scale, requested_model="gpt",
              fallback_model="claude", model_id="None")
    e.counter("litellm_deployment_failed_fallbacks", 1 * scale, requested_model="gpt",
              fallback_model="claude", model_id="None")
    e.counter("litellm_deployment_cooled_down", 3 * scale, model_id="gpt-a",
              litellm_model_name="gpt-4o", exception_status="429")
    e.counter("litellm_proxy_total_requests_metric", 12 * scale, requested_model="gpt",
              status_code="200", model_id="gpt-a")
    e.counter("litellm_proxy_total_requests_metric", 1 * scale, requested_model="nope",
              status_code="400", model_id="")
    e.counter("litellm_proxy_failed_requests_metric", 1 * scale, requested_model="nope",
              model_id="")
    e.gauge("litellm_in_flight_requests", 3)
    # LiteLLM's own health probes: dropped by the parser, never counted.
    e.counter("litellm_deployment_total_requests", 999 * scale, model_group="gpt",
              model_id="gpt-a", **HEALTH, requested_model="gpt", user_agent="probe")
    return e


def test_tokens_spend_fallbacks_and_cooldowns_per_group_and_deployment():
    interval = gateway_interval(full_exposition(1).scrape(0.0), full_exposition(3).scrape(60.0))
    values = by_metric(interval.samples())
    claude = (("model_group", "claude"),)
    assert values[("gateway_deployment_input_tokens_per_s", DEP_A)] == pytest.approx(200 / 60)
    assert values[("gateway_deployment_output_tokens_per_s", DEP_A)] == pytest.approx(100 / 60)
    assert values[("gateway_group_tokens_per_s", GROUP)] == pytest.approx(300 / 60)
    assert values[("gateway_group_tokens_per_s", claude)] == pytest.approx(60 / 60)
    assert values[("gateway_tokens_per_s", ())] == pytest.approx(360 / 60)
    assert values[("gateway_group_spend_usd_per_h", GROUP)] == pytest.approx(1.0 * 60)
    assert values[("gateway_group_fallbacks", GROUP)] == 4.0
    assert values[("gateway_group_failed_fallbacks", GROUP)] == 2.0
    assert values[("gateway_fallbacks", ())] == 4.0
    assert values[("gateway_deployment_cooldowns", DEP_A)] == 6.0
    assert values[("gateway_group_cooldowns", GROUP)] == 6.0
    assert values[("gateway_group_cooldowns", claude)] == 0.0
    # Health probes are not traffic: 20 gpt attempts in the minute, not 2018.
    assert values[("gateway_group_requests_per_min", GROUP)] == 20.0
    # The gateway as clients see it, and per requested group.
    assert values[("gateway_requests_per_min", ())] == 26.0
    assert values[("gateway_error_rate_percent", ())] == pytest.approx(100 * 2 / 26)
    assert values[("gateway_group_client_requests_per_min", GROUP)] == 24.0
    assert values[("gateway_group_client_error_rate_percent", GROUP)] == 0.0
    nope = (("model_group", "nope"),)
    assert values[("gateway_group_client_error_rate_percent", nope)] == 100.0
    assert ("gateway_group_requests_per_min", nope) not in values


def test_the_deployments_list_names_the_groups():
    before = Exposition().counter("litellm_deployment_cooled_down", 0, model_id="x-1")
    after = Exposition().counter("litellm_deployment_cooled_down", 2, model_id="x-1")
    unnamed = gateway_interval(before.scrape(0), after.scrape(10))
    assert set(unnamed.deployments) == {("unknown", "x-1")}
    deployments = [Deployment(group="x", deployment_id="x-1", provider="openai", model="gpt"),
                   Deployment(group="y", deployment_id="y-1", provider="openai", model="gpt")]
    named = gateway_interval(before.scrape(0), after.scrape(10), deployments)
    assert named.deployments[("x", "x-1")].cooldowns == 2
    # A deployment without traffic still gets its zero rates.
    assert named.deployments[("y", "y-1")].requests_per_min == 0.0
    assert named.groups["y"].requests == 0.0


def test_gauges_deployment_state_and_in_flight():
    e = traffic({("gpt", "gpt-a"): 1})
    e.gauge("litellm_deployment_state", 0, model_id="gpt-a", litellm_model_name="gpt-4o-mini")
    e.gauge("litellm_deployment_state", 2, model_id="gpt-a", litellm_model_name="gpt")
    e.gauge("litellm_deployment_state", 1, model_id="other-1", litellm_model_name="o")
    e.gauge("litellm_in_flight_requests", 4)
    values = by_metric(derive.gateway_gauge_samples(e.scrape(5.0)))
    assert values[("gateway_deployment_state", DEP_A)] == 2.0  # the worst series wins
    assert values[("gateway_deployment_state",
                   (("deployment_id", "other-1"), ("model_group", "unknown")))] == 1.0
    assert values[("gateway_in_flight_requests", ())] == 4.0


def test_real_scrapes_from_the_shared_fixtures(shared_fixtures: Path):
    folder = shared_fixtures / "litellm"
    before = parse_metrics((folder / "metrics_before_traffic.txt").read_text())
    after = parse_metrics((folder / "metrics_with_cooldown.txt").read_text())
    interval = gateway_interval(Scrape(before, 0.0), Scrape(after, 60.0))
    samples = interval.samples()
    assert all(s.value >= 0 and math.isfinite(s.value) for s in samples)
    assert all(s.labels == tuple(sorted(s.labels)) for s in samples)
    values = by_metric(samples)
    mixed = (("model_group", "mixed-group"),)
    assert values[("gateway_group_requests_per_min", mixed)] == 13.0
    assert values[("gateway_group_errors_per_min", mixed)] == 2.0
    assert values[("gateway_group_cooldowns", mixed)] == 1.0
    assert values[("gateway_group_latency_p50_s", mixed)] <= 0.05
    states = by_metric(derive.gateway_gauge_samples(Scrape(after, 60.0)))
    broken = (("deployment_id", "mixed-broken"), ("model_group", "mixed-group"))
    assert states[("gateway_deployment_state", broken)] == 2.0


# -- readiness, machine, GPUs, services -------------------------------------------------------


def test_readiness_is_one_zero_and_zero_when_unreachable():
    ready = Reading("gateway.readiness", 10.0, GatewayReadiness("healthy", True, "ok", False),
                    elapsed_s=0.02)
    unhealthy = Reading("gateway.readiness", 11.0,
                        GatewayReadiness("unhealthy", False, "x", False))
    down = Reading("gateway.readiness", 12.0,
                   fault=Fault(FaultKind.UNREACHABLE, "connection refused"))
    assert by_metric(derive.readiness_samples(ready)) == {
        ("gateway_ready", ()): 1.0, ("gateway_readiness_response_s", ()): 0.02}
    assert by_metric(derive.readiness_samples(unhealthy))[("gateway_ready", ())] == 0.0
    assert derive.readiness_samples(down) == [Sample("gateway_ready", (), 12.0, 0.0)]
    prom = Reading("prometheus", 3.0, ServerStatus(True, "ready", "http://p/-/ready"))
    assert derive.server_ready_samples("prometheus_ready", prom) == [
        Sample("prometheus_ready", (), 3.0, 1.0)]


def test_system_samples():
    snapshot = SystemSnapshot(
        cpu_count=2, cpu_percent=12.5, cpu_per_core_percent=(10.0, 15.0),
        load_average_1m=0.5, load_average_5m=0.4, load_average_15m=0.3,
        memory_total_bytes=8_000, memory_used_bytes=2_000, memory_available_bytes=6_000,
        memory_used_percent=25.0, swap_total_bytes=0, swap_used_bytes=0, swap_used_percent=0.0,
        disks=(DiskUsage("/", 100, 40, 60, 40.0), DiskUsage("/gone", None, None, None, None,
                                                            "no such path")),
        disk_read_bytes_per_s=None, disk_write_bytes_per_s=None,
        net_rx_bytes_per_s=1500.0, net_tx_bytes_per_s=None,
        process_count=42, top_by_cpu=(), top_by_memory=(), interval_s=None,
    )
    values = by_metric(derive.system_samples(snapshot, 7.0))
    assert values[("system_cpu_percent", ())] == 12.5
    assert values[("system_memory_used_percent", ())] == 25.0
    assert values[("system_disk_used_percent", (("path", "/"),))] == 40.0
    assert values[("system_net_rx_bytes_per_s", ())] == 1500.0
    assert ("system_disk_read_bytes_per_s", ()) not in values  # first read: no rate yet
    assert ("system_disk_used_percent", (("path", "/gone"),)) not in values


def test_gpu_samples_leave_out_what_nvml_cannot_give():
    gpu = GpuDevice(
        index=0, name="H200", uuid="GPU-1", utilization_gpu_percent=87.0,
        utilization_memory_percent=40.0, memory_used_bytes=60e9, memory_total_bytes=141e9,
        temperature_c=61.0, power_w=450.0, power_limit_w=700.0, clock_sm_mhz=1980.0,
        clock_memory_mhz=2619.0, clock_graphics_mhz=1980.0, fan_percent=None,
    )
    values = by_metric(derive.gpu_samples(GpuSnapshot("550", "12.4", (gpu,)), 3.0))
    g0 = (("gpu", "0"),)
    assert values[("gpu_utilization_percent", g0)] == 87.0
    assert values[("gpu_memory_used_bytes", g0)] == 60e9
    assert values[("gpu_memory_used_percent", g0)] == pytest.approx(100 * 60 / 141)
    assert values[("gpu_temperature_c", g0)] == 61.0
    assert values[("gpu_power_w", g0)] == 450.0
    assert ("gpu_fan_percent", g0) not in values


def test_service_samples():
    statuses = [
        ServiceStatus("gateway", "systemd", "litellm.service", ServiceState.RUNNING),
        ServiceStatus("vllm", "docker", "vllm", ServiceState.STOPPED),
        ServiceStatus("ollama", "process", "ollama", ServiceState.UNKNOWN, detail="no docker"),
    ]
    assert by_metric(derive.service_samples(statuses, 1.0)) == {
        ("service_running", (("service", "gateway"),)): 1.0,
        ("service_running", (("service", "vllm"),)): 0.0,
    }
