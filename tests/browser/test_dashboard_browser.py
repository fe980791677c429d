"""The dashboard in Debian's Chromium, served as `aidash serve` serves it, over a real LiteLLM
proxy with traffic flowing: what a person sees, clicks and keeps as a screenshot.

Screenshots of the whole dashboard are kept in `test-artifacts/` (one per test). The last test
stops and restarts the module's gateway, so it stays last.
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aidash_lib.sources.gpu import GpuSource
from tests.servers.litellm import GROUPS
from tests.servers.litellm_logged import LoggedGateway
from tests.servers.process import closed_port
from tests.servers.voila import (
    ARTIFACTS,
    PANELS,
    DashboardPage,
    ServedDashboard,
    open_dashboard,
    restart_gateway,
    start_dashboard,
)

pytestmark = pytest.mark.integration

DEPLOYMENT_IDS = [dep for deps in GROUPS.values() for dep in deps]
#: The gateway's panels (they read what the recorder got from the gateway).
GATEWAY_PANELS = ("aidash-status", "aidash-deployments", "aidash-traffic", "aidash-comparison")
MACHINE_PANELS = ("aidash-machine", "aidash-gpus")


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def _has_gpu() -> bool:
    """Whether the GPU source reads a GPU here (in a thread: Playwright's sync API holds this
    thread's event loop)."""

    async def read() -> bool:
        source = GpuSource()
        try:
            return (await source.read()).ok
        finally:
            await source.aclose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def _options(page: Any, selector: str) -> list[tuple[str, str]]:
    """(value, label) of a <select>'s options."""
    return page.eval_on_selector(
        selector, "s => [...s.options].map(o => [o.value, o.textContent.trim()])")


def choose(dash: DashboardPage, css: str, wanted: str) -> str:
    """Choose `wanted` (a value or label, or a part of one) in the control of class `css`:
    a dropdown, or toggle buttons; the label chosen."""
    page = dash.page
    select = page.locator(f".{css} select")
    if select.count():
        options = _options(page, f".{css} select")
        exact = [o for o in options if wanted in o]
        partial = [o for o in options if any(wanted in part for part in o)]
        match = (exact or partial or [None])[0]
        assert match is not None, f"no option {wanted!r} in .{css}: {options}"
        select.first.select_option(value=match[0])
        return match[1]
    buttons = page.locator(f".{css} button")
    labels = [b.strip() for b in buttons.all_inner_texts()]
    for i, label in enumerate(labels):
        if wanted == label or wanted.replace("m", " min") == label or wanted in label:
            buttons.nth(i).click()
            return label
    raise AssertionError(f"no choice {wanted!r} in .{css}: {labels}")


def x_ticks(dash: DashboardPage, panel: str) -> list[str]:
    """The tick labels of the first chart's time axis in a panel."""
    return dash.page.eval_on_selector_all(
        f".{panel} .bqplot", """figs => {
          if (!figs.length) return [];
          const axes = [...figs[0].querySelectorAll('g.axis')];
          const x = axes.find(a => !a.classList.contains('vertical')
                                  && a.getAttribute('transform')?.includes('translate(0')) ||
                    axes[0];
          return x ? [...x.querySelectorAll('.tick text')].map(t => t.textContent) : [];
        }""")


def test_every_panel_shows_real_values(chromium: Any, served_dashboard: ServedDashboard) -> None:
    with open_dashboard(chromium, served_dashboard.url, "dashboard-full") as dash:
        dash.wait_until(lambda: dash.value("aidash-status", "gateway") == "ready", 60,
                        "the status bar to say the gateway is ready")
        assert _number(dash.value("aidash-status", "deployments")) == len(DEPLOYMENT_IDS)
        assert _number(dash.value("aidash-status", "groups")) == len(GROUPS)

        dash.wait_until(lambda: all(dash.page.locator(
            f".aidash-deployments tr[data-row='{dep}']").count() for dep in DEPLOYMENT_IDS),
            60, "a row for every deployment")
        dash.wait_until(lambda: _number(dash.value("aidash-traffic", "requests")) > 0, 90,
                        "the traffic panel to count requests")
        dash.wait_until(lambda: _number(dash.value("aidash-traffic", "requests_per_min")) > 0,
                        60, "a request rate")

        comparison = dash.text(".aidash-comparison")
        for provider in ("openai", "anthropic"):
            assert provider in comparison, comparison

        machine = dash.panels(MACHINE_PANELS)
        assert any(n > 40 for n in machine["aidash-machine"]["lines"]), machine
        assert "CPU" in machine["aidash-machine"]["text"]
        gpus = machine["aidash-gpus"]["text"]
        if _has_gpu():
            assert any(n > 40 for n in machine["aidash-gpus"]["lines"]), machine
        else:
            assert re.search(r"(?i)no (nvidia )?gpu|gpu.*not available|no nvidia", gpus), gpus
            assert not machine["aidash-gpus"]["lines"], "empty GPU charts without a GPU"

        states = dash.panels()
        for name in ("aidash-status", "aidash-machine"):
            assert not states[name]["errors"], (name, states[name]["errors"])
        assert not dash.serious_console_errors(), dash.serious_console_errors()


def test_a_chart_changes_between_two_reads(
    chromium: Any, served_dashboard: ServedDashboard,
) -> None:
    with open_dashboard(chromium, served_dashboard.url, "dashboard-live") as dash:
        machine_before = dash.line_paths("aidash-machine")
        traffic_before = dash.line_paths("aidash-traffic")
        updated_before = dash.text(".aidash-machine .aidash-updated")
        dash.wait_until(lambda: dash.text(".aidash-machine .aidash-updated") != updated_before,
                        60, "the machine panel to refresh")
        dash.wait_until(lambda: dash.line_paths("aidash-machine") != machine_before, 30,
                        "the machine charts to move")
        dash.wait_until(lambda: dash.line_paths("aidash-traffic") != traffic_before, 60,
                        "the traffic charts to move")


def test_filters_and_range_change_what_the_charts_show(
    chromium: Any, served_dashboard: ServedDashboard,
) -> None:
    with open_dashboard(chromium, served_dashboard.url, "dashboard-filtered") as dash:
        dash.wait_until(lambda: _number(dash.value("aidash-traffic", "requests")) > 20, 120,
                        "some traffic in the window")
        everything = _number(dash.value("aidash-traffic", "requests"))
        chosen = choose(dash, "aidash-filter-model", "claude-haiku")
        assert "claude-haiku" in chosen

        def filtered() -> float | None:
            value = _number(dash.value("aidash-traffic", "requests"))
            return value if 0 < value < 0.8 * everything else None

        dash.wait_until(filtered, 30, "the traffic panel to count claude-haiku's requests only")
        dash.wait_until(lambda: not dash.page.locator(
            ".aidash-deployments tr[data-row='gpt-4o-mini-a']").count(), 30,
            "the deployments table to follow the model filter")
        assert dash.page.locator(".aidash-deployments tr[data-row='claude-haiku-1']").count()

        ticks_before = x_ticks(dash, "aidash-traffic")
        label_before = dash.text(".aidash-traffic td[data-key='requests'] .aidash-key")
        choose(dash, "aidash-range", "15m")
        dash.wait_until(
            lambda: dash.text(".aidash-traffic td[data-key='requests'] .aidash-key")
            != label_before, 30, "the traffic summary to follow the range")
        dash.wait_until(lambda: x_ticks(dash, "aidash-traffic") != ticks_before, 30,
                        "the time axis to follow the range")

    shared = served_dashboard.url + "?range=15m&model=claude-haiku"
    with open_dashboard(chromium, shared, "dashboard-shared-link") as dash:
        label = dash.text(".aidash-traffic td[data-key='requests'] .aidash-key")
        assert "15m" in label or "15 min" in label, label
        dash.wait_until(lambda: "claude-haiku" in dash.page.eval_on_selector(
            ".aidash-filter-model select", "s => s.options[s.selectedIndex].textContent"),
            30, "the model filter to show the link's model (claude-haiku)")


def test_selecting_a_deployment_shows_its_detail(
    chromium: Any, served_dashboard: ServedDashboard,
) -> None:
    with open_dashboard(chromium, served_dashboard.url, "dashboard-deployment-detail") as dash:
        detail = dash.page.locator(".aidash-deployment-detail")
        assert not detail.is_visible()
        choose(dash, "aidash-deployment-select", "llama3-local-1")
        detail.wait_for(state="visible", timeout=30_000)
        dash.wait_until(lambda: "llama3-local-1" in detail.inner_text(), 30,
                        "the detail of llama3-local-1")
        dash.wait_until(lambda: "gpt-4o-mini" in dash.text(".aidash-deployment-fallbacks"), 60,
                        "its fallback target (gpt-4o-mini)")
        errors = dash.text(".aidash-deployment-errors")
        assert re.search(r"(?i)connect|refused|APIConnectionError|500", errors), errors
        charts = dash.page.locator(".aidash-deployment-detail .bqplot")
        assert charts.count() >= 1
        dash.page.locator(".aidash-deployment-detail").screenshot(
            path=str(ARTIFACTS / "deployment-detail-panel.png"))


def test_no_secret_reaches_the_page(chromium: Any, served_dashboard: ServedDashboard) -> None:
    assert served_dashboard.secrets
    with open_dashboard(chromium, served_dashboard.url, "dashboard-secrets") as dash:
        dash.wait_until(lambda: dash.value("aidash-status", "gateway") == "ready", 60,
                        "the gateway to be ready")
        choose(dash, "aidash-deployment-select", "gpt-4o-mini-c")
        dash.page.wait_for_timeout(3000)
        html = dash.page.content()
        frames = "\n".join(dash.frames_received + dash.frames_sent)
        state = dash.page.evaluate("""() => JSON.stringify(
            [...document.querySelectorAll('script')].map(s => s.textContent))""")
    assert len(dash.frames_received) > 10, "the widget messages were not observed"
    for secret in served_dashboard.secrets:
        assert secret not in html, "a key in the page's HTML"
        assert secret not in frames, "a key in a widget message"
        assert secret not in state, "a key in the page's scripts (widget state)"


def test_closed_pages_leave_no_kernel(chromium: Any, served_dashboard: ServedDashboard) -> None:
    served_dashboard.wait_at_rest(1)  # the one preheated kernel (settings' default), waiting
    waiting = {p.pid for p in served_dashboard.kernels()}
    with open_dashboard(chromium, served_dashboard.url, "dashboard-kernel", wait=False) as dash:
        dash.page.wait_for_selector(".aidash-status", timeout=90_000)
        assert waiting <= {p.pid for p in served_dashboard.kernels()}, "not the preheated one"
    deadline = time.monotonic() + 30
    while waiting & {p.pid for p in served_dashboard.kernels()}:
        assert time.monotonic() < deadline, "the page's kernel outlived the page"
        time.sleep(0.3)
    served_dashboard.wait_at_rest(1)  # refilled: one new preheated kernel, and nothing else


def test_a_preheated_kernel_serves_a_links_view_with_data_read_for_the_page(
    chromium: Any, served_dashboard: ServedDashboard,
) -> None:
    served_dashboard.wait_at_rest(1)
    requested_at = time.time()
    link = served_dashboard.url + "?range=6h&model=claude-haiku"
    with open_dashboard(chromium, link, "dashboard-preheated-link") as dash:
        view = dash.wait_until(
            lambda: (v := dash.view()) and float(v["refreshStarted"]) >= requested_at and v,
            30, "a read of the store begun after the page was requested")
        assert view["preheated"] == "1", "the page was not served by the preheated kernel"
        assert (view["range"], view["model"]) == ("6h", "claude-haiku")
        label = dash.text(".aidash-traffic td[data-key='requests'] .aidash-key")
        assert "6h" in label or "6 h" in label, label
        assert "claude-haiku" in dash.page.eval_on_selector(
            ".aidash-filter-model select", "s => s.options[s.selectedIndex].textContent")
        clock = dash.text(".aidash-view")
        assert clock.startswith("updated ") and clock != "updated –", clock


def test_without_a_gateway_it_serves_the_machine_and_says_where_it_looked(
    chromium: Any, server_logs: Path, tmp_path: Path,
) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    served = start_dashboard(server_logs, tmp_path, gateway_url=nowhere,
                             store_path=tmp_path / "history.sqlite", name="aidash-serve-alone")
    try:
        with open_dashboard(chromium, served.url, "dashboard-no-gateway", wait=False) as dash:
            dash.wait_for_panels(MACHINE_PANELS)
            dash.wait_until(lambda: dash.value("aidash-status", "gateway") == "unreachable", 60,
                            "the status bar to say the gateway is unreachable")
            dash.wait_until(lambda: any(nowhere in error for error in dash.panels(
                ("aidash-status",))["aidash-status"]["errors"]), 30,
                "the status bar to say where it looked for the gateway")
    finally:
        served.server.stop()


def test_gateway_outage_turns_its_panels_unreachable_and_recovers_without_reload(
    chromium: Any, served_dashboard: ServedDashboard, dashboard_gateway: LoggedGateway,
    server_logs: Path,
) -> None:
    gateway = dashboard_gateway.gateway
    with open_dashboard(chromium, served_dashboard.url, "dashboard-outage-before") as dash:
        dash.wait_until(lambda: dash.value("aidash-status", "gateway") == "ready", 60,
                        "the gateway to be ready")
        dash.page.evaluate("() => { window.__aidashSamePage = true; }")

        gateway.server.stop()
        dash.wait_until(lambda: dash.value("aidash-status", "gateway") == "unreachable", 60,
                        "the status bar to say unreachable")
        dash.wait_until(lambda: any(gateway.base_url in error for error in dash.panels(
            ("aidash-status",))["aidash-status"]["errors"]), 30,
            "the status bar's error line to name the gateway's URL")
        machine_before = dash.line_paths("aidash-machine")
        dash.wait_until(lambda: dash.line_paths("aidash-machine") != machine_before, 30,
                        "the machine charts to keep moving during the outage")
        states = dash.panels()
        assert all(states[p]["present"] for p in PANELS)
        dash.screenshot("dashboard-outage-during")

        started = time.monotonic()
        restart_gateway(gateway, server_logs, dashboard_gateway.store_path)
        dash.wait_until(lambda: dash.value("aidash-status", "gateway") == "ready", 90,
                        "the status bar to say ready again")
        recovered_s = time.monotonic() - started
        dash.wait_until(lambda: not dash.panels(("aidash-status",))["aidash-status"]["errors"],
                        30, "the status bar's error line to clear")
        assert dash.page.evaluate("() => window.__aidashSamePage === true"), "the page reloaded"
        print(f"recovered {recovered_s:.1f} s after the restart began")
