"""The recorder against real servers: a LiteLLM proxy (killed and restarted), Prometheus and
Alertmanager, a real SQLite store read back through `SqliteHistory`, and recorder processes
stopped by SIGTERM or killed by SIGKILL."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from aidash_lib.recorder import run_recorder
from aidash_lib.settings import Settings
from aidash_lib.store.sqlite import SqliteHistory, SqliteStore, StoreError, StoreLocked
from tests.servers.litellm import OFFLINE_ENV, LiteLLMGateway, litellm_binary
from tests.servers.process import closed_port, start_server

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5
INTERVAL_NAMES = ("machine_s", "gpu_s", "gateway_readiness_s", "gateway_metrics_s",
                  "deployments_s", "services_s")


def make_settings(store: Path, gateway_url: str, interval_s: float = INTERVAL_S,
                  **servers: str) -> Settings:
    return Settings.model_validate({
        "gateway": {"url": gateway_url},
        "store": {"path": str(store)},
        "intervals": dict.fromkeys(INTERVAL_NAMES, interval_s),
        **{name: {"url": url} for name, url in servers.items()},
    })


def series(store: Path, metric: str, **labels: str) -> pd.DataFrame:
    return SqliteHistory(store).series_now(metric, "-1h", "now+1m", labels=labels or None)


def events(store: Path, kind: str | None = None) -> pd.DataFrame:
    return SqliteHistory(store).events_now("-1h", "now+1m", kind)


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.2)


def count(store: Path, metric: str, **labels: str) -> int:
    """How many samples a metric has; 0 while the store is still being created."""
    try:
        return len(series(store, metric, **labels))
    except StoreError:  # no file yet, or its tables not yet created
        return 0


def attempts(frame: pd.DataFrame) -> float:
    """Requests counted by consecutive `*_requests_per_min` samples (rate × interval)."""
    times = frame["time"].astype("int64").to_numpy() / 1e9
    return float(sum(frame["value"].to_numpy()[1:] * (times[1:] - times[:-1]) / 60.0))


# -- against a real LiteLLM proxy ------------------------------------------------------------


async def test_records_the_gateway_and_the_machine(litellm_gateway: LiteLLMGateway, tmp_path):
    store = tmp_path / "history.sqlite"
    settings = make_settings(store, litellm_gateway.base_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_recorder(
        settings, stop=stop, environ={"AIDASH_GATEWAY_KEY": litellm_gateway.master_key}))
    group = {"model_group": "gpt-4o-mini"}
    try:
        await wait_for(lambda: count(store, "gateway_group_requests_per_min", **group) >= 2, 30,
                       "two intervals of gateway rates")
        answers = await asyncio.to_thread(litellm_gateway.chat, 6, "gpt-4o-mini")
        assert all(a.status_code == 200 for a in answers)
        await asyncio.to_thread(litellm_gateway.chat, 1, "llama3-local")  # falls back
        before = count(store, "gateway_group_requests_per_min", **group)
        await wait_for(
            lambda: count(store, "gateway_group_requests_per_min", **group) >= before + 3, 30,
            "three more intervals")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    for metric in ("system_cpu_percent", "system_memory_used_percent", "system_disk_used_percent",
                   "gateway_ready", "gateway_readiness_response_s", "gateway_deployment_count"):
        assert count(store, metric) > 0, metric
    assert set(series(store, "gateway_ready")["value"]) == {1.0}
    assert series(store, "gateway_deployment_count")["value"].iloc[-1] == 7.0

    # Rates between scrapes add up to the requests sent (the six, plus the fallback's attempt).
    rpm = series(store, "gateway_group_requests_per_min", **group)
    assert attempts(rpm) == pytest.approx(7.0, abs=1e-3)
    assert (rpm["value"] >= 0).all()
    p50 = series(store, "gateway_group_latency_p50_s", **group)["value"]
    assert len(p50) >= 1 and ((p50 > 0) & (p50 < 2.0)).all()
    assert series(store, "gateway_group_tokens_per_s", **group)["value"].max() > 0
    fallbacks = series(store, "gateway_group_fallbacks", model_group="llama3-local")
    assert fallbacks["value"].sum() == 1.0
    states = series(store, "gateway_deployment_state")
    assert "gpt-4o-mini-a" in set(states["deployment_id"])

    listed = events(store, "deployments")
    assert len(listed) == 1 and listed["subject"].iloc[0] == litellm_gateway.base_url
    assert "llama3-local-1" in listed["detail"].iloc[0]
    assert litellm_gateway.master_key not in listed["detail"].iloc[0]
    assert "sk-fake" not in listed["detail"].iloc[0]


def restart_on_same_port(gateway: LiteLLMGateway, log_dir: Path) -> None:
    """Start the proxy again where it was (the recorder's URL does not change)."""
    port = gateway.base_url.rsplit(":", 1)[1]
    gateway.server = start_server(
        f"litellm-restarted-{port}",
        [litellm_binary(), "--config", str(gateway.config_path), "--host", "127.0.0.1",
         "--port", port],
        log_dir=log_dir, base_url=gateway.base_url, ready_path="/health/readiness",
        env=OFFLINE_ENV, cwd=gateway.config_path.parent, ready_timeout_s=90.0,
    )


async def test_gateway_killed_and_restarted(litellm_gateway_factory, server_logs, tmp_path,
                                            caplog):
    caplog.set_level(logging.INFO, logger="aidash_lib.recorder")
    gateway = litellm_gateway_factory()
    store = tmp_path / "history.sqlite"
    settings = make_settings(store, gateway.base_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_recorder(
        settings, stop=stop, environ={"AIDASH_GATEWAY_KEY": gateway.master_key}))
    haiku = {"model_group": "claude-haiku"}
    try:
        await wait_for(lambda: count(store, "gateway_group_requests_per_min", **haiku) >= 1, 30,
                       "gateway rates")
        await asyncio.to_thread(gateway.chat, 3, "claude-haiku")
        await asyncio.sleep(3 * INTERVAL_S)

        gateway.server.kill()
        killed_at = time.time()
        await asyncio.sleep(12 * INTERVAL_S)
        assert not task.done()
        restart_started = time.time()
        await asyncio.to_thread(restart_on_same_port, gateway, server_logs)
        await asyncio.to_thread(gateway.chat, 1, "claude-haiku")
        await wait_for(lambda: len(events(store, "source_recovered")) >= 2, 30,
                       "the gateway's recovery")
        restarted = count(store, "gateway_group_requests_per_min", **haiku)
        await wait_for(
            lambda: count(store, "gateway_group_requests_per_min", **haiku) >= restarted + 3, 30,
            "rates after the restart")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    # Each gateway source's outage was logged once, with its reason, not at every poll (a
    # busy gateway may also time out once on its own: that is another, short episode).
    for source in ("gateway.readiness", "gateway.metrics"):
        down = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.getMessage().startswith(f"{source}:")
                and "connection refused" in r.getMessage()]
        assert len(down) == 1, down
        assert "unreachable" in down[0]
        back = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith(f"{source}: recovered")
                and "connection refused" in r.getMessage()]
        assert len(back) == 1, back
    faults = events(store, "source_fault")
    refused = faults[faults["detail"].str.contains("connection refused")]
    assert list(refused["subject"]).count("gateway.readiness") == 1
    assert "gateway.readiness" in set(events(store, "source_recovered")["subject"])

    # The machine was recorded all along; the gateway was recorded as not ready meanwhile.
    cpu = series(store, "system_cpu_percent")
    outage = cpu[(cpu["time"] > pd.Timestamp(killed_at, unit="s", tz="UTC"))
                 & (cpu["time"] < pd.Timestamp(restart_started, unit="s", tz="UTC"))]
    assert len(outage) >= 8
    assert 0.0 in set(series(store, "gateway_ready")["value"])
    assert series(store, "gateway_ready")["value"].iloc[-1] == 1.0

    # The restart reset the counters: no negative rate and no spike, only what was sent.
    for metric in ("gateway_group_requests_per_min", "gateway_group_tokens_per_s",
                   "gateway_group_spend_usd_per_h", "gateway_group_errors_per_min"):
        assert (series(store, metric)["value"] >= 0).all(), metric
    rpm = series(store, "gateway_group_requests_per_min", **haiku)
    assert attempts(rpm) == pytest.approx(4.0, abs=1e-3)


# -- one recorder per store; SIGTERM, SIGKILL ------------------------------------------------


def write_config(tmp_path: Path, store: Path, gateway_url: str) -> Path:
    config = tmp_path / "dashboard.yaml"
    intervals = "".join(f"  {name}: {INTERVAL_S}\n" for name in INTERVAL_NAMES)
    config.write_text(f"gateway:\n  url: {gateway_url}\nstore:\n  path: {store}\n"
                      f"intervals:\n{intervals}")
    return config


def start_recorder(config: Path, log: Path, env: dict[str, str] | None = None
                   ) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIDASH_", "LITELLM_"))}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aidash_lib.recorder", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**clean, **(env or {})},
        )


async def test_a_second_recorder_refuses_and_sigterm_stops_cleanly(tmp_path):
    store = tmp_path / "history.sqlite"
    config = write_config(tmp_path, store, f"http://127.0.0.1:{closed_port()}")
    log = tmp_path / "recorder.log"
    first = start_recorder(config, log)
    try:
        await wait_for(lambda: count(store, "system_cpu_percent") >= 2, 60,
                       "the first recorder's samples")
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aidash_lib.recorder", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 1
        assert "another recorder is writing to" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        with pytest.raises(StoreLocked):
            await run_recorder(make_settings(store, "http://127.0.0.1:9"), max_cycles=1)
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 30) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert "Traceback" not in log.read_text()
    # The lock went with it: another recorder may start.
    await asyncio.wait_for(run_recorder(make_settings(store, "http://127.0.0.1:9"),
                                        max_cycles=2), 30)


async def test_sigkill_mid_run_leaves_a_clean_store_missing_at_most_one_interval(
    litellm_gateway: LiteLLMGateway, tmp_path
):
    store = tmp_path / "history.sqlite"
    config = write_config(tmp_path, store, litellm_gateway.base_url)
    log = tmp_path / "recorder.log"
    env = {"AIDASH_GATEWAY_KEY": litellm_gateway.master_key}
    for round_ in range(3):
        before = count(store, "system_cpu_percent")
        recorder = start_recorder(config, log, env)
        try:
            await wait_for(lambda n=before: count(store, "system_cpu_percent") >= n + 4, 60,
                           f"samples of recorder {round_}")
            await asyncio.sleep(0.37 * (round_ + 1))  # somewhere inside an interval
            recorder.send_signal(signal.SIGKILL)
            killed_at = time.time()
            recorder.wait(10)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait(10)
        assert recorder.returncode == -signal.SIGKILL

        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        newest = series(store, "system_cpu_percent")["time"].max().timestamp()
        assert killed_at - newest <= INTERVAL_S + 0.5, (killed_at, newest)
        # The store opens cleanly for writing, and the lock died with its holder.
        writer = SqliteStore(store)
        lock = writer.acquire_recorder_lock()
        lock.release()
        writer.close()
    assert count(store, "gateway_ready") > 0
    assert "Traceback" not in log.read_text()


# -- Prometheus and Alertmanager ---------------------------------------------------------------


async def test_records_prometheus_and_alertmanager_readiness(prometheus_server, tmp_path):
    store = tmp_path / "history.sqlite"
    settings = make_settings(
        store, f"http://127.0.0.1:{closed_port()}",
        prometheus=prometheus_server.base_url, alertmanager=prometheus_server.alertmanager_url,
    )
    await asyncio.wait_for(run_recorder(settings, max_cycles=3), 60)
    assert set(series(store, "prometheus_ready")["value"]) == {1.0}
    assert set(series(store, "alertmanager_ready")["value"]) == {1.0}
    assert "prometheus" not in set(events(store, "source_fault")["subject"])
    assert count(store, "system_cpu_percent") >= 3
