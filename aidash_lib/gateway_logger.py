"""aidash's request logger, a LiteLLM `CustomLogger` that runs inside the gateway's process.

Enable it with one line in the proxy's config, and a one-line module beside that config::

    # config.yaml
    litellm_settings:
      callbacks: ["prometheus", "aidash_callbacks.handler"]

    # aidash_callbacks.py (same folder)
    from aidash_lib.gateway_logger import handler

Every attempt at a deployment (a failed primary and its fallback are two attempts sharing one
call id), every proxy-level error and every `/health` probe call becomes one `RequestRecord`
in the store at `$AIDASH_STORE` (default `~/.local/share/aidash/history.sqlite`).

It must never slow or break the gateway. A callback only converts LiteLLM's logging payload
into a small record and appends it to a bounded in-memory buffer; it never raises. A daemon
thread with its own SQLite connection writes the buffer in batches. While the store cannot be
written (read-only, missing, locked by another writer past the busy timeout, disk full), records
wait in the buffer (`$AIDASH_LOGGER_BUFFER`, 50,000 by default); when it is full the oldest are
dropped and counted. Batches are written every `$AIDASH_LOGGER_FLUSH_S` seconds (0.5), or sooner
once 200 records wait, and at exit. The loss is logged once per episode, kept in `stats()`,
and written to the store (meta keys `logger_dropped_records`, `logger_last_loss`, and a
`logger_loss` row in `events`) once it can be written again.

Importing this module pulls in the standard library only (and LiteLLM's base class where LiteLLM
is installed): never pandas, numpy or the Jupyter stack.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import signal
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aidash_lib.request_records import record_from_callback_kwargs
from aidash_lib.store.schema import RequestRecord, connect, create_tables, insert_requests

try:  # inside the gateway: LiteLLM's base class; elsewhere (unit tests, tools) a plain object
    from litellm.integrations.custom_logger import CustomLogger as _Base
except ImportError:
    _Base = object

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_STORE",
    "AidashRequestLogger",
    "handler",
    "store_path_from_env",
]

log = logging.getLogger("aidash.gateway_logger")

#: Same default as `aidash_lib.settings.DEFAULT_STORE` (not imported: settings needs pydantic).
DEFAULT_STORE = "~/.local/share/aidash/history.sqlite"
DEFAULT_BUFFER = 50_000
DEFAULT_FLUSH_S = 0.5
DEFAULT_BATCH = 200
#: Largest transaction; a long backlog is written in several.
MAX_TRANSACTION = 5_000
#: Pause between attempts while the store is unavailable, doubling up to the maximum.
RETRY_MIN_S = 1.0
RETRY_MAX_S = 5.0
#: Events already seen (LiteLLM sends some proxy errors to both the sync and async hook).
_SEEN_LIMIT = 4_096

_LOSS_KEY = "logger_dropped_records"
_LAST_LOSS_KEY = "logger_last_loss"


def store_path_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """`$AIDASH_STORE`, else the settings' default, with `~` expanded."""
    environ = os.environ if environ is None else environ
    return Path(os.path.expanduser(environ.get("AIDASH_STORE") or DEFAULT_STORE))


def _int_env(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def _float_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class AidashRequestLogger(_Base):  # type: ignore[misc,valid-type]
    """Buffers one record per attempt and writes them to the store from a daemon thread.

    The store is opened on the first record, not at import. Safe across `fork()`: a child
    starts with an empty buffer and its own writer.
    """

    def __init__(
        self,
        store_path: str | Path | None = None,
        *,
        buffer_max: int | None = None,
        flush_interval_s: float | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        if _Base is not object:
            super().__init__()
        self._store_arg = Path(store_path).expanduser() if store_path is not None else None
        self.buffer_max = buffer_max or _int_env("AIDASH_LOGGER_BUFFER", DEFAULT_BUFFER)
        self.flush_interval_s = flush_interval_s or _float_env("AIDASH_LOGGER_FLUSH_S",
                                                               DEFAULT_FLUSH_S)
        self.batch_size = batch_size
        self._init_state()
        _LOGGERS.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._buffer: collections.deque[RequestRecord] = collections.deque()
        self._seen: collections.OrderedDict[tuple[Any, ...], None] = collections.OrderedDict()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._store_ok = True
        self._retry_at = 0.0
        self._retry_s = RETRY_MIN_S
        self._inflight = 0  # records taken from the buffer, not yet written
        self._episode_lost = 0  # dropped since the store was last written
        self._episode_started: float | None = None
        self._warned_drop = False
        self._counts = dict.fromkeys(
            ("received", "written", "dropped", "duplicates", "skipped", "callback_errors",
             "write_failures"), 0)
        self._last_error: str | None = None

    @property
    def store_path(self) -> Path:
        """Where records go: the constructor's path, else `$AIDASH_STORE`, else the default."""
        return self._store_arg or store_path_from_env()

    # ---- LiteLLM's hooks: each only records, and never raises ---------------------------

    async def async_log_success_event(self, kwargs: Any, response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        self.record_event(kwargs)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        self.record_event(kwargs)

    def log_success_event(self, kwargs: Any, response_obj: Any,
                          start_time: Any, end_time: Any) -> None:
        self.record_event(kwargs)

    def log_failure_event(self, kwargs: Any, response_obj: Any,
                          start_time: Any, end_time: Any) -> None:
        self.record_event(kwargs)

    # ---- the public side ------------------------------------------------------------------

    def record_event(self, kwargs: Any) -> None:
        """Convert one callback's `kwargs` and buffer the record. Never raises."""
        try:
            record = record_from_callback_kwargs(kwargs) if isinstance(kwargs, Mapping) else None
            if record is None:
                with self._lock:
                    self._counts["skipped"] += 1
                return
            self.add(record)
        except Exception as exc:  # a bug here must never reach LiteLLM
            with self._lock:
                self._counts["callback_errors"] += 1
            self._last_error = f"callback: {type(exc).__name__}: {exc}"[:300]

    def add(self, record: RequestRecord) -> None:
        """Buffer one record (dropping the oldest when full) and start the writer if needed."""
        key = (record.call_id, record.deployment_id, record.started_s, record.status)
        with self._lock:
            if key in self._seen:
                self._counts["duplicates"] += 1
                return
            self._seen[key] = None
            if len(self._seen) > _SEEN_LIMIT:
                self._seen.popitem(last=False)
            self._counts["received"] += 1
            if len(self._buffer) >= self.buffer_max:
                self._buffer.popleft()
                self._note_drop(1)
            self._buffer.append(record)
            pending = len(self._buffer)
        if self._thread is None:
            self._start_writer()
        elif pending >= self.batch_size and self._store_ok:
            self._wake.set()
        if not _signals_wrapped:
            _drain_on_shutdown_signals()

    def stats(self) -> dict[str, Any]:
        """Counters of this process's logger: what was received, written, dropped, and why."""
        with self._lock:
            buffered = len(self._buffer)
            counts = dict(self._counts)
        return {
            "store": str(self.store_path),
            "store_ok": self._store_ok,
            "buffered": buffered,
            "buffer_max": self.buffer_max,
            **counts,
            "last_error": self._last_error,
            "pid": self._pid,
        }

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Ask the writer to write everything now and wait; True when all was written, False
        after one failed attempt or `timeout_s`. For tests and tools: the gateway never needs it."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            failures = self._counts["write_failures"]
        self._retry_at = 0.0
        while True:
            with self._lock:
                if not self._buffer and not self._inflight:
                    return True
                if self._counts["write_failures"] > failures:
                    return False
            if self._thread is None or not self._thread.is_alive():
                return False
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.01)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer after its last flush (registered with `atexit`)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)

    # ---- the writer -----------------------------------------------------------------------

    def _start_writer(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="aidash-request-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        while not self._stop.is_set():
            woken = self._wake.wait(min(self.flush_interval_s, _POLL_S))
            now = time.monotonic()
            if not (woken or _draining or now >= next_flush):
                continue
            self._wake.clear()
            next_flush = now + self.flush_interval_s
            try:
                self._write_pending()
            except Exception as exc:  # the writer must outlive any fault
                self._last_error = f"writer: {type(exc).__name__}: {exc}"[:300]
        try:
            self._write_pending(force=True)
        except Exception as exc:
            self._last_error = f"writer: {type(exc).__name__}: {exc}"[:300]
        self._close_conn()

    def _warn_about_drops(self) -> None:
        """Log the first drop of an episode, from the writer (never on the request path)."""
        if self._episode_lost and not self._warned_drop:
            self._warned_drop = True
            log.warning(
                "aidash request logger: buffer full (%d records); dropping the oldest until "
                "the store at %s can be written (the loss is counted)",
                self.buffer_max, self.store_path)

    def _write_pending(self, force: bool = False) -> bool:
        """Write the buffer in transactions; False if the store could not be written."""
        try:
            return self._write_all(force)
        finally:
            self._warn_about_drops()

    def _write_all(self, force: bool) -> bool:
        if not force and time.monotonic() < self._retry_at:
            return False
        while True:
            with self._lock:
                if not self._buffer:
                    return True
                n = min(len(self._buffer), MAX_TRANSACTION)
                batch = [self._buffer.popleft() for _ in range(n)]
                self._inflight = n
            try:
                conn = self._open()
                insert_requests(conn, batch)
            except Exception as exc:
                self._requeue(batch)
                self._on_failure(exc)
                return False
            self._on_success(conn)
            with self._lock:
                self._inflight = 0
                self._counts["written"] += n

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect(self.store_path)
            try:
                create_tables(conn)
            except Exception:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                self._last_error = f"close: {type(exc).__name__}: {exc}"[:300]

    def _requeue(self, batch: list[RequestRecord]) -> None:
        """Put an unwritten batch back in front, keeping its newest records if space is short."""
        with self._lock:
            room = self.buffer_max - len(self._buffer)
            kept = batch[-room:] if 0 < room < len(batch) else (batch if room > 0 else [])
            self._note_drop(len(batch) - len(kept))
            self._buffer.extendleft(reversed(kept))
            self._inflight = 0

    def _note_drop(self, n: int) -> None:
        """Count `n` dropped records (the caller holds the lock; the writer logs it)."""
        if n <= 0:
            return
        self._counts["dropped"] += n
        self._episode_lost += n
        if self._episode_started is None:
            self._episode_started = time.time()

    def _on_failure(self, exc: Exception) -> None:
        with self._lock:
            self._counts["write_failures"] += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        self._close_conn()
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        if self._store_ok:
            self._store_ok = False
            if self._episode_started is None:
                self._episode_started = time.time()
            log.warning(
                "aidash request logger: cannot write the store at %s (%s); the gateway keeps "
                "serving, records wait in memory (up to %d) and writes are retried",
                self.store_path, self._last_error, self.buffer_max)

    def _on_success(self, conn: sqlite3.Connection) -> None:
        self._retry_at = 0.0
        self._retry_s = RETRY_MIN_S
        was_down = not self._store_ok
        self._store_ok = True
        with self._lock:
            lost, since = self._episode_lost, self._episode_started
            self._episode_lost, self._episode_started = 0, None
            self._warned_drop = False
        if lost:
            try:
                _record_loss(conn, lost, since, self._last_error)
            except Exception as exc:  # the next success reports it
                with self._lock:
                    self._episode_lost += lost
                    self._episode_started = since
                self._last_error = f"loss report: {type(exc).__name__}: {exc}"[:300]
                return
        if was_down or lost:
            log.warning(
                "aidash request logger: the store at %s is writable again; %d records were "
                "lost while it was not", self.store_path, lost)

    def _after_fork(self) -> None:
        """In a forked child: the parent's buffer, lock and thread are not ours."""
        self._init_state()


def _record_loss(conn: sqlite3.Connection, lost: int, since: float | None,
                 reason: str | None) -> None:
    """Make a loss visible in the store: a cumulative meta counter, the last episode as JSON,
    and an `events` row where the store has that table."""
    now = time.time()
    detail = json.dumps({"lost": lost, "since_s": since, "until_s": now, "reason": reason,
                         "pid": os.getpid()})
    with conn:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
            "value = CAST(CAST(meta.value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)",
            (_LOSS_KEY, str(lost)))
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
            "value = excluded.value", (_LAST_LOSS_KEY, detail))
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if {"time_s", "kind", "subject", "detail"} <= columns:
            conn.execute(
                "INSERT INTO events (time_s, kind, subject, detail) VALUES (?, ?, ?, ?)",
                (now, "logger_loss", "request_logger", detail))


_LOGGERS: weakref.WeakSet[AidashRequestLogger] = weakref.WeakSet()

#: How often a writer looks at `_draining` between flushes.
_POLL_S = 0.05
#: Set (a plain assignment, no lock: it runs in a signal handler) once the server is told to
#: stop; writers then write every `_POLL_S`.
_draining = False
_signals_wrapped = False


def _drain_on_shutdown_signals() -> None:
    """Start draining the buffers as soon as the server is told to stop.

    uvicorn (under `litellm`) catches SIGTERM/SIGINT, shuts down gracefully, then restores the
    default handler and raises the signal again: the process dies by it and `atexit` never
    runs. So the server's own handler is wrapped: ours only sets a flag, then calls it.
    Nothing is wrapped outside the main thread or where no Python handler is installed.
    """
    global _signals_wrapped
    if _signals_wrapped or threading.current_thread() is not threading.main_thread():
        return
    _signals_wrapped = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def on_signal(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> Any:
                global _draining
                _draining = True
                return previous(signum, frame)

            signal.signal(sig, on_signal)
        except (ValueError, OSError, RuntimeError) as exc:
            log.debug("aidash request logger: cannot watch signal %s: %s", sig, exc)


def _reset_after_fork() -> None:
    for logger in list(_LOGGERS):
        logger._after_fork()


def _close_all() -> None:
    for logger in list(_LOGGERS):
        try:
            logger.close()
        except Exception as exc:
            log.warning("aidash request logger: flush at exit failed: %s", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_all)

#: The instance LiteLLM's config names: `callbacks: ["aidash_callbacks.handler"]`.
handler = AidashRequestLogger()
