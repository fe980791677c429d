"""The dashboard: the panels of `config/dashboard.yaml` under one range picker and two filters,
refreshed from the store by an asyncio task on the kernel's own loop.

`Dashboard.from_environment()` is what `notebooks/dashboard.ipynb` calls: the settings
(`AIDASH_CONFIG`, `AIDASH_STORE`, ...), the view from the page's URL (Voila 0.5 gives the
kernel the query string in `QUERY_STRING`: `?range=1h&model=gpt-4o-mini&provider=openai`), and
the test-mode parameters:

- `AIDASH_LIVE=0`: refresh once, no live loop;
- `AIDASH_MAX_TICKS=N`: stop the loop after N refreshes (0, the default: never);
- `AIDASH_TICK_S=S`: seconds between refreshes (default `dashboard.refresh_s`).

The notebook builds the dashboard, `await dashboard.prepare()` (in a kernel Voilà preheats: the
first read of the store, before any page asks, and the live loop following the store while the
kernel waits), then `await dashboard.run_for_page()` (the view of the page's URL, waited for in
a preheated kernel, then the live loop for the page): see `aidash_lib.ui.voila_page`.

Stable CSS classes: the root `aidash-dashboard`; `aidash-range`, `aidash-filter-model`,
`aidash-filter-provider` (Dropdowns: `.aidash-range select`; ipywidgets renders an option's
label as its value, so the labels are what a test selects: the range's are its URL names
`15m` ... `7d`, the filters' the group and provider names, "all model groups" and
"all providers" for no filter); `aidash-view` (an HTML span with
`data-range`, `data-model`, `data-provider`, `data-ticks`, `data-refresh-started`: when the
last completed refresh began, in epoch seconds, and `data-preheated`: 1 in a kernel Voilà
preheated); `aidash-link` (the link to share
this view); `aidash-settings-error` when the settings cannot be read; each panel's own class
(see `aidash_lib.ui.base`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import ipywidgets as widgets
from ipywidgets.widgets.widget_description import DescriptionStyle

from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import STYLE, PanelBase, background, esc, fmt_clock, mask_secrets
from aidash_lib.ui.common import latest_deployments, shared_reads
from aidash_lib.ui.comparison import ComparisonPanel
from aidash_lib.ui.deployments import DeploymentsPanel
from aidash_lib.ui.gpus import GpuPanel
from aidash_lib.ui.inspector import RequestInspector
from aidash_lib.ui.machine import MachinePanel
from aidash_lib.ui.routing_panel import RoutingPanel
from aidash_lib.ui.status import StatusPanel
from aidash_lib.ui.traffic import TrafficPanel
from aidash_lib.ui.view import RANGES_S, DashboardView
from aidash_lib.ui.voila_page import page_query_string, preheated

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History

log = logging.getLogger(__name__)

def _routing_panel(history: History, settings: Settings) -> PanelBase:
    return RoutingPanel(history=history, settings=settings)


#: The panels a layout may name, by name: each builds from `(history, settings)` a widget with
#: a coroutine `refresh(view)` (the `Panel` protocol). Add new ones here and to
#: `settings.PANEL_NAMES`.
PANEL_CLASSES: dict[str, Callable[[History, Settings], PanelBase]] = {
    "status": StatusPanel,
    "deployments": DeploymentsPanel,
    "traffic": TrafficPanel,
    "comparison": ComparisonPanel,
    "requests": RequestInspector,
    "routing": _routing_panel,
    "gpus": GpuPanel,
    "machine": MachinePanel,
}

ALL = ""


@dataclass(frozen=True)
class LiveOptions:
    """The live loop: on or off, how many ticks (0: forever), seconds between ticks."""

    live: bool = True
    max_ticks: int = 0
    tick_s: float | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LiveOptions:
        """`AIDASH_LIVE`, `AIDASH_MAX_TICKS`, `AIDASH_TICK_S` (bad values: the defaults)."""
        env = os.environ if environ is None else environ
        live = env.get("AIDASH_LIVE", "1").strip().lower() not in ("0", "false", "no", "off")
        try:
            max_ticks = max(0, int(env.get("AIDASH_MAX_TICKS", "0") or 0))
        except ValueError:
            max_ticks = 0
        try:
            tick_s = float(env["AIDASH_TICK_S"]) if env.get("AIDASH_TICK_S") else None
        except ValueError:
            tick_s = None
        if tick_s is not None and tick_s <= 0:
            tick_s = None
        return cls(live=live, max_ticks=max_ticks, tick_s=tick_s)


def view_from_query_string(query: str | None, default_range: str = "1h") -> DashboardView:
    """The view a page URL's query string asks for (`range`, `model`, `provider`,
    `deployment`); anything
    else (a token, Voila's own parameters) is ignored."""
    params = {k: v[0] for k, v in parse_qs(query or "", keep_blank_values=False).items() if v}
    params.setdefault("range", default_range)
    return DashboardView.from_query(params)


class Dashboard(widgets.VBox):
    """Every configured panel under one range picker and model-group / provider filters.

    `settings` default to `load_settings()`, `history` to the settings' store, `view` to the
    settings' default range. `start()` runs the live loop on the running (kernel's) loop.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        history: History | None = None,
        view: DashboardView | None = None,
        *,
        live: LiveOptions | None = None,
        panels: Sequence[str | Sequence[str]] | None = None,
        settings_error: str | None = None,
    ) -> None:
        if settings is None:
            from aidash_lib.settings import load_settings

            settings = load_settings()
        if history is None:
            from aidash_lib.store.history import open_history

            history = open_history(settings.store_path)
        self.settings = settings
        self.history = history
        self.live = live or LiveOptions()
        self._view = view or DashboardView(range_name=settings.dashboard.default_range)
        self.ticks = 0
        self.last_refresh_s: float | None = None
        self.refresh_started_s: float | None = None
        self._reading_since_s: float | None = None
        self._next_tick_s = 0.0  # time.monotonic() of the live loop's next read
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._syncing = False

        self.range = widgets.Dropdown(
            options=[(k, k) for k in RANGES_S], value=self._view.range_name,
            description="Last", layout=shared.layout(width="150px"),
            style=shared.style(DescriptionStyle, description_width="60px"),
        ).add_class("aidash-range")
        self.model = widgets.Dropdown(
            options=self._options([], self._view.model_group, "all model groups"),
            value=self._view.model_group or ALL, description="Model",
            layout=shared.layout(width="300px"),
            style=shared.style(DescriptionStyle, description_width="60px"),
        ).add_class("aidash-filter-model")
        self.provider = widgets.Dropdown(
            options=self._options([], self._view.provider, "all providers"),
            value=self._view.provider or ALL, description="Provider",
            layout=shared.layout(width="260px"),
            style=shared.style(DescriptionStyle, description_width="60px"),
        ).add_class("aidash-filter-provider")
        for control in (self.range, self.model, self.provider):
            control.observe(self._control_changed, names="value")
        self.view_marker = shared.html("", "aidash-view")
        self.link = shared.html("", "aidash-link")
        title = shared.html(
            f"{STYLE}<b style='font-size:18px'>aidash</b> "
            f"<span class='aidash-note'>gateway {esc(settings.gateway.url)} · store "
            f"{esc(settings.store_path)}</span>", "aidash-header-title")
        header = shared.hbox(
            [title, self.range, self.model, self.provider, self.link, self.view_marker],
            "aidash-header", align_items="center", flex_flow="row wrap")
        children: list[widgets.Widget] = [header]
        if settings_error:
            children.append(shared.html(f"⚠ {esc(settings_error)}", "aidash-settings-error",
                                        "aidash-error"))
        self.panels: dict[str, PanelBase] = {}
        layout = settings.dashboard.layout if panels is None else list(panels)
        for row in layout:
            names = [row] if isinstance(row, str) else list(row)
            built = [self._panel(name) for name in names]
            if len(built) == 1:
                children.append(built[0])
            else:
                for panel in built:
                    panel.layout = shared.layout(flex="1 1 0", min_width="0")
                children.append(shared.hbox(built, width="100%", align_items="stretch"))
        super().__init__(children, layout=shared.layout())
        self.add_class("aidash-dashboard")
        self._show_view()

    def _panel(self, name: str) -> PanelBase:
        if name not in PANEL_CLASSES:
            raise ValueError(f"unknown panel {name!r}: choose from {', '.join(PANEL_CLASSES)}")
        panel = PANEL_CLASSES[name](self.history, self.settings)
        panel.view = self._view
        panel.add_class(f"aidash-{name}")  # every panel findable by its layout name
        if isinstance(panel, PanelBase):
            panel.embed()  # the header carries the style sheet, once
        if not self.live.live:
            panel.stop()  # a panel with a feed of its own (the inspector) follows the page's loop
        self.panels[name] = panel
        return panel

    # -- building from the environment -------------------------------------------------------

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Dashboard:
        """The dashboard for this process: settings and store from the `AIDASH_*` variables,
        the view from `QUERY_STRING` (set by Voila), the live loop from the test-mode ones.
        Settings that cannot be read are shown on the page, with the defaults in force."""
        from aidash_lib.settings import Settings, SettingsError, apply_environment, load_settings
        from aidash_lib.yamlfile import UnusableInput

        env = dict(os.environ if environ is None else environ)
        error = None
        try:
            settings = load_settings(environ=env)
        except (SettingsError, UnusableInput) as exc:
            error = f"The settings cannot be used, so the defaults are: {exc}"
            try:
                settings = apply_environment(Settings(), env)
            except UnusableInput:
                settings = Settings()
        view = view_from_query_string(env.get("QUERY_STRING"), settings.dashboard.default_range)
        return cls(settings, view=view, live=LiveOptions.from_environ(env),
                   settings_error=error)

    # -- the view ----------------------------------------------------------------------------

    @property
    def view(self) -> DashboardView:
        return self._view

    def set_view(self, view: DashboardView, *, refresh: bool = True) -> None:
        """Show another view (the controls follow) and refresh every panel for it (unless
        `refresh=False`: the next refresh will)."""
        self._view = view
        self._syncing = True
        try:
            self.range.value = view.range_name
            self._ensure_option(self.model, view.model_group)
            self._ensure_option(self.provider, view.provider)
            self.model.value = view.model_group or ALL
            self.provider.value = view.provider or ALL
        finally:
            self._syncing = False
        self._show_view()
        if refresh:
            self._schedule_refresh()

    def _control_changed(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        self._view = self._view.with_(
            range_name=self.range.value, model_group=self.model.value or None,
            provider=self.provider.value or None,
        )
        self._show_view()
        self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        background(self.refresh())

    def _show_view(self) -> None:
        view = self._view
        query = urlencode(view.to_query())
        self.link.value = (f'<a href="?{esc(query)}" title="a link to this view" '
                           f'data-query="{esc(query)}">link to this view</a>')
        self.view_marker.value = (
            f'<span class="aidash-note" data-range="{esc(view.range_name)}" '
            f'data-model="{esc(view.model_group or "")}" '
            f'data-provider="{esc(view.provider or "")}" data-ticks="{self.ticks}" '
            f'data-refresh-started="{self.refresh_started_s or 0:.3f}" '
            f'data-preheated="{int(preheated())}">'
            f"updated {esc(fmt_clock(self.last_refresh_s))}</span>"
        )

    @staticmethod
    def _options(values: Sequence[str], current: str | None, everything: str
                 ) -> list[tuple[str, str]]:
        names = sorted(set(values) | ({current} if current else set()))
        return [(everything, ALL)] + [(mask_secrets(n), n) for n in names]

    def _ensure_option(self, dropdown: widgets.Dropdown, value: str | None) -> None:
        if value and value not in [v for _, v in dropdown.options]:
            dropdown.options = [*dropdown.options, (mask_secrets(value), value)]

    async def _update_filters(self) -> None:
        """The filters offer the model groups and providers the store knows (when the store
        cannot say, the panels show why)."""
        try:
            await self._read_filters()
        except Exception as exc:
            log.debug("filters not updated: %s", exc)

    async def _read_filters(self) -> None:
        _, end = self._view.window()
        deployments, _ = await latest_deployments(self.history, end)
        groups = {d.group for d in deployments}
        providers = {d.provider for d in deployments if d.provider}
        frame = await self.history.series("gateway_group_requests_per_min", end - 86400, end,
                                          step_s=3600)
        if not frame.empty and "model_group" in frame.columns:
            groups |= {str(g) for g in frame["model_group"].dropna().unique()}
        self._syncing = True
        try:
            for dropdown, values, current, everything in (
                (self.model, groups, self._view.model_group, "all model groups"),
                (self.provider, providers, self._view.provider, "all providers"),
            ):
                options = self._options(sorted(values), current, everything)
                if list(dropdown.options) != options:
                    dropdown.options = options  # resets the selection: set it again after
                    dropdown.value = current or ALL
        finally:
            self._syncing = False

    # -- refreshing --------------------------------------------------------------------------

    async def refresh(self, *, live: bool = False) -> None:
        """Refresh every panel for the current view (concurrently; each shows its own error)."""
        async with self._lock:
            view = self._view
            started = self._reading_since_s = time.time()
            try:
                with shared_reads():
                    await asyncio.gather(
                        self._update_filters(),
                        *(panel.refresh(view, live=live) if isinstance(panel, PanelBase)
                          else panel.refresh(view) for panel in self.panels.values()),
                        return_exceptions=True,
                    )
            finally:
                self._reading_since_s = None
            self.ticks += 1
            self.refresh_started_s = started
            self.last_refresh_s = time.time()
            self._show_view()
            self._first.set()

    async def prepare(self) -> None:
        """In a kernel Voilà preheats, read the store now, before any page asks, and then
        keep following it, one read a tick as an open page does (live and unbounded), while
        the kernel waits for its page: the page is served with its panels filled from a read
        at most one tick old, and nothing reads the store while the browser draws it. The
        request inspector's one-second feed rests until the page is asked for. Elsewhere
        nothing: the live loop's first tick reads the store while the page loads."""
        if preheated():
            for panel in self.panels.values():
                if isinstance(panel, RequestInspector):
                    panel.rest()
            await self.refresh()
            if self.live.live and not self.bounded:
                self.start(read_now=False)

    def start_for_page(self) -> asyncio.Task[None]:
        """Take the view of the page's URL and run the live loop for it (`serve_page`); a
        preheated kernel first waits for its page to be requested, blocking the loop."""
        return self.serve_page(page_query_string())

    async def run_for_page(self) -> None:
        """What the notebook's last cell awaits: a preheated kernel waits for its page in a
        thread, following the store meanwhile, then `serve_page`; then `settle()`. Live, it
        returns at once, so Voilà finishes the page; in test mode it returns when the
        bounded loop has ended."""
        query = await asyncio.to_thread(page_query_string) if preheated() else None
        self.serve_page(query)
        await self.settle()

    def serve_page(self, query: str | None) -> asyncio.Task[None]:
        """The page is here: wake the request inspector's feed and run the live loop.

        In a preheated kernel the page's URL (`query`) gives the view. When that is the view
        the kernel follows and its newest read began at most one tick ago, the page shows
        that read and the next one comes a whole tick after the request, so that the page
        loads while nothing reads the store; otherwise the page's view is read now."""
        for panel in self.panels.values():
            if isinstance(panel, RequestInspector):
                panel.wake()
        if not preheated():
            return self.start()
        view = view_from_query_string(query, self.settings.dashboard.default_range)
        following = self._following_within_a_tick(time.time())
        if view == self._view and following is not None:
            self._next_tick_s = time.monotonic() + self.tick_s
            return following
        self.set_view(view, refresh=False)
        return self.start()

    @property
    def tick_s(self) -> float:
        """Seconds between the live loop's reads (`AIDASH_TICK_S`, else `refresh_s`)."""
        return self.live.tick_s or self.settings.dashboard.refresh_s

    def _following_within_a_tick(self, now_s: float) -> asyncio.Task[None] | None:
        """The live loop, when it runs and its newest read (done or under way) began at most
        one tick before `now_s`."""
        task = self._task
        newest = self._reading_since_s or self.refresh_started_s
        if task is None or task.done() or newest is None or now_s - newest > self.tick_s:
            return None
        return task

    def start(self, *, read_now: bool = True) -> asyncio.Task[None]:
        """Refresh now (`read_now`, else one tick from now) and then every tick, as a task on
        the running loop; with `AIDASH_LIVE=0` once only, with `AIDASH_MAX_TICKS=N` N times.
        A tick is the time from the start of one read to the start of the next, but the next
        begins at least half a tick after the last one ended (a slow store is not read back
        to back)."""
        self.stop()
        period = self.tick_s
        limit = 1 if not self.live.live else self.live.max_ticks
        self._next_tick_s = time.monotonic() + (0.0 if read_now else period)

        async def loop() -> None:
            done = 0
            while True:
                while (wait_s := self._next_tick_s - time.monotonic()) > 0:
                    await asyncio.sleep(wait_s)  # `serve_page` may move the tick meanwhile
                started = time.monotonic()
                try:
                    await self.refresh(live=done > 0 or not read_now)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad tick must not end the loop
                    log.exception("dashboard refresh failed")
                done += 1
                if limit and done >= limit:
                    return
                self._next_tick_s = max(self._next_tick_s, started + period,
                                        time.monotonic() + period / 2)

        self._task = asyncio.ensure_future(loop())
        return self._task

    def stop(self) -> None:
        """Stop the live loop."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    @property
    def bounded(self) -> bool:
        """Whether the live loop ends by itself (test mode)."""
        return not self.live.live or self.live.max_ticks > 0

    async def settle(self) -> None:
        """In test mode (a bounded loop), wait for the loop to end; live, return at once (the
        page shows while the first refresh reads the store)."""
        if self._task is not None and self.bounded:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def first_refresh(self) -> None:
        """Wait until every panel has been refreshed once."""
        await self._first.wait()
