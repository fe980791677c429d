"""Immutable columnar segments of request records: Parquet files beside the SQLite store.

The recorder's `SqliteStore.maintain()` moves request rows whose time range is closed out of
SQLite into Parquet files in `<store>.segments/`, and merges small segments into larger ones.
A file is written under a temporary name and renamed when complete; its bookkeeping row in the
`segments` table is committed after, in the same transaction that deletes the rows it holds.
Readers list segments and read the SQLite head in one read transaction, so they see every
request exactly once; DuckDB then answers over both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aidash_lib.store.schema import REQUEST_COLUMNS

#: Columns of a segment (and of the head rows read for a query): the row id, then the record.
SEGMENT_COLUMNS: tuple[str, ...] = ("id", *REQUEST_COLUMNS)

_BOOL = frozenset({"cache_hit", "stream", "is_health_check"})
_INT = frozenset({"id", "prompt_tokens", "completion_tokens", "attempted_fallbacks",
                  "attempted_retries"})
_FLOAT = frozenset({"started_s", "ended_s", "latency_s", "ttft_s", "cost_usd"})

#: The Arrow schema every segment is written with.
SEGMENT_SCHEMA = pa.schema(
    [
        pa.field(
            name,
            pa.bool_() if name in _BOOL
            else pa.int64() if name in _INT
            else pa.float64() if name in _FLOAT
            else pa.string(),
        )
        for name in SEGMENT_COLUMNS
    ]
)

#: Rows per Parquet row group: small enough for both cores to share a file.
ROW_GROUP_ROWS = 131_072

#: Columns that analysis reads are stored uncompressed (decoding them is most of a query's
#: time); the rest (ids, messages, hashes) are compressed with zstd.
HOT_COLUMNS = frozenset({
    "requested_group", "deployment_id", "model", "provider", "status", "started_s",
    "latency_s", "ttft_s", "prompt_tokens", "completion_tokens", "cost_usd", "is_health_check",
})
COMPRESSION = {name: "none" if name in HOT_COLUMNS else "zstd" for name in SEGMENT_COLUMNS}

#: Rows are sorted by these inside a segment: a group's rows lie together, so grouping and
#: filtering by model group touch contiguous runs (measured: about 1.5x faster percentiles
#: than rows in time order). Segments themselves are chosen by time from their bookkeeping.
SORT_KEYS = (("requested_group", "ascending"), ("status", "ascending"),
             ("started_s", "ascending"), ("id", "ascending"))

FILE_PREFIX = "requests-"
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class SegmentFile:
    """A complete segment file and what its bookkeeping row records."""

    file: str  # name inside the segments folder
    start_s: float  # earliest started_s in the file
    end_s: float  # latest started_s in the file
    rows: int
    min_id: int
    max_id: int
    bytes: int


def segments_dir(store_path: str | Path) -> Path:
    """The folder of a store's segments: `<store>.segments`."""
    return Path(f"{store_path}.segments")


def rows_to_table(rows: Sequence[tuple], columns: Sequence[str] = SEGMENT_COLUMNS) -> pa.Table:
    """Rows read from SQLite (in `columns` order) as an Arrow table typed like a segment."""
    fields = [SEGMENT_SCHEMA.field(name) for name in columns]
    if not rows:
        return pa.table({f.name: pa.array([], f.type) for f in fields})
    arrays = []
    for field_, values in zip(fields, zip(*rows, strict=True), strict=True):
        if field_.name in _BOOL:
            values = [None if v is None else bool(v) for v in values]
        arrays.append(pa.array(values, field_.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_segment(directory: Path, table: pa.Table) -> SegmentFile:
    """Write `table` as a new segment file (rows sorted by `SORT_KEYS`), atomically.

    The data reaches the disk (fsync) before the rename, so a crash leaves either no file or a
    whole one; a whole file without a bookkeeping row is an orphan, removed by `orphans`.
    """
    if table.num_rows == 0:
        raise ValueError("a segment cannot be empty")
    table = table.select(list(SEGMENT_COLUMNS)).cast(SEGMENT_SCHEMA)
    table = table.sort_by(list(SORT_KEYS))
    directory.mkdir(parents=True, exist_ok=True)
    start_s, end_s = (float(v.as_py()) for v in pc.min_max(table.column("started_s")).values())
    min_id, max_id = (int(v.as_py()) for v in pc.min_max(table.column("id")).values())
    name = f"{FILE_PREFIX}{int(start_s * 1000)}-{int(end_s * 1000)}-{uuid.uuid4().hex[:12]}.parquet"
    temp = directory / f"{TEMP_PREFIX}{name}"
    final = directory / name
    try:
        pq.write_table(
            table,
            temp,
            row_group_size=ROW_GROUP_ROWS,
            compression=COMPRESSION,
            use_dictionary=True,
            write_statistics=True,
        )
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return SegmentFile(
        file=name,
        start_s=start_s,
        end_s=end_s,
        rows=table.num_rows,
        min_id=min_id,
        max_id=max_id,
        bytes=final.stat().st_size,
    )


def read_segments(directory: Path, files: Sequence[str]) -> pa.Table:
    """The rows of several segment files as one table."""
    tables = [pq.read_table(directory / name, schema=SEGMENT_SCHEMA) for name in files]
    return pa.concat_tables(tables) if tables else rows_to_table([])


def orphans(directory: Path, known: set[str]) -> list[Path]:
    """Files in the segments folder that no bookkeeping row names (left by a crash)."""
    if not directory.is_dir():
        return []
    return [
        path
        for path in directory.iterdir()
        if path.is_file()
        and path.name not in known
        and (path.name.startswith(TEMP_PREFIX) or path.name.startswith(FILE_PREFIX))
    ]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

