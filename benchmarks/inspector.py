"""The request inspector over 1,000,000 stored requests, and from the gateway to the browser.

Main figure: the time for `RequestInspector` to apply a filter (a model group) over a window
of 1,000,000 stored requests and have the first page (50 rows) and its counts (requests,
errors, fallbacks, exact P50/P95/P99) in its widgets, versus the floor: reading that page's
rows straight from the store, `SqliteHistory.requests(start, end, <same filter>, limit=50)`.
Medians of interleaved runs. Target: at most 3x. Other filters are printed too.

The store is made as the recorder makes it: records written through `SqliteStore`, moved into
Parquet segments by compaction, and the newest few thousand left in SQLite. 2 % of requests
fail, half of those are served by a fallback (two attempts sharing a call id), 1 % are retried.

Also printed (`--browser`, on by default): the time from a request completing at the gateway
(a real LiteLLM proxy with aidash's logger) to its row showing in Debian's Chromium, on the
one-line inspector notebook served by Voilà through `aidash serve`; median over a run of
requests. Target: under 3 s.

Run: `python benchmarks/inspector.py [--rows N] [--repeat K] [--no-browser]
[--requests N] [--store PATH]` (`--store` keeps the generated store for the next run).
The last line is the JSON figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aidash_lib.settings import Settings  # noqa: E402
from aidash_lib.store.schema import RequestRecord  # noqa: E402
from aidash_lib.store.sqlite import SqliteHistory, SqliteStore  # noqa: E402
from aidash_lib.ui.inspector import RequestInspector  # noqa: E402

TARGET = 3.0
BROWSER_TARGET_S = 3.0
GROUPS = 12
HEAD_ROWS = 3_000
BATCH = 50_000
PROVIDERS = ("openai", "anthropic", "hosted_vllm")
ERRORS = (
    ("RateLimitError", "429", "429_RATE_LIMIT_EXCEEDED", "litellm.RateLimitError: rate limit"),
    ("APIConnectionError", "500", "500_PROVIDER_CONNECTION_ERROR",
     "litellm.APIConnectionError: Connection refused"),
    ("Timeout", "408", "408_REQUEST_TIMEOUT", "litellm.Timeout: Request timed out"),
)


def synthetic_records(rows: int, start_s: float, end_s: float, seed: int = 11
                      ) -> list[RequestRecord]:
    """About `rows` attempts started in [start_s, end_s], oldest first."""
    rng = np.random.default_rng(seed)
    started = np.sort(rng.uniform(start_s, end_s, rows))
    group = rng.integers(0, GROUPS, rows)
    dep = rng.integers(0, 3, rows)
    latency = rng.lognormal(rng.uniform(-1.5, 1.0, GROUPS)[group], 0.7)
    kind = rng.random(rows)
    error = rng.integers(0, len(ERRORS), rows)
    records: list[RequestRecord] = []
    for i in range(rows):
        g = f"group-{group[i]:02d}"
        d = f"{g}-d{dep[i]}"
        provider = PROVIDERS[dep[i]]
        t, lat = float(started[i]), float(latency[i])
        common = {"call_id": f"call-{i}", "requested_group": g, "model": f"{provider}/{g}",
                  "api_base": None, "call_type": "acompletion"}
        if kind[i] < 0.02:
            cls, code, normalized, message = ERRORS[error[i]]
            fail_s = min(lat, 0.5)
            records.append(RequestRecord(
                started_s=t, ended_s=t + fail_s, deployment_id=d, provider=provider,
                status="failure", latency_s=fail_s, error_class=cls, error_code=code,
                normalized_error=normalized, error_message=message, **common))
            if kind[i] < 0.01:
                records.append(RequestRecord(
                    started_s=t + fail_s + 0.001, ended_s=t + fail_s + lat,
                    deployment_id=f"{g}-d{(dep[i] + 1) % 3}", provider=PROVIDERS[(dep[i] + 1) % 3],
                    status="success", latency_s=lat, prompt_tokens=200, completion_tokens=80,
                    cost_usd=2e-5, attempted_fallbacks=1, **common))
            continue
        records.append(RequestRecord(
            started_s=t, ended_s=t + lat, deployment_id=d, provider=provider, status="success",
            latency_s=lat, ttft_s=lat * 0.2 if kind[i] < 0.3 else None,
            prompt_tokens=int(50 + 10 * group[i]), completion_tokens=int(20 + dep[i]),
            cost_usd=1e-5, attempted_retries=int(kind[i] > 0.99), stream=kind[i] < 0.3,
            is_health_check=bool(0.985 < kind[i] < 0.99), **common))
    return records


def build_store(path: Path, rows: int, now: float) -> None:
    """`rows` requests over the last ~55 min; all but the newest `HEAD_ROWS` in segments."""
    records = synthetic_records(rows, now - 3300, now - 1)
    old, new = records[:-HEAD_ROWS], records[-HEAD_ROWS:]
    del records
    with SqliteStore(path) as store:
        for i in range(0, len(old), BATCH):
            store.write_requests(old[i:i + BATCH])
        moved = store.compact(now_s=max(r.ended_s for r in old) + 61, force=True)
        store.write_requests(new)
    print(f"store: {moved:,} rows in Parquet segments, {len(new):,} in SQLite")


def median_s(run: Callable[[], Awaitable[Any]], loop: asyncio.AbstractEventLoop,
             repeat: int, before: Callable[[], Awaitable[Any]] | None = None) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            loop.run_until_complete(before())
        started = time.perf_counter()
        loop.run_until_complete(run())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _steps(inspector: RequestInspector, ours: dict[str, Any], clear: dict[str, Any]
           ) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """(reset, apply): put the inspector in another state, then apply the filter `ours`
    (for no filter at all: reset to successes only, apply by clearing every filter)."""
    async def reset() -> None:
        inspector.set_filter(**(clear if ours else {**clear, "status": "success"}))
        await inspector.settle()

    async def apply() -> None:
        inspector.set_filter(**(ours or clear))
        await inspector.settle()

    return reset, apply


def filter_figures(path: Path, repeat: int) -> list[dict[str, Any]]:
    """For each filter: the inspector's time to show page + counts, and the floor."""
    loop = asyncio.new_event_loop()
    history = SqliteHistory(path)
    inspector = RequestInspector(history, Settings(), live=False)
    loop.run_until_complete(inspector.refresh())
    total = inspector.page.total if inspector.page else 0
    print(f"window: {total:,} requests (1h), first page shown in "
          f"{inspector.last_query_s:.2f} s (query only, cold)")
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("model group", {"model_group": "group-03"}, {"model_group": "group-03"}),
        ("status error", {"status": "error"}, {"status": "failure"}),
        ("provider", {"provider": "anthropic"}, {"provider": "anthropic"}),
        ("deployment", {"deployment": "group-05-d1"}, {"deployment": "group-05-d1"}),
        ("error text", {"error_text": "rate limit"}, {"error_text": "rate limit"}),
        ("no filter", {}, {}),
    ]
    clear = {"model_group": None, "status": None, "provider": None, "deployment": None,
             "error_text": None}
    results = []
    for name, ours, store_filter in cases:
        start_s, end_s = inspector.filter.window()
        reset, apply = _steps(inspector, ours, clear)

        async def floor(kw: dict[str, Any] = store_filter, w: tuple = (start_s, end_s)) -> None:
            await history.requests(*w, limit=50, **kw)

        values, floors = [], []
        for _ in range(repeat):  # interleaved pairs, against drift on a noisy machine
            floors.append(median_s(floor, loop, 1))
            values.append(median_s(apply, loop, 1, before=reset))
        value, floor_s = statistics.median(values), statistics.median(floors)
        page = inspector.page
        assert page is not None and inspector.last_error is None, inspector.last_error
        p = page.counts.percentiles
        print(f"{name:12s}: {page.total:>9,} requests, page of {len(page.rows)}, "
              f"P50/P95/P99 {p[0.5] or 0:.3f}/{p[0.95] or 0:.3f}/{p[0.99] or 0:.3f} s: "
              f"inspector {value * 1000:7.1f} ms, store page {floor_s * 1000:7.1f} ms, "
              f"ratio {value / floor_s:.2f}")
        results.append({"name": name, "value": value, "floor": floor_s})
    inspector.set_filter(**clear)
    history.close()
    loop.close()
    return results


def gateway_to_browser(requests: int, spacing_s: float = 1.0) -> list[float]:
    """Seconds from each request's response at the client to its row in Chromium."""
    import httpx
    from playwright.sync_api import sync_playwright

    from tests.browser.inspector_fixtures import InspectorPage, send, write_notebook
    from tests.servers.litellm_logged import start_logged_litellm
    from tests.servers.voila import launch_args, start_dashboard

    with tempfile.TemporaryDirectory(prefix="aidash-bench-inspector-") as tmp:
        folder = Path(tmp)
        store = folder / "history.sqlite"
        logged = start_logged_litellm(folder, store, name="litellm-bench")
        gateway = logged.gateway
        served = None
        try:
            served = start_dashboard(
                folder, folder, gateway_url=gateway.base_url, store_path=store,
                notebook=write_notebook(folder), env={"LITELLM_MASTER_KEY": gateway.master_key},
                name="aidash-serve-bench")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(**launch_args())
                page = browser.new_page(viewport={"width": 1600, "height": 1200})
                page.goto(served.url, wait_until="domcontentloaded", timeout=120_000)
                inspector = InspectorPage(page)
                inspector.wait_ready()
                inspector.watch()
                sent = []
                with httpx.Client(base_url=gateway.base_url, headers=gateway.headers,
                                  timeout=30) as client:
                    for i in range(requests):
                        model = ("gpt-4o-mini", "claude-haiku")[i % 2]
                        sent.append(send(client, "success", model))
                        page.wait_for_timeout(spacing_s * 1000)
                inspector.wait_until(lambda: all(s.call_id in inspector.seen() for s in sent),
                                     30, "every request to show")
                seen = inspector.seen()
                page.goto("about:blank")
                browser.close()
        finally:
            if served is not None:
                served.server.stop()
            gateway.server.stop()
    return [seen[s.call_id] - s.done_s for s in sent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--store", type=Path, help="keep (or reuse) the generated store here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aidash-bench-") as tmp:
        path = args.store or Path(tmp) / "history.sqlite"
        now = time.time()
        if args.store is None or not path.exists():
            made = time.perf_counter()
            build_store(path, args.rows, now)
            print(f"built the store in {time.perf_counter() - made:.0f} s")
        else:
            with SqliteStore(path) as store:  # its newest rows must be now, as live
                newest = store.ensure_open().execute(
                    "SELECT max(started_s) FROM requests").fetchone()[0]
            if newest is None or newest < now - 120:
                raise SystemExit(f"{path} was made more than 2 min ago: remove it")
        results = filter_figures(path, args.repeat)

    if not args.no_browser:
        delays = gateway_to_browser(args.requests)
        print(f"gateway -> browser: median {statistics.median(delays):.2f} s, "
              f"max {max(delays):.2f} s over {len(delays)} requests (target < "
              f"{BROWSER_TARGET_S:.0f} s): " + " ".join(f"{d:.2f}" for d in delays))

    main_figure = results[0]
    ratio = main_figure["value"] / main_figure["floor"]
    worst = max(results, key=lambda r: r["value"] / r["floor"])
    print(f"worst filter: {worst['name']}, ratio {worst['value'] / worst['floor']:.2f}")
    print(json.dumps({
        "name": "inspector_filter_first_page_1m_requests",
        "value": round(main_figure["value"], 4),
        "floor": round(main_figure["floor"], 4),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "unit": "s",
    }))


if __name__ == "__main__":
    main()
