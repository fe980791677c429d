"""Traffic: requests per minute, error rate, latency (P95 per line, and P50 / P95 / P99 of the
selection), tokens per second and spend, over time, by model group or by deployment.

Reads the recorder's derived series (see `aidash_lib.derive`): `gateway_*` for the whole
gateway, `gateway_group_*{model_group}` by group, `gateway_deployment_*{deployment_id,
model_group}` by deployment. A provider filter switches to deployments (a group is not one
provider's); the provider of a deployment comes from the last `deployments` event.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import (
    PanelBase,
    background,
    fmt_number,
    fmt_percent,
    fmt_seconds,
    fmt_usd,
    level,
    values_table,
)
from aidash_lib.ui.charts import TimeSeriesChart
from aidash_lib.ui.common import (
    deployments_of,
    filter_labels,
    gateway_health,
    last_value,
    latest_deployments,
    rate_total,
)
from aidash_lib.ui.view import DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History

#: Metric suffixes summed across lines when the selection has several.
SUMMED = frozenset({"requests_per_min", "errors_per_min", "tokens_per_s", "spend_usd_per_h",
                    "input_tokens_per_s", "output_tokens_per_s"})


def chart_row(charts: list[TimeSeriesChart]) -> widgets.Box:
    """Charts side by side, wrapping to the next line when the page is narrow."""
    return widgets.Box(
        charts, layout=shared.layout(display="flex", flex_flow="row wrap", width="100%"),
    )


class Selection:
    """Which series a view selects, at group or deployment level."""

    def __init__(self, view: DashboardView, by: str, deployment_ids: list[str] | None) -> None:
        self.view = view
        self.deployment_ids = deployment_ids  # None: no provider filter
        self.level = "deployment" if by == "deployment" or view.provider else "group"

    @property
    def prefix(self) -> str:
        return f"gateway_{self.level}"

    @property
    def label(self) -> str:
        return "deployment_id" if self.level == "deployment" else "model_group"

    @property
    def labels(self) -> dict[str, str] | None:
        return {"model_group": self.view.model_group} if self.view.model_group else None


class TrafficPanel(PanelBase):
    """Gateway traffic over time; `by` is "group" or "deployment" (a toggle on the panel)."""

    css_class = "aidash-traffic"
    title = "Traffic"

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        *,
        by: str = "group",
        **kwargs: Any,
    ) -> None:
        super().__init__(history, settings, **kwargs)
        s = self.settings.dashboard
        size = {"width_px": s.chart_width_px, "height_px": s.chart_height_px}
        th = self.settings.thresholds
        self.by = widgets.ToggleButtons(
            options=[("by model group", "group"), ("by deployment", "deployment")], value=by,
            style={"button_width": "130px"},
        ).add_class("aidash-traffic-by")
        self.summary = shared.html("", "aidash-traffic-summary")
        self.requests = TimeSeriesChart("Requests / min", unit="req/min",
                                        css="aidash-chart-requests", **size)
        self.errors = TimeSeriesChart("Error rate", unit="%",
                                      threshold=th.get("error_rate_percent"),
                                      css="aidash-chart-errors", tick_format=".3~f", **size)
        self.p95 = TimeSeriesChart("Latency P95", unit="s", threshold=th.get("p95_latency_s"),
                                   css="aidash-chart-p95", tick_format=".3~f", **size)
        self.quantiles = TimeSeriesChart("Latency P50 / P95 / P99 (selection)", unit="s",
                                         threshold=th.get("p95_latency_s"),
                                         css="aidash-chart-quantiles", tick_format=".3~f",
                                         **size)
        self.tokens = TimeSeriesChart("Tokens / s", unit="tok/s", css="aidash-chart-tokens",
                                      **size)
        self.spend = TimeSeriesChart("Spend", unit="$/h", css="aidash-chart-spend",
                                     tick_format=".3~f", **size)
        self.charts = [self.requests, self.errors, self.p95, self.quantiles, self.tokens,
                       self.spend]
        self.body.children = [shared.hbox([self.by, self.summary]), chart_row(self.charts)]
        self.by.observe(self._by_changed, names="value")
        self.totals: dict[str, float | None] = {}

    def _by_changed(self, change: dict[str, Any]) -> None:
        background(self.refresh(self.view))

    async def _series(self, metric: str, window: tuple[float, float], step: float,
                      labels: dict[str, str] | None, ids: list[str] | None) -> pd.DataFrame:
        frame = await self.history.series(metric, *window, labels=labels, step_s=step)
        if ids is not None:
            frame = filter_labels(frame, deployment_id=ids)
        return frame

    async def _selection(self, suffix: str, sel: Selection, window: tuple[float, float],
                         step: float) -> pd.DataFrame:
        """One series for the whole selection: the gateway's, the group's, or the provider's
        deployments summed (rates) or their worst (latency); read once per refresh."""
        if suffix not in self._read:
            self._read[suffix] = await self._read_selection(suffix, sel, window, step)
        return self._read[suffix]

    async def _read_selection(self, suffix: str, sel: Selection, window: tuple[float, float],
                              step: float) -> pd.DataFrame:
        view = sel.view
        if sel.deployment_ids is None:
            if view.model_group:
                return await self._series(f"gateway_group_{suffix}", window, step,
                                          {"model_group": view.model_group}, None)
            return await self._series(f"gateway_{suffix}", window, step, None, None)
        if suffix == "error_rate_percent":
            errors = await self._selection("errors_per_min", sel, window, step)
            requests = await self._selection("requests_per_min", sel, window, step)
            both = requests.merge(errors, on="time", suffixes=("_r", "_e"))
            both = both[both["value_r"] > 0]
            return pd.DataFrame({"time": both["time"],
                                 "value": 100.0 * both["value_e"] / both["value_r"]})
        frame = await self._series(f"gateway_deployment_{suffix}", window, step, sel.labels,
                                   sel.deployment_ids)
        if frame.empty:
            return frame[["time", "value"]]
        how = "sum" if suffix in SUMMED else "max"
        return frame.groupby("time", as_index=False)["value"].agg(how)

    async def _update(self, view: DashboardView) -> None:
        self._read: dict[str, pd.DataFrame] = {}
        now = time.time()
        window = view.window(now)
        step = self.requests.step_s(window)
        ids = None
        if view.provider:
            deployments, _ = await latest_deployments(self.history, window[1])
            ids = [d.deployment_id for d in deployments_of(
                deployments, model_group=view.model_group, provider=view.provider)]
        sel = Selection(view, self.by.value, ids)
        for chart, suffix in ((self.requests, "requests_per_min"),
                              (self.errors, "error_rate_percent"),
                              (self.p95, "latency_p95_s"),
                              (self.tokens, "tokens_per_s"),
                              (self.spend, "spend_usd_per_h")):
            frame = await self._series(f"{sel.prefix}_{suffix}", window, step, sel.labels, ids)
            chart.set_frame(frame, window, label=sel.label)
        quantile_lines = {}
        for name in ("p50", "p95", "p99"):
            frame = await self._selection(f"latency_{name}_s", sel, window, step)
            quantile_lines[name.upper()] = frame
        combined = pd.concat(
            [f.assign(q=k) for k, f in quantile_lines.items() if not f.empty]
        ) if any(not f.empty for f in quantile_lines.values()) else pd.DataFrame(
            {"time": pd.Series(dtype="datetime64[ns, UTC]"), "value": pd.Series(dtype=float)})
        self.quantiles.set_frame(combined, window, label="q")
        await self._summary(sel, window, step)
        health = await gateway_health(
            self.history, window[1],
            readiness_interval_s=self.settings.intervals.gateway_readiness_s,
            url=self.settings.gateway.url,
        )
        if health.down:
            self.problem(health.problem() or "")

    async def _summary(self, sel: Selection, window: tuple[float, float], step: float) -> None:
        requests = await self._selection("requests_per_min", sel, window, step)
        errors = await self._selection("errors_per_min", sel, window, step)
        rate = await self._selection("error_rate_percent", sel, window, step)
        p95 = await self._selection("latency_p95_s", sel, window, step)
        tokens = await self._selection("tokens_per_s", sel, window, step)
        spend = await self._selection("spend_usd_per_h", sel, window, step)
        th = self.settings.thresholds
        now_requests, _ = last_value(requests)
        now_rate, _ = last_value(rate)
        now_p95, _ = last_value(p95.dropna())
        now_tokens, _ = last_value(tokens)
        now_spend, _ = last_value(spend)
        total_requests = rate_total(requests).get("")
        total_errors = rate_total(errors).get("")
        total_spend = rate_total(spend, per_s=3600).get("")
        window_rate = (100.0 * total_errors / total_requests
                       if total_requests and total_errors is not None else None)
        self.totals = {
            "requests_per_min": now_requests, "error_rate_percent": now_rate,
            "p95_s": now_p95, "tokens_per_s": now_tokens, "spend_usd_per_h": now_spend,
            "requests": total_requests, "errors": total_errors, "spend_usd": total_spend,
        }

        def css(value: float | None, name: str) -> str:
            found = level(value, th.get(name))
            return f"aidash-{found}" if found else ""

        # The whole gateway counts requests that failed after every fallback; a group or a
        # provider counts failed attempts (what the charts draw).
        whole = sel.deployment_ids is None and not sel.view.model_group
        errors_of = "requests failed" if whole else "attempts failed"
        self.summary.value = values_table({
            "requests_per_min": ("requests / min (last)", fmt_number(now_requests),
                                 now_requests),
            "error_rate_percent": (f"{errors_of} (last)", fmt_percent(now_rate), now_rate,
                                   css(now_rate, "error_rate_percent")),
            "p95_s": ("P95 (last)", fmt_seconds(now_p95), now_p95, css(now_p95, "p95_latency_s")),
            "tokens_per_s": ("tokens / s", fmt_number(now_tokens), now_tokens),
            "spend_usd_per_h": ("spend / h", fmt_usd(now_spend), now_spend),
            "requests": (f"requests in {sel.view.range_name}", fmt_number(total_requests, 0),
                         None if total_requests is None else round(total_requests)),
            "window_error_rate": (f"{errors_of} in {sel.view.range_name}",
                                  fmt_percent(window_rate), window_rate,
                                  css(window_rate, "error_rate_percent")),
            "spend_usd": (f"spend in {sel.view.range_name}", fmt_usd(total_spend), total_spend),
        })
