"""The request logger's buffer and writer, outside LiteLLM (its base class is then `object`).

The same logger inside a real proxy is tested in tests/integration/test_gateway_logger.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from aidash_lib import gateway_logger
from aidash_lib.gateway_logger import AidashRequestLogger, store_path_from_env
from aidash_lib.settings import DEFAULT_STORE
from aidash_lib.store import schema
from aidash_lib.store.schema import RequestRecord

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "numpy", "pyarrow", "duckdb", "ipywidgets", "IPython", "bqplot", "httpx",
         "pydantic", "prometheus_client", "rich", "ruamel", "psutil", "aidash_lib.store.sqlite")


def _record(i: int, call_id: str = "call", **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "call_id": f"{call_id}-{i}", "started_s": 1000.0 + i, "ended_s": 1000.5 + i,
        "requested_group": "gpt-4o-mini", "deployment_id": "gpt-4o-mini-a",
        "model": "openai/gpt-4o-mini", "provider": "openai", "api_base": None,
        "status": "success", "latency_s": 0.5,
    }
    values.update(fields)
    return RequestRecord(**values)


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT call_id, status FROM requests ORDER BY id").fetchall()


def _meta(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())


@pytest.fixture
def make_logger():
    made: list[AidashRequestLogger] = []

    def make(path: Path, **options: Any) -> AidashRequestLogger:
        options.setdefault("flush_interval_s", 0.05)
        logger = AidashRequestLogger(path, **options)
        made.append(logger)
        return logger

    yield make
    for logger in made:
        logger.close()


def test_records_are_written_in_batches(tmp_path: Path, make_logger) -> None:
    store = tmp_path / "sub" / "history.sqlite"  # the folder is created
    logger = make_logger(store)
    for i in range(450):
        logger.add(_record(i))
    assert logger.flush()
    assert len(_rows(store)) == 450
    stats = logger.stats()
    assert stats["received"] == stats["written"] == 450
    assert stats["buffered"] == stats["dropped"] == 0
    assert stats["store_ok"] is True and stats["store"] == str(store)


def test_callback_hooks_record_and_dedupe(tmp_path: Path, make_logger, shared_fixtures) -> None:
    """LiteLLM sends a proxy-level error to both the sync and the async failure hook."""
    slo = json.loads(
        (shared_fixtures / "litellm" / "standard_logging_object_proxy_error.json").read_text())
    logger = make_logger(tmp_path / "s.sqlite")
    kwargs = {"standard_logging_object": slo, "api_key": "sk-fake-openai-key"}
    asyncio.run(logger.async_log_failure_event(kwargs, None, None, None))
    logger.log_failure_event(kwargs, None, None, None)
    assert logger.flush()
    assert _rows(tmp_path / "s.sqlite") == [(slo["litellm_call_id"], "failure")]
    assert logger.stats()["duplicates"] == 1


@pytest.mark.parametrize("kwargs", [None, [], "x", {}, {"standard_logging_object": "nope"}])
def test_events_without_payload_are_skipped(tmp_path: Path, make_logger, kwargs: Any) -> None:
    logger = make_logger(tmp_path / "s.sqlite")
    logger.log_success_event(kwargs, None, None, None)
    assert logger.stats()["skipped"] == 1


def test_a_broken_payload_never_raises(tmp_path: Path, make_logger) -> None:
    class Exploding(dict):
        def get(self, *args: Any) -> Any:
            raise RuntimeError("boom")

    logger = make_logger(tmp_path / "s.sqlite")
    logger.log_success_event({"standard_logging_object": Exploding(a=1)}, None, None, None)
    stats = logger.stats()
    assert stats["callback_errors"] == 1
    assert "boom" in stats["last_error"]


def test_unwritable_store_buffers_counts_drops_and_reports_the_loss(
    tmp_path: Path, make_logger, caplog: pytest.LogCaptureFixture,
) -> None:
    """A store whose folder is a regular file fails even for root; when it can be written
    again the newest records are written and the loss is recorded in the store."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be")
    store = blocker / "history.sqlite"
    logger = make_logger(store, buffer_max=5)
    caplog.set_level(logging.WARNING, logger="aidash.gateway_logger")
    for i in range(12):
        logger.add(_record(i))
    assert logger.flush() is False
    assert logger.flush() is False
    stats = logger.stats()
    assert stats["store_ok"] is False
    assert (stats["buffered"], stats["dropped"], stats["written"]) == (5, 7, 0)
    assert stats["write_failures"] >= 2
    assert "NotADirectoryError" in stats["last_error"] or "FileExistsError" in stats["last_error"]
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("cannot write the store" in w for w in warnings) == 1  # once per episode
    assert sum("dropping the oldest" in w for w in warnings) == 1

    blocker.unlink()
    blocker.mkdir()
    assert logger.flush()
    assert [row[0] for row in _rows(store)] == [f"call-{i}" for i in range(7, 12)]
    meta = _meta(store)
    assert meta["logger_dropped_records"] == "7"
    assert json.loads(meta["logger_last_loss"])["lost"] == 7
    assert logger.stats()["store_ok"] is True
    assert any("writable again; 7 records were lost" in r.getMessage() for r in caplog.records)


def test_loss_counter_accumulates_and_an_event_is_written(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    conn = schema.connect(store)
    schema.create_tables(conn)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS events (time_s REAL, kind TEXT, subject TEXT, detail TEXT)")
    gateway_logger._record_loss(conn, 3, 1.0, "disk full")
    gateway_logger._record_loss(conn, 4, 2.0, None)
    assert _meta(store)["logger_dropped_records"] == "7"
    kinds = conn.execute("SELECT kind, subject FROM events").fetchall()
    assert kinds == [("logger_loss", "request_logger")] * 2
    conn.close()


def test_locked_store_is_retried(tmp_path: Path, make_logger, monkeypatch) -> None:
    """Another writer holds the lock past the busy timeout: records wait, then are written."""
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 100)
    store = tmp_path / "s.sqlite"
    holder = schema.connect(store)
    schema.create_tables(holder)
    holder.execute("BEGIN EXCLUSIVE")
    logger = make_logger(store)
    for i in range(3):
        logger.add(_record(i))
    assert logger.flush() is False
    assert logger.stats()["buffered"] == 3
    assert "locked" in logger.stats()["last_error"]
    holder.rollback()
    holder.close()
    assert logger.flush()
    assert len(_rows(store)) == 3
    assert logger.stats()["dropped"] == 0


def test_several_processes_write_one_store_and_flush_at_exit(tmp_path: Path) -> None:
    """Gateway workers are processes; each writes through its own connection. No process
    calls flush(): the atexit hook writes what is left."""
    store = tmp_path / "s.sqlite"
    script = textwrap.dedent("""
        import sys
        from aidash_lib.gateway_logger import AidashRequestLogger
        from aidash_lib.store.schema import RequestRecord
        logger = AidashRequestLogger(sys.argv[1], flush_interval_s=0.01, batch_size=50)
        for i in range(600):
            logger.add(RequestRecord(
                call_id=f"{sys.argv[2]}-{i}", started_s=float(i), ended_s=float(i) + 0.1,
                requested_group="g", deployment_id="d", model="m", provider="p",
                api_base=None, status="success", latency_s=0.1))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store), f"w{n}"], cwd=REPO)
             for n in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    rows = _rows(store)
    assert len(rows) == 1800 and len({r[0] for r in rows}) == 1800


def test_a_server_stopped_by_signal_still_writes_its_buffer(tmp_path: Path) -> None:
    """Like uvicorn: its SIGTERM handler runs, then the default handler kills the process (so
    atexit never runs). The logger wraps the server's handler and drains on the signal."""
    store = tmp_path / "s.sqlite"
    script = textwrap.dedent("""
        import os, signal, sys, time
        seen = []
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        from aidash_lib.gateway_logger import AidashRequestLogger
        from aidash_lib.store.schema import RequestRecord
        logger = AidashRequestLogger(sys.argv[1], flush_interval_s=600)
        logger.add(RequestRecord(
            call_id="last", started_s=1.0, ended_s=2.0, requested_group="g", deployment_id="d",
            model="m", provider="p", api_base=None, status="success", latency_s=1.0))
        time.sleep(0.3)
        assert logger.stats()["written"] == 0
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while logger.stats()["written"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [signal.SIGTERM]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(store)], cwd=REPO, timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == -15, proc.stderr
    assert _rows(store) == [("last", "success")]


def test_a_forked_child_does_not_write_its_parents_buffer(tmp_path: Path, make_logger) -> None:
    store = tmp_path / "s.sqlite"
    logger = make_logger(store, flush_interval_s=30.0, batch_size=10_000)
    for i in range(20):
        logger.add(_record(i, call_id="parent"))
    pid = os.fork()
    if pid == 0:  # the child: a fresh buffer and writer
        code = 0
        try:
            logger.add(_record(0, call_id="child"))
            logger.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert logger.flush()
    ids = [row[0] for row in _rows(store)]
    assert sorted(ids) == sorted([f"parent-{i}" for i in range(20)] + ["child-0"])


def test_store_path_from_env_defaults_like_the_settings() -> None:
    assert gateway_logger.DEFAULT_STORE == DEFAULT_STORE
    assert store_path_from_env({}) == Path(DEFAULT_STORE).expanduser()
    assert store_path_from_env({"AIDASH_STORE": "/srv/a.sqlite"}) == Path("/srv/a.sqlite")
    assert store_path_from_env({"AIDASH_STORE": "~/x.sqlite"}) == Path("~/x.sqlite").expanduser()


def test_buffer_size_and_flush_interval_from_env(monkeypatch) -> None:
    monkeypatch.setenv("AIDASH_LOGGER_BUFFER", "123")
    assert AidashRequestLogger("/tmp/unused.sqlite").buffer_max == 123
    monkeypatch.setenv("AIDASH_LOGGER_BUFFER", "lots")
    assert AidashRequestLogger("/tmp/unused.sqlite").buffer_max == gateway_logger.DEFAULT_BUFFER
    monkeypatch.setenv("AIDASH_LOGGER_FLUSH_S", "2.5")
    assert AidashRequestLogger("/tmp/unused.sqlite").flush_interval_s == 2.5
    monkeypatch.setenv("AIDASH_LOGGER_FLUSH_S", "-1")
    assert AidashRequestLogger("/tmp/unused.sqlite").flush_interval_s == 0.5


def test_import_is_light() -> None:
    """The logger is imported inside the gateway's process: standard library only."""
    code = (
        "import sys, aidash_lib.gateway_logger as g; "
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
        "assert not heavy, heavy; assert g.handler is not None; "
        "assert not [t for t in __import__('threading').enumerate() if t.name.startswith('aidash')]"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_the_shim_is_one_line_that_exposes_the_handler(tmp_path: Path) -> None:
    shim = REPO / "config" / "litellm" / "aidash_callbacks.py"
    code = [line for line in shim.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", '"""'))]
    assert code == ["from aidash_lib.gateway_logger import handler as handler"]
    namespace: dict[str, Any] = {}
    exec(compile(shim.read_text(), str(shim), "exec"), namespace)
    assert namespace["handler"] is gateway_logger.handler


def test_sample_litellm_config_enables_the_logger() -> None:
    config = YAML(typ="safe").load(REPO / "config" / "litellm" / "config.yaml")
    assert "aidash_callbacks.handler" in config["litellm_settings"]["callbacks"]
    assert "prometheus" in config["litellm_settings"]["callbacks"]
