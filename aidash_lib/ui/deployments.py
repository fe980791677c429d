"""Deployments: every deployment of the gateway in a table (group, provider, api_base, state,
cooldowns, requests and errors in the window, P95), and the detail of the one selected: its
recent errors, its fallback targets (configured and observed), its latency and traffic charts.

Reads: the last `deployments` event (the list, with provider and api_base), the series
`gateway_deployment_state`, `gateway_deployment_cooldowns`, `gateway_deployment_requests_per_min`,
`gateway_deployment_errors_per_min`, `gateway_deployment_latency_p{50,95,99}_s`; when the
gateway's aidash logger records requests, exact counts (`request_totals`) and P95
(`latency_percentiles`), the recent failures of the one selected (`requests`) and the
fallbacks observed (attempts sharing a call id). The configured fallbacks come from the
LiteLLM config named in the settings (`routing:`), read only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import (
    Cell,
    PanelBase,
    background,
    esc,
    fmt_number,
    fmt_percent,
    fmt_seconds,
    fmt_when,
    html_table,
    level,
    note,
)
from aidash_lib.ui.charts import TimeSeriesChart
from aidash_lib.ui.common import (
    DeploymentInfo,
    deployments_of,
    gateway_health,
    last_values,
    latest_deployments,
    rate_total,
    request_totals,
    window_mean,
)
from aidash_lib.ui.traffic import chart_row
from aidash_lib.ui.view import DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History

log = logging.getLogger(__name__)

STATE_NAMES = {0: "healthy", 1: "partial outage", 2: "outage"}
STATE_CSS = {0: "aidash-ok", 1: "aidash-warn", 2: "aidash-critical"}
#: Recent attempts read to find where failed calls went next.
FALLBACK_SCAN_ROWS = 5000
#: Recent failures read for the detail, and the distinct errors shown from them.
RECENT_ERRORS = 200
ERROR_KINDS_SHOWN = 6


@dataclass
class DeploymentRow:
    """One row of the table."""

    info: DeploymentInfo
    state: float | None = None
    cooldowns: float = 0.0
    requests: float | None = None
    errors: float | None = None
    p95_s: float | None = None
    exact: bool = False

    @property
    def error_rate_percent(self) -> float | None:
        if not self.requests or self.errors is None:
            return None
        return 100.0 * self.errors / self.requests


def configured_fallbacks(settings: Settings, group: str) -> tuple[str, ...] | None:
    """The fallback chain LiteLLM's config gives `group`, or None when it cannot be read."""
    try:
        from aidash_lib.routing import load_graph, routing_files

        paths = routing_files(settings)
        if not paths:
            return None
        return tuple(load_graph(paths).chain(group))
    except Exception as exc:  # an unreadable config must not break the panel
        log.debug("configured fallbacks unavailable: %s", exc)
        return None


def observed_fallbacks(recent: pd.DataFrame, deployment_id: str) -> pd.DataFrame:
    """Where calls went after an attempt at `deployment_id` failed: columns `deployment_id`,
    `group`, `calls`, `served` (how many of those next attempts succeeded)."""
    columns = ["deployment_id", "group", "calls", "served"]
    if recent.empty:
        return pd.DataFrame(columns=columns)
    frame = recent.sort_values(["started", "id"])
    frame = frame.assign(dep=frame["deployment_id"].astype("object"),
                         grp=frame["requested_group"].astype("object"),
                         ok=frame["status"].astype("object") == "success")
    frame["next_dep"] = frame.groupby("call_id")["dep"].shift(-1)
    frame["next_grp"] = frame.groupby("call_id")["grp"].shift(-1)
    frame["next_ok"] = frame.groupby("call_id")["ok"].shift(-1)
    moved = frame[(frame["dep"] == deployment_id) & (frame["status"].astype("object") == "failure")
                  & frame["next_dep"].notna()]
    if moved.empty:
        return pd.DataFrame(columns=columns)
    table = moved.groupby(["next_dep", "next_grp"], dropna=False).agg(
        calls=("call_id", "nunique"), served=("next_ok", "sum")).reset_index()
    table.columns = columns
    return table.sort_values("calls", ascending=False).reset_index(drop=True)


@dataclass(frozen=True)
class ErrorKind:
    """Failures with the same error, how many, and when the last one started."""

    error_class: str
    normalized: str
    message: str
    count: int
    last_s: float


def recent_errors(failed: pd.DataFrame) -> list[ErrorKind]:
    """Failed attempts grouped by error (class, normalized error, first line), the most recent
    first."""
    if failed.empty:
        return []
    frame = pd.DataFrame({
        "error_class": failed["error_class"].astype("object").fillna("–"),
        "normalized": failed["normalized_error"].astype("object").fillna("–"),
        "message": failed["error_message"].astype("object").fillna("–").str.slice(0, 200),
        "started": failed["started"],
    })
    grouped = frame.groupby(["error_class", "normalized", "message"], sort=False).agg(
        count=("started", "size"), last=("started", "max")).reset_index()
    grouped = grouped.sort_values("last", ascending=False)
    return [ErrorKind(str(r.error_class), str(r.normalized), str(r.message), int(r.count),
                      r.last.timestamp()) for r in grouped.itertuples()]


class DeploymentsPanel(PanelBase):
    """The deployments table and, for the selected deployment, its detail."""

    css_class = "aidash-deployments"
    title = "Deployments"
    latency: TimeSeriesChart
    traffic: TimeSeriesChart

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(history, settings, **kwargs)
        self.table = shared.html("", "aidash-deployments-table")
        self.select = widgets.Dropdown(
            options=[("— select a deployment for its detail —", "")], value="",
            description="Detail:", layout=shared.layout(width="480px"),
        ).add_class("aidash-deployment-select")
        self.detail_info = shared.html("", "aidash-deployment-info")
        self.detail_errors = shared.html("", "aidash-deployment-errors")
        self.detail_fallbacks = shared.html("", "aidash-deployment-fallbacks")
        self.detail = shared.vbox([], "aidash-deployment-detail")
        self._detail_children: list[widgets.Widget] = []
        self.body.children = [self.table, self.select, self.detail]
        self.rows: list[DeploymentRow] = []
        self.has_records = False
        self._syncing = False
        self.select.observe(self._selected, names="value")
        self._linked: str | None = None

    def _ensure_detail(self) -> list[widgets.Widget]:
        """The detail's widgets, made on the first selection (charts drawn while hidden would
        have no size, and an unused detail costs the page nothing)."""
        if not self._detail_children:
            s = self.settings.dashboard
            size = {"width_px": s.chart_width_px, "height_px": s.chart_height_px}
            self.latency = TimeSeriesChart(
                "Latency", unit="s", threshold=self.settings.thresholds.get("p95_latency_s"),
                css="aidash-chart-deployment-latency", tick_format=".3~f", **size)
            self.traffic = TimeSeriesChart("Traffic", unit="/min",
                                           css="aidash-chart-deployment-traffic", **size)
            self._detail_children = [
                self.detail_info, shared.hbox([self.detail_fallbacks, self.detail_errors]),
                chart_row([self.latency, self.traffic]),
            ]
        return self._detail_children

    @property
    def selected(self) -> str | None:
        return self.select.value or None

    def _selected(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            background(self.refresh(self.view))

    async def _update(self, view: DashboardView) -> None:
        now = time.time()
        window = view.window(now)
        rows = await self._rows(view, window)
        self.rows = rows
        self._render_table(rows, view)
        options = [("— select a deployment for its detail —", "")] + [
            (r.info.deployment_id, r.info.deployment_id) for r in rows
        ]
        current = self.select.value
        if not current and view.deployment and view.deployment != self._linked:
            current = self._linked = view.deployment  # a link opens that deployment, once
        if current and current not in {v for _, v in options}:
            options.append((f"{current} (not in this view)", current))
        if list(self.select.options) != options:
            self._syncing = True
            try:
                self.select.options = options  # resets the selection: set it again after
                self.select.value = current
            finally:
                self._syncing = False
        if self.selected:
            await self._render_detail(self.selected, view, window)
            if not self.detail.children:
                self.detail.children = self._ensure_detail()
        elif self.detail.children:
            self.detail.children = []
        health = await gateway_health(
            self.history, window[1],
            readiness_interval_s=self.settings.intervals.gateway_readiness_s,
            url=self.settings.gateway.url,
        )
        if health.down:
            self.problem(health.problem() or "")

    async def _rows(self, view: DashboardView, window: tuple[float, float]) -> list[DeploymentRow]:
        start, end = window
        listed, _ = await latest_deployments(self.history, end)
        labels = {"model_group": view.model_group} if view.model_group else None
        state_frame = await self.history.series(
            "gateway_deployment_state", max(start, end - 900), end, labels=labels)
        states = last_values(state_frame, "deployment_id")
        step = max(60.0, (end - start) / 600)
        requests = await self.history.series("gateway_deployment_requests_per_min", start, end,
                                             labels=labels)
        errors = await self.history.series("gateway_deployment_errors_per_min", start, end,
                                           labels=labels)
        cooldowns = await self.history.series("gateway_deployment_cooldowns", start, end,
                                              labels=labels)
        p95 = await self.history.series("gateway_deployment_latency_p95_s", start, end,
                                        labels=labels, step_s=step)
        known = {d.deployment_id: d for d in listed}
        for frame in (requests, state_frame):
            if frame.empty:
                continue
            pairs = frame[["deployment_id", "model_group"]].astype("object").drop_duplicates()
            for dep, group in pairs.itertuples(index=False):
                if dep and dep not in known:
                    known[dep] = DeploymentInfo(str(dep), str(group or "unknown"))
        chosen = deployments_of(known.values(), model_group=view.model_group,
                                provider=view.provider)
        req_total = rate_total(requests, by="deployment_id")
        err_total = rate_total(errors, by="deployment_id")
        cool = cooldowns.groupby("deployment_id", observed=True)["value"].sum().to_dict() \
            if not cooldowns.empty else {}
        p95_mean = window_mean(p95, by="deployment_id")
        exact = await self._exact(window)
        rows = []
        for info in sorted(chosen, key=lambda d: (d.group, d.deployment_id)):
            dep = info.deployment_id
            row = DeploymentRow(
                info,
                state=states[dep][0] if dep in states else None,
                cooldowns=float(cool.get(dep, 0.0)),
                requests=req_total.get(dep),
                errors=err_total.get(dep),
                p95_s=p95_mean.get(dep),
            )
            if exact is not None:
                successes, failures, p95_exact = exact
                row.requests = float(successes.get(dep, 0) + failures.get(dep, 0))
                row.errors = float(failures.get(dep, 0))
                row.p95_s = p95_exact.get(dep)
                row.exact = True
            rows.append(row)
        return rows

    async def _exact(self, window: tuple[float, float]
                     ) -> tuple[dict[str, int], dict[str, int], dict[str, float]] | None:
        """Successes, failures and P95 per deployment from request records (health checks
        left out), aggregated in the store; None without records."""
        totals = await request_totals(self.history, window)
        table = await self.history.latency_percentiles(*window, by=("deployment_id",), q=(0.95,))
        p95 = {str(r.deployment_id): float(r.p95_s) for r in table.itertuples()}
        self.has_records = not (totals.empty and table.empty)
        if not self.has_records:
            return None
        served = totals[totals["deployment_id"].notna()]
        by_deployment = served.groupby("deployment_id", observed=True)[
            ["requests", "failures"]].sum()
        failures = {str(k): int(v) for k, v in by_deployment["failures"].items()}
        successes = {str(k): int(v) for k, v in
                     (by_deployment["requests"] - by_deployment["failures"]).items()}
        return successes, failures, p95

    def _render_table(self, rows: list[DeploymentRow], view: DashboardView) -> None:
        th = self.settings.thresholds
        if not rows:
            self.table.value = note("No deployment known yet in this view: the recorder lists "
                                    "them from the gateway's /model/info.")
            return
        body = []
        for r in rows:
            state = None if r.state is None else round(r.state)
            rate = r.error_rate_percent
            rate_level = level(rate, th.get("error_rate_percent"))
            p95_level = level(r.p95_s, th.get("p95_latency_s"))
            body.append([
                r.info.group,
                r.info.deployment_id,
                r.info.provider or "–",
                r.info.api_base or ("mock" if r.info.is_mock else "–"),
                Cell(STATE_NAMES.get(state, "unknown") if state is not None else "unknown",
                     css=STATE_CSS.get(state, "aidash-muted") if state is not None
                     else "aidash-muted", data=state),
                Cell(f"{r.cooldowns:.0f}" if r.cooldowns else "–",
                     css="aidash-warn" if r.cooldowns else "", data=r.cooldowns),
                Cell(fmt_number(r.requests, 0), data=None if r.requests is None
                     else round(r.requests)),
                Cell(fmt_number(r.errors, 0), data=None if r.errors is None else round(r.errors)),
                Cell(fmt_percent(rate), css=f"aidash-{rate_level}" if rate_level else "",
                     data=None if rate is None else round(rate, 3)),
                Cell(fmt_seconds(r.p95_s), css=f"aidash-{p95_level}" if p95_level else "",
                     data=None if r.p95_s is None else round(r.p95_s, 4),
                     title=None if r.exact else "mean of the recorder's per-interval P95"),
            ])
        columns = [("group", "group"), ("deployment", "deployment"), ("provider", "provider"),
                   ("api_base", "api_base"), ("state", "state"), ("cooldowns", "cooldowns"),
                   (f"requests ({view.range_name})", "requests"), ("errors", "errors"),
                   ("error rate", "error_rate"), ("P95", "p95")]
        self.table.value = html_table(columns, body, row_keys=[r.info.deployment_id for r in rows],
                                      numeric=(5, 6, 7, 8, 9))

    async def _render_detail(self, dep: str, view: DashboardView,
                             window: tuple[float, float]) -> None:
        start, end = window
        row = next((r for r in self.rows if r.info.deployment_id == dep), None)
        info = row.info if row else DeploymentInfo(dep, "unknown")
        labels = {"deployment_id": dep}
        self._ensure_detail()
        step = self.latency.step_s(window)
        parts = []
        for name in ("p50", "p95", "p99"):
            frame = await self.history.series(f"gateway_deployment_latency_{name}_s", start, end,
                                              labels=labels, step_s=step)
            parts.append(frame[["time", "value"]].assign(q=name.upper()))
        self.latency.set_frame(pd.concat(parts), window, label="q")
        parts = []
        for name, title in (("requests_per_min", "requests/min"), ("errors_per_min", "errors/min")):
            frame = await self.history.series(f"gateway_deployment_{name}", start, end,
                                              labels=labels, step_s=step)
            parts.append(frame[["time", "value"]].assign(q=title))
        self.traffic.set_frame(pd.concat(parts), window, label="q")
        self.latency.figure.title = f"Latency of {dep}"
        self.traffic.figure.title = f"Traffic of {dep}"
        state = "unknown" if row is None or row.state is None else \
            STATE_NAMES.get(round(row.state), "unknown")
        self.detail_info.value = (
            f'<div data-deployment="{esc(dep)}"><b>{esc(info.group)} / {esc(dep)}</b> — '
            f"model {esc(info.model or '–')}, provider {esc(info.provider or '–')}, "
            f"api_base {esc(info.api_base or '–')}, state <b>{esc(state)}</b></div>"
        )
        await self._render_errors(dep, window)
        await self._render_fallbacks(info, window)

    async def _render_errors(self, dep: str, window: tuple[float, float]) -> None:
        failed = await self.history.requests(*window, deployment=dep, status="failure",
                                             limit=RECENT_ERRORS)
        if failed.empty:
            text = ("No failed request at this deployment in this window." if self.has_records
                    else "No request records in this window (the gateway's aidash logger "
                         "records them; see the README).")
            self.detail_errors.value = f"<b>Recent errors</b>{note(text)}"
            return
        rows = [
            [fmt_when(e.last_s), Cell(e.count, data=e.count), e.error_class, e.normalized,
             e.message]
            for e in recent_errors(failed)[:ERROR_KINDS_SHOWN]
        ]
        self.detail_errors.value = (
            f"<b>Recent errors</b> (the last {len(failed)} failed attempts, by error)"
            + html_table([("last seen", "time"), ("times", "count"), ("error", "error"),
                          ("normalized", "normalized"), ("message", "message")], rows,
                         css="aidash-table aidash-errors-table", numeric=(1,)))

    async def _render_fallbacks(self, info: DeploymentInfo, window: tuple[float, float]) -> None:
        configured = await asyncio.to_thread(configured_fallbacks, self.settings, info.group)
        recent = await self.history.requests(*window, limit=FALLBACK_SCAN_ROWS)
        seen = observed_fallbacks(recent, info.deployment_id)
        parts = ["<b>Fallback targets</b>"]
        if configured is None:
            parts.append(note("configured: the LiteLLM config is not readable here"))
        else:
            chain = " → ".join(configured) if configured else "none"
            parts.append(f'<div class="aidash-fallbacks-configured" data-value="'
                         f'{esc(",".join(configured))}">configured for {esc(info.group)}: '
                         f"{esc(chain)}</div>")
        if seen.empty:
            parts.append(note("observed: no fallback from this deployment in this window"
                              if not recent.empty else "observed: no request records"))
        else:
            parts.append("observed after a failure here:" + html_table(
                [("deployment", "deployment"), ("group", "group"), ("calls", "calls"),
                 ("served", "served")],
                [[r.deployment_id, r.group, int(r.calls), int(r.served)]
                 for r in seen.itertuples()],
                css="aidash-table aidash-fallbacks-observed", numeric=(2, 3)))
        self.detail_fallbacks.value = "".join(parts)
