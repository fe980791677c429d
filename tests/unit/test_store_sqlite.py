"""The embedded store: writes, reads through the history interface, retention, compaction,
the recorder lock, and a store that cannot be written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest

from aidash_lib.store import segments
from aidash_lib.store.history import (
    REQUEST_FRAME_DTYPES,
    History,
    open_history,
    to_epoch_s,
    window,
)
from aidash_lib.store.schema import Event, RequestRecord, Sample
from aidash_lib.store.sqlite import (
    SqliteHistory,
    SqliteStore,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    recorder_holder,
)

NOW = 1_800_000_000.0
T = TypeVar("T")
GROUPS = ("llama-8b", "llama-70b", "qwen-32b")


def record(i: int, *, start_s: float = NOW - 3600, **changes: object) -> RequestRecord:
    """A plausible attempt; every tenth fails with a connection error."""
    group = GROUPS[i % len(GROUPS)]
    failed = i % 10 == 9
    base = RequestRecord(
        call_id=f"call-{i}",
        started_s=start_s + i,
        ended_s=start_s + i + 0.25 + (i % 7) * 0.1,
        requested_group=group,
        deployment_id=f"{group}-{i % 2}",
        model=f"hosted_vllm/{group}",
        provider="hosted_vllm" if i % 2 else "openai",
        api_base=f"http://10.0.0.{i % 2}:8000/v1",
        status="failure" if failed else "success",
        latency_s=0.25 + (i % 7) * 0.1,
        ttft_s=None if failed else 0.05,
        prompt_tokens=0 if failed else 100 + i % 13,
        completion_tokens=0 if failed else 20 + i % 11,
        cost_usd=0.0 if failed else 0.001,
        error_class="APIConnectionError" if failed else None,
        error_code="500" if failed else None,
        error_message="Connection refused by upstream" if failed else None,
        cache_hit=None if i % 3 == 0 else bool(i % 2),
        stream=i % 4 == 0,
        is_health_check=i % 50 == 0,
    )
    return replace(base, **changes) if changes else base


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite"


@pytest.fixture
def store(store_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(store_path) as opened:
        yield opened


@pytest.fixture
def history(store_path: Path) -> Iterator[SqliteHistory]:
    reader = SqliteHistory(store_path)
    yield reader
    reader.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# -- times -----------------------------------------------------------------------------------


def test_times_in_every_accepted_form() -> None:
    assert to_epoch_s(NOW) == NOW
    assert to_epoch_s(int(NOW)) == NOW
    assert to_epoch_s(datetime.fromtimestamp(NOW, UTC)) == NOW
    assert to_epoch_s(datetime.fromtimestamp(NOW, UTC).replace(tzinfo=None)) == NOW
    assert to_epoch_s(pd.Timestamp(NOW, unit="s", tz="UTC")) == NOW
    assert to_epoch_s("2027-01-15T08:00:00Z") == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert to_epoch_s("now", now_s=NOW) == NOW
    assert to_epoch_s("-1h", now_s=NOW) == NOW - 3600
    assert to_epoch_s("now-15m", now_s=NOW) == NOW - 900
    assert to_epoch_s("-2d", now_s=NOW) == NOW - 172800
    assert window("-90s", "now", now_s=NOW) == (NOW - 90, NOW)
    with pytest.raises(ValueError, match="relative time such as '-1h'"):
        to_epoch_s("yesterday-ish")
    with pytest.raises(ValueError, match="before start"):
        window("now", "-1h")


# -- requests --------------------------------------------------------------------------------


def test_requests_round_trip_with_documented_dtypes(
    store: SqliteStore, history: SqliteHistory
) -> None:
    records = [record(i) for i in range(40)]
    assert store.write_requests(records) == 40
    frame = run(history.requests(NOW - 7200, NOW))
    assert isinstance(history, History)
    assert list(frame.columns) == list(REQUEST_FRAME_DTYPES)
    for name, dtype in REQUEST_FRAME_DTYPES.items():
        assert str(frame[name].dtype) == dtype, name
    assert len(frame) == 40
    first = frame.iloc[0]
    assert first["call_id"] == "call-0"
    assert first["started"] == pd.Timestamp(NOW - 3600, unit="s", tz="UTC")
    assert first["requested_group"] == "llama-8b"
    assert pd.isna(first["cache_hit"]) and frame["cache_hit"].iloc[1] is np.True_
    assert frame["ttft_s"].isna().sum() == 4
    assert frame["is_health_check"].sum() == 1
    assert list(frame["id"]) == sorted(frame["id"])


def test_request_filters_narrow(store: SqliteStore, history: SqliteHistory) -> None:
    store.write_requests(record(i) for i in range(60))
    everything = history.requests_now(NOW - 7200, NOW)

    def count(**filters: object) -> int:
        return len(history.requests_now(NOW - 7200, NOW, **filters))

    assert count(model_group="qwen-32b") == (everything["requested_group"] == "qwen-32b").sum()
    assert count(model_group=["qwen-32b", "llama-8b"]) == 40
    assert count(deployment="llama-70b-1") == (everything["deployment_id"] == "llama-70b-1").sum()
    assert count(deployment="hosted_vllm/llama-70b") == 20  # a model name matches too
    assert count(provider="openai") == 30
    assert count(status="failure") == 6
    assert count(error_text="REFUSED by") == 6
    assert count(error_text="apiconnection") == 6
    assert count(error_text="no such text") == 0
    assert count(model_group="qwen-32b", status="failure") == 2
    assert count(model_group="nope") == 0
    window_only = history.requests_now(NOW - 3600 + 10, NOW - 3600 + 19)
    assert list(window_only["call_id"]) == [f"call-{i}" for i in range(10, 20)]
    latest = history.requests_now(NOW - 7200, NOW, limit=5)
    assert list(latest["call_id"]) == [f"call-{i}" for i in range(55, 60)]


def test_empty_window_has_the_same_columns(store: SqliteStore, history: SqliteHistory) -> None:
    store.write_requests([record(0)])
    frame = history.requests_now(NOW, NOW + 60)
    assert len(frame) == 0
    assert {name: str(t) for name, t in frame.dtypes.items()} == REQUEST_FRAME_DTYPES


def test_reading_a_store_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=r"no store at .* start the recorder"):
        SqliteHistory(tmp_path / "none.sqlite").requests_now("-1h", "now")


def test_reads_keep_one_connection_per_thread_and_follow_a_replaced_file(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aidash_lib.store import sqlite as sqlite_module

    opened: list[str] = []
    real_connect = sqlite_module.connect

    def counting_connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
        if readonly:
            opened.append(f"{path}")
        return real_connect(path, readonly=readonly)

    monkeypatch.setattr(sqlite_module, "connect", counting_connect)
    with SqliteStore(store_path) as store:
        store.write_samples([cpu(NOW - 30, 1.0)])
    history = SqliteHistory(store_path)
    try:
        for _ in range(5):
            frame = history.series_now("system_cpu_percent", NOW - 60, NOW)
        assert list(frame["value"]) == [1.0]
        assert len(opened) == 1, "five reads on one thread open the store once"
        with SqliteStore(store_path) as store:  # new data reaches the kept connection
            store.write_samples([cpu(NOW - 20, 2.0)])
        frame = history.series_now("system_cpu_percent", NOW - 60, NOW)
        assert list(frame["value"]) == [1.0, 2.0] and len(opened) == 1

        # Another file at the same path (a restored store): read, not the old one's rows.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store_path}{suffix}").unlink(missing_ok=True)
        with SqliteStore(store_path) as store:
            store.write_samples([cpu(NOW - 10, 7.0)])
        frame = history.series_now("system_cpu_percent", NOW - 60, NOW)
        assert list(frame["value"]) == [7.0] and len(opened) == 2

        # Each thread has its own; close() closes them all, and a later read opens again.
        other = asyncio.run(asyncio.to_thread(
            history.series_now, "system_cpu_percent", NOW - 60, NOW))
        assert list(other["value"]) == [7.0] and len(opened) == 3
        history.close()
        frame = history.series_now("system_cpu_percent", NOW - 60, NOW)
        assert list(frame["value"]) == [7.0] and len(opened) == 4
    finally:
        history.close()


def test_open_history_picks_the_store(store_path: Path) -> None:
    assert isinstance(open_history(store_path), SqliteHistory)
    with pytest.raises(ValueError, match="give a store path"):
        open_history()


# -- compaction ------------------------------------------------------------------------------


def test_compaction_keeps_every_answer(store: SqliteStore, history: SqliteHistory) -> None:
    store.write_requests(record(i) for i in range(3000))
    queries = {
        "all": lambda: history.requests_now(NOW - 7200, NOW),
        "qwen failures": lambda: history.requests_now(
            NOW - 7200, NOW, model_group="qwen-32b", status="failure"
        ),
        "window": lambda: history.requests_now(NOW - 3000, NOW - 2000),
        "latest": lambda: history.requests_now(NOW - 7200, NOW, limit=7),
        "percentiles": lambda: history.latency_percentiles_now(
            NOW - 7200, NOW, by=("requested_group", "provider")
        ),
    }
    before = {name: query() for name, query in queries.items()}

    # Rows that ended over a minute before `now` move; the last minute's stay in SQLite.
    moved = store.compact(NOW - 3600 + 2000, force=True)
    assert 1900 < moved < 2000
    assert store.ensure_open().execute("SELECT count(*) FROM requests").fetchone()[0] > 1000
    files = list(store.segments_dir.glob("requests-*.parquet"))
    assert len(files) == 1
    for name, query in queries.items():
        pd.testing.assert_frame_equal(query(), before[name], obj=name)

    store.write_requests(record(i) for i in range(3000, 3100))
    store.compact(NOW + 3600, force=True)
    assert store.ensure_open().execute("SELECT count(*) FROM requests").fetchone()[0] == 0
    after = history.requests_now(NOW - 7200, NOW)
    assert len(after) == 3100
    assert after["id"].is_unique
    pd.testing.assert_frame_equal(after.iloc[:3000], before["all"])


def test_small_segments_are_merged(
    store: SqliteStore, history: SqliteHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aidash_lib.store import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "MERGE_FANIN", 3)
    for k in range(4):
        store.write_requests(record(i) for i in range(k * 100, (k + 1) * 100))
        store.compact(NOW + 3600, force=True)
    assert len(list(store.segments_dir.glob("requests-*.parquet"))) == 4
    expected = history.requests_now(NOW - 7200, NOW)
    report = store.maintain(NOW)
    assert report.segments_merged == 4
    assert [p.name for p in store.segments_dir.iterdir()] == [
        row[0] for row in store.ensure_open().execute("SELECT file FROM segments")
    ]
    pd.testing.assert_frame_equal(history.requests_now(NOW - 7200, NOW), expected)


def test_a_backlog_moves_one_segment_per_maintain(
    store: SqliteStore, history: SqliteHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aidash_lib.store import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "COMPACT_MAX_ROWS", 100)
    monkeypatch.setattr(sqlite_module, "COMPACT_MIN_ROWS", 10)
    store.write_requests(record(i) for i in range(350))
    moved = [store.maintain(NOW).requests_compacted for _ in range(5)]
    assert moved == [100, 100, 100, 50, 0]
    assert len(history.requests_now(NOW - 7200, NOW)) == 350


def test_orphan_segment_files_are_removed_and_never_read(
    store: SqliteStore, history: SqliteHistory
) -> None:
    store.write_requests(record(i) for i in range(100))
    # A crash after the file's rename but before its bookkeeping row: an orphan.
    orphan = segments.write_segment(
        store.segments_dir,
        segments.rows_to_table(
            store.ensure_open()
            .execute(f"SELECT {', '.join(segments.SEGMENT_COLUMNS)} FROM requests")
            .fetchall()
        ),
    )
    (store.segments_dir / ".tmp-requests-half-written.parquet").write_bytes(b"PAR1")
    assert len(history.requests_now(NOW - 7200, NOW)) == 100
    report = store.maintain(NOW - 3000)
    assert report.orphans_removed == 2
    assert not (store.segments_dir / orphan.file).exists()
    assert len(history.requests_now(NOW - 7200, NOW)) == 100


def test_a_lost_segment_file_is_a_clear_error(store: SqliteStore, history: SqliteHistory) -> None:
    store.write_requests(record(i) for i in range(10))
    store.compact(NOW, force=True)
    for path in store.segments_dir.glob("requests-*.parquet"):
        path.unlink()
    with pytest.raises(StoreError, match="cannot read the segments of"):
        history.requests_now(NOW - 7200, NOW)


def test_old_requests_are_dropped_after_the_rollup_retention(store_path: Path) -> None:
    with SqliteStore(store_path, rollup_retention_s=86400) as store:
        store.write_requests(record(i) for i in range(100))
        store.compact(NOW, force=True)
        store.write_requests(record(i, start_s=NOW - 600) for i in range(100, 110))
        report = store.maintain(NOW + 86400 - 3000)
    assert report.segments_dropped == 1
    left = SqliteHistory(store_path).requests_now(0, NOW + 86400)
    assert list(left["call_id"]) == [f"call-{i}" for i in range(100, 110)]


# -- samples, rollups, events ----------------------------------------------------------------


def cpu(time_s: float, value: float, host: str = "a") -> Sample:
    return Sample("system_cpu_percent", (("host", host),), time_s, value)


def test_series_raw_at_a_step_and_by_labels(store: SqliteStore, history: SqliteHistory) -> None:
    start = NOW - 600
    written = store.write_samples(
        [cpu(start + k, float(k)) for k in range(120)]
        + [cpu(start + k, 100.0 - k, host="b") for k in range(0, 120, 2)]
        + [Sample("gpu_temperature_c", (("gpu", "0"),), start, 40.0)]
        + [cpu(start + 500, float("nan"))]
    )
    assert written == 181  # NaN skipped
    raw = run(history.series("system_cpu_percent", start, NOW))
    assert list(raw.columns) == ["time", "value", "host"]
    assert str(raw["time"].dtype) == "datetime64[ns, UTC]"
    assert str(raw["host"].dtype) == "category"
    assert len(raw) == 180
    assert list(raw["host"][:120]) == ["a"] * 120  # ordered by labels, then time
    assert raw["time"].is_monotonic_increasing is False

    only_b = history.series_now("system_cpu_percent", start, NOW, labels={"host": "b"})
    assert len(only_b) == 60 and set(only_b["host"]) == {"b"}

    stepped = history.series_now(
        "system_cpu_percent", start, NOW, labels={"host": "a"}, step_s=60
    )
    assert list(stepped["value"]) == [np.mean(range(0, 60)), np.mean(range(60, 120))]
    assert stepped["time"].iloc[0] == pd.Timestamp(start, unit="s", tz="UTC")
    by_points = history.series_now("system_cpu_percent", start, NOW, points=11)
    assert len(by_points) <= 2 * 3  # a 60 s step: two buckets per host
    assert history.series_now("nothing_like_it", start, NOW).columns.tolist() == ["time", "value"]


def test_retention_rolls_samples_up_per_minute(store_path: Path) -> None:
    start = 1_799_996_400.0  # on a whole minute
    with SqliteStore(store_path, raw_retention_s=3600, rollup_retention_s=7200) as store:
        store.write_samples(cpu(start + k * 5, float(k % 12)) for k in range(12 * 30))  # 30 min
        before = SqliteHistory(store_path).series_now(
            "system_cpu_percent", start, start + 3600, step_s=60
        )
        report = store.maintain(now_s=start + 3600 + 15 * 60)  # 15 minutes are past retention
        assert report.samples_rolled_up == 15 * 12
        rows = store.ensure_open().execute(
            "SELECT minute_s, min, max, sum / count, last, count FROM rollups ORDER BY minute_s"
        ).fetchall()
        assert len(rows) == 15
        assert rows[0] == (start, 0.0, 11.0, 5.5, 11.0, 12)
        assert store.ensure_open().execute("SELECT min(time_s) FROM samples").fetchone()[0] == (
            start + 15 * 60
        )
        # A late sample inside a rolled-up minute merges into its rollup.
        store.write_samples([cpu(start + 1, 50.0)])
        store.maintain(now_s=start + 3600 + 15 * 60)
        assert store.ensure_open().execute(
            "SELECT max, count, last FROM rollups WHERE minute_s = ?", (start,)
        ).fetchone() == (50.0, 13, 11.0)

        reader = SqliteHistory(store_path)
        after = reader.series_now("system_cpu_percent", start, start + 3600, step_s=60)
        assert len(after) == len(before) == 30
        np.testing.assert_allclose(after["value"][1:], before["value"][1:])
        raw = reader.series_now("system_cpu_percent", start, start + 3600)
        assert len(raw) == 15 + 15 * 12  # one mean per rolled-up minute, then raw samples

        report = store.maintain(now_s=start + 7200 + 10 * 60)
        assert report.rollups_pruned == 10
        assert report.samples_rolled_up == 15 * 12


def test_retention_prunes_in_small_chunks(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aidash_lib.store import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "CHUNK_ROWS", 50)
    statements: list[str] = []
    with SqliteStore(store_path, raw_retention_s=60, rollup_retention_s=120) as store:
        store.write_samples(cpu(NOW + k, 1.0) for k in range(600))
        store.write_events(Event(NOW + k, "alert", f"a{k}") for k in range(300))
        store.ensure_open().set_trace_callback(statements.append)
        report = store.maintain(now_s=NOW + 600 + 60)
    assert report.samples_rolled_up == 600 and report.events_pruned == 300
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in statements) >= 600 // 60 + 300 // 50


def test_events_round_trip(store: SqliteStore, history: SqliteHistory) -> None:
    store.write_events(
        [
            Event(NOW - 30, "alert", "HighP95", "firing"),
            Event(NOW - 20, "config_save", "config/providers.yaml", "v12"),
            Event(NOW - 10, "alert", "HighP95", "resolved"),
        ]
    )
    frame = run(history.events(NOW - 60, NOW))
    assert list(frame.columns) == ["time", "kind", "subject", "detail"]
    assert [str(t) for t in frame.dtypes] == ["datetime64[ns, UTC]", "category", "str", "str"]
    assert list(frame["detail"]) == ["firing", "v12", "resolved"]
    assert list(history.events_now(NOW - 60, NOW, kind="alert")["detail"]) == [
        "firing", "resolved",
    ]
    assert len(history.events_now(NOW - 60, NOW - 25)) == 1


def test_batches_are_all_or_nothing(store: SqliteStore, history: SqliteHistory) -> None:
    bad = [record(0), record(1, status=None)]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a row is invalid"):
        store.write_requests(bad)
    assert len(history.requests_now(0, NOW)) == 0
    assert store.write_requests([record(0)]) == 1


# -- the recorder lock -----------------------------------------------------------------------


def test_second_recorder_is_refused_with_who_holds_it(store_path: Path) -> None:
    first = SqliteStore(store_path).acquire_recorder_lock()
    assert recorder_holder(store_path).pid == os.getpid()
    with pytest.raises(StoreLocked, match=rf"pid {os.getpid()} on .*, since \d{{4}}-.* UTC"):
        SqliteStore(store_path).acquire_recorder_lock(wait_s=0)
    first.release()
    assert recorder_holder(store_path) is None
    with SqliteStore(store_path).acquire_recorder_lock() as again:
        assert again.held
    assert not again.held


# -- a store that cannot be written ----------------------------------------------------------


def _in_child_without_write_access(folder: Path, action: str) -> str:
    """Run a write in a forked child that cannot write `folder` (as `nobody` when we are root,
    since root ignores permissions); returns what it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        message = "no error"
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            store = SqliteStore(folder / "history.sqlite")
            if action == "samples":
                store.write_samples([cpu(NOW, 1.0)])
            else:
                store.acquire_recorder_lock()
        except BaseException as exc:  # reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as answer:
        return answer.read()


@pytest.fixture
def read_only_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="aidash-ro-"))
    try:
        SqliteStore(folder / "history.sqlite").write_samples([cpu(NOW - 1, 1.0)])
        (folder / "history.sqlite").chmod(0o444)
        folder.chmod(0o555)
        yield folder
    finally:
        folder.chmod(0o755)
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def test_read_only_store_is_unavailable_with_the_reason(read_only_folder: Path) -> None:
    said = _in_child_without_write_access(read_only_folder, "samples")
    assert said.startswith("StoreUnavailable: cannot open the store"), said
    assert "read-only" in said
    said = _in_child_without_write_access(read_only_folder, "lock")
    assert said.startswith("StoreUnavailable: cannot lock the store"), said
    # Readers still read it.
    frame = SqliteHistory(read_only_folder / "history.sqlite").series_now(
        "system_cpu_percent", NOW - 60, NOW
    )
    assert list(frame["value"]) == [1.0]


def test_full_disk_is_unavailable_and_writes_resume(
    store: SqliteStore, history: SqliteHistory
) -> None:
    store.write_requests([record(0)])
    conn = store.ensure_open()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite now answers SQLITE_FULL
    with pytest.raises(StoreUnavailable, match="the disk is full"):
        store.write_requests(record(i) for i in range(1, 2000))
    assert len(history.requests_now(0, NOW)) == 1  # nothing of the failed batch
    assert store.write_requests([record(1)]) == 1  # reconnected: the limit is gone
    with contextlib.closing(sqlite3.connect(store.path)) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_newest_requests_of_an_empty_window_is_an_empty_frame(tmp_path) -> None:
    from aidash_lib.store.sqlite import SqliteHistory, SqliteStore

    store = SqliteStore(tmp_path / "h.sqlite")
    store.ensure_open()
    frame = SqliteHistory(tmp_path / "h.sqlite").requests_now("-1h", "now", limit=10)
    assert frame.empty
    assert "latency_s" in frame.columns
    store.close()
