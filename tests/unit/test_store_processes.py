"""The store across processes: a reader never sees half a batch, a SIGKILLed writer leaves a
store that opens cleanly, a SIGKILLed recorder frees its lock."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aidash_lib.store.sqlite import SqliteHistory, SqliteStore, StoreLocked, recorder_holder
from tests.unit.test_store_sqlite import NOW, record

REPO = Path(__file__).resolve().parents[2]
BATCH = 25

#: A writer that commits numbered batches and says so after each commit.
WRITER = textwrap.dedent(
    """
    import sys
    from tests.unit.test_store_sqlite import NOW, record
    from aidash_lib.store.sqlite import SqliteStore

    store = SqliteStore(sys.argv[1])
    batch, compact_every = int(sys.argv[2]), int(sys.argv[3])
    k = 0
    while True:
        store.write_requests(record(i) for i in range(k * batch, (k + 1) * batch))
        k += 1
        print(k, flush=True)
        if compact_every and k % compact_every == 0:
            store.compact(NOW + 7200, force=True)
    """
)

#: A reader that counts what it sees, through the history interface, until stdin closes.
READER = textwrap.dedent(
    """
    import sys, threading
    from aidash_lib.store.sqlite import SqliteHistory
    from tests.unit.test_store_sqlite import NOW

    history = SqliteHistory(sys.argv[1])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    history.requests_now(0, NOW + 86400)  # imports and DuckDB warmed up
    print("ready", flush=True)
    while not stop.is_set():
        frame = history.requests_now(0, NOW + 86400)
        print(len(frame), int(frame["id"].nunique()), flush=True)
    """
)


def spawn(code: str, *args: object, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, text=True,
    )


@contextlib.contextmanager
def killed_at_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def read_until(
    proc: subprocess.Popen[str], predicate: Callable[[str], bool], timeout_s: float = 60
) -> str:
    """Lines of the child's stdout until one satisfies `predicate`; returns that line."""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"child ended early: {proc.stderr.read() if proc.stderr else ''}")
        if predicate(line.strip()):
            return line.strip()
    pytest.fail("child too slow")
    raise AssertionError


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_reader_in_another_process_never_sees_half_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    SqliteStore(path).write_requests([record(i) for i in range(BATCH)])
    with killed_at_exit(spawn(READER, path, stdin=subprocess.PIPE)) as reader:
        read_until(reader, lambda line: line == "ready")
        store = SqliteStore(path)
        for k in range(1, 120):
            store.write_requests(record(i) for i in range(k * BATCH, (k + 1) * BATCH))
            if k % 20 == 0:  # move rows into segments while the reader reads
                store.compact(NOW + 7200, force=True)
            time.sleep(0.01)
        time.sleep(0.3)
        out, err = reader.communicate(input="", timeout=60)
    seen = [tuple(map(int, line.split())) for line in out.splitlines() if line]
    assert seen, err
    counts = [count for count, _ in seen]
    assert all(count % BATCH == 0 for count in counts), counts
    assert all(count == unique for count, unique in seen)  # never a row twice
    assert counts == sorted(counts)  # never a row lost while it moved to a segment
    assert len(set(counts)) > 2, "the reader should have seen the store grow"
    assert counts[-1] == 120 * BATCH


@pytest.mark.parametrize("compact_every", [0, 3], ids=["writing", "writing-and-compacting"])
def test_sigkilled_writer_leaves_a_clean_store(tmp_path: Path, compact_every: int) -> None:
    path = tmp_path / "history.sqlite"
    with killed_at_exit(spawn(WRITER, path, BATCH, compact_every)) as writer:
        read_until(writer, lambda line: int(line) >= 30)
        time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate(timeout=10)
    last = int(([line for line in out.splitlines() if line] or ["30"])[-1])
    assert integrity(path) == "ok"
    frame = SqliteHistory(path).requests_now(0, NOW + 86400)
    # Committed: every batch it reported, plus at most the one killed before it could say so.
    assert len(frame) in (last * BATCH, (last + 1) * BATCH)
    assert frame["id"].is_unique
    assert list(frame["call_id"]) == [f"call-{i}" for i in range(len(frame))]
    store = SqliteStore(path)
    store.maintain(NOW)  # removes a segment file the kill left without its bookkeeping row
    listed = {row[0] for row in store.ensure_open().execute("SELECT file FROM segments")}
    on_disk = {p.name for p in store.segments_dir.glob("*")} if store.segments_dir.exists() \
        else set()
    assert on_disk == listed
    assert store.write_requests([record(10**6)]) == 1


def test_lock_of_a_sigkilled_recorder_is_freed(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    holder_code = textwrap.dedent(
        """
        import sys, time
        from aidash_lib.store.sqlite import SqliteStore
        lock = SqliteStore(sys.argv[1]).acquire_recorder_lock()
        print("locked", flush=True)
        time.sleep(600)
        """
    )
    with killed_at_exit(spawn(holder_code, path)) as holder:
        read_until(holder, lambda line: line == "locked")
        with pytest.raises(StoreLocked) as refused:
            SqliteStore(path).acquire_recorder_lock(wait_s=0)
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "another recorder is writing to" in message
        assert recorder_holder(path).pid == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert recorder_holder(path) is None
    with SqliteStore(path).acquire_recorder_lock() as lock:
        assert lock.holder.pid == os.getpid()
