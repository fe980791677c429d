"""The embedded store: SQLite in WAL mode, with columnar segments of old request records.

Writers: the recorder (samples, events, and `maintain()`) through `SqliteStore`, and the
request logger inside the gateway through `schema.insert_requests` (or `write_requests`).
Each write is one transaction, so readers in other processes never see half a batch. Readers
(`SqliteHistory`) open the file read-only and never block the writer.

Files of a store at `PATH`:

- `PATH` (+ `-wal`, `-shm`): the SQLite database (see `schema.DDL`);
- `PATH.segments/`: immutable Parquet files of request rows moved out of SQLite by
  `maintain()`; the `segments` table says which are live;
- `PATH.recorder.lock`: held (flock) by the one running recorder, released by the kernel when
  it dies, even by SIGKILL; `PATH.maintain.lock` likewise for one `maintain()` at a time.

A full disk, a read-only file or folder, or a write lock held too long by another process
raises `StoreUnavailable` with the reason; the store reconnects on the next call, so a caller
(the recorder) just retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import operator
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aidash_lib.store.schema import (
    REQUEST_COLUMNS,
    Event,
    RequestRecord,
    Sample,
    connect,
    create_tables,
)

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from aidash_lib.store.history import Filter, TimeArg
    from aidash_lib.store.segments import SegmentFile

T = TypeVar("T")

#: Request rows are moved to a segment once they ended this long ago...
COMPACT_AFTER_S = 60.0
#: ...and there are at least this many of them, or the oldest ended this long ago.
COMPACT_MIN_ROWS = 5_000
COMPACT_MAX_AGE_S = 900.0
#: At most this many rows go into one new segment; `maintain()` writes one segment per call,
#: so that a backlog (a logger that wrote for days without a recorder) is moved in steps.
COMPACT_MAX_ROWS = 250_000
#: Segments are merged, `MERGE_FANIN` or more at a time, while below these row counts.
MERGE_TIERS: tuple[int, ...] = (100_000, 1_000_000)
MERGE_FANIN = 8
MERGE_MAX_FILES = 32
MERGE_MAX_ROWS = 1_000_000
#: A pruning or rollup transaction touches about this many rows, so that no writer waits long.
CHUNK_ROWS = 20_000

_READONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class StoreUnavailable(StoreError):
    """The store cannot be written now (read-only, disk full, locked too long): retry later."""


class StoreLocked(StoreError):
    """Another live recorder holds this store."""


def _sqlite_reason(exc: BaseException) -> str | None:
    """Why a write failed, in an operator's words, when it is the outside world's fault."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "the disk is full"
        if exc.errno in _READONLY_ERRNOS:
            return "the store is read-only (check permissions and the mount)"
        return exc.strerror.lower() if exc.strerror else str(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "the disk is full"
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM")) or "readonly" in text:
        return "the store is read-only (check permissions and the mount)"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "the file cannot be opened (does its folder exist, and is it writable?)"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return "another process held the write lock too long"
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return "an I/O error (is the disk failing or full?)"
    return None


def _unavailable(path: Path, action: str, exc: BaseException) -> StoreError:
    reason = _sqlite_reason(exc)
    if reason is None:
        return StoreError(f"cannot {action} the store {path}: {exc}")
    return StoreUnavailable(f"cannot {action} the store {path}: {reason} ({exc})")


@dataclass(frozen=True)
class MaintenanceReport:
    """What one `maintain()` did."""

    skipped: bool = False  # another process was maintaining this store
    requests_compacted: int = 0
    segments_written: int = 0
    segments_merged: int = 0
    segments_dropped: int = 0
    orphans_removed: int = 0
    samples_rolled_up: int = 0
    rollups_pruned: int = 0
    events_pruned: int = 0
    requests_pruned: int = 0


@dataclass(frozen=True)
class LockHolder:
    """Who holds a recorder lock."""

    pid: int | None
    host: str | None
    since_s: float | None

    def describe(self) -> str:
        since = (
            datetime.fromtimestamp(self.since_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if self.since_s is not None
            else "an unknown time"
        )
        pid = f"pid {self.pid}" if self.pid is not None else "an unknown pid"
        host = f" on {self.host}" if self.host else ""
        return f"{pid}{host}, since {since}"


class RecorderLock:
    """The recorder lock on one store; released by `release()`, at exit, or when the process
    dies (the kernel drops the flock)."""

    def __init__(self, path: Path, fd: int, holder: LockHolder) -> None:
        self.path = path
        self.holder = holder
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let another recorder take the store. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def __enter__(self) -> RecorderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def recorder_lock_path(store_path: str | Path) -> Path:
    return Path(f"{store_path}.recorder.lock")


def _read_holder(fd: int) -> LockHolder:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode()) if raw else {}
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    pid, host, since = info.get("pid"), info.get("host"), info.get("since_s")
    return LockHolder(
        pid=pid if isinstance(pid, int) else None,
        host=host if isinstance(host, str) else None,
        since_s=float(since) if isinstance(since, int | float) else None,
    )


def recorder_holder(store_path: str | Path) -> LockHolder | None:
    """Who holds the store's recorder lock, or None when no recorder is running."""
    path = recorder_lock_path(store_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


_INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in REQUEST_COLUMNS)})"
)
_request_row = operator.attrgetter(*REQUEST_COLUMNS)

_ROLLUP = """
INSERT INTO rollups (series_id, minute_s, min, max, sum, count, last, last_time_s)
SELECT g.series_id, g.minute_s, g.mn, g.mx, g.sm, g.n,
       (SELECT s.value FROM samples AS s WHERE s.series_id = g.series_id AND s.time_s = g.lt),
       g.lt
FROM (
    SELECT series_id, CAST(time_s / 60 AS INTEGER) * 60 AS minute_s, min(value) AS mn,
           max(value) AS mx, sum(value) AS sm, count(*) AS n, max(time_s) AS lt
    FROM samples WHERE time_s < ? GROUP BY series_id, minute_s
) AS g
WHERE true
ON CONFLICT (series_id, minute_s) DO UPDATE SET
    min = min(rollups.min, excluded.min),
    max = max(rollups.max, excluded.max),
    sum = rollups.sum + excluded.sum,
    count = rollups.count + excluded.count,
    last = CASE WHEN excluded.last_time_s >= rollups.last_time_s
                THEN excluded.last ELSE rollups.last END,
    last_time_s = max(rollups.last_time_s, excluded.last_time_s)
"""


def labels_key(labels: Iterable[tuple[str, str]]) -> str:
    """A series' labels as stored: a JSON array of [name, value] pairs, sorted by name."""
    return json.dumps(sorted([str(k), str(v)] for k, v in labels), separators=(",", ":"))


class SqliteStore:
    """The writer side of the embedded store (the recorder's, and the logger's if it likes).

    Nothing is opened until the first call; after a `StoreUnavailable` the connection is
    dropped and the next call opens it again. Not for use from several threads at once.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        raw_retention_s: float = 48 * 3600,
        rollup_retention_s: float = 30 * 86400,
    ) -> None:
        if raw_retention_s <= 0 or rollup_retention_s <= 0:
            raise ValueError("retention times must be positive")
        self.path = Path(path).expanduser()
        self.raw_retention_s = float(raw_retention_s)
        self.rollup_retention_s = float(rollup_retention_s)
        self._conn: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str], int] = {}

    # -- connection and transactions ---------------------------------------------------------

    def ensure_open(self) -> sqlite3.Connection:
        """The open connection (tables created); raises `StoreUnavailable` if it cannot be."""
        if self._conn is None:
            conn: sqlite3.Connection | None = None
            try:
                conn = connect(self.path)
                conn.isolation_level = None
                create_tables(conn)
            except (sqlite3.Error, OSError) as exc:
                if conn is not None:
                    conn.close()
                raise _unavailable(self.path, "open", exc) from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT): all of it lands, or none."""
        conn = self.ensure_open()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.close()
            raise _unavailable(self.path, action, exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise ValueError(f"cannot {action} the store: a row is invalid ({exc})") from exc
            if isinstance(exc, sqlite3.Error | OSError):
                self.close()
                raise _unavailable(self.path, action, exc) from exc
            raise

    # -- writes ------------------------------------------------------------------------------

    def write_requests(self, records: Iterable[RequestRecord]) -> int:
        """Insert request records in one transaction; returns how many."""
        rows = [_request_row(record) for record in records]
        if not rows:
            return 0
        with self._transaction("write requests to") as conn:
            conn.executemany(_INSERT_REQUEST, rows)
        return len(rows)

    def write_samples(self, samples: Iterable[Sample]) -> int:
        """Insert samples in one transaction; returns how many were written.

        A sample at the same series and time as a stored one replaces it. NaN values are
        skipped (no value at that time).
        """
        batch = [s for s in samples if not math.isnan(s.value)]
        if not batch:
            return 0
        keys = [(s.metric, labels_key(s.labels)) for s in batch]
        new_ids: dict[tuple[str, str], int] = {}
        with self._transaction("write samples to") as conn:
            for key in set(keys):
                if key in self._series or key in new_ids:
                    continue
                conn.execute(
                    "INSERT OR IGNORE INTO series (metric, labels) VALUES (?, ?)", key
                )
                (series_id,) = conn.execute(
                    "SELECT id FROM series WHERE metric = ? AND labels = ?", key
                ).fetchone()
                new_ids[key] = series_id
            ids = {**self._series, **new_ids}
            conn.executemany(
                "INSERT OR REPLACE INTO samples (series_id, time_s, value) VALUES (?, ?, ?)",
                [(ids[key], s.time_s, s.value) for key, s in zip(keys, batch, strict=True)],
            )
        self._series.update(new_ids)
        return len(batch)

    def write_events(self, events: Iterable[Event]) -> int:
        """Insert events in one transaction; returns how many."""
        rows = [(e.time_s, e.kind, e.subject, e.detail) for e in events]
        if not rows:
            return 0
        with self._transaction("write events to") as conn:
            conn.executemany(
                "INSERT INTO events (time_s, kind, subject, detail) VALUES (?, ?, ?, ?)", rows
            )
        return len(rows)

    # -- the recorder lock -------------------------------------------------------------------

    def acquire_recorder_lock(self, *, wait_s: float = 0.5) -> RecorderLock:
        """Take the recorder lock, or raise `StoreLocked` naming the live holder.

        `wait_s` rides out a concurrent `recorder_holder()` check holding a shared lock.
        """
        path = recorder_lock_path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unavailable(self.path, "lock", exc) from exc
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _read_holder(fd)
                os.close(fd)
                raise StoreLocked(
                    f"another recorder is writing to {self.path} ({holder.describe()}); "
                    "stop it first, or point AIDASH_STORE at another file"
                ) from None
        holder = LockHolder(pid=os.getpid(), host=socket.gethostname(), since_s=time.time())
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(dataclasses.asdict(holder)).encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise _unavailable(self.path, "lock", exc) from exc
        with (
            contextlib.suppress(StoreError),
            self._transaction("record the recorder in") as conn,
        ):
            conn.execute(
                "INSERT OR REPLACE INTO recorder (id, pid, host, since_s) VALUES (1, ?, ?, ?)",
                (holder.pid, holder.host, holder.since_s),
            )
        return RecorderLock(path, fd, holder)

    # -- maintenance -------------------------------------------------------------------------

    def maintain(self, now_s: float | None = None) -> MaintenanceReport:
        """Compaction and retention, in small transactions so nobody waits long.

        - request rows that ended over `COMPACT_AFTER_S` ago move into Parquet segments; small
          segments are merged; requests older than the rollup retention are dropped;
        - raw samples older than the raw retention become per-minute rollups (min, max, mean,
          last, count), kept for the rollup retention, then deleted; events likewise.

        Only one process maintains a store at a time: a second call returns a report with
        `skipped=True`.
        """
        now = time.time() if now_s is None else float(now_s)
        lock_path = Path(f"{self.path}.maintain.lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unavailable(self.path, "maintain", exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return MaintenanceReport(skipped=True)
            return self._maintain(now)
        finally:
            os.close(fd)

    def _maintain(self, now: float) -> MaintenanceReport:
        compacted, written = self._compact_requests(now, max_segments=1)
        merged = self._merge_segments()
        dropped, requests_pruned = self._drop_old_requests(now - self.rollup_retention_s)
        orphans = self._remove_orphans()
        rolled = self._roll_up_samples(now - self.raw_retention_s)
        rollups_pruned = self._delete_in_chunks(
            "rollups", "minute_s", now - self.rollup_retention_s
        )
        events_pruned = self._delete_in_chunks("events", "time_s", now - self.rollup_retention_s)
        with contextlib.suppress(sqlite3.Error):
            self.ensure_open().execute("PRAGMA wal_checkpoint(PASSIVE)")
        return MaintenanceReport(
            requests_compacted=compacted,
            segments_written=written,
            segments_merged=merged,
            segments_dropped=dropped,
            orphans_removed=orphans,
            samples_rolled_up=rolled,
            rollups_pruned=rollups_pruned,
            events_pruned=events_pruned,
            requests_pruned=requests_pruned,
        )

    @property
    def segments_dir(self) -> Path:
        from aidash_lib.store.segments import segments_dir

        return segments_dir(self.path)

    def compact(self, now_s: float | None = None, *, force: bool = False) -> int:
        """Move every closed request row into segments now; `force` ignores the minimum batch.

        Returns how many rows moved. (`maintain()` does this a segment at a time, and more.)
        """
        now = time.time() if now_s is None else float(now_s)
        return self._compact_requests(now, force=force)[0]

    def _compact_requests(
        self, now: float, *, force: bool = False, max_segments: int | None = None
    ) -> tuple[int, int]:
        from aidash_lib.store.segments import SEGMENT_COLUMNS, rows_to_table, write_segment

        cutoff = now - COMPACT_AFTER_S
        conn = self.ensure_open()
        moved = written = 0
        try:
            count, oldest = conn.execute(
                "SELECT count(*), min(ended_s) FROM requests WHERE ended_s < ?", (cutoff,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise _unavailable(self.path, "compact", exc) from exc
        if not count or (
            not force and count < COMPACT_MIN_ROWS and oldest >= now - COMPACT_MAX_AGE_S
        ):
            return 0, 0
        columns = ", ".join(SEGMENT_COLUMNS)
        while max_segments is None or written < max_segments:
            try:
                rows = conn.execute(
                    f"SELECT {columns} FROM requests WHERE ended_s < ? ORDER BY id LIMIT ?",
                    (cutoff, COMPACT_MAX_ROWS),
                ).fetchall()
            except sqlite3.Error as exc:
                raise _unavailable(self.path, "compact", exc) from exc
            if not rows:
                break
            last_id = rows[-1][0]
            try:
                segment = write_segment(self.segments_dir, rows_to_table(rows))
            except OSError as exc:
                raise _unavailable(self.path, "write a segment of", exc) from exc
            try:
                with self._transaction("compact") as tx:
                    deleted = tx.execute(
                        "DELETE FROM requests WHERE ended_s < ? AND id <= ?", (cutoff, last_id)
                    ).rowcount
                    if deleted != len(rows):
                        raise StoreError(
                            f"compaction of {self.path} found {deleted} rows to delete, "
                            f"expected {len(rows)}; nothing moved"
                        )
                    self._insert_segment(tx, segment, now)
            except BaseException:
                (self.segments_dir / segment.file).unlink(missing_ok=True)
                raise
            moved += len(rows)
            written += 1
        return moved, written

    @staticmethod
    def _insert_segment(conn: sqlite3.Connection, segment: SegmentFile, now: float) -> None:
        conn.execute(
            "INSERT INTO segments (kind, file, start_s, end_s, rows, min_id, max_id, bytes, "
            "created_s) VALUES ('requests', ?, ?, ?, ?, ?, ?, ?, ?)",
            (segment.file, segment.start_s, segment.end_s, segment.rows, segment.min_id,
             segment.max_id, segment.bytes, now),
        )

    def _segments(self) -> list[tuple[int, str, float, float, int]]:
        try:
            return self.ensure_open().execute(
                "SELECT id, file, start_s, end_s, rows FROM segments WHERE kind = 'requests' "
                "ORDER BY start_s, id"
            ).fetchall()
        except sqlite3.Error as exc:
            raise _unavailable(self.path, "read segments of", exc) from exc

    def _merge_segments(self) -> int:
        """Merge one group of small segments (the smallest tier that has enough of them)."""
        from aidash_lib.store.segments import read_segments, write_segment

        segments = self._segments()
        group: list[tuple[int, str, float, float, int]] = []
        for limit in MERGE_TIERS:
            small = [s for s in segments if s[4] < limit]
            if len(small) < MERGE_FANIN:
                continue
            for segment in small[:MERGE_MAX_FILES]:
                if group and sum(s[4] for s in group) + segment[4] > MERGE_MAX_ROWS:
                    break
                group.append(segment)
            if len(group) >= 2:
                break
            group = []
        if not group:
            return 0
        files = [s[1] for s in group]
        try:
            merged = write_segment(self.segments_dir, read_segments(self.segments_dir, files))
        except OSError as exc:
            raise _unavailable(self.path, "merge segments of", exc) from exc
        try:
            with self._transaction("merge segments of") as tx:
                tx.executemany("DELETE FROM segments WHERE id = ?", [(s[0],) for s in group])
                self._insert_segment(tx, merged, time.time())
        except BaseException:
            (self.segments_dir / merged.file).unlink(missing_ok=True)
            raise
        for name in files:
            (self.segments_dir / name).unlink(missing_ok=True)
        return len(group)

    def _drop_old_requests(self, cutoff: float) -> tuple[int, int]:
        old = [s for s in self._segments() if s[3] < cutoff]
        if old:
            with self._transaction("drop old segments of") as tx:
                tx.executemany("DELETE FROM segments WHERE id = ?", [(s[0],) for s in old])
            for segment in old:
                (self.segments_dir / segment[1]).unlink(missing_ok=True)
        pruned = self._delete_in_chunks("requests", "started_s", cutoff)
        return len(old), pruned

    def _remove_orphans(self) -> int:
        from aidash_lib.store.segments import orphans

        known = {s[1] for s in self._segments()}
        removed = 0
        for path in orphans(self.segments_dir, known):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def _chunk_bound(self, table: str, column: str, cutoff: float) -> float | None:
        """A value of `column` below which about `CHUNK_ROWS` rows older than `cutoff` lie."""
        conn = self.ensure_open()
        row = conn.execute(
            f"SELECT {column} FROM {table} WHERE {column} < ? ORDER BY {column} "
            "LIMIT 1 OFFSET ?",
            (cutoff, CHUNK_ROWS),
        ).fetchone()
        if row is not None:
            return float(row[0])
        any_row = conn.execute(
            f"SELECT 1 FROM {table} WHERE {column} < ? LIMIT 1", (cutoff,)
        ).fetchone()
        return cutoff if any_row else None

    def _delete_in_chunks(self, table: str, column: str, cutoff: float) -> int:
        deleted = 0
        while True:
            try:
                bound = self._chunk_bound(table, column, cutoff)
            except sqlite3.Error as exc:
                raise _unavailable(self.path, "prune", exc) from exc
            if bound is None:
                return deleted
            op = "<" if bound >= cutoff else "<="
            with self._transaction("prune") as tx:
                deleted += tx.execute(
                    f"DELETE FROM {table} WHERE {column} {op} ? AND {column} < ?",
                    (bound, cutoff),
                ).rowcount

    def _roll_up_samples(self, older_than_s: float) -> int:
        cutoff = math.floor(older_than_s / 60) * 60
        rolled = 0
        while True:
            try:
                bound = self._chunk_bound("samples", "time_s", cutoff)
                if bound is None:
                    return rolled
                first = self.ensure_open().execute("SELECT min(time_s) FROM samples").fetchone()[0]
            except sqlite3.Error as exc:
                raise _unavailable(self.path, "roll up", exc) from exc
            # Whole minutes only: a minute is rolled up in one transaction.
            upto = min(cutoff, max(math.floor(bound / 60) * 60, math.floor(first / 60) * 60 + 60))
            with self._transaction("roll up") as tx:
                tx.execute(_ROLLUP, (upto,))
                rolled += tx.execute("DELETE FROM samples WHERE time_s < ?", (upto,)).rowcount


# -- reading ---------------------------------------------------------------------------------


class SqliteHistory:
    """The history interface (`aidash_lib.store.history.History`) over an embedded store.

    Reads the store on read-only connections, so it never blocks the recorder: one per thread,
    kept between queries (opening one costs more than a small query) and opened again when the
    file at `path` is another one. Request queries run in DuckDB over the Parquet segments and
    the few rows still in SQLite, read in one snapshot. Safe to share between tasks and threads.
    """

    #: Retries when a merge removed a segment file between listing and reading it.
    READ_RETRIES = 3

    def __init__(self, path: str | Path) -> None:
        from aidash_lib.store.segments import segments_dir

        self.path = Path(path).expanduser()
        self.segments_dir = segments_dir(self.path)
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        #: This thread's read connection: (connection, (device, inode) of the file, generation).
        self._reader = threading.local()
        self._readers: set[sqlite3.Connection] = set()
        self._readers_generation = 0
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        """Close the DuckDB connection and every thread's read connection (a later query opens
        them again)."""
        with self._lock:
            if self._duck is not None:
                self._duck.close()
                self._duck = None
        with self._readers_lock:
            readers, self._readers = self._readers, set()
            self._readers_generation += 1
        for conn in readers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- the protocol ------------------------------------------------------------------------

    async def requests(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        model_group: Filter = None,
        deployment: Filter = None,
        provider: Filter = None,
        status: Filter = None,
        error_text: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Attempts that started in `[start, end]` (the requests frame of `store.history`).

        Each filter takes a value or a list of values; `deployment` matches the deployment id
        or its model name; `error_text` is a case-insensitive substring of the error class,
        code, normalized error or message. With `limit`, the most recent `limit` rows.
        """
        return await asyncio.to_thread(
            self.requests_now, start, end, model_group=model_group, deployment=deployment,
            provider=provider, status=status, error_text=error_text, limit=limit,
        )

    async def series(
        self,
        metric: str,
        start: TimeArg,
        end: TimeArg,
        *,
        labels: Mapping[str, str] | None = None,
        step_s: float | None = None,
        points: int | None = None,
    ) -> pd.DataFrame:
        """A metric's series in `[start, end]` (the series frame of `store.history`).

        Without `step_s` or `points`: every raw sample, and for times older than the raw
        retention one row per minute (its mean). With either: one row per step-aligned
        bucket, the mean of what it holds. `labels` keeps series having all those labels.
        """
        return await asyncio.to_thread(
            self.series_now, metric, start, end, labels=labels, step_s=step_s, points=points
        )

    async def events(self, start: TimeArg, end: TimeArg, kind: Filter = None) -> pd.DataFrame:
        """Events in `[start, end]` (the events frame of `store.history`)."""
        return await asyncio.to_thread(self.events_now, start, end, kind)

    async def latency_percentiles(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        by: Sequence[str] = ("requested_group",),
        q: Sequence[float] = (0.5, 0.95, 0.99),
        status: str | None = "success",
        include_health_checks: bool = False,
        column: str = "latency_s",
    ) -> pd.DataFrame:
        """Exact latency percentiles (linear interpolation, as numpy and pandas) of attempts
        that started in `[start, end]`, computed where the rows live (DuckDB).

        By default successful attempts only, health checks excluded; `column="ttft_s"` for
        time to first token. The percentiles frame of `store.history`.
        """
        return await asyncio.to_thread(
            self.latency_percentiles_now, start, end, by=by, q=q, status=status,
            include_health_checks=include_health_checks, column=column,
        )

    async def request_totals(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        model_group: Filter = None,
        provider: Filter = None,
        q: Sequence[float] = (0.5, 0.95, 0.99),
        include_health_checks: bool = False,
    ) -> pd.DataFrame:
        """Model group × deployment totals of the attempts that started in `[start, end]`,
        computed where the rows live (DuckDB): the totals frame of `store.history`, what
        `analysis.comparison_from_totals` turns into the provider comparison."""
        return await asyncio.to_thread(
            self.request_totals_now, start, end, model_group=model_group, provider=provider,
            q=q, include_health_checks=include_health_checks,
        )

    # -- the same, synchronously (scripts, benchmarks, worker threads) -----------------------

    def requests_now(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        model_group: Filter = None,
        deployment: Filter = None,
        provider: Filter = None,
        status: Filter = None,
        error_text: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """`requests`, blocking the calling thread."""
        from aidash_lib.store.history import as_filter, window
        from aidash_lib.store.segments import SEGMENT_COLUMNS

        start_s, end_s = window(start, end)
        where = ["started_s >= $start", "started_s <= $end"]
        params: dict[str, Any] = {"start": start_s, "end": end_s}
        _where_in(where, params, requested_group=model_group, provider=provider, status=status)
        deployments = as_filter(deployment)
        if deployments is not None:
            where.append(
                "(list_contains($deployment, deployment_id) OR list_contains($deployment, model))"
            )
            params["deployment"] = list(deployments)
        if error_text:
            where.append(
                "contains(lower(concat_ws(' ', error_class, error_code, normalized_error, "
                "error_message)), lower($error_text))"
            )
            params["error_text"] = error_text
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must not be negative, not {limit}")
            order = f"ORDER BY started_s DESC, id DESC LIMIT {int(limit)}"
        else:
            order = "ORDER BY started_s, id"
        sql = f"SELECT * FROM ({{source}}) WHERE {' AND '.join(where)} {order}"
        table = self._duck_query(sql, params, SEGMENT_COLUMNS, start_s, end_s)
        if limit is not None:
            import pyarrow as pa

            newest_last = pa.array(range(table.num_rows - 1, -1, -1), type=pa.int64())
            table = table.take(newest_last)  # typed: an empty list would have no type
        return _requests_frame(table)

    def latency_percentiles_now(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        by: Sequence[str] = ("requested_group",),
        q: Sequence[float] = (0.5, 0.95, 0.99),
        status: str | None = "success",
        include_health_checks: bool = False,
        column: str = "latency_s",
    ) -> pd.DataFrame:
        """`latency_percentiles`, blocking the calling thread."""
        import numpy as np
        import pandas as pd

        from aidash_lib.store.history import check_by, check_quantiles, quantile_column, window

        if column not in ("latency_s", "ttft_s"):
            raise ValueError(f"percentiles are of latency_s or ttft_s, not {column!r}")
        start_s, end_s = window(start, end)
        columns = check_by(by)
        qs = check_quantiles(q)
        where = ["started_s >= $start", "started_s <= $end", f"{column} IS NOT NULL"]
        params: dict[str, Any] = {"start": start_s, "end": end_s, "q": list(qs)}
        if status is not None:
            where.append("status = $status")
            params["status"] = status
        if not include_health_checks:
            where.append("NOT is_health_check")
        group = ", ".join(columns)
        select = f"{group}, " if columns else ""
        group_by = f"GROUP BY {group} ORDER BY {group}" if columns else ""
        sql = (
            f"SELECT {select}count(*) AS requests, quantile_cont({column}, $q) AS q "
            f"FROM ({{source}}) WHERE {' AND '.join(where)} {group_by}"
        )
        needed = ("started_s", "status", "is_health_check", column, *columns)
        table = self._duck_query(sql, params, needed, start_s, end_s)
        counts = table.column("requests").to_numpy()
        keep = counts > 0
        values = table.column("q").to_pylist()
        frame = pd.DataFrame({name: table.column(name).to_pylist() for name in columns})
        frame = frame[keep].reset_index(drop=True) if len(frame.columns) else frame
        for name in columns:
            frame[name] = frame[name].astype("category")
        frame["requests"] = counts[keep].astype("int64")
        matrix = np.array(
            [v for v, k in zip(values, keep, strict=True) if k], dtype="float64"
        ).reshape(-1, len(qs))
        for i, quantile in enumerate(qs):
            frame[quantile_column(quantile)] = matrix[:, i]
        frame.attrs["exact"] = True
        return frame

    def request_totals_now(
        self,
        start: TimeArg,
        end: TimeArg,
        *,
        model_group: Filter = None,
        provider: Filter = None,
        q: Sequence[float] = (0.5, 0.95, 0.99),
        include_health_checks: bool = False,
    ) -> pd.DataFrame:
        """`request_totals`, blocking the calling thread."""
        import numpy as np
        import pandas as pd

        from aidash_lib.store.history import check_quantiles, quantile_column, window

        start_s, end_s = window(start, end)
        qs = check_quantiles(q)
        where = ["started_s >= $start", "started_s <= $end"]
        params: dict[str, Any] = {"start": start_s, "end": end_s, "q": list(qs)}
        if not include_health_checks:
            where.append("NOT is_health_check")
        _where_in(where, params, requested_group=model_group, provider=provider)
        ok = "status = 'success'"
        sql = (
            "SELECT requested_group, deployment_id, "
            "first(model ORDER BY started_s, id) FILTER (WHERE model IS NOT NULL) AS model, "
            "first(provider ORDER BY started_s, id) FILTER (WHERE provider IS NOT NULL) "
            "AS provider, count(*) AS requests, "
            "count(*) FILTER (WHERE status = 'failure') AS failures, "
            f"coalesce(sum(latency_s) FILTER (WHERE {ok}), 0) AS ok_seconds, "
            f"coalesce(sum(completion_tokens) FILTER (WHERE {ok}), 0) AS ok_completion_tokens, "
            "coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens, "
            "coalesce(sum(cost_usd), 0) AS cost_usd, "
            f"quantile_cont(latency_s, $q) FILTER (WHERE {ok} AND latency_s IS NOT NULL) AS q "
            f"FROM ({{source}}) WHERE {' AND '.join(where)} "
            "GROUP BY requested_group, deployment_id "
            "ORDER BY requested_group NULLS LAST, deployment_id NULLS LAST"
        )
        needed = ("id", "started_s", "status", "is_health_check", "requested_group",
                  "deployment_id", "model", "provider", "latency_s", "prompt_tokens",
                  "completion_tokens", "cost_usd")
        table = self._duck_query(sql, params, needed, start_s, end_s)
        frame = pd.DataFrame({
            name: pd.Categorical(table.column(name).to_pylist())
            for name in ("requested_group", "deployment_id", "model", "provider")
        })
        for name, dtype in (("requests", "int64"), ("failures", "int64"),
                            ("ok_seconds", "float64"), ("ok_completion_tokens", "int64"),
                            ("tokens", "int64"), ("cost_usd", "float64")):
            frame[name] = table.column(name).to_numpy(zero_copy_only=False).astype(dtype)
        values = [v if v is not None else [None] * len(qs) for v in table.column("q").to_pylist()]
        matrix = np.array(values, dtype="float64").reshape(-1, len(qs))
        for i, quantile in enumerate(qs):
            frame[quantile_column(quantile)] = matrix[:, i]
        return frame

    def series_now(
        self,
        metric: str,
        start: TimeArg,
        end: TimeArg,
        *,
        labels: Mapping[str, str] | None = None,
        step_s: float | None = None,
        points: int | None = None,
    ) -> pd.DataFrame:
        """`series`, blocking the calling thread."""
        import numpy as np
        import pandas as pd

        from aidash_lib.sources.prometheus import choose_step
        from aidash_lib.store.history import coded_series_frame, empty_series_frame, window

        start_s, end_s = window(start, end)
        if step_s is not None and points is not None:
            raise ValueError("give step_s or points, not both")
        if points is not None:
            step_s = choose_step(start_s, end_s, points)
        if step_s is not None and step_s <= 0:
            raise ValueError(f"step_s must be positive, not {step_s}")
        wanted = {str(k): str(v) for k, v in (labels or {}).items()}

        def read(conn: sqlite3.Connection) -> tuple[dict[int, dict[str, str]], list[tuple]]:
            found: dict[int, dict[str, str]] = {}
            for series_id, raw in conn.execute(
                "SELECT id, labels FROM series WHERE metric = ?", (metric,)
            ):
                pairs = dict(json.loads(raw))
                if all(pairs.get(k) == v for k, v in wanted.items()):
                    found[series_id] = pairs
            if not found:
                return found, []
            ids = ",".join(str(int(i)) for i in found)
            both = (
                f"SELECT series_id, time_s AS t, value AS s, 1 AS n FROM samples "
                f"WHERE series_id IN ({ids}) AND time_s >= ? AND time_s <= ? "
                f"UNION ALL SELECT series_id, minute_s AS t, sum AS s, count AS n FROM rollups "
                f"WHERE series_id IN ({ids}) AND minute_s >= ? AND minute_s <= ?"
            )
            if step_s is None:
                sql = f"SELECT series_id, t, s / n FROM ({both})"
                args: tuple = (start_s, end_s, start_s, end_s)
            else:
                sql = (
                    f"SELECT series_id, CAST(t / ? AS INTEGER) * ? AS b, sum(s) / sum(n) "
                    f"FROM ({both}) GROUP BY series_id, b"
                )
                args = (step_s, step_s, start_s, end_s, start_s, end_s)
            return found, conn.execute(sql, args).fetchall()

        found, rows = self._sqlite_read(read)
        names = sorted({name for pairs in found.values() for name in pairs})
        if not rows:
            return empty_series_frame(names)
        series_ids = np.array([r[0] for r in rows], dtype="int64")
        times = np.array([r[1] for r in rows], dtype="float64")
        values = np.array([r[2] for r in rows], dtype="float64")
        ranked = sorted(found, key=lambda i: sorted(found[i].items()))
        rank = {series_id: k for k, series_id in enumerate(ranked)}
        row_rank = np.array([rank[i] for i in series_ids], dtype="int64")
        order = np.lexsort((times, row_rank))
        row_rank = row_rank[order]
        labels = {}
        for name in names:  # per series, then per row: no string is read row by row
            categories = sorted({v for v in (found[i].get(name) for i in ranked) if v is not None})
            code = {value: k for k, value in enumerate(categories)}
            by_rank = np.array([code.get(found[i].get(name), -1) for i in ranked], dtype="int64")
            labels[name] = pd.Categorical.from_codes(
                by_rank[row_rank], categories=pd.Index(categories, dtype="str"))
        return coded_series_frame(times[order], values[order], labels)

    def events_now(self, start: TimeArg, end: TimeArg, kind: Filter = None) -> pd.DataFrame:
        """`events`, blocking the calling thread."""
        import pandas as pd

        from aidash_lib.store.history import as_filter, empty_events_frame, epoch_to_time, window

        start_s, end_s = window(start, end)
        kinds = as_filter(kind)
        sql = "SELECT time_s, kind, subject, detail FROM events WHERE time_s >= ? AND time_s <= ?"
        args: list[Any] = [start_s, end_s]
        if kinds is not None:
            sql += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            args.extend(kinds)
        rows = self._sqlite_read(lambda conn: conn.execute(sql + " ORDER BY time_s, id", args)
                                 .fetchall())
        if not rows:
            return empty_events_frame()
        return pd.DataFrame(
            {
                "time": epoch_to_time([r[0] for r in rows]),
                "kind": pd.Categorical([r[1] for r in rows]),
                "subject": pd.array([r[2] for r in rows], dtype="str"),
                "detail": pd.array([r[3] for r in rows], dtype="str"),
            }
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _sqlite_read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run `read` in one read transaction (one consistent snapshot) on a read-only
        connection."""
        try:
            found = self.path.stat()
        except FileNotFoundError:
            raise StoreUnavailable(
                f"no store at {self.path} yet: start the recorder (`aidash record`) or check "
                "AIDASH_STORE"
            ) from None
        conn = self._read_connection((found.st_dev, found.st_ino))
        try:
            conn.execute("BEGIN")
            try:
                return read(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._drop_read_connection(conn)
            raise _unavailable(self.path, "read", exc) from exc

    def _read_connection(self, file_id: tuple[int, int]) -> sqlite3.Connection:
        """This thread's read-only connection to the file `file_id` names, opened if needed."""
        held = getattr(self._reader, "held", None)
        if held is not None:
            conn, held_file, generation = held
            if held_file == file_id and generation == self._readers_generation:
                return conn
            self._drop_read_connection(conn)
        try:
            conn = connect(self.path, readonly=True)
        except sqlite3.Error as exc:
            raise _unavailable(self.path, "read", exc) from exc
        conn.isolation_level = None
        with self._readers_lock:
            self._readers.add(conn)
            self._reader.held = (conn, file_id, self._readers_generation)
        return conn

    def _drop_read_connection(self, conn: sqlite3.Connection) -> None:
        """Close this thread's read connection (after an error, or for another file)."""
        self._reader.held = None
        with self._readers_lock:
            self._readers.discard(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        if self._duck is None:
            self._duck = duckdb.connect(config={"threads": max(os.cpu_count() or 1, 1)})
        return self._duck

    def _request_rows(
        self, select: str, start_s: float, end_s: float
    ) -> tuple[list[str], list[tuple]]:
        """The segment files overlapping the window and the head's rows in it, read in one
        SQLite transaction: one consistent view of the store."""

        def read(conn: sqlite3.Connection) -> tuple[list[str], list[tuple]]:
            files = [
                row[0]
                for row in conn.execute(
                    "SELECT file FROM segments WHERE kind = 'requests' AND end_s >= ? "
                    "AND start_s <= ? ORDER BY start_s",
                    (start_s, end_s),
                )
            ]
            head = conn.execute(
                f"SELECT {select} FROM requests WHERE started_s >= ? AND started_s <= ?",
                (start_s, end_s),
            ).fetchall()
            return files, head

        return self._sqlite_read(read)

    def _duck_query(
        self,
        sql: str,
        params: dict[str, Any],
        columns: Sequence[str],
        start_s: float,
        end_s: float,
    ) -> pa.Table:
        """Run `sql` (its `{source}` being the request rows: segments and head) in DuckDB."""
        import duckdb

        from aidash_lib.store.segments import rows_to_table

        names = list(dict.fromkeys(columns))
        select = ", ".join(names)

        for attempt in range(self.READ_RETRIES):
            files, head_rows = self._request_rows(select, start_s, end_s)
            head = rows_to_table(head_rows, names)
            source = f"SELECT {select} FROM head"
            query_params = dict(params)
            if files:
                source = f"SELECT {select} FROM read_parquet($files) UNION ALL {source}"
                query_params["files"] = [str(self.segments_dir / name) for name in files]
            with self._lock:
                duck = self._duckdb()
                duck.register("head", head)
                try:
                    return _to_arrow(duck.sql(sql.format(source=source), params=query_params))
                except duckdb.IOException as exc:
                    if attempt == self.READ_RETRIES - 1:
                        raise StoreError(
                            f"cannot read the segments of {self.path} ({self.segments_dir}): "
                            f"{exc}"
                        ) from exc
                finally:
                    duck.unregister("head")
        raise AssertionError("unreachable")

    # -- custom request queries (used by the request inspector, `aidash_lib.ui.inspector`) ---

    def latest_request_id_now(self) -> int:
        """The id of the newest request record ever written (0 when none): one cheap read for a
        live view to poll before it asks anything heavier (ids are never reused)."""

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'requests'"
            ).fetchone()
            return int(row[0]) if row else 0

        return self._sqlite_read(read)

    async def latest_request_id(self) -> int:
        """`latest_request_id_now`, off the event loop."""
        return await asyncio.to_thread(self.latest_request_id_now)

    def query_requests_now(
        self,
        run: Callable[[duckdb.DuckDBPyConnection, str, list[str]], T],
        start: TimeArg,
        end: TimeArg,
    ) -> T:
        """`run(duck, source, files)` over one snapshot of the attempts that started in
        `[start, end]`.

        `source` is a parenthesised SQL relation (no parameters) of those attempts with the
        segment columns: `id`, then the fields of `schema.RequestRecord`. It reads the Parquet
        segment `files` (absolute paths; a segment file never changes, so what is derived from
        one may be cached by its path) and the table `aidash_request_head` (the rows still in
        SQLite, already limited to the window). `run` may execute several statements on `duck`
        and register its own Arrow tables there (unregistering them); it runs under this
        object's lock, in the calling thread.
        """
        import duckdb

        from aidash_lib.store.history import window
        from aidash_lib.store.segments import SEGMENT_COLUMNS, rows_to_table

        start_s, end_s = window(start, end)
        select = ", ".join(SEGMENT_COLUMNS)

        for attempt in range(self.READ_RETRIES):
            files, head_rows = self._request_rows(select, start_s, end_s)
            source = f"SELECT {select} FROM aidash_request_head"
            paths = [str(self.segments_dir / name) for name in files]
            if paths:
                listed = ", ".join("'" + path.replace("'", "''") + "'" for path in paths)
                source = (
                    f"SELECT {select} FROM read_parquet([{listed}]) WHERE started_s >= "
                    f"{start_s!r} AND started_s <= {end_s!r} UNION ALL {source}"
                )
            with self._lock:
                duck = self._duckdb()
                duck.register("aidash_request_head", rows_to_table(head_rows))
                try:
                    return run(duck, f"({source})", paths)
                except duckdb.IOException:
                    if attempt == self.READ_RETRIES - 1:
                        raise
                finally:
                    duck.unregister("aidash_request_head")
        raise AssertionError("unreachable")

    async def query_requests(
        self,
        run: Callable[[duckdb.DuckDBPyConnection, str, list[str]], T],
        start: TimeArg,
        end: TimeArg,
    ) -> T:
        """`query_requests_now`, off the event loop."""
        return await asyncio.to_thread(self.query_requests_now, run, start, end)


def _to_arrow(relation: Any) -> pa.Table:
    """A DuckDB relation's rows as an Arrow table, across DuckDB versions."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        method = getattr(relation, name, None)
        if method is not None:
            result = method()
            return result.read_all() if hasattr(result, "read_all") else result
    raise RuntimeError("this DuckDB cannot return Arrow tables")


def _where_in(where: list[str], params: dict[str, Any], **filters: Filter) -> None:
    """Add `column IN (values)` to a DuckDB query for each filter given (None: no filter)."""
    from aidash_lib.store.history import as_filter

    for column, value in filters.items():
        values = as_filter(value)
        if values is not None:
            where.append(f"list_contains(${column}, {column})")
            params[column] = list(values)


def _requests_frame(table: pa.Table) -> pd.DataFrame:
    """Segment-shaped rows as the documented requests frame."""
    import pandas as pd
    import pyarrow as pa

    from aidash_lib.store.history import REQUEST_FRAME_DTYPES, empty_requests_frame, epoch_to_time

    if table.num_rows == 0:
        return empty_requests_frame()
    data: dict[str, Any] = {}
    for name, dtype in REQUEST_FRAME_DTYPES.items():
        if name in ("started", "ended"):
            data[name] = epoch_to_time(table.column(f"{name}_s").to_numpy())
            continue
        column = table.column(name)
        if dtype == "category":
            cat = column.dictionary_encode().to_pandas()
            data[name] = cat.cat.reorder_categories(sorted(cat.cat.categories))
        elif dtype == "boolean":
            data[name] = column.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
        elif dtype == "str":
            data[name] = column.to_pandas()
        else:
            data[name] = column.to_numpy(zero_copy_only=False).astype(dtype)
    return pd.DataFrame(data)
