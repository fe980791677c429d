"""aidash's request logger inside a real LiteLLM proxy, in the proxy's own environment.

A known mix of requests goes through the proxy; the store must then hold exactly those
attempts, with the right fields, and nothing secret. Latency percentiles from the records must
agree with the proxy's own histograms within a bucket's width. A store that cannot be written
must not stop the gateway, and the loss must be counted and reported.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from aidash_lib.request_records import HEALTH_CHECK_ALIAS, hash_key_alias
from aidash_lib.sources.gateway_metrics import parse_metrics
from tests.servers.litellm import GROUPS, MASTER_KEY, OFFLINE_ENV, litellm_binary
from tests.servers.litellm_logged import LoggedGateway, Sent, send_chat

pytestmark = pytest.mark.integration

DEPLOYMENT_GROUP = {d: group for group, ids in GROUPS.items() for d in ids}
N_DEPLOYMENTS = len(DEPLOYMENT_GROUP)
PROMPT_MARKER = "aidash-prompt-marker-7f3a"
SECRETS = (MASTER_KEY, "sk-fake-openai-key", "sk-ant-fake-key", "fake-azure-key")
RESPONSE_TEXTS = ("hi from deployment", "hello from claude")
HEAVY = ("pandas", "numpy", "pyarrow", "duckdb", "ipywidgets", "IPython", "bqplot")

#: (kind, model asked for, stream): 3 successes, 3 kinds of fallback, an unknown model, a stream.
MIX: tuple[tuple[str, str, bool], ...] = (
    ("success", "gpt-4o-mini", False),
    ("success", "gpt-4o-mini", False),
    ("success", "claude-haiku", False),
    ("connection_fallback", "llama3-local", False),
    ("ratelimit_fallback", "flaky-model", False),
    ("context_fallback", "small-context-model", False),
    ("unknown_model", "no-such-model", False),
    ("stream", "gpt-4o-mini", True),
)


@dataclass
class MixResult:
    sent: list[Sent]
    health_started_s: float
    health_ended_s: float
    rows: pd.DataFrame  # the store's rows for the mix's call ids
    health_rows: pd.DataFrame


def _read(store: Path, sql: str, params: tuple = ()) -> pd.DataFrame:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        return pd.read_sql_query(sql, conn, params=params)


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (sqlite3.Error, pd.errors.DatabaseError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _send(client: httpx.Client, kind: str, model: str, stream: bool) -> Sent:
    return send_chat(client, kind, model, stream, marker=PROMPT_MARKER)


@pytest.fixture(scope="module")
def mix(litellm_logged_gateway: LoggedGateway) -> MixResult:
    """Send the mix once, call /health once, and wait until the store holds it all."""
    gateway, store = litellm_logged_gateway.gateway, litellm_logged_gateway.store_path
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers, timeout=30) as client:
        sent = [_send(client, kind, model, stream) for kind, model, stream in MIX]
        health_started = time.time()
        assert client.get("/health").status_code == 200
        health_ended = time.time()
    assert all(s.call_id for s in sent), sent
    expected_rows = sum(2 if s.kind.endswith("_fallback") else 1 for s in sent)
    ids = tuple(s.call_id for s in sent)
    marks = ",".join("?" * len(ids))
    query = f"SELECT * FROM requests WHERE call_id IN ({marks}) ORDER BY started_s"
    health_query = ("SELECT * FROM requests WHERE is_health_check = 1 AND started_s >= ? "
                    "AND started_s <= ?")
    window = (health_started - 1, health_ended + 1)
    _wait_for(lambda: len(_read(store, query, ids)) >= expected_rows
              and len(_read(store, health_query, window)) >= N_DEPLOYMENTS,
              what=f"{expected_rows} records of the mix and {N_DEPLOYMENTS} health checks")
    time.sleep(1.0)  # one more flush interval: anything extra would show up now
    return MixResult(sent, health_started, health_ended, _read(store, query, ids),
                     _read(store, health_query, window))


def _attempts(mix: MixResult, sent: Sent) -> pd.DataFrame:
    return mix.rows[mix.rows.call_id == sent.call_id].sort_values("started_s")


def test_the_store_holds_exactly_the_attempts(mix: MixResult) -> None:
    statuses = {s.kind: s.status for s in mix.sent}
    assert statuses == {"success": 200, "connection_fallback": 200, "ratelimit_fallback": 200,
                        "context_fallback": 200, "unknown_model": 400, "stream": 200}
    per_call = mix.rows.groupby("call_id").size().to_dict()
    for sent in mix.sent:
        assert per_call.get(sent.call_id) == (2 if sent.kind.endswith("_fallback") else 1), sent
    assert len(mix.rows) == 3 + 3 * 2 + 1 + 1
    assert set(mix.rows.source) == {"logger"}
    assert not mix.rows.is_health_check.any()


def test_successes(mix: MixResult) -> None:
    for sent in mix.sent:
        if sent.kind not in ("success", "stream"):
            continue
        (row,) = _attempts(mix, sent).itertuples()
        assert row.status == "success"
        assert row.requested_group == sent.model
        assert row.deployment_id == sent.served_by
        assert row.deployment_id in GROUPS[sent.model]
        assert row.provider in ("openai", "azure", "anthropic")
        assert row.prompt_tokens > 0 and row.completion_tokens > 0
        assert row.cost_usd > 0
        assert row.attempted_fallbacks == 0 and row.attempted_retries == 0
        assert pd.isna(row.error_class) and pd.isna(row.error_message)
        assert 0 < row.latency_s < 10
        assert pd.isna(row.key_alias_hash)  # the master key has no alias
        assert row.call_type == "acompletion"


def test_stream(mix: MixResult) -> None:
    (sent,) = [s for s in mix.sent if s.kind == "stream"]
    (row,) = _attempts(mix, sent).itertuples()
    assert row.stream == 1
    assert not pd.isna(row.ttft_s) and 0 <= row.ttft_s <= row.latency_s
    assert (mix.rows[mix.rows.call_id != sent.call_id].stream == 0).all()
    assert mix.rows[mix.rows.call_id != sent.call_id].ttft_s.isna().all()


@pytest.mark.parametrize("kind, failed_deployment, error_class, normalized, fallback_group", [
    ("connection_fallback", "llama3-local-1", "APIConnectionError",
     "500_PROVIDER_CONNECTION_ERROR", "gpt-4o-mini"),
    ("ratelimit_fallback", "flaky-model-1", "RateLimitError", "429_RATE_LIMIT_EXCEEDED",
     "claude-haiku"),
    ("context_fallback", "small-context-model-1", "ContextWindowExceededError",
     "400_CONTEXT_WINDOW_EXCEEDED", "claude-haiku"),
])
def test_fallback_pairs(mix: MixResult, kind: str, failed_deployment: str, error_class: str,
                        normalized: str, fallback_group: str) -> None:
    (sent,) = [s for s in mix.sent if s.kind == kind]
    failed, served = _attempts(mix, sent).itertuples()
    # Both attempts name the group the client asked for, not the fallback's group.
    assert failed.requested_group == served.requested_group == sent.model
    assert (failed.status, served.status) == ("failure", "success")
    assert failed.deployment_id == failed_deployment
    assert failed.error_class == error_class and failed.normalized_error == normalized
    assert failed.error_message and "\n" not in failed.error_message
    assert "Traceback" not in failed.error_message
    assert failed.attempted_fallbacks == 0 and failed.cost_usd == 0
    assert served.deployment_id == sent.served_by
    assert DEPLOYMENT_GROUP[served.deployment_id] == fallback_group
    assert served.attempted_fallbacks == 1
    assert pd.isna(served.error_class) and served.cost_usd > 0
    assert served.started_s >= failed.started_s


def test_unknown_model_is_a_proxy_level_error(mix: MixResult) -> None:
    (sent,) = [s for s in mix.sent if s.kind == "unknown_model"]
    (row,) = _attempts(mix, sent).itertuples()
    assert row.status == "failure"
    assert row.error_class == "ProxyModelNotFoundError"
    assert row.requested_group == "no-such-model"
    assert pd.isna(row.deployment_id)
    assert "Invalid model name" in row.error_message


def test_health_checks_are_marked(mix: MixResult) -> None:
    health = mix.health_rows
    assert len(health) == N_DEPLOYMENTS  # one probe call per deployment
    assert (health.key_alias_hash == hash_key_alias(HEALTH_CHECK_ALIAS)).all()
    assert set(health.status) == {"success", "failure"}  # llama3-local, flaky, small-context fail
    assert (health.status == "success").sum() == 4


def test_no_secret_prompt_or_response_in_the_store(
    mix: MixResult, litellm_logged_gateway: LoggedGateway,
) -> None:
    store = litellm_logged_gateway.store_path
    files = [p for p in (store, Path(f"{store}-wal"), Path(f"{store}-shm")) if p.exists()]
    data = b"".join(p.read_bytes() for p in files)
    assert mix.sent[0].call_id.encode() in data  # the records are in these bytes
    for text in (*SECRETS, PROMPT_MARKER, *RESPONSE_TEXTS):
        assert text.encode() not in data, text


def test_percentiles_agree_with_the_gateway_histograms(
    mix: MixResult, litellm_logged_gateway: LoggedGateway,
) -> None:
    """The records' latencies against the gateway's `litellm_request_total_latency_metric`, per
    served group: equal counts; at every bucket bound at least as many records as the gateway
    counted (the proxy observes its histogram after the logging object's end time, after its
    post-call hooks, so its value of a request is never smaller); and the exact median in the
    bucket of histogram_quantile's estimate or the one next to it. The tail is not compared:
    on a loaded machine the hooks' delay is unbounded and moves single requests across bounds."""
    gateway, store = litellm_logged_gateway.gateway, litellm_logged_gateway.store_path
    gateway.chat(40, model="gpt-4o-mini")
    gateway.chat(20, model="claude-haiku")
    success_sql = "SELECT deployment_id, latency_s FROM requests " \
                  "WHERE status = 'success' AND is_health_check = 0"

    def scrape_and_read() -> tuple[dict, pd.DataFrame]:
        response = httpx.get(f"{gateway.base_url}/metrics/", headers=gateway.headers, timeout=30)
        response.raise_for_status()
        hist = parse_metrics(response.text).histogram("litellm_request_total_latency_metric")
        rows = _read(store, success_sql)
        rows["group"] = rows.deployment_id.map(DEPLOYMENT_GROUP)
        return hist, rows

    state: dict[str, tuple[dict, pd.DataFrame]] = {}

    def counts_match() -> bool:
        hist, rows = state["last"] = scrape_and_read()
        counts = rows.groupby("group").size().to_dict()
        return {k[0]: v.count for k, v in hist.items() if v.count} == counts

    _wait_for(counts_match, what="the records to match the histogram counts")
    hist, rows = state["last"]
    for group in ("gpt-4o-mini", "claude-haiku"):
        buckets = hist[(group,)]
        latencies = rows[rows.group == group].latency_s
        for le, gateway_count in buckets.buckets:
            records_count = int((latencies <= le + 1e-6).sum())  # float seconds vs timedelta
            assert records_count >= gateway_count, (group, le, records_count, gateway_count)
        estimate = buckets.quantile(0.5)
        exact = float(latencies.median())
        assert estimate is not None
        bounds = [le for le, _ in buckets.buckets]
        assert abs(bisect_left(bounds, exact) - bisect_left(bounds, estimate)) <= 1, (
            group, exact, estimate)


def test_gateway_keeps_serving_when_the_store_is_unwritable(
    tmp_path: Path, litellm_logged_gateway_factory: Callable[..., LoggedGateway],
) -> None:
    """The store's folder is a regular file (this fails even for root). Requests still get
    200s; the logger keeps the newest records, counts the rest, says so in the gateway's log,
    and writes both once the store can be written."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    store = blocker / "history.sqlite"
    logged = litellm_logged_gateway_factory(store, env={"AIDASH_LOGGER_BUFFER": "5"})
    responses = logged.gateway.chat(12, model="claude-haiku")
    assert [r.status_code for r in responses] == [200] * 12
    _wait_for(lambda: "dropping the oldest" in logged.log_text, what="the drop warning")
    log = logged.log_text
    assert log.count("cannot write the store") == 1  # once per episode, not per retry
    assert "NotADirectoryError" in log or "FileExistsError" in log
    assert all(s.encode() not in log.encode() for s in SECRETS[1:])

    blocker.unlink()
    blocker.mkdir()

    def recovered() -> bool:
        meta = dict(_read(store, "SELECT key, value FROM meta").values.tolist())
        return meta.get("logger_dropped_records") == "7"

    _wait_for(recovered, timeout_s=30, what="the loss to be written to the store")
    rows = _read(store, "SELECT * FROM requests WHERE is_health_check = 0")
    assert len(rows) == 5 and set(rows.status) == {"success"}
    assert set(rows.call_id) == {r.headers["x-litellm-call-id"] for r in responses[-5:]}
    events = _read(store, "SELECT kind, detail FROM events WHERE kind = 'logger_loss'")
    assert len(events) == 1 and '"lost": 7' in events.detail[0]
    _wait_for(lambda: "7 records were lost" in logged.log_text, what="the recovery message")
    assert logged.gateway.chat(1, model="claude-haiku")[0].status_code == 200


def test_records_are_flushed_when_the_gateway_stops(
    tmp_path: Path, litellm_logged_gateway_factory: Callable[..., LoggedGateway],
) -> None:
    """With a flush interval longer than the test, only the exit flush can write them."""
    store = tmp_path / "history.sqlite"
    logged = litellm_logged_gateway_factory(store, env={"AIDASH_LOGGER_FLUSH_S": "600"})
    responses = logged.gateway.chat(5, model="claude-haiku")
    assert [r.status_code for r in responses] == [200] * 5
    time.sleep(1.0)
    assert not store.exists() or _read(store, "SELECT * FROM requests").empty
    logged.gateway.server.stop()  # SIGTERM, as a service manager stops it
    assert logged.gateway.server.proc.returncode is not None
    rows = _read(store, "SELECT call_id FROM requests WHERE is_health_check = 0")
    assert set(rows.call_id) == {r.headers["x-litellm-call-id"] for r in responses}


def _litellm_python() -> str:
    return str(Path(litellm_binary()).with_name("python"))


def test_importing_the_logger_in_the_gateway_env_adds_nothing_heavy() -> None:
    code = (
        "import sys, litellm.integrations.custom_logger; before = set(sys.modules); "
        "import aidash_lib.gateway_logger as g; "
        "added = set(sys.modules) - before; "
        f"heavy = sorted(m for m in added if m.split('.')[0] in {HEAVY!r}); "
        "assert not heavy, heavy; "
        "assert isinstance(g.handler, litellm.integrations.custom_logger.CustomLogger)"
    )
    subprocess.run([_litellm_python(), "-c", code], check=True, timeout=120,
                   env={**os.environ, **OFFLINE_ENV})


def test_aidash_keeps_the_gateway_env_consistent() -> None:
    """`pip install aidash` next to LiteLLM must not break LiteLLM's pins."""
    pip = Path(litellm_binary()).with_name("pip")
    result = subprocess.run([str(pip), "check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
