"""What watching the dashboard costs: the kernels' CPU at the default refresh, and the requests
the gateway receives per minute with 1 and with 5 dashboard pages open (they must be the same:
only the recorder polls the gateway; the pages read the store).

A first window with no page open measures the preheated kernels alone: they follow the store
at the page's refresh while they wait for a page (`Dashboard.prepare`), so they cost CPU of
their own, which the per-page figures leave out.

The dashboard runs as `aidash serve` runs it (`python -m aidash_lib.serve`) with the
repository's `config/dashboard.yaml` (its default intervals and refresh), pointed at a real
LiteLLM proxy with aidash's request logger. A light chat traffic (1 request/s) gives the panels
something to draw. The gateway's requests are counted from its access log (one line per
request received); chat completions are the traffic's, so the figure counts every other
request: what monitoring costs the gateway. Both windows last one minute and start a whole
number of minutes apart, so that they hold the same phase of the recorder's intervals.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from aidash_lib.demo import Traffic  # noqa: E402
from aidash_lib.settings import load_settings  # noqa: E402
from tests.servers.litellm_logged import start_logged_litellm  # noqa: E402
from tests.servers.voila import (  # noqa: E402
    CHART_PANELS,
    PANEL_STATE_JS,
    PANELS,
    TEST_TRAFFIC_MIX,
    VIEWPORT,
    ServedDashboard,
    launch_args,
    start_dashboard,
)

WINDOW_S = 60.0
PAGES = 5
TARGET = 1.0
SETTINGS = REPO / "config" / "dashboard.yaml"
ACCESS_LINE = re.compile(r'"(GET|POST|PUT|DELETE|PATCH|HEAD) (\S+) HTTP/[\d.]+"')
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
ALL_PANELS_READY = f"(args) => Object.values(({PANEL_STATE_JS})(args)).every((s) => s.ready)"


def gateway_requests(log_path: Path, start: int) -> tuple[Counter[str], int]:
    """Requests in the access log after byte `start`, by path (chat excluded); the new end."""
    data = log_path.read_bytes()
    counts: Counter[str] = Counter()
    for line in data[start:].decode(errors="replace").splitlines():
        match = ACCESS_LINE.search(line)
        if match and match.group(2).split("?")[0] not in CHAT_PATHS:
            counts[match.group(2).split("?")[0]] += 1
    return counts, len(data)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def voila_process(served: ServedDashboard) -> list[psutil.Process]:
    found = []
    for proc in served.processes():
        try:
            if "voila" in " ".join(proc.cmdline()[:3]):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def open_pages(browser: Any, url: str, count: int) -> list[Any]:
    """`count` pages, each waited for until every panel shows data."""
    contexts = []
    for _ in range(count):
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(url, wait_until="commit", timeout=180_000)
        page.wait_for_function(ALL_PANELS_READY, arg=[list(PANELS), list(CHART_PANELS)],
                               polling=200, timeout=180_000)
        contexts.append(context)
    return contexts


def measure(served: ServedDashboard, log_path: Path, window_start: float, label: str,
            pages: int) -> dict[str, Any]:
    """One window: gateway requests (non-chat) and kernel / Voilà CPU."""
    time.sleep(max(0.0, window_start - time.time()))
    kernels = served.kernels()
    voila = voila_process(served)
    _, offset = gateway_requests(log_path, 0)
    kernel_cpu, voila_cpu = cpu_seconds(kernels), cpu_seconds(voila)
    time.sleep(WINDOW_S)
    counts, _ = gateway_requests(log_path, offset)
    kernel_pct = (cpu_seconds(kernels) - kernel_cpu) / WINDOW_S * 100
    voila_pct = (cpu_seconds(voila) - voila_cpu) / WINDOW_S * 100
    per_min = sum(counts.values()) * 60.0 / WINDOW_S
    paths = ", ".join(f"{p} {n}" for p, n in sorted(counts.items()))
    print(f"{label}: {len(kernels)} kernel(s) (preheated ones included) {kernel_pct:.1f} % CPU, "
          f"Voilà {voila_pct:.1f} %; "
          f"gateway received {per_min:.0f} requests/min ({paths})", flush=True)
    return {"per_min": per_min, "kernel_pct": kernel_pct, "pages": pages}


def main() -> int:
    from playwright.sync_api import sync_playwright

    dashboard = load_settings(SETTINGS, environ={}).dashboard
    refresh_s, pool = dashboard.refresh_s, dashboard.preheated_kernels
    with tempfile.TemporaryDirectory(prefix="aidash-bench-load-") as tmp:
        workdir = Path(tmp)
        store = workdir / "history.sqlite"
        print("starting a LiteLLM proxy with aidash's logger (about 10 s)...", flush=True)
        logged = start_logged_litellm(workdir, store)
        gateway = logged.gateway
        traffic = Traffic(gateway.base_url, gateway.master_key, rate=1.0, mix=TEST_TRAFFIC_MIX)
        served: ServedDashboard | None = None
        try:
            traffic.start()
            served = start_dashboard(workdir, workdir, gateway_url=gateway.base_url,
                                     store_path=store, settings_path=SETTINGS,
                                     env={"LITELLM_MASTER_KEY": gateway.master_key})
            print(f"the dashboard with config/dashboard.yaml (refresh every {refresh_s:g} s)",
                  flush=True)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(**launch_args())
                served.wait_at_rest(pool)
                first_window = time.time() + 5.0
                waiting = measure(served, gateway.server.log_path, first_window,
                                  "no page (the preheated kernels waiting)", 0)
                contexts = open_pages(browser, served.url, 1)

                def next_window() -> float:
                    return first_window + 60.0 * (int((time.time() - first_window) // 60) + 1)

                one = measure(served, gateway.server.log_path, next_window(), "1 page", 1)
                contexts += open_pages(browser, served.url, PAGES - 1)
                five = measure(served, gateway.server.log_path, next_window(),
                               f"{PAGES} pages", PAGES)
                for context in contexts:
                    for page in context.pages:
                        page.goto("about:blank")
                    context.close()
                browser.close()
        finally:
            traffic.stop()
            if served is not None:
                served.server.stop()
            gateway.server.stop()
    ratio = five["per_min"] / one["per_min"] if one["per_min"] else float("nan")
    pool_pct = waiting["kernel_pct"]
    print(f"kernel CPU at the default refresh ({refresh_s:g} s): {pool_pct:.1f} % for "
          f"{pool} preheated kernel(s) waiting for a page; with them, "
          f"{one['kernel_pct']:.1f} % with one page, {five['kernel_pct']:.1f} % with "
          f"{five['pages']} pages: {one['kernel_pct'] - pool_pct:.1f} % per page with one, "
          f"{(five['kernel_pct'] - pool_pct) / five['pages']:.1f} % per page with "
          f"{five['pages']}")
    print(f"gateway requests per minute: {one['per_min']:.0f} with 1 page, "
          f"{five['per_min']:.0f} with {PAGES} (ratio {ratio:.2f}; must be {TARGET:g})")
    print(json.dumps({"name": "dashboard_load_gateway_requests", "value": five["per_min"],
                      "floor": one["per_min"], "ratio": round(ratio, 3), "target": TARGET,
                      "unit": "requests/min"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
