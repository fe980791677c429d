"""One collection from every configured source, concurrently: what `aidash snapshot` prints.

A snapshot is a set of readings. It failed when any reading has a fault other than
"not available" (no GPU driver, no database): those describe the machine, not a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from aidash_lib.settings import Settings
from aidash_lib.sources.alertmanager import AlertmanagerSource
from aidash_lib.sources.base import FaultKind, Reading, ServerStatus, to_jsonable
from aidash_lib.sources.gateway import (
    Deployment,
    GatewayMetrics,
    GatewayReadiness,
    GatewaySource,
    deployment_states,
)
from aidash_lib.sources.gpu import GpuSource
from aidash_lib.sources.prometheus import PrometheusSource
from aidash_lib.sources.services import ServiceSpec, ServicesSource
from aidash_lib.sources.system import SystemSource

REQUESTS_METRIC = "litellm_deployment_total_requests_total"
FAILURES_METRIC = "litellm_deployment_failure_responses_total"


@dataclass(frozen=True)
class DeploymentView:
    """A deployment with its state (`litellm_deployment_state`) and its counters since the
    gateway started (None when the gateway's metrics could not be read)."""

    deployment: Deployment
    state: str | None
    requests: float | None = None
    failures: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Readings by name (`gateway.readiness`, `machine`, `gpu`, ...), taken together."""

    gateway_url: str
    started_at: float
    readings: Mapping[str, Reading[Any]]
    deployments: tuple[DeploymentView, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> dict[str, str]:
        """Why each failed reading failed: a real fault (not "not available here"), or a
        server that answered but says it is not ready."""
        reasons = {}
        for name, reading in self.readings.items():
            if reading.fault is not None:
                if reading.fault.kind is not FaultKind.NOT_AVAILABLE:
                    reasons[name] = str(reading.fault)
            elif isinstance(reading.value, ServerStatus) and not reading.value.ready:
                reasons[name] = f"not ready ({reading.value.url}): {reading.value.message}"
            elif isinstance(reading.value, GatewayReadiness) and not reading.value.healthy:
                reasons[name] = f"gateway not ready: status {reading.value.status}"
        return reasons

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started_at": self.started_at,
            "gateway_url": self.gateway_url,
            "failures": self.failures,
            "deployments": to_jsonable(self.deployments),
            "readings": {name: to_jsonable(r) for name, r in self.readings.items()},
        }


async def collect_snapshot(
    settings: Settings,
    client: httpx.AsyncClient | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Snapshot:
    """Read every configured source once, all at the same time."""
    started = time.time()
    own_client = client is None
    client = client or httpx.AsyncClient()
    try:
        readings = await _gather(settings, client, environ)
    finally:
        if own_client:
            await client.aclose()
    return Snapshot(
        settings.gateway.url, started, readings, _deployment_views(readings),
    )


async def _gather(
    settings: Settings, client: httpx.AsyncClient, environ: Mapping[str, str] | None
) -> dict[str, Reading[Any]]:
    gateway = GatewaySource(
        client, settings.gateway.url, settings.gateway_key(environ),
        timeout=httpx.Timeout(
            settings.gateway.timeout_s, connect=min(2.0, settings.gateway.timeout_s)
        ),
        health_check_min_interval_s=settings.gateway.health_check_min_interval_s,
    )
    system = SystemSource()
    tasks: dict[str, Any] = {
        "gateway.metrics": gateway.metrics(),  # the slowest answer: asked first
        "gateway.liveliness": gateway.liveliness(),
        "gateway.readiness": gateway.readiness(),
        "gateway.model_groups": gateway.model_groups(),
        "gateway.deployments": gateway.deployments(),
        "gateway.router_settings": gateway.router_settings(),
        "gpu": GpuSource().read(),
        "services": ServicesSource([
            ServiceSpec(s.name, s.kind, s.target) for s in settings.services
        ]).read(),
    }
    if settings.prometheus.url:
        prometheus = PrometheusSource(
            client, settings.prometheus.url, timeout=httpx.Timeout(settings.prometheus.timeout_s),
        )
        tasks["prometheus"] = prometheus.ready()
    if settings.alertmanager.url:
        alertmanager = AlertmanagerSource(
            client, settings.alertmanager.url,
            timeout=httpx.Timeout(settings.alertmanager.timeout_s),
        )
        tasks["alertmanager.alerts"] = alertmanager.active_alerts()
    names = list(tasks)
    # The machine's counters are primed first; its reading, after the rest, gives rates over
    # the time the snapshot took.
    results = await asyncio.gather(*tasks.values(), system.prime())
    readings = dict(zip(names, results[: len(names)], strict=True))
    readings["machine"] = await system.read()
    return readings


def _deployment_views(readings: Mapping[str, Reading[Any]]) -> tuple[DeploymentView, ...]:
    deployments = readings.get("gateway.deployments")
    if deployments is None or not deployments.ok:
        return ()
    metrics_reading = readings.get("gateway.metrics")
    if metrics_reading is None or not metrics_reading.ok:
        return tuple(DeploymentView(d, None) for d in deployments.value)
    metrics: GatewayMetrics = metrics_reading.value
    states = deployment_states(metrics)
    requests = metrics.totals_by(REQUESTS_METRIC, "model_id")
    failures = metrics.totals_by(FAILURES_METRIC, "model_id")
    return tuple(
        DeploymentView(
            d,
            states[d.deployment_id].value if d.deployment_id in states else None,
            requests.get(d.deployment_id, 0.0),
            failures.get(d.deployment_id, 0.0),
        )
        for d in deployments.value
    )
