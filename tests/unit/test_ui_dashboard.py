"""The dashboard: panels from the settings' layout, the range picker and filters every panel
follows, the view from the page's URL (`QUERY_STRING`, as Voila 0.5 sets it), the bounded live
loop of test mode, and one failing panel leaving the others alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aidash_lib.settings import (
    DashboardSettings,
    Settings,
    SettingsError,
    StoreSettings,
    validate_settings_file,
)
from aidash_lib.store.sqlite import SqliteHistory
from aidash_lib.ui.dashboard import Dashboard, LiveOptions, view_from_query_string
from aidash_lib.ui.inspector import RequestInspector
from aidash_lib.ui.view import DashboardView
from tests.unit.conditions import until
from tests.unit.ui_samples import fill

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dash") / "history.sqlite"
    fill(path, minutes=30)
    return path


def settings_for(path: Path, **dashboard: Any) -> Settings:
    return Settings(store=StoreSettings(path=str(path)),
                    dashboard=DashboardSettings(**dashboard))


def test_live_options_from_the_environment() -> None:
    assert LiveOptions.from_environ({}) == LiveOptions(True, 0, None)
    assert LiveOptions.from_environ(
        {"AIDASH_LIVE": "0", "AIDASH_MAX_TICKS": "3", "AIDASH_TICK_S": "0.5"}
    ) == LiveOptions(False, 3, 0.5)
    assert LiveOptions.from_environ(
        {"AIDASH_LIVE": "yes", "AIDASH_MAX_TICKS": "many", "AIDASH_TICK_S": "-1"}
    ) == LiveOptions(True, 0, None)


def test_view_from_the_query_string() -> None:
    view = view_from_query_string("range=6h&model=gpt-4o-mini&provider=openai&token=abc")
    assert view == DashboardView("6h", "gpt-4o-mini", "openai")
    assert view_from_query_string("range=2y", "15m").range_name == "1h"
    assert view_from_query_string("", "15m") == DashboardView("15m")
    assert view_from_query_string(None) == DashboardView()


def test_dashboard_settings_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.yaml"
    path.write_text("dashboard:\n  layout:\n    - status\n    - [gpus, graphs]\n"
                    "  refresh_s: 0\n")
    with pytest.raises(SettingsError) as caught:
        validate_settings_file(path)
    text = str(caught.value)
    assert f"{path}:2: dashboard.layout: " in text and "unknown panel 'graphs'" in text
    assert f"{path}:5: dashboard.refresh_s:" in text
    path.write_text("dashboard:\n  layout: [status, status]\n")
    with pytest.raises(SettingsError, match="appears twice"):
        validate_settings_file(path)
    assert DashboardSettings(layout=[["gpus", "machine"], "status"]).panels == [
        "gpus", "machine", "status"]


def test_the_layout_decides_the_panels_and_their_order(store: Path) -> None:
    dashboard = Dashboard(settings_for(store, layout=[["gpus", "machine"], "status"]))
    assert list(dashboard.panels) == ["gpus", "machine", "status"]
    row = dashboard.children[1]
    assert list(row.children) == [dashboard.panels["gpus"], dashboard.panels["machine"]]
    assert dashboard.children[2] is dashboard.panels["status"]
    classes = {name: p._dom_classes for name, p in Dashboard(settings_for(store)).panels.items()}
    assert {name: f"aidash-{name}" in c for name, c in classes.items()} == dict.fromkeys(
        ["status", "deployments", "traffic", "comparison", "requests", "gpus", "machine"], True)


async def test_from_environment_reads_the_url_and_test_mode(store: Path) -> None:
    env = {"AIDASH_STORE": str(store), "QUERY_STRING": "range=15m&model=claude-haiku&token=t0k",
           "AIDASH_MAX_TICKS": "3", "AIDASH_TICK_S": "0.05"}
    dashboard = Dashboard.from_environment(env)
    assert dashboard.view == DashboardView("15m", "claude-haiku")
    assert dashboard.range.value == "15m"
    assert dashboard.model.value == "claude-haiku"
    assert "range=15m&amp;model=claude-haiku" in dashboard.link.value
    assert "t0k" not in dashboard.link.value
    dashboard.start()
    await dashboard.settle()
    assert dashboard.ticks == 3
    traffic = dashboard.panels["traffic"]
    assert traffic.refreshes == 3
    assert traffic.requests.names == ["claude-haiku"]
    assert dashboard.panels["comparison"].refreshes == 1  # at most every 15 s when live
    assert 'data-ticks="3"' in dashboard.view_marker.value
    assert dashboard.model.value == "claude-haiku"  # still selected with the options filled
    assert dashboard.model.label == "claude-haiku"
    assert "gpt-4o-mini" in [v for _, v in dashboard.model.options]
    assert {"openai", "azure", "anthropic", "hosted_vllm"} <= {
        v for _, v in dashboard.provider.options}


async def test_live_off_refreshes_once(store: Path) -> None:
    dashboard = Dashboard.from_environment({"AIDASH_STORE": str(store), "AIDASH_LIVE": "0"})
    dashboard.start()
    await dashboard.settle()
    assert dashboard.ticks == 1
    assert all(p.refreshes == 1 for p in dashboard.panels.values())
    assert all(p.last_error is None for p in dashboard.panels.values()), {
        n: p.last_error for n, p in dashboard.panels.items()}


async def test_every_panel_follows_the_range_and_filters(store: Path) -> None:
    dashboard = Dashboard(settings_for(store))
    await dashboard.refresh()
    dashboard.range.value = "6h"
    dashboard.provider.value = "azure"
    for _ in range(100):
        await asyncio.sleep(0.05)
        if all(p.view == DashboardView("6h", None, "azure")
               and p._refreshed_view == p.view for p in dashboard.panels.values()):
            break
    assert {p.view for p in dashboard.panels.values()} == {DashboardView("6h", None, "azure")}
    assert dashboard.panels["traffic"].requests.names == ["gpt-4o-mini-b"]
    assert 'data-range="6h"' in dashboard.view_marker.value
    assert 'data-provider="azure"' in dashboard.view_marker.value
    dashboard.set_view(DashboardView("24h", "unknown-group"))
    assert dashboard.model.value == "unknown-group"
    await dashboard.refresh()
    assert dashboard.panels["traffic"].requests.names == []


async def test_the_live_loop_survives_and_stops(store: Path) -> None:
    dashboard = Dashboard(settings_for(store), live=LiveOptions(True, 0, 0.01))
    task = dashboard.start()
    for _ in range(200):
        await asyncio.sleep(0.05)
        if dashboard.ticks >= 2:
            break
    assert dashboard.ticks >= 2
    dashboard.stop()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
    assert task.cancelled()


class BrokenGpuHistory(SqliteHistory):
    """The store, except that GPU series cannot be read."""

    async def series(self, metric: str, *args: Any, **kwargs: Any) -> pd.DataFrame:
        if metric.startswith("gpu_"):
            raise RuntimeError("the GPU part of the store is broken")
        return await super().series(metric, *args, **kwargs)


async def test_one_failing_panel_leaves_the_others_alone(store: Path) -> None:
    dashboard = Dashboard(settings_for(store), history=BrokenGpuHistory(store))
    await dashboard.refresh()
    errors = {n: p.last_error for n, p in dashboard.panels.items()}
    assert errors.pop("gpus") == "RuntimeError: the GPU part of the store is broken"
    assert set(errors.values()) == {None}


def test_unusable_settings_are_shown_on_the_page(tmp_path: Path, store: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dashboard:\n  refresh_s: -3\n")
    dashboard = Dashboard.from_environment({"AIDASH_CONFIG": str(bad),
                                            "AIDASH_STORE": str(store)})
    banner = [c for c in dashboard.children if "aidash-settings-error" in c._dom_classes]
    assert banner and "refresh_s" in banner[0].value
    assert dashboard.settings.store_path == store


def test_the_routing_picture_is_a_panel_a_layout_can_name(tmp_path) -> None:
    from aidash_lib.settings import Settings
    from aidash_lib.store.sqlite import SqliteHistory
    from aidash_lib.ui.dashboard import Dashboard
    from aidash_lib.ui.routing_panel import RoutingPanel

    settings = Settings.model_validate({"dashboard": {"layout": ["status", ["routing"]]}})
    dashboard = Dashboard(settings=settings, history=SqliteHistory(tmp_path / "h.sqlite"))
    assert isinstance(dashboard.panels["routing"], RoutingPanel)


def test_the_request_inspector_is_on_the_default_dashboard(tmp_path) -> None:
    from aidash_lib.settings import Settings
    from aidash_lib.store.sqlite import SqliteHistory
    from aidash_lib.ui.dashboard import Dashboard
    from aidash_lib.ui.inspector import RequestInspector

    dashboard = Dashboard(settings=Settings(), history=SqliteHistory(tmp_path / "h.sqlite"))
    assert isinstance(dashboard.panels["requests"], RequestInspector)


def test_a_link_can_open_one_deployment() -> None:
    from aidash_lib.ui.dashboard import view_from_query_string

    view = view_from_query_string("deployment=gpt-4o-mini-b&range=15m&token=x")
    assert view.deployment == "gpt-4o-mini-b" and view.range_name == "15m"
    assert view.to_query() == {"range": "15m", "deployment": "gpt-4o-mini-b"}


async def test_a_preheated_kernel_reads_the_store_before_the_page_and_its_view_after(
    store: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aidash_lib.ui import dashboard as dashboard_module

    monkeypatch.setenv("VOILA_PREHEAT", "True")
    asked: list[bool] = []

    def page_query_string() -> str:
        asked.append(True)
        return "range=6h&model=claude-haiku"

    monkeypatch.setattr(dashboard_module, "page_query_string", page_query_string)
    dashboard = Dashboard.from_environment({"AIDASH_STORE": str(store), "AIDASH_LIVE": "0"})
    assert dashboard.view == DashboardView("1h")
    await dashboard.prepare()
    assert dashboard.ticks == 1 and not asked  # read before any page asked
    before = dashboard.refresh_started_s
    assert before is not None
    await dashboard.run_for_page()
    assert asked == [True]
    assert dashboard.view == DashboardView("6h", "claude-haiku")
    assert dashboard.range.value == "6h" and dashboard.model.value == "claude-haiku"
    assert dashboard.ticks == 2, "the page's view must be read once, not twice"
    assert dashboard.panels["traffic"].requests.names == ["claude-haiku"]
    assert dashboard.refresh_started_s > before
    assert f'data-refresh-started="{dashboard.refresh_started_s:.3f}"' in (
        dashboard.view_marker.value)
    assert 'data-preheated="1"' in dashboard.view_marker.value


async def test_a_plain_kernel_does_not_read_twice(store: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOILA_PREHEAT", raising=False)
    dashboard = Dashboard.from_environment({"AIDASH_STORE": str(store), "AIDASH_LIVE": "0",
                                            "QUERY_STRING": "range=15m"})
    await dashboard.prepare()
    assert dashboard.ticks == 0  # the live loop's first tick reads the store
    dashboard.start_for_page()
    await dashboard.settle()
    assert dashboard.ticks == 1 and dashboard.view == DashboardView("15m")
    assert 'data-preheated="0"' in dashboard.view_marker.value


def test_the_page_builds_few_models(store: Path) -> None:
    """Widgets share their layouts and styles: the default dashboard builds under 500 models
    (it was ~850 when each widget had its own, two thirds of them layouts and styles)."""
    import ipywidgets as widgets

    before = set(widgets.Widget.widgets)
    dashboard = Dashboard(settings_for(store))
    made = [w for k, w in widgets.Widget.widgets.items() if k not in before]
    layouts = [w for w in made if isinstance(w, widgets.Layout)]
    assert len(made) < 500, len(made)
    assert len(layouts) < 40, len(layouts)
    assert dashboard.panels


def test_the_style_sheet_is_on_the_page_once(store: Path) -> None:
    from aidash_lib.ui.base import STYLE
    from aidash_lib.ui.status import StatusPanel

    dashboard = Dashboard(settings_for(store))
    html = [w.value for w in _descendants(dashboard) if isinstance(getattr(w, "value", None), str)]
    assert sum(v.count(STYLE) for v in html) == 1
    # nor in a closed-over copy the page would still make a model of
    assert all(panel._style.comm is None for panel in dashboard.panels.values())
    alone = StatusPanel(SqliteHistory(store), settings_for(store))
    # a panel on its own still looks right: it carries the sheet, in a hidden widget
    assert sum(v.count(STYLE) for v in (w.value for w in _descendants(alone)
                                        if isinstance(getattr(w, "value", None), str))) == 1


def _descendants(widget: Any) -> list[Any]:
    found, todo = [], [widget]
    while todo:
        w = todo.pop()
        found.append(w)
        todo.extend(getattr(w, "children", ()))
    return found


async def test_the_feed_polls_one_tick_after_the_refresh_that_starts_it(
    store: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a preheated kernel the page's first refresh starts the feed; that page is still
    being drawn, so the feed's first poll waits one dashboard tick (`refresh_s`), then it polls
    every `poll_s`."""
    from aidash_lib.ui import dashboard as dashboard_module

    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setattr(dashboard_module, "page_query_string", lambda: "range=1h")
    dashboard = Dashboard.from_environment({"AIDASH_STORE": str(store), "AIDASH_MAX_TICKS": "1"})
    inspector = dashboard.panels["requests"]
    assert isinstance(inspector, RequestInspector)
    assert dashboard.settings.dashboard.refresh_s == 5
    inspector.poll_s = 0.05
    try:
        await dashboard.prepare()
        await dashboard.run_for_page()
        polls = inspector.polls
        await asyncio.sleep(0.5)
        assert inspector.polls == polls  # 10 poll_s later: still waiting for the tick
        assert 'data-live="live"' in inspector.live_html.value
        inspector.rest()  # resting: no refresh starts the feed, until `wake()`
        inspector.first_poll_s = 0.05
        await dashboard.refresh()
        await asyncio.sleep(0.3)
        assert inspector.polls == polls and 'data-live="off"' in inspector.live_html.value
        inspector.wake()
        await asyncio.sleep(0.5)
        assert inspector.polls > polls
    finally:
        dashboard.stop()
        inspector.stop()


async def test_a_preheated_kernel_waits_for_its_page_without_polling(
    store: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request inspector's one-second feed starts with the page, not while the kernel
    waits for one (that wait can last hours, and its updates would be replayed to the page)."""
    from aidash_lib.ui import dashboard as dashboard_module

    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setattr(dashboard_module, "page_query_string", lambda: "range=1h")
    dashboard = Dashboard.from_environment({"AIDASH_STORE": str(store), "AIDASH_MAX_TICKS": "1"})
    inspector = dashboard.panels["requests"]
    assert isinstance(inspector, RequestInspector)
    inspector.poll_s = 0.05
    assert inspector.first_poll_s is None  # by default one dashboard tick after the refresh
    inspector.first_poll_s = 0.05
    try:
        await dashboard.prepare()
        assert inspector.page is not None and inspector.page.total > 0  # read before the page
        polls = inspector.polls
        await asyncio.sleep(0.3)
        assert inspector.polls == polls
        assert 'data-live="off"' in inspector.live_html.value
        await dashboard.run_for_page()
        await asyncio.sleep(0.3)
        assert inspector.polls > polls
        assert 'data-live="live"' in inspector.live_html.value
    finally:
        dashboard.stop()
        inspector.stop()


async def test_a_preheated_kernel_follows_the_store_and_its_page_loads_without_a_read(
    store: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live, a preheated kernel reads the store every tick while it waits for its page (the
    wait does not hold the loop), so the page shows a read at most one tick old; the next
    read comes a whole tick after the request, while the browser draws the page."""
    from aidash_lib.ui import dashboard as dashboard_module

    tick_s = 2.0  # well above a read of this store, which takes a small part of it
    asked: list[float] = []
    feed_during_wait: list[str] = []

    def page_query_string() -> str:
        time.sleep(1.6 * tick_s)  # the page comes later, in Voilà's request thread
        feed_during_wait.append(inspector.live_html.value)
        asked.append(time.time())
        return "range=1h"

    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setattr(dashboard_module, "page_query_string", page_query_string)
    dashboard = Dashboard.from_environment({"AIDASH_STORE": str(store),
                                            "AIDASH_TICK_S": str(tick_s)})
    inspector = dashboard.panels["requests"]
    assert isinstance(inspector, RequestInspector)
    inspector.poll_s = inspector.first_poll_s = 0.05
    try:
        await dashboard.prepare()
        assert dashboard.ticks == 1
        await dashboard.run_for_page()
        asked_at = asked[0]
        assert dashboard.ticks >= 2, "the loop did not follow the store during the wait"
        assert 'data-live="off"' in feed_during_wait[0], "the feed ran before the page"
        polls = inspector.polls  # the dashboard's ticks ask it too
        shown = dashboard.refresh_started_s
        assert shown is not None and asked_at - tick_s <= shown <= asked_at
        assert dashboard.view == DashboardView("1h")
        ticks = dashboard.ticks
        await until(lambda: dashboard.ticks > ticks)
        assert dashboard.ticks > ticks
        assert dashboard.refresh_started_s >= asked_at + 0.9 * tick_s, (
            "a read began before a whole tick had passed since the page was asked for")
        assert 'data-live="live"' in inspector.live_html.value
        await until(lambda: inspector.polls > polls + 3)
        assert inspector.polls > polls + 3, "the one-second feed did not start with the page"
    finally:
        dashboard.stop()
        inspector.stop()


async def test_a_preheated_kernel_reads_for_its_page_when_it_stopped_following(
    store: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page is never served a read older than a tick: if the kernel's loop is not
    running when the page is asked for, the page's view is read at once."""
    from aidash_lib.ui import dashboard as dashboard_module

    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setattr(dashboard_module, "page_query_string", lambda: "range=1h")
    dashboard = Dashboard.from_environment({"AIDASH_STORE": str(store), "AIDASH_TICK_S": "60"})
    try:
        await dashboard.prepare()
        dashboard.stop()
        asked_at = time.time()
        await dashboard.run_for_page()
        await until(lambda: dashboard.ticks > 1)
        assert dashboard.ticks == 2
        assert dashboard.refresh_started_s is not None
        assert dashboard.refresh_started_s >= asked_at
    finally:
        dashboard.stop()
