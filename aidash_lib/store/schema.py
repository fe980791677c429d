"""The embedded store's tables and the per-request record, with the standard library only.

The gateway's logger (inside LiteLLM's process, another Python environment) writes request
records through this module, so it must never import pandas, pyarrow or anything of the
Jupyter stack. Everything that analyses history lives elsewhere.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

#: How long a writer waits for another writer's lock before giving up on one batch.
BUSY_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class RequestRecord:
    """One attempt at one deployment, as the gateway saw it. Never a prompt, response or key.

    An attempt and its fallback share `call_id`. Times are epoch seconds (UTC); durations are
    seconds; `cost_usd` is LiteLLM's own estimate.
    """

    call_id: str
    started_s: float
    ended_s: float
    requested_group: str | None
    deployment_id: str | None
    model: str | None
    provider: str | None
    api_base: str | None
    status: str  # "success" | "failure"
    latency_s: float | None
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error_class: str | None = None
    error_code: str | None = None
    normalized_error: str | None = None
    error_message: str | None = None  # first line only, never a traceback
    attempted_fallbacks: int = 0
    attempted_retries: int = 0
    cache_hit: bool | None = None
    stream: bool = False
    call_type: str | None = None
    key_alias_hash: str | None = None
    is_health_check: bool = False
    source: str = "logger"  # "logger" | "spend_logs"


@dataclass(frozen=True)
class Sample:
    """One value of one series at one time: what the recorder writes for every metric.

    `metric` names what is measured with its unit (`gateway_requests_per_min`,
    `gpu_temperature_c`, `system_cpu_percent`); `labels` are sorted (name, value) pairs
    (`model_group`, `deployment_id`, `gpu`, ...).
    """

    metric: str
    labels: tuple[tuple[str, str], ...]
    time_s: float
    value: float


@dataclass(frozen=True)
class Event:
    """Something that happened at a time: an alert began or ended, a config was saved, a
    service was restarted, a source went down or came back."""

    time_s: float
    kind: str  # "alert" | "config_save" | "service_action" | "source_fault" | ...
    subject: str
    detail: str = ""


REQUEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RequestRecord))

DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');

-- AUTOINCREMENT: ids are never reused, even after compaction empties this table, so a
-- request keeps one id whether it is read from here or from a columnar segment.
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    started_s REAL NOT NULL,
    ended_s REAL NOT NULL,
    requested_group TEXT,
    deployment_id TEXT,
    model TEXT,
    provider TEXT,
    api_base TEXT,
    status TEXT NOT NULL,
    latency_s REAL,
    ttft_s REAL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    error_class TEXT,
    error_code TEXT,
    normalized_error TEXT,
    error_message TEXT,
    attempted_fallbacks INTEGER NOT NULL DEFAULT 0,
    attempted_retries INTEGER NOT NULL DEFAULT 0,
    cache_hit INTEGER,
    stream INTEGER NOT NULL DEFAULT 0,
    call_type TEXT,
    key_alias_hash TEXT,
    is_health_check INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT 'logger'
);
CREATE INDEX IF NOT EXISTS requests_by_time ON requests (ended_s);
CREATE INDEX IF NOT EXISTS requests_by_call ON requests (call_id);
CREATE INDEX IF NOT EXISTS requests_by_start ON requests (started_s);

-- One row per series: a metric name and its sorted labels as a JSON array of [name, value].
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (metric, labels)
);

-- Raw samples, kept for the raw retention (48 h by default).
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL REFERENCES series (id),
    time_s REAL NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, time_s)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (time_s);

-- Per-minute rollups of samples older than the raw retention, kept for the rollup retention.
CREATE TABLE IF NOT EXISTS rollups (
    series_id INTEGER NOT NULL REFERENCES series (id),
    minute_s INTEGER NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    last REAL NOT NULL,
    last_time_s REAL NOT NULL,
    PRIMARY KEY (series_id, minute_s)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_by_time ON rollups (minute_s);

CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time_s REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time_s);

-- Immutable columnar segments (Parquet files in `<store>.segments/`) holding request rows
-- moved out of `requests`. A row here is committed only after its file is complete, in the
-- same transaction that deletes the rows it holds from `requests`.
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL DEFAULT 'requests',
    file TEXT NOT NULL UNIQUE,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    rows INTEGER NOT NULL,
    min_id INTEGER NOT NULL,
    max_id INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_s REAL NOT NULL
);

-- Who holds the recorder lock, for people to read; the lock itself is an flock on the
-- sidecar file `<store>.recorder.lock`, released by the kernel when its holder dies.
CREATE TABLE IF NOT EXISTS recorder (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    since_s REAL NOT NULL
);
"""


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the store in WAL mode (one writer, many readers in other processes).

    A read-only connection may be closed from another thread than the one using it (a reader
    that keeps one connection per thread closes them all at once)."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def create_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(DDL)


_INSERT = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in REQUEST_COLUMNS)})"
)


def insert_requests(conn: sqlite3.Connection, records: Iterable[RequestRecord]) -> int:
    """Insert a batch in one transaction: readers see all of it or none of it."""
    rows = [dataclasses.astuple(record) for record in records]
    with conn:
        conn.executemany(_INSERT, rows)
    return len(rows)
