"""The request inspector: every request the gateway answered, live, with the path it took.

One line in a notebook, `RequestInspector()`, or a panel of the dashboard (`refresh(view)`).
It reads the per-request records of the store (written by aidash's logger inside LiteLLM), one
row per request (see `inspector_data`): newest first, filled in live by polling the store
every `poll_s` (1 s) on an asyncio task of the kernel's loop; a full query runs only when the
store has new records (or the window has slid for a while), and never more often than three
times its own duration, so a window of a million requests does not hog the kernel.

Filters: range, model group, deployment, provider, status (success, error, served by a
fallback), minimum latency, text in the error, and whether LiteLLM's own health checks count.
Above the table: requests, errors, error rate, fallbacks and exact P50/P95/P99 of the filtered
set. Paging (`page_size`, 50), pause/resume, a detail view of one request (every recorded
field of each attempt, the chain of attempts with which deployment failed with what error and
which served it, links to each deployment's view on the dashboard), the filtered set as a
DataFrame (`.frame`) and as a CSV download (a `data:` link, so it works under Voila).

Stable CSS classes: root `aidash-inspector` (and `aidash-panel`); `aidash-inspector-filters`
with `aidash-inspector-filter-range`, `-group`, `-deployment`, `-provider`, `-status`
(Dropdowns: select by label), `-latency` (seconds), `-error` (text), `-health` (checkbox);
`aidash-inspector-counts` (an `aidash-values` table: `data-key` requests, errors, error_rate,
fallbacks, p50, p95, p99 with raw `data-value`); `aidash-inspector-pause` (toggle),
`aidash-inspector-live` (`data-live`), `aidash-inspector-prev`, `aidash-inspector-next`,
`aidash-inspector-page` (`data-offset`, `data-total`), `aidash-inspector-csv` and
`aidash-inspector-csv-link`; `aidash-inspector-table` holding `aidash-inspector-header` and
one `aidash-inspector-row` per request (`request_rows`: a click on the row, or on its
`aidash-inspector-open` mark, shows the detail; its cells div carries `data-call-id`,
`data-status`, `data-outcome`, and one span per column
with `data-key` and `data-value`); `aidash-inspector-empty`; `aidash-inspector-detail` (with
`aidash-inspector-close`, tables `aidash-inspector-attempts` and `aidash-inspector-fields`,
links `aidash-inspector-deployment-link`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import ipywidgets as widgets
import pandas as pd

from aidash_lib.store.history import time_to_epoch
from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import (
    PanelBase,
    background,
    esc,
    fmt_percent,
    fmt_seconds,
    fmt_usd,
    fmt_when,
    mask_secrets,
    values_table,
)
from aidash_lib.ui.inspector_data import (
    QUANTILES,
    RequestFilter,
    RequestPage,
    csv_data_uri,
    csv_file_name,
    error_summary,
    first_line,
    latest_request_id,
    load_attempts,
    load_frame,
    load_page,
    run_blocking,
    to_csv,
)
from aidash_lib.ui.request_rows import RequestRows, ShownRow
from aidash_lib.ui.view import RANGES_S, DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History, TimeArg

log = logging.getLogger(__name__)

ALL = ""
CUSTOM = "custom"
STATUS_LABELS: dict[str, str] = {
    ALL: "any status", "success": "success", "error": "error", "fallback": "served by a fallback",
}

STYLE = """<style>
.aidash-inspector .aidash-inspector-filters { flex-wrap: wrap; gap: 4px 8px; }
.aidash-inspector .aidash-inspector-controls { gap: 8px; }
.aidash-inspector .aidash-inspector-filters .widget-dropdown,
.aidash-inspector .aidash-inspector-filters .widget-text { width: auto; }
.aidash-inspector-grid { display: grid; font-size: 12.5px; align-items: center;
  grid-template-columns: 64px minmax(180px, 2.2fr) 82px 78px 66px 60px 96px 76px 96px
  minmax(160px, 3fr); column-gap: 8px; }
.aidash-inspector-grid > span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.aidash-inspector-header { font-weight: 600; color: #57606a; border-bottom: 1px solid #d0d7de;
  padding-left: 30px; }
.aidash-inspector-row { display: flex; align-items: center; border-bottom: 1px solid #eaeef2;
  min-height: 26px; cursor: pointer; }
.aidash-inspector-row:hover { background: #f6f8fa; }
.aidash-inspector-row > .aidash-inspector-cells { flex: 1 1 0; min-width: 0; }
.aidash-inspector-open { flex: 0 0 20px; margin-right: 10px; text-align: center;
  font-size: 11px; color: #57606a; border: 1px solid #d0d7de; border-radius: 4px;
  background: #f6f8fa; }
.aidash-inspector-grid .num { text-align: right; }
.aidash-inspector-grid .st-success { color: #1a7f37; }
.aidash-inspector-grid .st-failure { color: #b42318; font-weight: 600; }
.aidash-inspector-grid .mark { color: #9a6700; }
.aidash-inspector-grid .err { color: #b42318; }
.aidash-inspector-selected { background: #ddf4ff; }
.aidash-inspector-detail { border-top: 2px solid #d0d7de; margin-top: 6px; padding-top: 4px; }
.aidash-inspector-detail table.aidash-table td { white-space: normal; max-width: 420px; }
.aidash-inspector-detail .failure { color: #b42318; font-weight: 600; }
.aidash-inspector-detail .success { color: #1a7f37; font-weight: 600; }
</style>"""

#: Columns of the table: (key, header, numeric).
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("time", "time", False), ("route", "model group → deployment", False),
    ("provider", "provider", False), ("status", "status", False), ("latency", "latency", True),
    ("ttft", "TTFT", True), ("tokens", "tokens in/out", True), ("cost", "cost", True),
    ("mark", "fallback/retry", False), ("error", "error", False),
)

#: Fields shown in the detail's table of every recorded field, in order.
DETAIL_FIELDS: tuple[str, ...] = (
    "id", "call_id", "started", "ended", "requested_group", "deployment_id", "model",
    "provider", "api_base", "status", "latency_s", "ttft_s", "prompt_tokens",
    "completion_tokens", "cost_usd", "error_class", "error_code", "normalized_error",
    "error_message", "attempted_fallbacks", "attempted_retries", "cache_hit", "stream",
    "call_type", "key_alias_hash", "is_health_check", "source",
)


def _value(value: Any) -> Any:
    """A cell's raw value as plain Python (None when missing)."""
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.value / 1e9
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value


def _text(value: Any) -> str:
    value = _value(value)
    return "" if value is None else str(value)


def _h(value: object) -> str:
    """HTML text of a value that is ours or already masked (no second pass for secrets)."""
    return html.escape(str(value), quote=True)


def _span(key: str, text: str, raw: Any = None, css: str = "", title: str = "") -> str:
    """A cell: `text` is HTML already; `raw` and `title` are masked, or ours."""
    attrs = f' class="{css}"' if css else ""
    attrs += f' data-key="{key}"'
    if raw is not None:
        attrs += f' data-value="{_h(raw)}"'
    if title:
        attrs += f' title="{_h(title)}"'
    return f"<span{attrs}>{text}</span>"


def fmt_cost(value: float | None) -> str:
    """A request's cost: fractions of a cent stay readable ("$0.000013")."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0:
        return "$0"
    if abs(value) < 0.0001:
        return f"${value:.6f}"
    return fmt_usd(value)


def outcome(row: Any) -> str:
    """"error", "fallback" (served after a fallback) or "success"."""
    if row.status != "success":
        return "error"
    return "fallback" if int(row.attempted_fallbacks) > 0 else "success"


def row_html(row: Any) -> str:
    """One request as the cells of a table row (a row of `load_page`'s frame)."""
    started = _value(row.request_started)
    group = mask_secrets(_text(row.requested_group)) or "?"
    deployment = mask_secrets(_text(row.deployment_id))
    provider = mask_secrets(_text(row.provider))
    failed = row.status != "success"
    summary = mask_secrets(error_summary(row))
    if failed:
        error_text = " — ".join(p for p in (summary, first_line(row.error_message)) if p)
    elif _text(row.failed_attempts):
        error_text = mask_secrets(f"after {_text(row.failed_attempts)}")
    else:
        error_text = ""
    marks = []
    if int(row.attempted_fallbacks):
        n = int(row.attempted_fallbacks)
        marks.append(f"↪ {n} fallback" + ("s" if n > 1 else ""))
    if int(row.attempted_retries):
        n = int(row.attempted_retries)
        marks.append(f"↻ {n} retr" + ("ies" if n > 1 else "y"))
    tokens_in, tokens_out = int(row.prompt_tokens), int(row.completion_tokens)
    route = (
        _span("group", _h(group), group) + " → "
        + (_span("deployment", _h(deployment), deployment) if deployment
           else _span("deployment", "–"))
    )
    latency, ttft, cost = (_value(row.request_latency_s), _value(row.ttft_s),
                           _value(row.cost_usd))
    cells = [
        _span("time", _h(fmt_when(started)), started, title=str(row.request_started)),
        f'<span data-key="route" title="{_h(group)} → {_h(deployment or "–")}">{route}</span>',
        _span("provider", _h(provider or "–"), provider or None),
        _span("status", "✗ error" if failed else "✓ ok", row.status,
              css=f"st-{'failure' if failed else 'success'}"),
        _span("latency", _h(fmt_seconds(latency)), latency, css="num"),
        _span("ttft", _h(fmt_seconds(ttft)), ttft, css="num"),
        _span("tokens", f"{tokens_in:,} / {tokens_out:,}", f"{tokens_in}/{tokens_out}",
              css="num"),
        _span("cost", _h(fmt_cost(cost)), cost, css="num"),
        _span("mark", _h(" ".join(marks)), int(row.attempts), css="mark"),
        _span("error", _h(error_text), summary or None, css="err" if failed else "",
              title=error_text),
    ]
    return (
        f'<div class="aidash-inspector-grid aidash-inspector-cells" '
        f'data-call-id="{esc(row.call_id)}" data-id="{int(row.id)}" '
        f'data-status="{_h(row.status)}" data-outcome="{outcome(row)}">{"".join(cells)}</div>'
    )


class RowHtml:
    """The cells of the rows shown, kept between refreshes: a live table mostly shows the
    rows it showed a second ago. A row is drawn from its final attempt (a record, never
    changed once written) and its chain (when it started, its attempts, what failed), and
    its time reads differently on another day; only rows not drawn yet are read from the
    frame and drawn, and only the rows shown are kept."""

    def __init__(self) -> None:
        self._drawn: dict[tuple[Any, ...], str] = {}

    def rows(self, frame: pd.DataFrame) -> list[ShownRow]:
        if frame.empty:
            self._drawn = {}
            return []
        day = time.strftime("%Y-%m-%d")
        keys = list(zip(frame["id"].tolist(), frame["attempts"].tolist(),
                        frame["failed_attempts"].tolist(),
                        time_to_epoch(frame["request_started"]).tolist(),
                        [day] * len(frame), strict=True))
        missing = [i for i, key in enumerate(keys) if key not in self._drawn]
        drawn = {key: self._drawn[key] for key in keys if key in self._drawn}
        for i, row in zip(missing, frame.iloc[missing].itertuples(index=False), strict=True):
            drawn[keys[i]] = row_html(row)
        self._drawn = drawn
        started = time_to_epoch(frame["started"])
        return [ShownRow(str(call_id), float(at), drawn[key])
                for call_id, at, key in zip(frame["call_id"].tolist(), started, keys,
                                            strict=True)]


def header_html() -> str:
    cells = "".join(
        f'<span class="{"num" if num else ""}">{esc(name)}</span>' for _, name, num in COLUMNS
    )
    return f'<div class="aidash-inspector-grid">{cells}</div>'


def deployment_link(template: str, deployment: str, range_name: str) -> str:
    """The dashboard's view of one deployment, from a template with `{deployment}` and
    `{range}` (URL-quoted)."""
    return template.format(deployment=quote(deployment, safe=""), range=quote(range_name))


def _field_text(name: str, raw: Any) -> str:
    """A recorded field as the detail shows it: times in UTC, costs readable, messages cut to
    their first line, secrets masked."""
    if name == "error_message":
        return first_line(raw)
    if isinstance(raw, pd.Timestamp) and not pd.isna(raw):
        return raw.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if name == "cost_usd":
        return fmt_cost(_value(raw))
    value = _value(raw)
    if isinstance(value, float):
        return f"{value:.6f}"
    return "" if value is None else str(value)


def detail_html(attempts: pd.DataFrame, link_template: str, range_name: str) -> str:
    """One request: what was asked, who served it, the chain of attempts, every field."""
    if attempts.empty:
        return '<div class="aidash-note">This request is no longer in the store.</div>'
    rows = list(attempts.itertuples(index=False))
    final = rows[-1]

    def link(dep: Any) -> str:
        name = _text(dep)
        if not name:
            return "–"
        href = deployment_link(link_template, name, range_name)
        return (f'<a class="aidash-inspector-deployment-link" data-deployment="{esc(name)}" '
                f'href="{esc(href)}" target="_blank" rel="noopener">{esc(name)}</a>')

    failed = [r for r in rows if r.status != "success"]
    if final.status == "success":
        served = f"served by {link(final.deployment_id)} ({esc(_text(final.provider) or '–')})"
        if failed:
            served += " after " + ", ".join(
                f"{link(r.deployment_id)} failed with {esc(error_summary(r) or 'an error')}"
                for r in failed)
    else:
        served = (f"<span class='failure'>failed</span>: {esc(error_summary(final))} — "
                  f"{esc(first_line(final.error_message))}")
    head = (
        f'<div data-call-id="{esc(final.call_id)}"><b>Request {esc(final.call_id)}</b><br>'
        f"asked for <b>{esc(_text(final.requested_group) or '?')}</b>, {served}; "
        f"{len(rows)} attempt{'s' if len(rows) > 1 else ''}</div>"
    )
    chain = []
    for i, r in enumerate(rows, 1):
        css = "success" if r.status == "success" else "failure"
        chain.append(
            f'<tr data-attempt="{i}" data-deployment="{esc(_text(r.deployment_id))}" '
            f'data-status="{esc(r.status)}">'
            f"<td>{i}</td><td>{esc(fmt_when(_value(r.started)))}</td>"
            f"<td>{link(r.deployment_id)}</td><td>{esc(_text(r.provider) or '–')}</td>"
            f'<td class="{css}">{esc(r.status)}</td>'
            f'<td data-key="error">{esc(error_summary(r))}</td>'
            f'<td data-key="message">{esc(first_line(r.error_message))}</td>'
            f"<td>{esc(fmt_seconds(_value(r.latency_s)))}</td>"
            f"<td>{int(r.attempted_fallbacks)} / {int(r.attempted_retries)}</td></tr>"
        )
    chain_table = (
        '<table class="aidash-table aidash-inspector-attempts"><thead><tr><th>#</th>'
        "<th>started</th><th>deployment</th><th>provider</th><th>status</th><th>error</th>"
        "<th>message (first line)</th><th>latency</th><th>fallbacks / retries before</th>"
        f"</tr></thead><tbody>{''.join(chain)}</tbody></table>"
    )
    fields = []
    for name in DETAIL_FIELDS:
        cells = []
        for r in rows:
            text = _field_text(name, getattr(r, name))
            cells.append(f'<td data-key="{esc(name)}">{esc(text) if text else "–"}</td>')
        fields.append(f"<tr><th>{esc(name)}</th>{''.join(cells)}</tr>")
    heads = "".join(f"<th>attempt {i}</th>" for i in range(1, len(rows) + 1))
    fields_table = (
        f'<table class="aidash-table aidash-inspector-fields"><thead><tr><th>field</th>{heads}'
        f"</tr></thead><tbody>{''.join(fields)}</tbody></table>"
    )
    return (f"{head}<p><b>Attempts</b></p>{chain_table}<details open><summary><b>Every recorded "
            f"field</b></summary>{fields_table}</details>")


class RequestInspector(PanelBase):
    """Every request the gateway answered, live (see the module docstring).

    `history` defaults to the store of the settings, `settings` to `load_settings()`. With
    `start`/`end` the window is fixed (a postmortem); otherwise it is the last `range_name`,
    live. Inside a running event loop (a notebook cell) the live feed starts by itself unless
    `live=False`; `start()`/`stop()` control it.
    """

    css_class: ClassVar[str] = "aidash-inspector"
    title: ClassVar[str] = "Requests"
    #: A live window is re-read at least this often even without new records (it slides).
    idle_refresh_s: ClassVar[float] = 15.0
    #: The dropdowns' choices are re-read at most this often.
    options_every_s: ClassVar[float] = 30.0

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        *,
        range_name: str | None = None,
        start: TimeArg | None = None,
        end: TimeArg | None = None,
        page_size: int = 50,
        poll_s: float = 1.0,
        live: bool = True,
        link_template: str = "?deployment={deployment}&range={range}",
        csv_max_rows: int = 100_000,
        title: str | None = None,
    ) -> None:
        if page_size <= 0:
            raise ValueError(f"page_size must be positive, not {page_size}")
        if range_name is not None and range_name not in RANGES_S:
            raise ValueError(f"range {range_name!r} is not one of {', '.join(RANGES_S)}")
        super().__init__(history, settings, title=title)
        self.page_size = page_size
        self.poll_s = poll_s
        #: When a dashboard refresh starts the feed, its first poll comes this much later
        #: (None: one dashboard tick, `refresh_s`): the page that refresh filled is still
        #: being drawn, and a new table sent meanwhile is drawn twice.
        self.first_poll_s: float | None = None
        self.link_template = link_template
        self.csv_max_rows = csv_max_rows
        self.page: RequestPage | None = None
        self.offset = 0
        self.detail_call_id: str | None = None
        self._row_html = RowHtml()
        self.polls = 0
        self.queries = 0
        self.last_query_s = 0.0
        self._fixed: tuple[TimeArg, TimeArg] | None = None
        self._frozen_end_s: float | None = None
        self._seen_latest: int | None = None
        self._last_query_at = 0.0
        self._options_at = -math.inf
        self._quiet_depth = 0
        self._dirty = False
        self._pending: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._applied_view: DashboardView | None = self.view
        self._build(range_name or self.view.range_name)
        if start is not None or end is not None:
            self.set_window(start if start is not None else "-1h", end if end is not None
                            else "now")
        self._live_wanted = live
        #: Set by `rest()`: no refresh starts the feed until `wake()`.
        self._resting = False
        if live and self._fixed is None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop()
                self.start()

    # -- building ---------------------------------------------------------------------------

    def _build(self, range_name: str) -> None:
        def dropdown(css: str, options: list[tuple[str, str]], value: str,
                     width: str = "170px") -> widgets.Dropdown:
            box = widgets.Dropdown(options=options, value=value, layout=shared.layout(width=width))
            box.add_class(css)
            box.observe(self._on_filter, "value")
            return box

        self.range_box = dropdown(
            "aidash-inspector-filter-range", [(r, r) for r in RANGES_S], range_name, "90px")
        self.group_box = dropdown("aidash-inspector-filter-group",
                                  [("all model groups", ALL)], ALL)
        self.deployment_box = dropdown("aidash-inspector-filter-deployment",
                                       [("all deployments", ALL)], ALL)
        self.provider_box = dropdown("aidash-inspector-filter-provider",
                                     [("all providers", ALL)], ALL, "140px")
        self.status_box = dropdown(
            "aidash-inspector-filter-status", [(v, k) for k, v in STATUS_LABELS.items()], ALL)
        self.latency_box = widgets.BoundedFloatText(
            value=0.0, min=0.0, max=1e6, step=0.1, description="min latency s",
            style={"description_width": "initial"}, layout=shared.layout(width="170px"))
        self.latency_box.add_class("aidash-inspector-filter-latency")
        self.latency_box.observe(self._on_filter, "value")
        self.error_box = widgets.Text(
            value="", placeholder="text in the error", continuous_update=False,
            layout=shared.layout(width="190px"))
        self.error_box.add_class("aidash-inspector-filter-error")
        self.error_box.observe(self._on_filter, "value")
        self.health_box = widgets.Checkbox(value=False, description="health checks",
                                           indent=False, layout=shared.layout(width="auto"))
        self.health_box.add_class("aidash-inspector-filter-health")
        self.health_box.observe(self._on_filter, "value")
        filters = shared.hbox([
            self.range_box, self.group_box, self.deployment_box, self.provider_box,
            self.status_box, self.latency_box, self.error_box, self.health_box,
        ], "aidash-inspector-filters")

        self.counts_html = shared.html("", "aidash-inspector-counts")
        self.pause_button = widgets.ToggleButton(
            value=False, description="Pause", icon="pause", tooltip="pause the live feed",
            layout=shared.layout(width="100px")).add_class("aidash-inspector-pause")
        self.pause_button.observe(self._on_pause, "value")
        self.live_html = shared.html("", "aidash-inspector-live")
        self.prev_button = shared.button("aidash-inspector-prev", description="◀ newer",
                                         layout_attrs={"width": "90px"})
        self.next_button = shared.button("aidash-inspector-next", description="older ▶",
                                         layout_attrs={"width": "90px"})
        self.prev_button.on_click(lambda _: self.go_to(self.offset - self.page_size))
        self.next_button.on_click(lambda _: self.go_to(self.offset + self.page_size))
        self.page_html = shared.html("", "aidash-inspector-page")
        self.csv_button = shared.button("aidash-inspector-csv", description="CSV",
                                        icon="download",
                                        tooltip="prepare a CSV of the filtered requests",
                                        layout_attrs={"width": "80px"})
        self.csv_button.on_click(lambda _: background(self._csv_clicked()))
        self.csv_html = shared.html("", "aidash-inspector-csv-link")
        controls = shared.hbox([
            self.pause_button, self.live_html, self.prev_button, self.page_html,
            self.next_button, self.csv_button, self.csv_html,
        ], "aidash-inspector-controls", align_items="center")

        self.table_rows = RequestRows()
        self.table_rows.on_open(self._on_open)
        self.empty_html = shared.html("", "aidash-inspector-empty")
        self.table = shared.vbox(
            [shared.html(header_html(), "aidash-inspector-header"),
             self.table_rows, self.empty_html],
            "aidash-inspector-table")

        self.close_button = shared.button("aidash-inspector-close", description="close",
                                          icon="times", layout_attrs={"width": "80px"})
        self.close_button.on_click(lambda _: self.close_detail())
        self.detail_html = shared.html("")
        #: Filled when a request is first opened: a page builds no views for it before.
        self.detail = shared.vbox([], "aidash-inspector-detail", shared.HIDDEN)
        self.body.children = [shared.html(STYLE), filters, self.counts_html, controls,
                              self.table, self.detail]
        self._show_live()

    # -- the filter --------------------------------------------------------------------------

    @property
    def filter(self) -> RequestFilter:
        """What the widgets select now (the window of a paused or fixed view stays put)."""
        if self._fixed is not None:
            start, end = self._fixed
        else:
            range_s = RANGES_S.get(self.range_box.value, RANGES_S["1h"])
            end_s = self._frozen_end_s if self._frozen_end_s is not None else time.time()
            start, end = end_s - range_s, end_s
        return RequestFilter(
            start=start, end=end,
            model_group=self.group_box.value or None,
            deployment=self.deployment_box.value or None,
            provider=self.provider_box.value or None,
            status=self.status_box.value or None,
            min_latency_s=float(self.latency_box.value) or None,
            error_text=self.error_box.value.strip() or None,
            include_health_checks=bool(self.health_box.value),
        )

    def set_filter(self, **changes: Any) -> None:
        """Set filters by name: range_name, model_group, deployment, provider, status,
        min_latency_s, error_text, include_health_checks (None or "" clears one)."""
        boxes = {
            "range_name": self.range_box, "model_group": self.group_box,
            "deployment": self.deployment_box, "provider": self.provider_box,
            "status": self.status_box, "min_latency_s": self.latency_box,
            "error_text": self.error_box, "include_health_checks": self.health_box,
        }
        unknown = set(changes) - set(boxes)
        if unknown:
            raise TypeError(f"unknown filters {sorted(unknown)}: choose from {sorted(boxes)}")
        if "status" in changes and changes["status"] not in (None, "", *STATUS_LABELS):
            raise ValueError(f"status must be one of {', '.join(k for k in STATUS_LABELS if k)}")
        with self._quiet():
            for name, value in changes.items():
                box = boxes[name]
                if name == "min_latency_s":
                    box.value = float(value or 0.0)
                elif name == "include_health_checks":
                    box.value = bool(value)
                elif name == "error_text":
                    box.value = value or ""
                elif isinstance(box, widgets.Dropdown):
                    self._choose(box, value or ALL)
            if "range_name" in changes:
                self._fixed = None
        self._filters_changed(window="range_name" in changes)

    def set_window(self, start: TimeArg, end: TimeArg = "now") -> None:
        """Show a fixed window (not live), e.g. an incident's."""
        from aidash_lib.store.history import window

        start_s, end_s = window(start, end)
        self._fixed = (start_s, end_s)
        with self._quiet():
            self._choose(self.range_box, CUSTOM)
        self._filters_changed(window=True)

    def _choose(self, box: widgets.Dropdown, value: str) -> None:
        """Select `value`, adding it to the choices if it is not one."""
        values = [v for _, v in box.options]
        if value not in values:
            box.options = [*box.options, (value, value)]
        box.value = value

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    def _on_filter(self, change: dict[str, Any]) -> None:
        if self._quiet_depth:
            return
        if change["owner"] is self.range_box and change["new"] != CUSTOM:
            self._fixed = None
        self._filters_changed(window=change["owner"] is self.range_box)

    def _filters_changed(self, *, window: bool = False) -> None:
        """Back to the first page; a new window also re-reads the dropdowns' choices."""
        self.offset = 0
        self.csv_html.value = ""
        if window:
            self._options_at = -math.inf
        self._schedule_refresh()

    # -- live feed, paging, pause ------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return bool(self.pause_button.value)

    def pause(self) -> None:
        """Stop the live updates; the window stays where it is."""
        self.pause_button.value = True

    def resume(self) -> None:
        """Follow the live window again, from now."""
        self.pause_button.value = False

    def _on_pause(self, change: dict[str, Any]) -> None:
        self._frozen_end_s = time.time() if change["new"] else None
        self.pause_button.description = "Resume" if change["new"] else "Pause"
        self.pause_button.icon = "play" if change["new"] else "pause"
        self._show_live()
        if not change["new"]:
            self._schedule_refresh()

    def _show_live(self) -> None:
        if self._fixed is not None:
            text, state = "fixed window", "fixed"
        elif self.paused:
            text, state = f"⏸ paused at {fmt_when(self._frozen_end_s)}", "paused"
        elif self._poll_task is not None and not self._poll_task.done():
            text, state = "● live", "live"
        else:
            text, state = "not live", "off"
        self.live_html.value = f'<span data-live="{state}">{esc(text)}</span>'

    def go_to(self, offset: int) -> None:
        """Show the page starting at `offset` (clamped to the filtered set)."""
        total = self.page.total if self.page is not None else 0
        last = max(0, (total - 1) // self.page_size * self.page_size)
        self.offset = min(max(0, offset), last)
        self._schedule_refresh()

    def start(self, interval_s: float | None = None, view: DashboardView | None = None,
              *, max_ticks: int = 0) -> asyncio.Task[None]:
        """Refresh now, then poll the store every `interval_s` (default `poll_s`) as a task on
        the running loop; `max_ticks` > 0 stops after that many polls."""
        self.stop()
        self._live_wanted = True
        self._resting = False
        if interval_s is not None:
            self.poll_s = interval_s
        if view is not None:
            self.view = view
        self._poll_task = asyncio.ensure_future(self._poll(max_ticks))
        self._task = self._poll_task
        self._show_live()
        return self._poll_task

    def rest(self) -> None:
        """Stop the live feed until `wake()`: a kernel Voilà preheated waits for its page
        (for hours, maybe) with its table following the dashboard's ticks, but without
        polling the store every second."""
        wanted = self._live_wanted
        self.stop()
        self._live_wanted = wanted
        self._resting = True

    def wake(self) -> None:
        """End `rest()`: the page is here. The feed starts now when a page of requests is
        shown already (else with the next refresh), its first poll `first_poll_s` later."""
        self._resting = False
        if self.page is not None:
            self._start_feed()

    def stop(self) -> None:
        """Stop the live feed (until `start()`)."""
        self._live_wanted = False
        task, self._poll_task = self._poll_task, None
        self._task = None
        if task is not None and not task.done():
            task.cancel()
        self._show_live()

    async def _poll(self, max_ticks: int, *, first: bool = True,
                    wait_s: float | None = None) -> None:
        if first:
            await self.refresh(self.view)
        ticks = 0
        while not max_ticks or ticks < max_ticks:
            await asyncio.sleep(self.poll_s if wait_s is None else wait_s)
            wait_s = None
            ticks += 1
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("inspector poll failed: %s", exc)

    @property
    def _following(self) -> bool:
        """Whether the feed follows the live window (not paused, no fixed window)."""
        return not self.paused and self._fixed is None

    async def poll(self) -> bool:
        """One tick of the live feed: refresh when the store has new requests (or the live
        window slid for `idle_refresh_s`), not sooner than three query durations after the
        last. Returns whether it refreshed."""
        self.polls += 1
        if not self._following:
            return False
        now = time.monotonic()
        if now - self._last_query_at < max(self.poll_s, 3 * self.last_query_s) * 0.95:
            return False
        try:
            latest = await latest_request_id(self.history)
        except Exception:
            latest = None  # the refresh below shows why
        if not self._following:  # paused while the store was asked
            return False
        if latest is not None and latest == self._seen_latest and (
            now - self._last_query_at < self.idle_refresh_s
        ):
            return False
        await self.refresh(self.view)
        return True

    def _schedule_refresh(self) -> None:
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = background(self._refresh_while_dirty())

    async def _refresh_while_dirty(self) -> None:
        while self._dirty:
            self._dirty = False
            await self.refresh(self.view)

    async def settle(self) -> None:
        """Wait until the refreshes that widget changes asked for are done."""
        while self._pending is not None and not self._pending.done():
            await self._pending

    # -- refreshing --------------------------------------------------------------------------

    async def refresh(self, view: DashboardView | None = None, *, live: bool = False) -> None:
        """Read the store for `view` and update (never raises but `CancelledError`). A live
        tick of the dashboard for the same view reads only when the store has new requests
        (`poll`); inside the dashboard the inspector's own live feed starts with the first
        refresh (not while it rests), its first poll `first_poll_s` later."""
        if live and (view is None or view == self._refreshed_view) and self.page is not None:
            await self.poll()
            return
        await super().refresh(view)
        self._start_feed()

    def _start_feed(self) -> None:
        """Start the live feed that `live` asked for, unless it runs, rests or has a fixed
        window; its first poll comes `first_poll_s` later (None: one dashboard tick)."""
        if (not self._live_wanted or self._resting or self._fixed is not None
                or self._poll_task is not None):
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            wait_s = self.first_poll_s
            if wait_s is None:
                wait_s = max(self.poll_s, self.settings.dashboard.refresh_s)
            self._poll_task = asyncio.ensure_future(self._poll(0, first=False, wait_s=wait_s))
            self._task = self._poll_task
            self._show_live()

    async def _update(self, view: DashboardView) -> None:
        if view != self._applied_view:
            self._apply_view(view)
        flt = self.filter
        options = time.monotonic() - self._options_at >= self.options_every_s
        latest: int | None = None
        with contextlib.suppress(Exception):
            latest = await latest_request_id(self.history)
        started = time.monotonic()
        page = await load_page(self.history, flt, offset=self.offset, limit=self.page_size,
                               options=options)
        if page.rows.empty and page.total and self.offset:
            self.offset = max(0, (page.total - 1) // self.page_size * self.page_size)
            page = await load_page(self.history, flt, offset=self.offset,
                                   limit=self.page_size, options=options)
        self.last_query_s = time.monotonic() - started
        self._last_query_at = time.monotonic()
        self._seen_latest = latest
        self.queries += 1
        if page.options_complete:
            self._options_at = time.monotonic()
        self._set_options(page.options, replace=page.options_complete)
        self.page = page
        self._render(page)

    def _apply_view(self, view: DashboardView) -> None:
        """The dashboard's range and filters (a new view replaces the inspector's own)."""
        self._applied_view = view
        with self._quiet():
            if view.end_s is not None:
                self._fixed = (view.end_s - view.range_s, view.end_s)
                self._choose(self.range_box, CUSTOM)
            elif self.range_box.value != CUSTOM or self._fixed is None:
                self._fixed = None
                self._choose(self.range_box, view.range_name)
            self._choose(self.group_box, view.model_group or ALL)
            self._choose(self.provider_box, view.provider or ALL)
        self.offset = 0
        self._options_at = -math.inf

    def _set_options(self, options: dict[str, list[str]], *, replace: bool) -> None:
        """The dropdowns' choices: `options` (replace), or the ones they have plus these."""
        with self._quiet():
            for box, key, label in (
                (self.group_box, "model_group", "all model groups"),
                (self.deployment_box, "deployment", "all deployments"),
                (self.provider_box, "provider", "all providers"),
            ):
                current = box.value
                values = set(options.get(key, []))
                if not replace:
                    values |= {v for _, v in box.options if v not in (ALL, CUSTOM)}
                if current:
                    values.add(current)
                new = [(label, ALL), *[(v, v) for v in sorted(values)]]
                if list(box.options) != new:
                    box.options = new
                    box.value = current

    def _render(self, page: RequestPage) -> None:
        counts = page.counts
        percentiles = {f"p{round(q * 100):d}": counts.percentile(q) for q in QUANTILES}
        rate = counts.error_rate
        values: dict[str, tuple[str, str, object] | tuple[str, str, object, str]] = {
            "requests": ("requests", f"{counts.requests:,}", counts.requests),
            "errors": ("errors", f"{counts.errors:,}", counts.errors,
                       "aidash-critical" if counts.errors else ""),
            "error_rate": ("error rate", fmt_percent(None if rate is None else rate * 100),
                           rate),
            "fallbacks": ("served by a fallback", f"{counts.fallbacks:,}", counts.fallbacks),
        }
        for key, value in percentiles.items():
            values[key] = (key.upper(), fmt_seconds(value), value)
        html = values_table(values)
        if self.counts_html.value != html:
            self.counts_html.value = html
        shown = self._row_html.rows(page.rows)
        self.table_rows.show(shown, self.detail_call_id)
        first = page.offset + 1 if shown else 0
        last = page.offset + len(shown)
        self.page_html.value = (
            f'<span data-offset="{page.offset}" data-total="{page.total}">'
            f"{first:,}–{last:,} of {page.total:,}</span>"
        )
        self.prev_button.disabled = page.offset <= 0
        self.next_button.disabled = last >= page.total
        if shown:
            self.empty_html.value = ""
        else:
            self.empty_html.value = (
                '<div class="aidash-note">No requests in this window match these filters.'
                "</div>" if page.total == 0 and self._has_filters() else
                '<div class="aidash-note">No requests recorded in this window. Is aidash\'s '
                "logger enabled in the gateway (config/litellm/)?</div>"
            )
        self._show_live()

    def _has_filters(self) -> bool:
        flt = self.filter
        return any((flt.model_group, flt.deployment, flt.provider, flt.status,
                    flt.min_latency_s, flt.error_text))

    # -- detail ------------------------------------------------------------------------------

    def _on_open(self, row: ShownRow) -> None:
        background(self.show(row.call_id, row.started_s))

    async def show(self, call_id: str, around_s: float | None = None) -> pd.DataFrame:
        """Open the detail of one request; returns its attempts (oldest first)."""
        if around_s is None:
            around_s = self._started_of(call_id)
        attempts = await load_attempts(self.history, call_id,
                                       around_s if around_s is not None else time.time())
        self.detail_call_id = call_id
        range_name = self.range_box.value if self.range_box.value in RANGES_S else "1h"
        self.detail_html.value = detail_html(attempts, self.link_template, range_name)
        if not self.detail.children:
            self.detail.children = [self.close_button, self.detail_html]
        shared.set_hidden(self.detail, False)
        self.table_rows.select(call_id)
        return attempts

    def _started_of(self, call_id: str) -> float | None:
        if self.page is None or self.page.rows.empty:
            return None
        match = self.page.rows[self.page.rows["call_id"].astype(object) == call_id]
        return None if match.empty else _value(match["started"].iloc[0])

    def close_detail(self) -> None:
        self.detail_call_id = None
        self.detail_html.value = ""
        shared.set_hidden(self.detail, True)
        self.table_rows.select(None)

    # -- the filtered set as data ------------------------------------------------------------

    async def load_frame(self, limit: int | None = None) -> pd.DataFrame:
        """The filtered set (newest first) as a DataFrame: the requests frame of
        `store.history` plus `request_started`, `request_latency_s`, `attempts`,
        `failed_attempts`."""
        return await load_frame(self.history, self.filter, limit=limit)

    @property
    def frame(self) -> pd.DataFrame:
        """`load_frame()`, from synchronous code (a notebook cell)."""
        return run_blocking(self.load_frame)

    async def _csv_clicked(self) -> None:
        with contextlib.suppress(Exception):
            await self.prepare_csv()

    async def prepare_csv(self) -> str:
        """Build the CSV download link of the filtered set (up to `csv_max_rows`, newest);
        returns the CSV text."""
        self.csv_html.value = '<span class="aidash-note">preparing…</span>'
        try:
            frame = await self.load_frame(limit=self.csv_max_rows)
        except Exception as exc:
            self.csv_html.value = f'<span class="aidash-error">CSV failed: {esc(exc)}</span>'
            raise
        text = to_csv(frame)
        total = self.page.total if self.page is not None else len(frame)
        label = f"{len(frame):,} requests (CSV)"
        if total > len(frame):
            label = f"the newest {len(frame):,} of {total:,} requests (CSV)"
        self.csv_html.value = (
            f'<a class="aidash-inspector-download" download="{esc(csv_file_name())}" '
            f'data-rows="{len(frame)}" href="{csv_data_uri(text)}">⬇ {esc(label)}</a>'
        )
        return text
