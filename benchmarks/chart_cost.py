"""What one of the dashboard's charts costs a page, in Chromium: the part of
`dashboard_render.py`'s ratio that comes from the number of charts alone.

Three notebooks served as `dashboard_render.py` serves its floor (the flags of `aidash serve`,
one preheated kernel each): the floor itself (a bare Voilà notebook with one bqplot chart),
and notebooks with 1 and with `CHARTS` of the dashboard's `TimeSeriesChart`s (4 lines of 360
points each, the row of a threshold on every other one), built and filled before the page is
asked for, so that nothing but the page's own work is timed. A page is ready when every line
is drawn. Runs alternate (ABC, then CBA) with every server at rest before each; the figures
are medians of `RUNS`.

It prints the time per chart beyond the first, and what the dashboard's charts add to a page
on their own, as a fraction of the floor measured in the same run: the dashboard draws
`DASHBOARD_CHARTS` of them (6 traffic, 2 machine), against the floor's one.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import nbformat  # noqa: E402
from dashboard_render import FLOOR_READY, serve_floor, timed_render, wait_at_rest  # noqa: E402

from aidash_lib.serve import READY_PATH, voila_launch  # noqa: E402
from tests.servers.process import ServerProcess, free_port, start_server  # noqa: E402
from tests.servers.voila import launch_args  # noqa: E402

RUNS = 6
CHARTS = 10
DASHBOARD_CHARTS = 8
LINES = 4
TIMEOUT_MS = 180_000

CHARTS_SOURCE = """\
import time

import ipywidgets as widgets
import numpy as np

from aidash_lib.settings import Threshold
from aidash_lib.ui.charts import TimeSeriesChart

now = time.time()
times = (np.arange(now - 3600, now, 10) * 1e9).astype("datetime64[ns]")
rng = np.random.default_rng(0)
charts = []
for k in range({charts}):
    chart = TimeSeriesChart(f"chart {{k}}", unit="%", width_px=430, height_px=190,
                            threshold=Threshold(warn=85, critical=95) if k % 2 else None)
    chart.set_lines({{f"line {{j}}": (times, rng.random(len(times)) * 50)
                     for j in range({lines})}}, (now - 3600, now))
    charts.append(chart)
widgets.VBox([widgets.HBox(charts[i:i + 3]) for i in range(0, len(charts), 3)])
"""


def lines_drawn(count: int) -> str:
    """A page probe: at least `count` lines have a drawn path (attributes only, no layout)."""
    return f"""() => [...document.querySelectorAll('.bqplot path.line')]
    .filter((p) => (p.getAttribute('d') || '').length > 40).length >= {count}"""


def serve_charts(directory: Path, charts: int) -> tuple[ServerProcess, str]:
    """Voilà with the flags of `aidash serve` on a notebook of `charts` filled charts."""
    directory.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CHARTS_SOURCE.format(charts=charts, lines=LINES))]
    path = directory / f"charts-{charts}.ipynb"
    nbformat.write(nb, path)
    launch = voila_launch(path, port=free_port(), preheated_kernels=1)
    server = start_server(f"voila-charts-{charts}", launch.argv, log_dir=directory,
                          base_url=launch.base_url, ready_path=READY_PATH,
                          ready_status=tuple(range(100, 600)))
    return server, launch.url


def wait_at_rest_all(pages: dict[str, tuple[ServerProcess, str, str]]) -> None:
    """Every server's last page kernel gone, its preheated kernel back and idle."""
    for server, _, _ in pages.values():
        wait_at_rest(server, 1)



def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="aidash-bench-charts-") as tmp:
        workdir = Path(tmp)
        floor_server, floor_url = serve_floor(workdir, 1)
        pages: dict[str, tuple[ServerProcess, str, str]] = {"floor": (floor_server, floor_url,
                                                                      FLOOR_READY)}
        try:
            for charts in (1, CHARTS):
                server, url = serve_charts(workdir / f"charts-{charts}", charts)
                pages[f"charts-{charts}"] = (server, url, lines_drawn(charts * LINES))
            times: dict[str, list[float]] = {name: [] for name in pages}
            with sync_playwright() as playwright:
                browser: Any = playwright.chromium.launch(**launch_args())
                for _, url, ready in pages.values():  # warm-up
                    wait_at_rest_all(pages)
                    timed_render(browser, url, ready)
                for run in range(RUNS):
                    order = list(pages.items())
                    for name, (_, url, ready) in order if run % 2 == 0 else order[::-1]:
                        wait_at_rest_all(pages)
                        times[name].append(timed_render(browser, url, ready).seconds)
                    print(f"run {run + 1}: " + ", ".join(
                        f"{name} {values[-1]:.2f} s" for name, values in times.items()),
                        flush=True)
                browser.close()
        finally:
            for server, _, _ in pages.values():
                server.stop()
    floor = statistics.median(times["floor"])
    one, many = (statistics.median(times[f"charts-{n}"]) for n in (1, CHARTS))
    per_chart = (many - one) / (CHARTS - 1)
    share = per_chart * (DASHBOARD_CHARTS - 1) / floor
    print(f"bare Voilà notebook, one bqplot chart: median {floor:.2f} s")
    print(f"1 dashboard chart: median {one:.2f} s; {CHARTS}: median {many:.2f} s")
    print(f"each chart beyond the first: {per_chart * 1000:.0f} ms")
    print(f"the dashboard's {DASHBOARD_CHARTS} charts against the floor's one add "
          f"{per_chart * (DASHBOARD_CHARTS - 1):.2f} s, {share:.2f}× the floor, to a page "
          f"(dashboard_render.py's target: at most 1.3× in all)")
    print(json.dumps({"name": "chart_cost", "value": round(per_chart, 4),
                      "floor": round(floor, 3), "ratio": round(share, 3), "target": None,
                      "unit": "s per chart"}))
    return 0

if __name__ == "__main__":
    sys.exit(main())
