"""The dashboard served as `aidash serve` serves it, and Debian's Chromium to look at it.

- `chromium`: a headless Chromium (`/usr/bin/chromium`, never a downloaded browser) driven by
  Playwright, one per test module: Playwright's sync API marks the thread's asyncio loop as
  running while it lives, so it must stop before the async tests of other modules run.
  `browser_type_launch_args` points pytest-playwright's own fixtures at the same browser.
- `dashboard_gateway`: a real LiteLLM proxy with aidash's request logger writing to a store of
  the module's own; `gateway_traffic` sends steady chat traffic through it.
- `served_dashboard`: `python -m aidash_lib.serve` (what `aidash serve` runs) on free ports,
  with settings of short intervals pointing at that gateway and store: the recorder and Voilà.
- `open_dashboard(...)`: a page on it; waits for every panel to show data, records the
  websocket frames and console errors, keeps a screenshot of the whole dashboard in
  `test-artifacts/`, and navigates to `about:blank` before closing (which shuts the page's
  kernel down).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from aidash_lib.demo import Traffic
from aidash_lib.serve import READY_PATH
from tests.servers.litellm import OFFLINE_ENV, REPO, LiteLLMGateway
from tests.servers.litellm_logged import LoggedGateway, start_logged_litellm
from tests.servers.process import ServerProcess, free_port, start_server

CHROMIUM = "/usr/bin/chromium"
#: Chromium features Playwright 1.65.2 turns off itself (its `disabledFeatures`). Chromium keeps
#: only the last `--disable-features` switch, so ours must repeat them; a unit test checks the
#: list against the installed Playwright.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion",
)
#: Chromium 156 loads the address bar's popups (chrome://omnibox-popup.top-chrome/ and its AI
#: mode page) in a renderer of their own for every new browser context, headless too: about
#: 1 s of CPU each time, which on a two-core machine competes with the page being measured.
OMNIBOX_POPUP_FEATURES = ("WebUIOmniboxPopup", "WebUIOmniboxAimPopup", "WebUIOmniboxFullPopup")
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-features=" + ",".join((*PLAYWRIGHT_DISABLED_FEATURES, *OMNIBOX_POPUP_FEATURES)),
)
ARTIFACTS = REPO / "test-artifacts"
#: Tall enough for the whole dashboard: Voilà's lab template scrolls inside a container, so a
#: full-page screenshot stops at the viewport.
VIEWPORT = {"width": 1440, "height": 3400}
PANELS = ("aidash-status", "aidash-deployments", "aidash-traffic", "aidash-comparison",
          "aidash-gpus", "aidash-machine")
#: Panels that must have drawn a line with data before they count as showing data.
CHART_PANELS = ("aidash-traffic", "aidash-machine")
PANEL_TIMEOUT_S = 120.0
#: The browser's own noise when offline (the lab template links Font Awesome from a CDN).
HARMLESS_CONSOLE = ("net::ERR_NAME_NOT_RESOLVED", "ERR_INTERNET_DISCONNECTED",
                    "Failed to load resource")

#: Traffic through the test gateway (`tests/servers/litellm_config.yaml`), incl. fallbacks.
TEST_TRAFFIC_MIX = (
    ("gpt-4o-mini", 0.4),
    ("claude-haiku", 0.2),
    ("llama3-local", 0.15),        # connection refused -> gpt-4o-mini
    ("flaky-model", 0.15),         # 429 -> claude-haiku
    ("small-context-model", 0.1),  # context window -> claude-haiku
)
TRAFFIC_RATE = 2.0

SETTINGS = """\
gateway:
  url: {gateway_url}
  key_env: LITELLM_MASTER_KEY
  timeout_s: 3
store:
  path: {store}
intervals:
  machine_s: 1
  gpu_s: 2
  gateway_readiness_s: 1
  gateway_metrics_s: 3
  deployments_s: 5
  services_s: 30
routing:
  litellm_config: {litellm_config}
"""

#: A panel's state as a person would see it (read in the page).
PANEL_STATE_JS = """
(args) => {
  const [panels, charts] = args;
  const shown = (el) => !!el && el.getClientRects().length > 0
      && getComputedStyle(el).visibility !== 'hidden';
  return Object.fromEntries(panels.map((cls) => {
    const el = document.querySelector('.' + cls);
    if (!el) return [cls, {present: false}];
    const loading = el.classList.contains('aidash-loading')
        || [...el.querySelectorAll('.aidash-loading')].some(shown);
    const errors = [...el.querySelectorAll('.aidash-error')].filter(shown)
        .map((e) => e.innerText.trim()).filter((t) => t);
    const lines = [...el.querySelectorAll('.bqplot path.line')].filter(shown)
        .map((p) => (p.getAttribute('d') || '').length);
    const hasData = el.classList.contains('aidash-has-data');
    const drawn = !charts.includes(cls) || lines.some((n) => n > 40);
    return [cls, {present: true, loading, errors, hasData, lines,
                  text: el.innerText, ready: hasData && !loading && drawn}];
  }));
}
"""


#: Whether every panel in `args[0]` is ready, as `PANEL_STATE_JS` decides, without reading
#: the layout: no `innerText`, no `getClientRects` (panels hide things with the class
#: `aidash-hidden` only). A timing probe polls it while the page is being built; each layout
#: read there would force Chromium to lay the page out again and be counted as the page's.
PANELS_READY_JS = """
(args) => {
  const [panels, charts] = args;
  const shown = (el) => !el.closest('.aidash-hidden');
  return panels.every((cls) => {
    const el = document.querySelector('.' + cls);
    if (!el || !el.classList.contains('aidash-has-data')) return false;
    if (el.classList.contains('aidash-loading')
        || [...el.querySelectorAll('.aidash-loading')].some(shown)) return false;
    return !charts.includes(cls) || [...el.querySelectorAll('.bqplot path.line')]
        .some((p) => shown(p) && (p.getAttribute('d') || '').length > 40);
  });
}
"""


def wait_on_page(page: Any, predicate: Callable[[], Any], timeout_s: float, what: str, *,
                 every_ms: int, state: Callable[[], object] | None = None) -> Any:
    """Poll `predicate` every `every_ms` of the page's time until it returns a true value;
    on a timeout, the error names `what` and, with `state`, what the page showed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            shown = f"; {state()}" if state is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{shown}")
        page.wait_for_timeout(every_ms)


def chromium_executable() -> str:
    """Debian's Chromium, or a test failure that says how to install it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found. Install Debian's Chromium: apt-get install chromium "
                    "(never `playwright install`)", pytrace=False)
    return CHROMIUM


def launch_args() -> dict[str, Any]:
    """Playwright's `launch()` options for Debian's Chromium, headless."""
    return {"executable_path": chromium_executable(), "headless": True,
            "args": list(CHROMIUM_ARGS)}


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """pytest-playwright's launch options: Debian's Chromium (no downloaded browser)."""
    return launch_args()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium for the module (stopped after it: see the module docstring)."""
    from playwright.sync_api import sync_playwright

    manager = sync_playwright()
    playwright = manager.start()
    try:
        browser = playwright.chromium.launch(**launch_args())
        try:
            yield browser
        finally:
            browser.close()
    finally:
        manager.__exit__(None, None, None)


# -- the gateway and its traffic -------------------------------------------------------------


def restart_gateway(gateway: LiteLLMGateway, log_dir: Path, store_path: Path) -> None:
    """Start the stopped proxy again on the same port with the same config and store."""
    old = gateway.server
    if old.proc.poll() is None:
        raise AssertionError("the gateway is still running")
    argv = [str(a) for a in old.proc.args]
    gateway.server = start_server(
        f"{old.name}-again", argv, log_dir=log_dir, base_url=gateway.base_url,
        ready_path="/health/readiness", env={**OFFLINE_ENV, "AIDASH_STORE": str(store_path)},
        cwd=gateway.config_path.parent, ready_timeout_s=120.0,
    )


@pytest.fixture(scope="module")
def dashboard_gateway(
    server_logs: Path, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LoggedGateway]:
    """A proxy with aidash's logger writing to the module's own store (tests may stop and
    restart it: `restart_gateway`)."""
    store = tmp_path_factory.mktemp("dashboard-store") / "history.sqlite"
    logged = start_logged_litellm(server_logs, store, name="litellm-dashboard")
    try:
        yield logged
    finally:
        logged.gateway.server.stop()


@pytest.fixture(scope="module")
def gateway_traffic(dashboard_gateway: LoggedGateway) -> Iterator[Traffic]:
    """About two chat requests a second through the gateway, incl. ones that fall back."""
    gateway = dashboard_gateway.gateway
    traffic = Traffic(gateway.base_url, gateway.master_key, rate=TRAFFIC_RATE,
                      mix=TEST_TRAFFIC_MIX, seed=4)
    traffic.start()
    try:
        yield traffic
    finally:
        traffic.stop()


# -- the dashboard ---------------------------------------------------------------------------


@dataclass
class ServedDashboard:
    """`python -m aidash_lib.serve` running: where, with which settings, its process."""

    url: str
    server: ServerProcess
    settings_path: Path
    store_path: Path
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def processes(self) -> list[psutil.Process]:
        """The serve process's descendants (recorder, Voilà, kernels)."""
        try:
            return psutil.Process(self.server.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kernels(self) -> list[psutil.Process]:
        """The dashboard kernels running now (one per open page)."""
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if "ipykernel_launcher" in " ".join(proc.cmdline()):
                    found.append(proc)
        return found

    def wait_at_rest(self, kernels: int, timeout_s: float = 120.0) -> None:
        """Wait until the last page's kernel has gone and `kernels` preheated ones run and
        sit idle (1.5 s without CPU, between the reads by which they follow the store),
        waiting for a page (Voilà refills its pool `PREHEAT_REFILL_S` after a page takes a
        kernel, and the new one then runs the notebook)."""
        deadline = time.monotonic() + timeout_s
        idle_since: float | None = None
        last_cpu: float | None = None
        while time.monotonic() < deadline:
            procs = self.kernels()
            try:
                cpu: float | None = sum(sum(p.cpu_times()[:2]) for p in procs)
            except psutil.Error:
                cpu = None
            if len(procs) == kernels and cpu is not None and cpu == last_cpu:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= 1.5:
                    return
            else:
                idle_since = None
            last_cpu = cpu
            time.sleep(0.5)
        raise AssertionError(f"the server is not at rest with {kernels} idle kernel(s) after "
                             f"{timeout_s:.0f} s ({len(self.kernels())} running)")

    def wait_for_kernels(self, count: int, timeout_s: float = 30.0) -> int:
        """Wait until exactly `count` kernels run; the number running at the end."""
        deadline = time.monotonic() + timeout_s
        while True:
            running = len(self.kernels())
            if running == count or time.monotonic() > deadline:
                return running
            time.sleep(0.3)


def write_dashboard_settings(path: Path, gateway_url: str, store: Path,
                             litellm_config: Path | None = None) -> Path:
    """Settings of short intervals; `routing.litellm_config` is the gateway's config (the
    deployment detail shows its fallbacks), when given."""
    path.write_text(SETTINGS.format(gateway_url=gateway_url, store=store,
                                    litellm_config=litellm_config or "litellm-config.yaml"))
    return path


def start_dashboard(
    log_dir: Path,
    workdir: Path,
    *,
    gateway_url: str,
    store_path: Path,
    env: dict[str, str] | None = None,
    notebook: Path | None = None,
    secrets: Sequence[str] = (),
    name: str = "aidash-serve",
    settings_path: Path | None = None,
    litellm_config: Path | None = None,
) -> ServedDashboard:
    """`python -m aidash_lib.serve` on a free loopback port; ready when Voilà answers.

    The settings are the test's (short intervals) unless `settings_path` is given; the
    gateway's URL and the store are set through the environment either way."""
    settings = settings_path or write_dashboard_settings(
        workdir / "dashboard.yaml", gateway_url, store_path, litellm_config)
    env = {**(env or {}), "AIDASH_GATEWAY_URL": gateway_url, "AIDASH_STORE": str(store_path)}
    port = free_port()
    argv = [sys.executable, "-m", "aidash_lib.serve", "--config", str(settings),
            "--port", str(port)]
    if notebook is not None:
        argv += ["--notebook", str(notebook)]
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(
        f"{name}-{port}", argv, log_dir=log_dir, base_url=base_url, ready_path=READY_PATH,
        env=env, cwd=REPO, ready_timeout_s=90.0, ready_status=tuple(range(100, 600)),
    )
    return ServedDashboard(base_url + "/", server, settings, store_path, tuple(secrets))


@pytest.fixture(scope="module")
def served_dashboard(
    dashboard_gateway: LoggedGateway,
    gateway_traffic: Traffic,
    server_logs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServedDashboard]:
    """The dashboard over the module's gateway and store, with traffic flowing."""
    gateway = dashboard_gateway.gateway
    workdir = tmp_path_factory.mktemp("dashboard")
    served = start_dashboard(
        server_logs, workdir, gateway_url=gateway.base_url,
        store_path=dashboard_gateway.store_path,
        env={"LITELLM_MASTER_KEY": gateway.master_key},
        secrets=(gateway.master_key, *fake_provider_keys(gateway.config_path)),
        litellm_config=gateway.config_path,
    )
    try:
        yield served
    finally:
        served.server.stop()


def fake_provider_keys(config: Path) -> list[str]:
    """The `api_key` values of a LiteLLM config (the secrets a page must never show)."""
    keys = []
    for line in config.read_text().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "api_key" and value.strip() and not value.strip().startswith("os.environ/"):
            keys.append(value.strip().strip("\"'"))
    return keys


# -- pages -----------------------------------------------------------------------------------


@dataclass
class DashboardPage:
    """An open dashboard page and what its websocket carried."""

    page: Any
    frames_received: list[str] = field(default_factory=list)
    frames_sent: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def panels(self, panels: Sequence[str] = PANELS) -> dict[str, dict[str, Any]]:
        """Each panel's state: present, loading, errors, hasData, lines (path lengths), text,
        ready."""
        return self.page.evaluate(PANEL_STATE_JS, [list(panels), list(CHART_PANELS)])

    def wait_until(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Poll `predicate` (every 0.5 s, in the page's time) until it returns a true value."""
        return wait_on_page(self.page, predicate, timeout_s, what, every_ms=500)

    def wait_for_panels(self, panels: Sequence[str] = PANELS,
                        timeout_s: float = PANEL_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """Wait until every panel shows data (no loading state; charts drawn)."""
        last: dict[str, dict[str, Any]] = {}

        def ready() -> bool:
            nonlocal last
            last = self.panels(panels)
            return all(state.get("ready") for state in last.values())

        try:
            self.wait_until(ready, timeout_s, "every panel to show data")
        except AssertionError:
            summary = {k: {n: v.get(n) for n in ("present", "loading", "hasData", "errors",
                                                  "lines")} for k, v in last.items()}
            raise AssertionError(f"panels not ready after {timeout_s:.0f} s: {summary}") from None
        return last

    def view(self) -> dict[str, str] | None:
        """The dashboard's view marker (`.aidash-view`): range, model, provider, ticks,
        refreshStarted (epoch s of the last completed read), preheated ("1" or "0")."""
        return self.page.evaluate("""() => {
            const marker = document.querySelector('.aidash-view [data-range]');
            return marker ? {...marker.dataset} : null;
        }""")

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.inner_text()

    def value(self, panel: str, key: str) -> str | None:
        """The `data-value` of a headline value (`<td data-key=KEY>`) in a panel."""
        cell = self.page.locator(f".{panel} td[data-key='{key}']").first
        if cell.count() == 0:
            return None
        return cell.get_attribute("data-value")

    def line_paths(self, panel: str) -> list[str]:
        """The `d` of every line shown in a panel's charts."""
        return self.page.eval_on_selector_all(
            f".{panel} .bqplot path.line",
            "els => els.filter(e => e.getClientRects().length > 0)"
            ".map(e => e.getAttribute('d') || '')")

    def screenshot(self, name: str) -> Path:
        """A screenshot of the whole dashboard in `test-artifacts/NAME.png`."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def serious_console_errors(self) -> list[str]:
        return [e for e in self.console_errors if not any(h in e for h in HARMLESS_CONSOLE)]


@contextlib.contextmanager
def open_dashboard(
    browser: Any,
    url: str,
    name: str,
    *,
    wait: bool = True,
    timeout_s: float = PANEL_TIMEOUT_S,
    viewport: dict[str, int] | None = None,
) -> Iterator[DashboardPage]:
    """Open the dashboard in a new browser context; wait for every panel to show data (with
    `wait`); at the end keep a screenshot `test-artifacts/NAME.png` and leave through
    `about:blank` (which shuts the page's kernel down) before closing."""
    context = browser.new_context(viewport=viewport or VIEWPORT)
    page = context.new_page()
    opened = DashboardPage(page)

    def on_websocket(ws: Any) -> None:
        ws.on("framereceived", lambda payload: opened.frames_received.append(_text(payload)))
        ws.on("framesent", lambda payload: opened.frames_sent.append(_text(payload)))

    page.on("websocket", on_websocket)
    page.on("console", lambda msg: opened.console_errors.append(msg.text)
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: opened.console_errors.append(f"pageerror: {exc}"))
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
        if wait:
            opened.wait_for_panels(timeout_s=timeout_s)
        yield opened
    finally:
        with contextlib.suppress(Exception):
            opened.screenshot(name)
        with contextlib.suppress(Exception):
            page.goto("about:blank")
        context.close()


def _text(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    return str(payload)
