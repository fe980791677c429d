"""Exact P50/P95/P99 by model group over 1,000,000 stored requests, against pandas.

The floor is pandas `groupby().quantile()` on the same rows already in memory (group as
category); the value is `SqliteHistory.latency_percentiles` over the store (Parquet segments
made by `maintain()` plus a small SQLite head), called as a notebook would. Also printed: the
ingest rate of `SqliteStore.write_requests` against a bare `executemany` of the same rows, the
compaction, reading all rows back as a DataFrame, the provider comparison from the store's totals
against pandas on every row, and downsampling 1,000,000 points to 2,000.

Run: `python benchmarks/history.py [--rows N] [--repeat K]`. The last line is the JSON figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from aidash_lib.analysis import (
    comparison_from_totals,
    downsample,
    downsample_indices,
    provider_comparison,
)
from aidash_lib.store.schema import (
    REQUEST_COLUMNS,
    RequestRecord,
    connect,
    create_tables,
)
from aidash_lib.store.sqlite import SqliteHistory, SqliteStore

GROUPS = 12
BATCH = 1_000
QUANTILES = (0.5, 0.95, 0.99)
TARGET = 2.0


def synthetic_records(rows: int, end_s: float, seed: int = 7) -> list[RequestRecord]:
    """`rows` attempts over the hours before `end_s`: 12 groups, lognormal latencies."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, GROUPS, rows)
    mu = rng.uniform(-1.0, 1.5, GROUPS)
    latency = rng.lognormal(mu[group], 0.7)
    started = np.sort(end_s - rows * 0.05 + rng.uniform(0, rows * 0.05, rows))
    deployment = rng.integers(0, 2, rows)
    failed = rng.random(rows) < 0.02
    prompt = rng.integers(20, 2000, rows)
    completion = rng.integers(1, 800, rows)
    names = [f"group-{k:02d}" for k in range(GROUPS)]
    records = []
    for i, (g, d, bad, start, lat, p, c) in enumerate(zip(
        group.tolist(), deployment.tolist(), failed.tolist(), started.tolist(),
        latency.tolist(), prompt.tolist(), completion.tolist(), strict=True,
    )):
        name = names[g]
        records.append(
            RequestRecord(
                call_id=f"call-{i}",
                started_s=start,
                ended_s=start + lat,
                requested_group=name,
                deployment_id=f"{name}-dep{d}",
                model=f"{name}-model",
                provider="openai" if d else "hosted_vllm",
                api_base=f"http://10.0.0.{d + 1}:8000/v1",
                status="failure" if bad else "success",
                latency_s=lat,
                ttft_s=lat * 0.2,
                prompt_tokens=0 if bad else p,
                completion_tokens=0 if bad else c,
                cost_usd=0.0 if bad else (p + c) * 1e-6,
                error_class="APIConnectionError" if bad else None,
                error_message="Connection refused" if bad else None,
            )
        )
    return records


def median_s(fn: Callable[[], object], repeat: int) -> float:
    """The median time of `fn` over `repeat` runs, after one to warm up."""
    return medians_s([fn], repeat)[0]


def medians_s(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median times of several functions run in turn, round after round, so that a change in
    the machine's load weighs on all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def ingest(records: list[RequestRecord], folder: Path) -> tuple[float, float]:
    """Seconds to write all records through the store, and the same rows through a bare
    `executemany`, in batches of `BATCH`, taking turns batch by batch."""
    rows = list(map(operator.attrgetter(*REQUEST_COLUMNS), records))
    bare = connect(folder / "bare.sqlite")
    create_tables(bare)
    insert = (
        f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in REQUEST_COLUMNS)})"
    )
    store = SqliteStore(folder / "history.sqlite")
    bare_s = store_s = 0.0
    for i in range(0, len(rows), BATCH):
        start = time.perf_counter()
        with bare:
            bare.executemany(insert, rows[i : i + BATCH])
        middle = time.perf_counter()
        store.write_requests(records[i : i + BATCH])
        bare_s += middle - start
        store_s += time.perf_counter() - middle
    bare.close()
    store.close()
    return store_s, bare_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rows = args.rows

    now = time.time()
    with tempfile.TemporaryDirectory(prefix="aidash-bench-") as tmp:
        folder = Path(tmp)
        made = time.perf_counter()
        records = synthetic_records(rows, now)
        print(f"generated {rows:,} synthetic records in {time.perf_counter() - made:.1f} s")

        store_s, bare_s = ingest(records, folder)
        print(
            f"ingest, batches of {BATCH:,}: store {rows / store_s:,.0f} records/s "
            f"({store_s:.2f} s), bare executemany {rows / bare_s:,.0f} rows/s ({bare_s:.2f} s), "
            f"ratio {store_s / bare_s:.2f}"
        )

        store = SqliteStore(folder / "history.sqlite")
        start = time.perf_counter()
        moved = store.compact(now_s=now)
        compact_s = time.perf_counter() - start
        head = store.ensure_open().execute("SELECT count(*) FROM requests").fetchone()[0]
        files = store.ensure_open().execute("SELECT count(*) FROM segments").fetchone()[0]
        store.close()
        print(
            f"compact(): {moved:,} rows into {files} Parquet segments in {compact_s:.2f} s "
            f"({moved / compact_s:,.0f} rows/s); {head:,} rows left in the SQLite head"
        )

        ok = [r for r in records if r.status == "success" and not r.is_health_check]
        memory = pd.DataFrame(
            {
                "requested_group": pd.Categorical([r.requested_group for r in ok]),
                "latency_s": np.array([r.latency_s for r in ok], dtype="float64"),
            }
        )
        del records, ok

        def floor() -> pd.Series:
            return memory.groupby("requested_group", observed=True)["latency_s"].quantile(
                list(QUANTILES)
            )

        history = SqliteHistory(folder / "history.sqlite")
        loop = asyncio.new_event_loop()
        window = (now - rows, now + 3600)

        def ours() -> pd.DataFrame:
            return loop.run_until_complete(
                history.latency_percentiles(*window, by=("requested_group",), q=QUANTILES)
            )

        ours_s, floor_s = medians_s([ours, floor], args.repeat)

        expected = floor().unstack()
        got = ours().set_index("requested_group")[["p50_s", "p95_s", "p99_s"]]
        diff = float(np.max(np.abs(got.to_numpy() - expected.to_numpy())))
        print(
            f"P50/P95/P99 by model group over {len(memory):,} successful requests: "
            f"store {ours_s * 1000:.1f} ms, pandas in memory {floor_s * 1000:.1f} ms "
            f"(median of {args.repeat}); largest difference {diff:.2e} s"
        )

        read_s = median_s(lambda: history.requests_now(*window), 3)
        print(f"requests(): all {rows:,} rows as a typed DataFrame in {read_s:.2f} s")

        everything = history.requests_now(*window)
        totals_s, in_memory_s = medians_s(
            [lambda: comparison_from_totals(history.request_totals_now(*window)),
             lambda: provider_comparison(everything)], 3)
        try:
            pd.testing.assert_frame_equal(
                provider_comparison(everything),
                comparison_from_totals(history.request_totals_now(*window)),
                check_categorical=False, check_exact=False, rtol=1e-9)
            same = True
        except AssertionError:
            same = False
        print(
            f"provider comparison over {rows:,} requests: from the store's totals "
            f"{totals_s * 1000:.0f} ms; pandas on the rows already in memory "
            f"{in_memory_s * 1000:.0f} ms, after reading them {read_s + in_memory_s:.2f} s "
            f"(the panel's way before request_totals); identical frames: {same}"
        )
        history.close()
        loop.close()

    times = pd.date_range("2026-01-01", periods=1_000_000, freq="s", tz="UTC")
    values = np.random.default_rng(3).normal(size=1_000_000).cumsum()
    series = pd.DataFrame({"time": times, "value": values})
    arrays_s, frame_s = medians_s(
        [lambda: downsample_indices(times.asi8, values, 2000), lambda: downsample(series, 2000)],
        args.repeat,
    )
    kept = downsample(series, 2000)
    print(
        f"downsample 1,000,000 points to {len(kept):,}: {frame_s * 1000:.1f} ms "
        f"(arrays {arrays_s * 1000:.1f} ms); max kept {kept['value'].max() == values.max()}, "
        f"min kept {kept['value'].min() == values.min()}"
    )

    print(
        json.dumps(
            {
                "name": "history_percentiles_1m_requests",
                "value": round(ours_s, 4),
                "floor": round(floor_s, 4),
                "ratio": round(ours_s / floor_s, 3),
                "target": TARGET,
                "unit": "s",
            }
        )
    )


if __name__ == "__main__":
    main()
