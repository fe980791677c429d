"""The panels' series helpers (`aidash_lib.ui.common`) against their plain pandas definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aidash_lib.ui.common import last_value, last_values, rate_total


def _reference_last_values(frame: pd.DataFrame, by: str) -> dict[str, tuple[float, float]]:
    newest = frame.sort_values("time", kind="stable").groupby(by, observed=True).tail(1)
    return {str(r[by]): (float(r["value"]), pd.Timestamp(r["time"]).value / 1e9)
            for _, r in newest.iterrows()}


def _reference_rate_total(frame: pd.DataFrame, per_s: float, by: str | None
                          ) -> dict[str, float]:
    out = {}
    parts = frame.groupby(by, observed=True) if by else [("", frame)]
    for key, part in parts:
        part = part.sort_values("time", kind="stable")
        times = part["time"].map(lambda t: pd.Timestamp(t).value / 1e9).to_numpy("float64")
        dt = np.diff(times)
        typical = float(np.median(dt)) if len(dt) else 15.0
        dt = np.where(dt > 3 * typical, typical, dt)
        spans = np.concatenate([[typical], dt])
        values = part["value"].to_numpy("float64")
        out[str(key[0] if isinstance(key, tuple) else key)] = float(
            np.nansum(values * spans) / per_s)
    return out


def _frame(seed: int) -> pd.DataFrame:
    """Two series of a label, shuffled, with a gap, a NaN and one series of a single point."""
    rng = np.random.default_rng(seed)
    times = np.concatenate([np.arange(0, 600, 15.0), np.arange(1200, 1500, 15.0)])
    rows = [(1.7e9 + t, rng.uniform(0, 50), "gpt") for t in times]
    rows += [(1.7e9 + t + 3, rng.uniform(0, 5), "llama") for t in times[::3]]
    rows += [(1.7e9 + 900, 2.5, "qwen")]
    rows[7] = (rows[7][0], float("nan"), "gpt")
    frame = pd.DataFrame(rows, columns=["epoch", "value", "model_group"])
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return pd.DataFrame({
        "time": pd.to_datetime(frame["epoch"], unit="s", utc=True),
        "value": frame["value"],
        "model_group": frame["model_group"].astype("category"),
    })


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_helpers_agree_with_their_pandas_definitions(seed: int) -> None:
    frame = _frame(seed)
    assert last_values(frame, "model_group") == _reference_last_values(frame, "model_group")
    for by in ("model_group", None):
        for per_s in (60.0, 3600.0):
            got, want = rate_total(frame, per_s, by), _reference_rate_total(frame, per_s, by)
            assert got.keys() == want.keys()
            assert got == pytest.approx(want, rel=1e-12)
    gpt = frame[frame["model_group"] == "gpt"]
    value, at = last_value(gpt)
    newest = gpt.loc[gpt["time"].idxmax()]
    assert (value, at) == (float(newest["value"]), pd.Timestamp(newest["time"]).value / 1e9)
    # A frame in microseconds (what pandas makes of some sources) gives the same epochs.
    assert last_value(gpt.astype({"time": "datetime64[us, UTC]"})) == (value, at)


def test_empty_frames_give_nothing() -> None:
    empty = _frame(0).iloc[:0]
    assert last_value(empty) == (None, None)
    assert last_values(empty, "model_group") == {}
    assert rate_total(empty) == {}
    assert last_values(_frame(0), "no_such_label") == {}
