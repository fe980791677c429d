"""analysis.py on frames of the history interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aidash_lib import analysis
from aidash_lib.store.sqlite import SqliteHistory, SqliteStore
from tests.unit.test_store_sqlite import NOW, record


@pytest.fixture
def requests(tmp_path: Path) -> pd.DataFrame:
    """600 attempts through the real store: 3 groups × 2 deployments, some failures."""
    path = tmp_path / "history.sqlite"
    SqliteStore(path).write_requests(record(i) for i in range(600))
    return SqliteHistory(path).requests_now(NOW - 7200, NOW)


def test_percentiles_are_exact_against_numpy(requests: pd.DataFrame) -> None:
    result = analysis.latency_percentiles(requests, by=("requested_group",), q=(0.5, 0.95, 0.99))
    assert list(result.columns) == ["requested_group", "requests", "p50_s", "p95_s", "p99_s"]
    assert str(result["requested_group"].dtype) == "category"
    assert str(result["requests"].dtype) == "int64"
    assert result.attrs["exact"] is True
    used = requests[(requests["status"] == "success") & ~requests["is_health_check"]]
    for row in result.itertuples(index=False):
        latencies = used.loc[used["requested_group"] == row.requested_group, "latency_s"]
        assert row.requests == len(latencies)
        np.testing.assert_array_equal(
            [row.p50_s, row.p95_s, row.p99_s], np.quantile(latencies.to_numpy(), [0.5, 0.95, 0.99])
        )


def test_percentiles_by_any_grouping_and_overall(requests: pd.DataFrame) -> None:
    two = analysis.latency_percentiles(requests, by=["requested_group", "provider"], q=[0.999])
    assert list(two.columns) == ["requested_group", "provider", "requests", "p99.9_s"]
    assert len(two) == 6
    overall = analysis.latency_percentiles(requests, by=None, status=None,
                                           include_health_checks=True)
    assert overall["requests"].iloc[0] == 600
    assert overall["p50_s"].iloc[0] == np.quantile(requests["latency_s"], 0.5)
    ttft = analysis.latency_percentiles(requests, column="ttft_s")
    assert set(ttft["p50_s"]) == {0.05}


def test_store_and_analysis_percentiles_agree(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    rng = np.random.default_rng(1)
    store = SqliteStore(path)
    store.write_requests(
        record(i, latency_s=float(x)) for i, x in enumerate(rng.lognormal(0, 1, 5000))
    )
    store.compact(NOW - 3600 + 3000, force=True)  # some rows in a segment, some in SQLite
    history = SqliteHistory(path)
    pushed = history.latency_percentiles_now(NOW - 7200, NOW, by=("requested_group", "status"),
                                             status=None)
    in_pandas = analysis.latency_percentiles(
        history.requests_now(NOW - 7200, NOW), by=("requested_group", "status"), status=None
    )
    pd.testing.assert_frame_equal(pushed, in_pandas, check_exact=False, rtol=1e-12)


def test_store_totals_give_the_same_provider_comparison_as_pandas(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    rng = np.random.default_rng(3)

    def attempt(i: int) -> object:
        changes: dict[str, object] = {"latency_s": float(rng.lognormal(0, 1))}
        if i % 97 == 5:
            changes.update(deployment_id=None, model=None, provider=None, status="failure")
        if i % 31 == 7:
            changes["latency_s"] = None  # unknown latency: not in the sums or percentiles
        if i >= 2990:
            changes.update(requested_group="only-failures", status="failure")
        return record(i, **changes)

    store = SqliteStore(path)
    store.write_requests(attempt(i) for i in range(3000))
    store.compact(NOW - 3600 + 2000, force=True)  # some rows in a segment, some in SQLite
    history = SqliteHistory(path)
    groups = sorted({str(g) for g in history.requests_now(NOW - 7200, NOW)["requested_group"]})
    assert "only-failures" in groups
    for filters, health in (({}, False), ({}, True), ({"model_group": groups[0]}, False),
                            ({"provider": "openai"}, False),
                            ({"model_group": groups[1:], "provider": "hosted_vllm"}, False)):
        records = history.requests_now(NOW - 7200, NOW, **filters)
        in_pandas = analysis.provider_comparison(records, include_health_checks=health)
        totals = history.request_totals_now(NOW - 7200, NOW, include_health_checks=health,
                                            **filters)
        pd.testing.assert_frame_equal(
            analysis.request_totals(records, include_health_checks=health), totals,
            check_categorical=False, check_exact=False, rtol=1e-12)
        pushed = analysis.comparison_from_totals(totals)
        pd.testing.assert_frame_equal(pushed, in_pandas, check_categorical=False,
                                      check_exact=False, rtol=1e-12)
    assert pushed["requests"].sum() > 0
    everything = history.request_totals_now(NOW - 7200, NOW)
    assert everything["deployment_id"].isna().any()  # attempts that reached no deployment
    assert np.isnan(everything.loc[everything["requested_group"] == "only-failures",
                                   "p95_s"]).all()


def test_health_checks_are_left_out_by_default(requests: pd.DataFrame) -> None:
    checks = requests["is_health_check"].sum()
    assert checks > 0
    table = analysis.throughput(requests, "10min")
    assert table["requests"].sum() == len(requests) - checks
    table = analysis.throughput(requests, "10min", include_health_checks=True)
    assert table["requests"].sum() == len(requests)


def test_throughput_per_interval_fills_empty_intervals(requests: pd.DataFrame) -> None:
    gap = requests[(requests["started"] < requests["started"].min() + pd.Timedelta("2min"))
                   | (requests["started"] >= requests["started"].min() + pd.Timedelta("5min"))]
    table = analysis.throughput(gap, "1min", by="requested_group")
    assert list(table.columns) == [
        "time", "requested_group", "requests", "failures", "prompt_tokens",
        "completion_tokens", "requests_per_s", "completion_tokens_per_s",
    ]
    assert str(table["time"].dtype) == "datetime64[ns, UTC]"
    minutes = table.groupby("time")["requests"].sum()
    assert len(minutes) == 10
    assert list(minutes.iloc[2:5]) == [0, 0, 0]
    first = table[table["time"] == table["time"].min()]
    assert first["requests"].sum() == 60 - 2  # two health checks in the first minute
    assert np.allclose(table["requests_per_s"], table["requests"] / 60)


def test_error_rates_per_attempt_and_per_call(requests: pd.DataFrame) -> None:
    rates = analysis.error_rates(requests)
    assert list(rates.columns) == [
        "requested_group", "requests", "failures", "error_rate", "top_error"
    ]
    used = requests[~requests["is_health_check"]]
    assert rates["failures"].sum() == (used["status"] == "failure").sum()
    assert set(rates["top_error"]) == {"APIConnectionError"}
    np.testing.assert_allclose(rates["error_rate"], rates["failures"] / rates["requests"])

    # A failed attempt followed by a successful fallback in the same call: not a failed call.
    fallback = requests[~requests["is_health_check"]].reset_index(drop=True)
    failed = fallback.index[fallback["status"] == "failure"]
    rescued = failed[failed + 1 < len(fallback)]
    fallback.loc[rescued + 1, "call_id"] = fallback.loc[rescued, "call_id"].to_numpy()
    per_call = analysis.error_rates(fallback, by=None, per="call")
    assert list(per_call.columns) == ["requests", "failures", "error_rate", "top_error"]
    assert per_call["requests"].iloc[0] == len(fallback) - len(rescued)
    assert per_call["failures"].iloc[0] == len(failed) - len(rescued)
    per_interval = analysis.error_rates(requests, interval="5min")
    assert "time" in per_interval.columns and per_interval["requests"].sum() == len(used)


def test_provider_comparison_matrix(requests: pd.DataFrame) -> None:
    matrix = analysis.provider_comparison(requests)
    assert list(matrix.columns) == [
        "requested_group", "deployment_id", "model", "provider", "requests", "failures",
        "share_of_group", "share_of_total", "error_rate", "p50_s", "p95_s", "p99_s",
        "tokens_per_s", "cost_per_1k_tokens_usd",
    ]
    assert len(matrix) == 6
    np.testing.assert_allclose(matrix.groupby("requested_group", observed=True)
                               ["share_of_group"].sum(), 1.0)
    assert matrix["share_of_total"].sum() == pytest.approx(1.0)
    row = matrix[matrix["deployment_id"] == "llama-8b-0"].iloc[0]
    mine = requests[(requests["deployment_id"] == "llama-8b-0") & ~requests["is_health_check"]]
    ok = mine[mine["status"] == "success"]
    assert row["requests"] == len(mine)
    assert row["error_rate"] == pytest.approx((mine["status"] == "failure").mean())
    assert row["p95_s"] == pytest.approx(np.quantile(ok["latency_s"], 0.95))
    assert row["tokens_per_s"] == pytest.approx(ok["completion_tokens"].sum()
                                                / ok["latency_s"].sum())
    assert row["cost_per_1k_tokens_usd"] == pytest.approx(
        1000 * mine["cost_usd"].sum() / (mine["prompt_tokens"] + mine["completion_tokens"]).sum()
    )


def test_downsample_keeps_the_peaks() -> None:
    rng = np.random.default_rng(5)
    n = 200_000
    values = rng.normal(size=n).cumsum()
    values[12_345] = 1e6  # a one-sample spike
    values[150_001] = -1e6
    values[99_999] = np.nan
    frame = pd.DataFrame({
        "time": pd.date_range("2026-01-01", periods=n, freq="s", tz="UTC"),
        "value": values,
    })
    thin = analysis.downsample(frame, 500)
    assert len(thin) <= 500
    assert list(thin.columns) == ["time", "value"]
    assert thin["value"].max() == 1e6 and thin["value"].min() == -1e6
    assert thin["time"].is_monotonic_increasing
    assert thin["time"].iloc[0] == frame["time"].iloc[0]
    assert thin["time"].iloc[-1] == frame["time"].iloc[-1]
    # Every kept row is an original row.
    merged = thin.merge(frame, on="time", suffixes=("", "_orig"))
    np.testing.assert_array_equal(merged["value"], merged["value_orig"])
    # Each bucket's extremes: the max of any span of the original appears nearby.
    assert analysis.downsample(frame.head(100), 500).equals(frame.head(100))


def test_downsample_per_series_and_irregular_times() -> None:
    times = np.sort(np.random.default_rng(2).uniform(0, 1e6, 50_000))
    a = np.sin(times / 1e4)
    frame = pd.DataFrame({
        "time": pd.to_datetime(np.r_[times, times], unit="s", utc=True),
        "value": np.r_[a, -a],
        "host": pd.Categorical(["a"] * len(times) + ["b"] * len(times)),
    })
    thin = analysis.downsample(frame, 200)
    assert thin.groupby("host", observed=True).size().max() <= 200
    for host, part in thin.groupby("host", observed=True):
        whole = frame[frame["host"] == host]["value"]
        assert part["value"].max() == whole.max() and part["value"].min() == whole.min()
    with pytest.raises(ValueError, match="at least 4"):
        analysis.downsample_indices(times, a, 3)


def test_empty_frames_give_empty_answers_with_the_same_columns(requests: pd.DataFrame) -> None:
    empty = requests.iloc[:0]
    for function in (analysis.latency_percentiles, analysis.throughput, analysis.error_rates,
                     analysis.provider_comparison):
        full, none = function(requests), function(empty)
        assert list(none.columns) == list(full.columns), function.__name__
        assert len(none) == 0, function.__name__
