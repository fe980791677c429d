"""The request inspector in Debian's Chromium, served by Voilà as `aidash serve` serves it,
over a real LiteLLM proxy whose aidash logger writes the store: a known set of requests is
sent after the page is open, and the page must show exactly that set, live, with the right
values; each filter must narrow it to the right rows; a fallback's detail must show both the
failed and the serving deployment. Screenshots of the inspector go to `test-artifacts/`.

The tests share one page and run in order (the later ones send more requests).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from aidash_lib.store.sqlite import SqliteHistory
from aidash_lib.ui.inspector_data import RequestFilter, count_requests, select_requests
from tests.browser.inspector_fixtures import MIX, InspectorPage, Sent, send, write_notebook
from tests.servers.litellm import GROUPS
from tests.servers.litellm_logged import LoggedGateway, start_logged_litellm
from tests.servers.voila import ServedDashboard, fake_provider_keys, start_dashboard

pytestmark = pytest.mark.integration

DEPLOYMENT_GROUP = {dep: group for group, deps in GROUPS.items() for dep in deps}
PROVIDER = {"gpt-4o-mini-a": "openai", "gpt-4o-mini-b": "openai", "gpt-4o-mini-c": "azure",
            "claude-haiku-1": "anthropic"}
#: The failed first attempt of each fallback: (deployment, error class, normalized error).
FAILED_FIRST = {
    "connection_fallback": ("llama3-local-1", "APIConnectionError",
                            "500_PROVIDER_CONNECTION_ERROR"),
    "ratelimit_fallback": ("flaky-model-1", "RateLimitError", "429_RATE_LIMIT_EXCEEDED"),
    "context_fallback": ("small-context-model-1", "ContextWindowExceededError",
                         "400_CONTEXT_WINDOW_EXCEEDED"),
}
VIEWPORT = {"width": 1600, "height": 1400}


@pytest.fixture(scope="module")
def inspector_gateway(
    server_logs: Path, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LoggedGateway]:
    store = tmp_path_factory.mktemp("inspector-store") / "history.sqlite"
    logged = start_logged_litellm(server_logs, store, name="litellm-inspector")
    try:
        yield logged
    finally:
        logged.gateway.server.stop()


@pytest.fixture(scope="module")
def inspector_served(
    inspector_gateway: LoggedGateway, server_logs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServedDashboard]:
    gateway = inspector_gateway.gateway
    workdir = tmp_path_factory.mktemp("inspector")
    served = start_dashboard(
        server_logs, workdir, gateway_url=gateway.base_url,
        store_path=inspector_gateway.store_path, notebook=write_notebook(workdir),
        env={"LITELLM_MASTER_KEY": gateway.master_key}, name="aidash-serve-inspector",
        secrets=(gateway.master_key, *fake_provider_keys(gateway.config_path)),
    )
    try:
        yield served
    finally:
        served.server.stop()


@pytest.fixture(scope="module")
def client(inspector_gateway: LoggedGateway) -> Iterator[httpx.Client]:
    gateway = inspector_gateway.gateway
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def inspector(chromium: Any, inspector_served: ServedDashboard) -> Iterator[InspectorPage]:
    """One page for the module, opened before any request is sent."""
    context = chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(inspector_served.url, wait_until="domcontentloaded", timeout=120_000)
        opened = InspectorPage(page)
        opened.wait_ready()
        page.evaluate("() => { window.__aidashNotReloaded = true; }")
        yield opened
        assert not errors, errors
    finally:
        page.goto("about:blank")
        context.close()


@pytest.fixture(scope="module")
def sent(inspector: InspectorPage, client: httpx.Client) -> list[Sent]:
    """The known set, sent while the page is open (newest first)."""
    assert inspector.call_ids() == [], "the store should be empty before the test sends"
    sent = [send(client, kind, model, stream) for kind, model, stream in MIX]
    assert all(s.call_id for s in sent), sent
    return sent[::-1]


def _reset(inspector: InspectorPage, expected: list[str]) -> None:
    for name, label in (("group", "all model groups"), ("deployment", "all deployments"),
                        ("provider", "all providers"), ("status", "any status")):
        inspector.choose(name, label)
    inspector.type_into("latency", "0")
    inspector.type_into("error", "")
    inspector.wait_for_rows(expected)


def test_the_inspector_shows_exactly_the_set_sent(
    inspector: InspectorPage, sent: list[Sent], inspector_gateway: LoggedGateway,
) -> None:
    expected = [s.call_id for s in sent]
    inspector.wait_for_rows(expected, timeout_s=30)
    rows = {r["callId"]: r for r in inspector.rows()}
    assert {s.status for s in sent if s.kind != "unknown_model"} == {200}
    for s in sent:
        row = rows[s.call_id]
        cells = row["cells"]
        assert cells["group"]["value"] == s.model, (s, row)
        if s.kind == "unknown_model":
            assert row["outcome"] == "error" and row["status"] == "failure"
            assert cells["error"]["value"] == "ProxyModelNotFoundError · 400_INVALID_REQUEST"
            assert "Invalid model name" in cells["error"]["text"]
            assert cells["deployment"]["value"] is None
            continue
        assert cells["deployment"]["value"] == s.served_by, (s, row)
        assert cells["provider"]["value"] == PROVIDER[s.served_by or ""]
        assert row["status"] == "success" and cells["status"]["text"] == "✓ ok"
        assert int(cells["tokens"]["value"].split("/")[0]) > 0
        assert float(cells["cost"]["value"]) > 0
        assert 0 < float(cells["latency"]["value"]) < 10
        if s.kind in FAILED_FIRST:
            failed_dep, error_class, _ = FAILED_FIRST[s.kind]
            assert row["outcome"] == "fallback"
            assert cells["mark"]["text"] == "↪ 1 fallback" and cells["mark"]["value"] == "2"
            assert cells["error"]["text"] == f"after {failed_dep} ({error_class})"
        else:
            assert row["outcome"] == "success" and cells["mark"]["text"] == ""
        ttft = cells["ttft"]["value"]
        assert (ttft is not None) == s.stream, (s, ttft)

    history = SqliteHistory(inspector_gateway.store_path)
    frame = select_requests(history.requests_now("-1h", "now"),
                            RequestFilter(start="-1h", end="now"))
    assert frame["call_id"].tolist() == expected
    reference = count_requests(frame)
    counts = inspector.counts()
    assert counts["requests"] == "7" and counts["errors"] == "1" and counts["fallbacks"] == "3"
    assert float(counts["error_rate"] or 0) == pytest.approx(1 / 7)
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert float(counts[key] or 0) == pytest.approx(reference.percentile(q), abs=1e-6)
    assert float(counts["p50"] or 0) == pytest.approx(
        float(np.quantile(frame["request_latency_s"], 0.5)), abs=1e-6)
    assert inspector.page.evaluate("() => window.__aidashNotReloaded") is True
    inspector.screenshot("inspector-live-set")


def _served_by_claude(s: Sent) -> bool:
    return s.served_by == "claude-haiku-1"


#: filter, what is typed or chosen, which requests of the set must remain. Deployment,
#: provider and error text match any attempt of a request: `provider=openai` also lists the
#: requests whose first attempt failed on an openai deployment (flaky-model-1,
#: small-context-model-1) and were served by anthropic.
FILTER_CASES: list[tuple[str, str, Callable[[Sent], bool]]] = [
    ("status", "error", lambda s: s.kind == "unknown_model"),
    ("status", "served by a fallback", lambda s: s.kind in FAILED_FIRST),
    ("status", "success", lambda s: s.kind != "unknown_model"),
    ("group", "flaky-model", lambda s: s.model == "flaky-model"),
    ("group", "gpt-4o-mini", lambda s: s.model == "gpt-4o-mini"),
    ("deployment", "llama3-local-1", lambda s: s.kind == "connection_fallback"),
    ("deployment", "claude-haiku-1", _served_by_claude),
    ("provider", "anthropic", _served_by_claude),
    ("provider", "openai", lambda s: PROVIDER.get(s.served_by or "") == "openai"
     or s.kind in ("ratelimit_fallback", "context_fallback")),
    ("error", "ratelimit", lambda s: s.kind == "ratelimit_fallback"),
    ("error", "invalid model", lambda s: s.kind == "unknown_model"),
    ("latency", "60", lambda s: False),
]


@pytest.mark.parametrize("filter_name, label, keep", FILTER_CASES,
                         ids=[f"{name}={label}" for name, label, _ in FILTER_CASES])
def test_each_filter_narrows_to_the_right_rows(
    inspector: InspectorPage, sent: list[Sent], filter_name: str, label: str,
    keep: Callable[[Sent], bool],
) -> None:
    everything = [s.call_id for s in sent]
    inspector.wait_for_rows(everything)
    if filter_name in ("error", "latency"):
        inspector.type_into(filter_name, label)
    else:
        inspector.choose(filter_name, label)
    expected = [s.call_id for s in sent if keep(s)]
    assert 0 <= len(expected) < len(everything)
    inspector.wait_for_rows(expected)
    assert inspector.counts()["requests"] == str(len(expected))
    if label == "served by a fallback":
        inspector.screenshot("inspector-filter-fallback")
    if not expected:
        assert "match these filters" in inspector.page.locator(
            ".aidash-inspector-empty").first.inner_text()
    _reset(inspector, everything)


def test_a_fallback_shows_the_failed_and_the_serving_deployment(
    inspector: InspectorPage, sent: list[Sent],
) -> None:
    for kind, (failed_dep, error_class, normalized) in FAILED_FIRST.items():
        (s,) = [x for x in sent if x.kind == kind]
        detail = inspector.open_detail(s.call_id)
        attempts = detail.locator(".aidash-inspector-attempts tbody tr")
        assert attempts.count() == 2
        first, second = attempts.nth(0), attempts.nth(1)
        assert first.get_attribute("data-deployment") == failed_dep
        assert first.get_attribute("data-status") == "failure"
        assert second.get_attribute("data-deployment") == s.served_by
        assert second.get_attribute("data-status") == "success"
        assert first.locator("td[data-key='error']").inner_text() == f"{error_class} · {normalized}"
        message = first.locator("td[data-key='message']").inner_text()
        assert error_class in message and "\n" not in message and "Traceback" not in message
        links = detail.locator("a.aidash-inspector-deployment-link")
        hrefs = {links.nth(i).get_attribute("data-deployment"): links.nth(i).get_attribute("href")
                 for i in range(links.count())}
        assert hrefs[failed_dep] == f"?deployment={failed_dep}&range=1h"
        assert hrefs[s.served_by] == f"?deployment={s.served_by}&range=1h"
        summary = detail.inner_text()
        assert f"served by {s.served_by}" in summary and f"{failed_dep} failed with" in summary
        fields = detail.locator(".aidash-inspector-fields").inner_text()
        for name in ("call_id", "api_base", "attempted_fallbacks", "key_alias_hash"):
            assert name in fields
        if kind == "connection_fallback":
            inspector.screenshot("inspector-fallback-detail")
    inspector.page.locator("button.aidash-inspector-close").first.click()
    inspector.page.locator(".aidash-inspector-detail").first.wait_for(state="hidden")


def test_new_requests_appear_without_reloading(
    inspector: InspectorPage, sent: list[Sent], client: httpx.Client,
) -> None:
    before = [s.call_id for s in sent]
    inspector.wait_for_rows(before)
    more = [send(client, "success", "claude-haiku"), send(client, "success", "gpt-4o-mini")]
    started = time.monotonic()
    inspector.wait_for_rows([m.call_id for m in more[::-1]] + before, timeout_s=15)
    took = time.monotonic() - started
    assert took < 5, f"new requests took {took:.1f} s to show"
    assert inspector.page.evaluate("() => window.__aidashNotReloaded") is True
    assert inspector.counts()["requests"] == str(len(before) + 2)
    sent[:0] = more[::-1]


def test_pause_stops_the_feed_and_resume_catches_up(
    inspector: InspectorPage, sent: list[Sent], client: httpx.Client,
) -> None:
    before = [s.call_id for s in sent]
    inspector.wait_for_rows(before)
    pause = inspector.page.locator("button.aidash-inspector-pause").first
    pause.click()
    inspector.page.locator(".aidash-inspector-live [data-live='paused']").wait_for()
    late = send(client, "success", "claude-haiku")
    inspector.page.wait_for_timeout(4000)
    assert inspector.call_ids() == before
    pause.click()
    inspector.wait_for_rows([late.call_id, *before], timeout_s=15)
    sent.insert(0, late)


def test_csv_download_of_the_filtered_set(inspector: InspectorPage, sent: list[Sent]) -> None:
    inspector.wait_for_rows([s.call_id for s in sent])
    inspector.choose("status", "served by a fallback")
    fallbacks = [s.call_id for s in sent if s.kind in FAILED_FIRST]
    inspector.wait_for_rows(fallbacks)
    inspector.page.locator("button.aidash-inspector-csv").first.click()
    link = inspector.page.locator("a.aidash-inspector-download").first
    link.wait_for(timeout=30_000)
    with inspector.page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename.startswith("aidash-requests-")
    text = Path(download.path()).read_text()
    frame = pd.read_csv(io.StringIO(text))
    assert frame["call_id"].tolist() == fallbacks
    assert set(frame["attempts"]) == {2}
    href = link.get_attribute("href") or ""
    assert base64.b64decode(href.split(",", 1)[1]).decode() == text
    _reset(inspector, [s.call_id for s in sent])


def test_no_secret_on_the_page(inspector: InspectorPage, inspector_served: ServedDashboard,
                               sent: list[Sent]) -> None:
    inspector.open_detail(next(s.call_id for s in sent if s.kind == "unknown_model"))
    html = inspector.page.content()
    for secret in inspector_served.secrets:
        assert secret not in html, "a key is on the page"
    assert "Traceback" not in html
    inspector.screenshot("inspector-error-detail")
