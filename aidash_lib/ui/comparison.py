"""Provider comparison: model group × deployment, how each deployment serves each group (share,
error rate, P50 / P95 / P99, tokens per second, cost per 1k tokens), coloured against the
`error_rate_percent` and `p95_latency_s` thresholds.

Reads the totals of the window's request records, computed in the store
(`history.request_totals`, filtered by the view; a window of a million requests is never read
into the kernel), through `analysis.comparison_from_totals`. Without request records (the
gateway's aidash logger is not enabled), the same matrix from the recorder's per-deployment
series, with what they cannot give left empty.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from aidash_lib.analysis import comparison_from_totals
from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import (
    Cell,
    PanelBase,
    fmt_number,
    fmt_percent,
    fmt_seconds,
    fmt_usd,
    html_table,
    level,
    note,
)
from aidash_lib.ui.common import (
    deployments_of,
    filter_labels,
    gateway_health,
    latest_deployments,
    rate_total,
    request_totals,
    window_mean,
)
from aidash_lib.ui.view import DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History

COLUMNS: list[tuple[str, str]] = [
    ("group", "group"), ("deployment", "deployment"), ("provider", "provider"),
    ("requests", "requests"), ("share of group", "share"), ("error rate", "error_rate"),
    ("P50", "p50"), ("P95", "p95"), ("P99", "p99"), ("tokens/s", "tokens_per_s"),
    ("$ / 1k tokens", "cost_per_1k"),
]


def series_comparison(
    requests: pd.DataFrame, errors: pd.DataFrame, quantiles: dict[str, pd.DataFrame],
    providers: dict[str, str | None],
) -> pd.DataFrame:
    """The comparison frame's columns from per-deployment series (no request records)."""
    req = rate_total(requests, by="deployment_id")
    err = rate_total(errors, by="deployment_id")
    groups = {}
    if not requests.empty:
        pairs = requests[["deployment_id", "model_group"]].astype("object").drop_duplicates()
        groups = dict(pairs.itertuples(index=False))
    means = {name: window_mean(frame, by="deployment_id") for name, frame in quantiles.items()}
    rows = []
    for dep, total in sorted(req.items(), key=lambda kv: (str(groups.get(kv[0])), kv[0])):
        rows.append({
            "requested_group": groups.get(dep, "unknown"), "deployment_id": dep,
            "provider": providers.get(dep), "requests": round(total),
            "failures": round(err.get(dep, 0.0)),
            "error_rate": (err.get(dep, 0.0) / total) if total else float("nan"),
            **{f"{name}_s": means[name].get(dep, float("nan")) for name in means},
        })
    frame = pd.DataFrame(rows)
    if not frame.empty:
        totals = frame.groupby("requested_group")["requests"].transform("sum")
        frame["share_of_group"] = frame["requests"] / totals.where(totals > 0)
    return frame


class ComparisonPanel(PanelBase):
    """The provider comparison matrix of the window."""

    css_class = "aidash-comparison"
    title = "Provider comparison"
    min_refresh_s = 15.0

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(history, settings, **kwargs)
        self.table = shared.html("", "aidash-comparison-table")
        self.source = shared.html("", "aidash-comparison-source")
        self.body.children = [self.table, self.source]
        self.frame: pd.DataFrame = pd.DataFrame()

    async def _update(self, view: DashboardView) -> None:
        window = view.window(time.time())
        totals = await request_totals(self.history, window, model_group=view.model_group,
                                      provider=view.provider)
        if not totals.empty:
            frame = comparison_from_totals(totals)
            source = (f"From {int(totals['requests'].sum()):,} request records in the last "
                      f"{view.range_name} (health checks left out).")
            exact = True
        else:
            frame = await self._from_series(view, window)
            source = ("No request records in this window: from the recorder's per-deployment "
                      "series (P50/P95/P99 are means of per-interval values; enable the gateway's "
                      "aidash logger for exact figures, tokens/s and cost).")
            exact = False
        self.frame = frame
        self.source.value = note(source)
        self._render(frame, exact)
        health = await gateway_health(
            self.history, window[1],
            readiness_interval_s=self.settings.intervals.gateway_readiness_s,
            url=self.settings.gateway.url,
        )
        if health.down:
            self.problem(health.problem() or "")

    async def _from_series(self, view: DashboardView,
                           window: tuple[float, float]) -> pd.DataFrame:
        deployments, _ = await latest_deployments(self.history, window[1])
        providers = {d.deployment_id: d.provider for d in deployments}
        labels = {"model_group": view.model_group} if view.model_group else None
        ids = None
        if view.provider:
            ids = [d.deployment_id for d in deployments_of(deployments, provider=view.provider)]

        async def read(metric: str) -> pd.DataFrame:
            frame = await self.history.series(metric, *window, labels=labels)
            return filter_labels(frame, deployment_id=ids)

        quantiles = {name: await read(f"gateway_deployment_latency_{name}_s")
                     for name in ("p50", "p95", "p99")}
        return series_comparison(
            await read("gateway_deployment_requests_per_min"),
            await read("gateway_deployment_errors_per_min"), quantiles, providers,
        )

    def _render(self, frame: pd.DataFrame, exact: bool) -> None:
        if frame.empty:
            self.table.value = note("No traffic in this window.")
            return
        th = self.settings.thresholds
        rows, keys = [], []

        def get(row: Any, name: str) -> Any:
            value = getattr(row, name, None)
            return None if value is None or (isinstance(value, float) and pd.isna(value)) \
                else value

        for r in frame.itertuples(index=False):
            rate = get(r, "error_rate")
            rate_pct = None if rate is None else 100.0 * rate
            p95 = get(r, "p95_s")
            share = get(r, "share_of_group")
            rate_level = level(rate_pct, th.get("error_rate_percent"))
            p95_level = level(p95, th.get("p95_latency_s"))
            dep = get(r, "deployment_id") or "(none)"
            keys.append(f"{get(r, 'requested_group')}|{dep}")
            rows.append([
                str(get(r, "requested_group") or "–"), str(dep), str(get(r, "provider") or "–"),
                Cell(fmt_number(get(r, "requests"), 0), data=get(r, "requests")),
                Cell(fmt_percent(None if share is None else 100 * share, 0),
                     data=None if share is None else round(share, 4)),
                Cell(fmt_percent(rate_pct), css=f"aidash-{rate_level}" if rate_level else "",
                     data=None if rate_pct is None else round(rate_pct, 3)),
                Cell(fmt_seconds(get(r, "p50_s")), data=get(r, "p50_s")),
                Cell(fmt_seconds(p95), css=f"aidash-{p95_level}" if p95_level else "",
                     data=p95),
                Cell(fmt_seconds(get(r, "p99_s")), data=get(r, "p99_s")),
                Cell(fmt_number(get(r, "tokens_per_s")), data=get(r, "tokens_per_s")),
                Cell(fmt_usd(get(r, "cost_per_1k_tokens_usd")),
                     data=get(r, "cost_per_1k_tokens_usd")),
            ])
        self.table.value = html_table(COLUMNS, rows, row_keys=keys,
                                      numeric=range(3, len(COLUMNS)))
        if not exact:
            self.table.value = self.table.value.replace(
                'class="aidash-table"', 'class="aidash-table aidash-from-series"', 1)
