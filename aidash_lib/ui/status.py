"""The status bar: is the gateway ready (and since when), its version, database and cache,
how many model groups and deployments (and how many in outage), firing alerts, the sources in a
fault, and how fresh the recorder's readings are.

Reads: `gateway_ready` (series), `gateway_deployment_state` (series), the last `deployments`
event, `source_fault` / `source_recovered` events, `alert` events, the last `gateway_readiness`
event when the recorder stores one (version, database, cache), and `system_cpu_percent` for the
recorder's last reading.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import PanelBase, esc, fmt_ago, fmt_when, values_table
from aidash_lib.ui.common import (
    STATE_LOOKBACK_S,
    gateway_health,
    last_value,
    last_values,
    latest_deployments,
    open_faults,
)
from aidash_lib.ui.view import DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History

#: Sources whose faults are shown elsewhere or are normal (no GPU is not a fault of the stack).
QUIET_SOURCES = frozenset({"gpu"})


def firing_alerts(events: pd.DataFrame) -> list[str]:
    """Alert names whose last `alert` event says firing (detail "firing..." or JSON with
    `status: firing`)."""
    state: dict[str, bool] = {}
    for row in events.itertuples(index=False):
        detail = str(row.detail)
        firing = detail.lower().startswith("firing")
        if detail.startswith("{"):
            try:
                firing = str(json.loads(detail).get("status", "")).lower() == "firing"
            except (ValueError, AttributeError):
                firing = False
        state[str(row.subject)] = firing
    return sorted(name for name, on in state.items() if on)


class StatusPanel(PanelBase):
    """One line of state: gateway, deployments, alerts, faults, recorder freshness."""

    css_class = "aidash-status"
    title = "Status"

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(history, settings, **kwargs)
        self.values = shared.html("", "aidash-status-values")
        self.faults = shared.html("", "aidash-status-faults")
        self.body.children = [self.values, self.faults]
        self.state: dict[str, object] = {}

    async def _update(self, view: DashboardView) -> None:
        now = time.time()
        end_s = view.window(now)[1]
        intervals = self.settings.intervals
        health = await gateway_health(
            self.history, end_s, readiness_interval_s=intervals.gateway_readiness_s,
            url=self.settings.gateway.url,
        )
        deployments, _ = await latest_deployments(self.history, end_s)
        states = last_values(
            await self.history.series("gateway_deployment_state", end_s - 900, end_s),
            "deployment_id",
        )
        faults = await open_faults(self.history, end_s)
        alerts = firing_alerts(await self.history.events(end_s - STATE_LOOKBACK_S, end_s,
                                                         kind="alert"))
        readiness = await self.history.events(end_s - STATE_LOOKBACK_S, end_s,
                                              kind="gateway_readiness")
        _, recorder_s = last_value(await self.history.series("system_cpu_percent",
                                                             end_s - 3600, end_s))

        groups = sorted({d.group for d in deployments})
        outages = sorted(k for k, (v, _) in states.items() if v >= 1)
        info = _readiness_info(readiness)
        gateway_css = {"ready": "aidash-ok", "unknown": "aidash-muted",
                       "stale": "aidash-warn"}.get(health.state, "aidash-critical")
        since = f"since {fmt_when(health.since_s, now)}" if health.since_s else ""
        stale_after = max(3 * intervals.machine_s, 30.0)
        recorder_css = "aidash-ok"
        if recorder_s is None or now - recorder_s > stale_after:
            recorder_css = "aidash-critical"
        values = {
            "gateway": ("gateway", health.state, health.state, gateway_css),
            "since": ("since", since.removeprefix("since ") or "–", health.since_s),
            "version": ("LiteLLM", info.get("litellm_version") or "–",
                        info.get("litellm_version")),
            "db": ("database", info.get("db") or "–", info.get("db")),
            "cache": ("cache", info.get("cache") or "–", info.get("cache")),
            "groups": ("model groups", str(len(groups)) if deployments else "–", len(groups)),
            "deployments": ("deployments", str(len(deployments)) if deployments else "–",
                            len(deployments)),
            "outages": ("in outage", str(len(outages)), len(outages),
                        "aidash-critical" if outages else "aidash-ok"),
            "alerts": ("firing alerts",
                       str(len(alerts)) if self.settings.alertmanager.url or alerts
                       else "not configured", len(alerts),
                       "aidash-critical" if alerts else ""),
            "recorder": ("recorder's last reading", fmt_ago(recorder_s, now), recorder_s,
                         recorder_css),
        }
        self.values.value = values_table(values)
        loud = {k: f for k, f in faults.items() if k not in QUIET_SOURCES}
        chips = [
            f'<span class="aidash-chip aidash-critical" data-source="{esc(k)}">{esc(k)}: '
            f"{esc(f.reason)} (since {esc(fmt_when(f.since_s, now))})</span>"
            for k, f in sorted(loud.items())
        ]
        chips += [f'<span class="aidash-chip aidash-critical" data-alert="{esc(a)}">alert: '
                  f"{esc(a)}</span>" for a in alerts]
        self.faults.value = " ".join(chips)
        self.state = {"gateway": health.state, "groups": groups, "outages": outages,
                      "faults": sorted(loud), "alerts": alerts, "recorder_s": recorder_s}
        if health.down:
            self.problem(health.problem() or "")
        elif health.state == "unknown":
            self.problem(f"No reading of the gateway at {self.settings.gateway.url} in the store "
                         "yet (is the recorder running? `aidash record`)")
        if recorder_css == "aidash-critical":
            self.problem("The recorder has written no reading for "
                         f"{fmt_ago(recorder_s, now).removesuffix(' ago')}: is `aidash record` "
                         "running?" if recorder_s else
                         "The recorder has written nothing yet: is `aidash record` running?")


def _readiness_info(events: pd.DataFrame) -> dict[str, str]:
    """Version, database and cache from the last `gateway_readiness` event (JSON of
    `sources.gateway.GatewayReadiness`), when the recorder stores them."""
    if events.empty:
        return {}
    try:
        data = json.loads(str(events.iloc[-1]["detail"]))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: str(data[k]) for k in ("litellm_version", "db", "cache") if data.get(k)}
