"""The request inspector as a widget, without a browser: a temporary store with known request
records (some in Parquet segments, some still in SQLite) and the widgets' values read back."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aidash_lib.settings import Settings
from aidash_lib.store.schema import RequestRecord
from aidash_lib.store.sqlite import SqliteHistory, SqliteStore
from aidash_lib.ui.inspector import RequestInspector
from aidash_lib.ui.inspector_data import (
    RequestFilter,
    count_requests,
    load_page,
    select_requests,
)
from aidash_lib.ui.shared_models import is_hidden
from aidash_lib.ui.view import DashboardView, Panel
from tests.unit.conditions import until

NOW = time.time()


def ok(call: str, t: float, group: str, dep: str, provider: str, latency: float, **kw: object
       ) -> RequestRecord:
    return RequestRecord(
        call_id=call, started_s=NOW - t, ended_s=NOW - t + latency, requested_group=group,
        deployment_id=dep, model=f"{provider}/{group}", provider=provider, api_base=None,
        status="success", latency_s=latency, prompt_tokens=10, completion_tokens=20,
        cost_usd=0.0001, call_type="acompletion", **kw,  # type: ignore[arg-type]
    )


def failed(call: str, t: float, group: str, dep: str | None, provider: str | None,
           latency: float, error: str, normalized: str, message: str, code: str = "500"
           ) -> RequestRecord:
    return RequestRecord(
        call_id=call, started_s=NOW - t, ended_s=NOW - t + latency, requested_group=group,
        deployment_id=dep, model=dep and f"{provider}/{group}", provider=provider,
        api_base=None, status="failure", latency_s=latency, error_class=error, error_code=code,
        normalized_error=normalized, error_message=message, call_type="acompletion",
    )


#: The known set: (call id -> what it is). Times are seconds before NOW.
RECORDS: list[RequestRecord] = [
    ok("ok-mini", 50, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 0.2),
    ok("ok-claude", 45, "claude-haiku", "claude-haiku-1", "anthropic", 0.9),
    failed("conn", 40, "llama3-local", "llama3-local-1", "ollama", 0.05, "APIConnectionError",
           "500_PROVIDER_CONNECTION_ERROR", "litellm.APIConnectionError: Connection refused"),
    ok("conn", 39.9, "llama3-local", "gpt-4o-mini-b", "openai", 0.3, attempted_fallbacks=1),
    failed("rate", 30, "flaky-model", "flaky-model-1", "openai", 0.01, "RateLimitError",
           "429_RATE_LIMIT_EXCEEDED", "litellm.RateLimitError: mock rate limit", "429"),
    ok("rate", 29.98, "flaky-model", "claude-haiku-1", "anthropic", 0.5, attempted_fallbacks=1),
    failed("ctx", 20, "small-context-model", "small-context-model-1", "openai", 0.02,
           "ContextWindowExceededError", "400_CONTEXT_WINDOW_EXCEEDED",
           "litellm.ContextWindowExceededError: too long", "400"),
    ok("ctx", 19.97, "small-context-model", "claude-haiku-1", "anthropic", 0.6,
       attempted_fallbacks=1),
    failed("unknown", 15, "no-such-model", None, None, 0.01, "ProxyModelNotFoundError",
           "400_INVALID_REQUEST", "400: Invalid model name passed in model=no-such-model "
           "with key sk-live-abcdef1234567890\nTraceback (most recent call last): secret", "400"),
    ok("stream", 10, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 1.5, ttft_s=0.25, stream=True),
    failed("retry", 8, "gpt-4o-mini", "gpt-4o-mini-b", "openai", 2.0, "Timeout",
           "408_REQUEST_TIMEOUT", "litellm.Timeout: timed out", "408"),
    ok("retry", 6, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 0.4, attempted_retries=1),
    replace(ok("health", 5, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 0.1),
            is_health_check=True),
    ok("old", 3 * 3600, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 3.0),
]

#: Newest first, as the table shows them (health check and the 3 h old one left out).
EXPECTED_ORDER = ["retry", "stream", "unknown", "ctx", "rate", "conn", "ok-claude", "ok-mini"]
#: Request latency: first attempt's start to the final attempt's end.
EXPECTED_LATENCY = {
    "ok-mini": 0.2, "ok-claude": 0.9, "conn": 0.1 + 0.3, "rate": 0.02 + 0.5, "ctx": 0.03 + 0.6,
    "unknown": 0.01, "stream": 1.5, "retry": 2.0 + 0.4,
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """The known set; everything older than 25 s moved into a Parquet segment."""
    path = tmp_path / "history.sqlite"
    with SqliteStore(path) as writer:
        writer.write_requests(RECORDS)
        writer.compact(now_s=NOW - 25 + 60, force=True)
        in_head = writer.ensure_open().execute("SELECT count(*) FROM requests").fetchone()[0]
    assert 0 < in_head < len(RECORDS)  # both halves of the store are read
    yield path


def make(path: Path, **kw: object) -> RequestInspector:
    kw.setdefault("live", False)
    return RequestInspector(SqliteHistory(path), Settings(), **kw)  # type: ignore[arg-type]


def shown(insp: RequestInspector) -> list[str]:
    return [r.call_id for r in insp.table_rows.rows]


def cell(insp: RequestInspector, call_id: str, key: str) -> str | None:
    (row,) = [r for r in insp.table_rows.rows if r.call_id == call_id]
    match = re.search(rf'data-key="{key}"(?: data-value="([^"]*)")?', row.cells_html)
    assert match, (key, row.cells_html)
    return match.group(1)


def counts(insp: RequestInspector) -> dict[str, str]:
    return dict(re.findall(r'data-key="(\w+)" data-value="([^"]*)"', insp.counts_html.value))


async def test_rows_newest_first_exactly_the_set(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    assert insp.last_error is None
    assert shown(insp) == EXPECTED_ORDER
    assert insp.page is not None and insp.page.total == 8
    assert 'data-total="8"' in insp.page_html.value


async def test_row_values(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    assert cell(insp, "conn", "group") == "llama3-local"
    assert cell(insp, "conn", "deployment") == "gpt-4o-mini-b"  # who served it
    assert cell(insp, "conn", "provider") == "openai"
    assert cell(insp, "conn", "status") == "success"
    assert float(cell(insp, "conn", "latency") or 0) == pytest.approx(0.4, abs=1e-5)
    assert cell(insp, "conn", "mark") == "2"  # two attempts
    conn_html = next(r for r in insp.table_rows.rows if r.call_id == "conn").cells_html
    assert "↪ 1 fallback" in conn_html and "llama3-local-1 (APIConnectionError)" in conn_html
    assert 'data-outcome="fallback"' in conn_html
    assert float(cell(insp, "stream", "ttft") or 0) == pytest.approx(0.25)
    assert cell(insp, "stream", "tokens") == "10/20"
    assert float(cell(insp, "stream", "cost") or 0) == pytest.approx(0.0001)
    assert "↻ 1 retry" in next(r for r in insp.table_rows.rows if r.call_id == "retry").cells_html
    unknown = next(r for r in insp.table_rows.rows if r.call_id == "unknown").cells_html
    assert cell(insp, "unknown", "error") == "ProxyModelNotFoundError · 400_INVALID_REQUEST"
    assert 'data-outcome="error"' in unknown
    assert "Invalid model name" in unknown
    assert "sk-live-abcdef" not in unknown and "Traceback" not in unknown


@pytest.mark.parametrize("changes, expected", [
    ({"model_group": "gpt-4o-mini"}, ["retry", "stream", "ok-mini"]),
    ({"deployment": "llama3-local-1"}, ["conn"]),  # failed there, served elsewhere
    ({"deployment": "claude-haiku-1"}, ["ctx", "rate", "ok-claude"]),
    ({"deployment": "gpt-4o-mini-b"}, ["retry", "conn"]),
    ({"provider": "anthropic"}, ["ctx", "rate", "ok-claude"]),
    ({"provider": "ollama"}, ["conn"]),
    ({"status": "success"}, ["retry", "stream", "ctx", "rate", "conn", "ok-claude", "ok-mini"]),
    ({"status": "error"}, ["unknown"]),
    ({"status": "fallback"}, ["ctx", "rate", "conn"]),
    ({"min_latency_s": 0.5}, ["retry", "stream", "ctx", "rate", "ok-claude"]),
    ({"min_latency_s": 1.0}, ["retry", "stream"]),
    ({"error_text": "ratelimit"}, ["rate"]),
    ({"error_text": "INVALID MODEL"}, ["unknown"]),
    ({"error_text": "timed out"}, ["retry"]),
    ({"include_health_checks": True}, ["health", *EXPECTED_ORDER]),
    ({"range_name": "15m"}, EXPECTED_ORDER),
    ({"range_name": "6h"}, [*EXPECTED_ORDER, "old"]),
    ({"provider": "openai", "status": "fallback"}, ["ctx", "rate", "conn"]),
    ({"model_group": "gpt-4o-mini", "min_latency_s": 1.0, "error_text": "timeout"}, ["retry"]),
])
async def test_each_filter_narrows_to_the_right_rows(
    store: Path, changes: dict[str, object], expected: list[str]
) -> None:
    insp = make(store)
    await insp.refresh()
    insp.set_filter(**changes)
    await insp.settle()
    assert shown(insp) == expected
    assert counts(insp)["requests"] == str(len(expected))


async def test_filter_widgets_refresh_by_themselves(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    assert "flaky-model" in [v for _, v in insp.group_box.options]
    assert "llama3-local-1" in [v for _, v in insp.deployment_box.options]
    insp.status_box.value = "error"
    await insp.settle()
    assert shown(insp) == ["unknown"]
    insp.status_box.value = ""
    insp.error_box.value = "context"
    await insp.settle()
    assert shown(insp) == ["ctx"]


async def test_counts_and_percentiles_are_exact(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    values = counts(insp)
    latencies = np.array(list(EXPECTED_LATENCY.values()))
    assert values["requests"] == "8"
    assert values["errors"] == "1"
    assert float(values["error_rate"]) == pytest.approx(1 / 8)
    assert values["fallbacks"] == "3"
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert float(values[key]) == pytest.approx(float(np.quantile(latencies, q)), abs=1e-6)
    insp.set_filter(model_group="gpt-4o-mini")
    await insp.settle()
    mini = np.array([EXPECTED_LATENCY[c] for c in ("retry", "stream", "ok-mini")])
    assert insp.page is not None
    assert insp.page.counts.percentile(0.95) == pytest.approx(np.quantile(mini, 0.95), abs=1e-6)
    assert insp.page.counts.errors == 0 and insp.page.counts.retried == 1


async def test_detail_shows_the_chain_of_attempts(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    insp.table_rows._message(insp.table_rows, {"open": "rate"}, [])  # the row's click
    await until(lambda: insp.detail_call_id == "rate")
    html = insp.detail_html.value
    assert not is_hidden(insp.detail)
    attempts = re.findall(r'<tr data-attempt="(\d)" data-deployment="([^"]*)" '
                          r'data-status="(\w+)">', html)
    assert attempts == [("1", "flaky-model-1", "failure"), ("2", "claude-haiku-1", "success")]
    assert "RateLimitError · 429_RATE_LIMIT_EXCEEDED" in html
    assert "litellm.RateLimitError: mock rate limit" in html
    assert 'href="?deployment=flaky-model-1&amp;range=1h"' in html
    assert 'href="?deployment=claude-haiku-1&amp;range=1h"' in html
    assert "served by" in html and "failed with" in html
    for name in ("call_id", "api_base", "key_alias_hash", "attempted_fallbacks", "cost_usd"):
        assert f"<th>{name}</th>" in html
    assert insp.table_rows.selected == "rate"
    assert re.search(r'class="aidash-inspector-row aidash-inspector-selected" '
                     r'data-call-id="rate"', insp.table_rows.html)
    assert insp.table_rows.html.count("aidash-inspector-selected") == 1
    insp.close_detail()
    assert is_hidden(insp.detail)
    assert "aidash-inspector-selected" not in insp.table_rows.html


async def test_detail_of_an_error_masks_keys_and_tracebacks(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    attempts = await insp.show("unknown")
    assert len(attempts) == 1
    html = insp.detail_html.value
    assert "ProxyModelNotFoundError" in html and "Invalid model name" in html
    assert "sk-live-abcdef" not in html and "Traceback" not in html and "secret" not in html


async def test_paging(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with SqliteStore(path) as writer:
        writer.write_requests(
            ok(f"call-{i:03d}", 1000 - i, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 0.1)
            for i in range(120)
        )
        writer.compact(now_s=NOW - 500 + 60, force=True)
    insp = make(path)
    await insp.refresh()
    newest = [f"call-{i:03d}" for i in range(119, -1, -1)]
    assert shown(insp) == newest[:50] and insp.prev_button.disabled
    insp.next_button.click()
    await insp.settle()
    assert shown(insp) == newest[50:100] and not insp.prev_button.disabled
    assert 'data-offset="50" data-total="120"' in insp.page_html.value
    insp.next_button.click()
    await insp.settle()
    assert shown(insp) == newest[100:] and insp.next_button.disabled
    assert "101–120 of 120" in insp.page_html.value
    insp.go_to(10_000)  # clamped to the last page
    await insp.settle()
    assert shown(insp) == newest[100:]
    insp.prev_button.click()
    await insp.settle()
    assert shown(insp) == newest[50:100]
    insp.set_filter(status="success")  # a new filter goes back to the first page
    await insp.settle()
    assert insp.offset == 0 and shown(insp) == newest[:50]


def fresh(call: str) -> RequestRecord:
    """A request that just completed."""
    now = time.time()
    return replace(ok(call, 0, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 0.1),
                   started_s=now - 0.1, ended_s=now)


async def test_live_feed_and_pause(store: Path) -> None:
    insp = make(store)
    insp.start(0.05)
    writer = SqliteStore(store)
    try:
        await until(lambda: insp.page is not None)
        assert 'data-live="live"' in insp.live_html.value
        writer.write_requests([fresh("new-1")])
        await until(lambda: "new-1" in shown(insp))
        assert shown(insp)[0] == "new-1"
        queries = insp.queries
        await asyncio.sleep(0.3)
        assert insp.queries == queries  # nothing new: no query, only the cheap poll
        insp.pause_button.value = True
        assert insp.paused and 'data-live="paused"' in insp.live_html.value
        writer.write_requests([fresh("new-2")])
        await asyncio.sleep(0.5)
        assert "new-2" not in shown(insp) and insp.queries == queries
        insp.resume()
        await until(lambda: "new-2" in shown(insp))
        assert shown(insp)[:2] == ["new-2", "new-1"]
    finally:
        insp.stop()
        writer.close()
    assert 'data-live="off"' in insp.live_html.value


async def test_a_pause_during_a_poll_stops_that_poll(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pause clicked while a poll asks the store for its newest id: that poll does not read
    the new request (the table stays as it was when paused)."""
    from aidash_lib.ui import inspector as inspector_module

    insp = make(store, poll_s=0.01)
    await insp.refresh()
    queries = insp.queries
    real = inspector_module.latest_request_id

    async def paused_meanwhile(history: object) -> int | None:
        latest = await real(history)  # type: ignore[arg-type]
        insp.pause()  # the click, while the store was being asked
        return latest

    with SqliteStore(store) as writer:
        writer.write_requests([fresh("during")])
    monkeypatch.setattr(inspector_module, "latest_request_id", paused_meanwhile)
    await asyncio.sleep(3 * insp.last_query_s + 0.05)  # no sooner than 3 query durations
    assert await insp.poll() is False
    assert insp.queries == queries and "during" not in shown(insp)
    monkeypatch.setattr(inspector_module, "latest_request_id", real)
    insp.resume()
    await insp.settle()
    assert shown(insp)[0] == "during" and insp.queries == queries + 1


async def test_rows_already_drawn_are_not_drawn_again(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live table redraws only new rows and rows whose chain changed; what it shows is the
    same as a table drawn from nothing."""
    from aidash_lib.ui import inspector as inspector_module

    drawn: list[str] = []
    real_row_html = inspector_module.row_html

    def counting_row_html(row: object) -> str:
        drawn.append(str(row.call_id))  # type: ignore[attr-defined]
        return real_row_html(row)

    monkeypatch.setattr(inspector_module, "row_html", counting_row_html)
    insp = make(store)
    await insp.refresh()
    assert sorted(drawn) == sorted(EXPECTED_ORDER)
    with SqliteStore(store) as writer:
        writer.write_requests([fresh("new-1")])
        drawn.clear()
        await insp.refresh()
        assert drawn == ["new-1"]
        # A second attempt of "new-1" (a retry that failed first) changes its row.
        retry = fresh("new-1")
        writer.write_requests([replace(retry, started_s=retry.ended_s - 0.01,
                                       attempted_retries=1)])
        drawn.clear()
        await insp.refresh()
        assert drawn == ["new-1"]
    again = make(store)
    await again.refresh()
    assert insp.table_rows.html == again.table_rows.html
    assert [r.started_s for r in insp.table_rows.rows] == [
        r.started_s for r in again.table_rows.rows]


async def test_a_paused_page_stays_put_when_filtering(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    insp.pause()
    with SqliteStore(store) as writer:
        late = ok("late", 0, "gpt-4o-mini", "gpt-4o-mini-a", "openai", 0.1)
        writer.write_requests([replace(late, started_s=time.time() + 1, ended_s=time.time() + 1)])
    insp.set_filter(model_group="gpt-4o-mini")
    await insp.settle()
    assert shown(insp) == ["retry", "stream", "ok-mini"]  # the window ends at the pause


async def test_csv_download(store: Path) -> None:
    insp = make(store)
    await insp.refresh()
    insp.set_filter(status="fallback")
    await insp.settle()
    text = await insp.prepare_csv()
    frame = pd.read_csv(io.StringIO(text))
    assert frame["call_id"].tolist() == ["ctx", "rate", "conn"]
    assert frame["deployment_id"].tolist() == ["claude-haiku-1", "claude-haiku-1",
                                               "gpt-4o-mini-b"]
    assert frame["attempts"].tolist() == [2, 2, 2]
    assert frame["request_latency_s"].tolist() == pytest.approx([0.63, 0.52, 0.4], abs=1e-5)
    link = insp.csv_html.value
    assert 'download="aidash-requests-' in link and 'data-rows="3"' in link
    payload = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)"', link)
    assert payload and base64.b64decode(payload.group(1)).decode() == text
    insp.set_filter(status="error")
    await insp.settle()
    assert insp.csv_html.value == ""  # a stale link is removed
    error_csv = await insp.prepare_csv()
    assert "sk-live-abcdef" not in error_csv and "Traceback" not in error_csv


async def test_frame_property(store: Path) -> None:
    insp = make(store)
    insp.set_filter(provider="anthropic")
    frame = insp.frame  # from inside a running loop, as in a notebook cell
    assert frame["call_id"].tolist() == ["ctx", "rate", "ok-claude"]
    assert str(frame["request_started"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["status"].dtype) == "category"
    assert frame["attempts"].tolist() == [2, 2, 1]


def test_frame_property_without_a_loop(store: Path) -> None:
    insp = make(store)
    assert insp.frame["call_id"].tolist() == EXPECTED_ORDER


async def test_dashboard_view_sets_range_and_filters(store: Path) -> None:
    insp = make(store)
    assert isinstance(insp, Panel)
    await insp.refresh(DashboardView(range_name="6h", model_group="gpt-4o-mini"))
    assert insp.range_box.value == "6h" and insp.group_box.value == "gpt-4o-mini"
    assert shown(insp) == ["retry", "stream", "ok-mini", "old"]
    insp.set_filter(status="error")  # the inspector's own filter, same view: kept
    await insp.settle()
    await insp.refresh(DashboardView(range_name="6h", model_group="gpt-4o-mini"))
    assert shown(insp) == []
    assert "No requests in this window match" in insp.empty_html.value
    await insp.refresh(DashboardView(range_name="1h", provider="anthropic"))
    assert insp.group_box.value == "" and insp.provider_box.value == "anthropic"


async def test_fixed_window(store: Path) -> None:
    insp = make(store, start=NOW - 35, end=NOW - 12)
    await insp.refresh()
    assert shown(insp) == ["unknown", "ctx", "rate"]
    assert 'data-live="fixed"' in insp.live_html.value
    assert not await insp.poll()


async def test_a_missing_store_shows_on_the_error_line(tmp_path: Path) -> None:
    insp = make(tmp_path / "nothing-here.sqlite")
    await insp.refresh()
    assert insp.last_error and "no store" in insp.last_error
    assert "aidash-has-error" in insp._dom_classes


async def test_sql_and_pandas_rules_agree(tmp_path: Path) -> None:
    """A random store (chains of fallbacks and retries, health checks, segments and head):
    the DuckDB path and the pandas reference give the same rows, counts and percentiles."""
    rng = np.random.default_rng(5)
    records = []
    for i in range(3000):
        t = 3500 - i + rng.uniform(0, 0.5)
        group = f"g{rng.integers(0, 4)}"
        dep = f"{group}-d{rng.integers(0, 3)}"
        prov = ["openai", "anthropic", "ollama"][rng.integers(0, 3)]
        lat = float(rng.lognormal(-1, 0.8))
        kind = rng.random()
        if kind < 0.05:
            records.append(failed(f"c{i}", t, group, dep, prov, 0.05, "RateLimitError",
                                  "429_RATE_LIMIT_EXCEEDED", "rate limited", "429"))
            records.append(ok(f"c{i}", t - 0.1, group, f"{group}-d9", "anthropic", lat,
                              attempted_fallbacks=1))
        elif kind < 0.08:
            records.append(failed(f"c{i}", t, group, dep, prov, lat, "APIConnectionError",
                                  "500_PROVIDER_CONNECTION_ERROR", "refused"))
        elif kind < 0.1:
            records.append(replace(ok(f"c{i}", t, group, dep, prov, lat), is_health_check=True))
        else:
            records.append(ok(f"c{i}", t, group, dep, prov, lat,
                              attempted_retries=int(rng.random() < 0.05)))
    path = tmp_path / "history.sqlite"
    with SqliteStore(path) as writer:
        writer.write_requests(records)
        writer.compact(now_s=NOW - 1500 + 60, force=True)
    history = SqliteHistory(path)
    attempts = await history.requests(NOW - 3600, NOW)
    for flt in (
        RequestFilter(start=NOW - 3600, end=NOW),
        RequestFilter(start=NOW - 3000, end=NOW - 100, model_group="g1"),
        RequestFilter(start=NOW - 3600, end=NOW, deployment="g2-d1"),
        RequestFilter(start=NOW - 3600, end=NOW, provider="ollama", status="fallback"),
        RequestFilter(start=NOW - 3600, end=NOW, error_text="refused", min_latency_s=0.3),
        RequestFilter(start=NOW - 3600, end=NOW, include_health_checks=True, status="success"),
        RequestFilter(start=NOW - 3600, end=NOW + 3000),  # the newest rows are not at the end
    ):
        expected = select_requests(attempts, flt)
        page = await load_page(history, flt, offset=0, limit=10_000)
        assert page.rows["call_id"].tolist() == expected["call_id"].tolist(), flt
        assert page.rows["request_latency_s"].to_numpy() == pytest.approx(
            expected["request_latency_s"].to_numpy(), abs=1e-5)
        reference = count_requests(expected)
        assert (page.counts.requests, page.counts.errors, page.counts.fallbacks,
                page.counts.retried) == (reference.requests, reference.errors,
                                         reference.fallbacks, reference.retried)
        for q in (0.5, 0.95, 0.99):
            ours, ref = page.counts.percentile(q), reference.percentile(q)
            assert (ours is None and ref is None) or ours == pytest.approx(ref, abs=1e-5)
        assert list(page.rows.columns) == list(expected.columns)
        second = await load_page(history, flt, offset=7, limit=5)
        assert second.rows["call_id"].tolist() == expected["call_id"].tolist()[7:12]


async def test_dashboard_ticks_read_only_when_the_store_has_news(store: Path) -> None:
    insp = make(store, poll_s=0.01)
    view = DashboardView()
    await insp.refresh(view)
    queries = insp.queries
    await asyncio.sleep(3 * insp.last_query_s + 0.05)  # no sooner than 3 query durations
    await insp.refresh(view, live=True)  # a tick of the dashboard, nothing new
    assert insp.queries == queries
    with SqliteStore(store) as writer:
        writer.write_requests([fresh("tick")])
    await insp.refresh(view, live=True)
    assert insp.queries == queries + 1 and shown(insp)[0] == "tick"
    await insp.refresh(DashboardView(range_name="6h"), live=True)  # a new view always reads
    assert insp.queries == queries + 2


async def test_in_a_running_loop_the_feed_starts_by_itself(store: Path) -> None:
    insp = RequestInspector(SqliteHistory(store), Settings(), poll_s=0.05)
    try:
        await until(lambda: insp.page is not None)
        assert shown(insp) == EXPECTED_ORDER
        assert 'data-live="live"' in insp.live_html.value
    finally:
        insp.stop()
    assert 'data-live="off"' in insp.live_html.value


class RequestsOnly:
    """A history that answers `requests()` only (no store to query): the pandas rules."""

    def __init__(self, path: Path) -> None:
        self._inner = SqliteHistory(path)

    async def requests(self, start: object, end: object, **kw: object) -> pd.DataFrame:
        return await self._inner.requests(start, end, **kw)  # type: ignore[arg-type]


async def test_any_history_with_requests_will_do(store: Path) -> None:
    insp = RequestInspector(RequestsOnly(store), Settings(), live=False)  # type: ignore[arg-type]
    await insp.refresh()
    assert insp.last_error is None
    assert shown(insp) == EXPECTED_ORDER and counts(insp)["fallbacks"] == "3"
    insp.set_filter(deployment="llama3-local-1")
    await insp.settle()
    assert shown(insp) == ["conn"]
    attempts = await insp.show("conn")
    assert attempts["deployment_id"].astype(object).tolist() == ["llama3-local-1",
                                                                 "gpt-4o-mini-b"]
    assert insp.frame["call_id"].tolist() == ["conn"]
