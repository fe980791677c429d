"""The time-series chart: one point per pixel at most, threshold lines, one message per update,
gaps drawn as gaps; and the panel base's formatting, masking and error wording."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aidash_lib.settings import Threshold
from aidash_lib.store.history import series_frame
from aidash_lib.store.sqlite import StoreError
from aidash_lib.ui.base import (
    describe_error,
    fmt_bytes,
    fmt_seconds,
    html_table,
    level,
    mask_secrets,
    values_table,
)
from aidash_lib.ui.charts import (
    CRITICAL_COLOUR,
    WARN_COLOUR,
    TimeSeriesChart,
    frame_lines,
    nice_ticks,
    series_step,
    threshold_pairs,
)
from tests.unit.chart_rows import drawn_threshold_levels, drawn_thresholds

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NOW = 1_800_000_000.0


def count_messages(widget: Any) -> list[list[str]]:
    """Record what each state message of `widget` carries."""
    sent: list[list[str]] = []
    original = widget.send_state

    def send_state(key: Any = None) -> None:
        sent.append(sorted(key) if key is not None else ["*"])
        original(key)

    widget.send_state = send_state
    return sent


def raw_frame(n: int, *, labels: dict[str, list[str]] | None = None, step_s: float = 1.0
              ) -> pd.DataFrame:
    times = NOW - n * step_s + np.arange(n) * step_s
    values = np.sin(np.arange(n) / 50.0) * 50 + 50
    return series_frame(times, values, labels or {})


def test_series_step_gives_at_most_the_points_asked() -> None:
    for span in (900, 3600, 6 * 3600, 86400, 7 * 86400):
        for points in (200, 420, 1000):
            step = series_step(NOW - span, NOW, points)
            assert span / step <= points
    assert series_step(NOW - 3600, NOW, 420) == 10
    assert series_step(NOW - 7 * 86400, NOW, 420) == 1800


def test_nice_ticks_are_round_and_cover_the_top() -> None:
    assert list(nice_ticks(100)) == [0, 25, 50, 75, 100]
    assert list(nice_ticks(8.25)) == [0, 2.5, 5, 7.5, 10]
    assert list(nice_ticks(0)) == [0, 0.25, 0.5, 0.75, 1]
    assert nice_ticks(309_520)[-1] >= 309_520


def test_each_line_gets_at_most_one_point_per_pixel_and_keeps_peaks() -> None:
    chart = TimeSeriesChart("CPU", unit="%", width_px=300)
    frame = raw_frame(20_000, labels={"path": ["/"] * 10_000 + ["/data"] * 10_000})
    frame.loc[5000, "value"] = 999.0  # a spike that must survive thinning
    chart.set_frame(frame, (NOW - 20_000, NOW), label="path")
    x, y = np.asarray(chart.lines.x), np.asarray(chart.lines.y)
    assert chart.names == ["/", "/data"]
    assert x.shape == y.shape
    assert x.shape[0] == 3  # two lines and the invisible row spanning the window
    assert x.shape[1] <= 300
    assert np.nanmax(y[0]) == 999.0
    assert list(chart.lines.opacities) == [1.0, 1.0, 0.0]
    window_row = x[-1]
    assert window_row[0] == np.datetime64(int((NOW - 20_000) * 1e9), "ns")
    assert window_row.max() == np.datetime64(int(NOW * 1e9), "ns")


def test_quantities_sharing_a_chart_share_a_threshold_pair_when_theirs_are_equal() -> None:
    usual, memory = Threshold(warn=85, critical=95), Threshold(warn=90, critical=97)
    assert threshold_pairs(None, {"CPU": usual, "memory": usual}) == [("", usual)]
    assert threshold_pairs(None, {"CPU": usual, "disk": None}) == [("CPU", usual)]
    assert threshold_pairs(usual) == [("", usual)] and threshold_pairs(None) == []
    chart = TimeSeriesChart("Used", unit="%", y_max=100,
                            thresholds={"CPU": usual, "memory": memory, "disk": usual})
    assert chart.thresholds == [("CPU, disk", usual), ("memory", memory)]
    times = np.array([int((NOW - 60) * 1e9), int(NOW * 1e9)], dtype="datetime64[ns]")
    chart.set_lines({"CPU": (times, np.array([10.0, 20.0]))}, (NOW - 600, NOW))
    assert drawn_thresholds(chart) == [("CPU, disk warn", 85), ("CPU, disk critical", 95),
                                       ("memory warn", 90), ("memory critical", 97)]
    assert list(chart.lines.colors)[1:5] == [WARN_COLOUR, CRITICAL_COLOUR] * 2
    legend = chart.legend.value
    assert 'data-warn="85" data-critical="95" data-for="CPU, disk"' in legend
    assert 'data-warn="90" data-critical="97" data-for="memory"' in legend
    assert "memory: " in legend and "CPU, disk: " in legend


def test_an_update_is_one_message_with_its_threshold_rows() -> None:
    chart = TimeSeriesChart("Error rate", unit="%", threshold=Threshold(warn=2, critical=10))
    lines = count_messages(chart.lines)
    x_scale = count_messages(chart.x_scale)
    for k in range(3):
        frame = raw_frame(500 + k, labels={"model_group": ["a"] * (500 + k)})
        chart.set_frame(frame, (NOW - 600, NOW + k), label="model_group")
    assert len(lines) == 3  # one message per update, x and y together
    assert lines[0] == ["colors", "labels", "opacities", "x", "y"]
    assert lines[1:] == [["x", "y"]] * 2  # unchanged colours and labels are not sent again
    assert x_scale == []
    # one mark: the line, warn and critical in their colours, the invisible window row
    assert [type(m).__name__ for m in chart.figure.marks] == ["Lines"]
    assert list(chart.lines.labels) == ["a", "warn", "critical", "window"]
    assert list(chart.lines.colors)[1:3] == [WARN_COLOUR, CRITICAL_COLOUR]
    assert list(chart.lines.opacities) == [1.0, 1.0, 1.0, 0.0]
    assert drawn_thresholds(chart) == [("warn", 2), ("critical", 10)]
    assert 'data-warn="2"' in chart.legend.value
    assert 'data-critical="10"' in chart.legend.value
    assert drawn_thresholds(TimeSeriesChart("Requests")) == []


def test_threshold_rows_are_dashed_across_the_window_and_do_not_stretch_the_axis() -> None:
    chart = TimeSeriesChart("Error rate", unit="%", width_px=300,
                            threshold=Threshold(warn=2, critical=10))
    window = (NOW - 600, NOW)
    frame = raw_frame(120, labels={"model_group": ["a"] * 120})
    frame["value"] = 0.4
    chart.set_frame(frame, window, label="model_group")
    assert chart.y_scale.max < 2  # from the data: a threshold shows only when data nears it
    x, y = np.asarray(chart.lines.x), np.asarray(chart.lines.y, dtype="float64")
    warn_x, warn_y = x[1], y[1]
    assert warn_x.min() == np.datetime64(int(window[0] * 1e9), "ns")
    assert warn_x.max() == np.datetime64(int(window[1] * 1e9), "ns")
    drawn = warn_y[: np.flatnonzero(warn_x == warn_x.max())[0] + 1]
    assert np.isfinite(warn_y[-1])  # ends on a dash: bqplot labels a line at its last point
    gaps = int(np.isnan(drawn).sum())
    assert gaps >= 300 // 20  # a dash and a gap every few pixels: dashed
    assert set(drawn[np.isfinite(drawn)]) == {2.0}
    assert chart.lines.marker is None


def test_a_sparse_chart_marks_its_points_and_draws_plain_threshold_lines() -> None:
    chart = TimeSeriesChart("CPU", unit="%", y_max=100, threshold=Threshold(warn=85, critical=95))
    times = (np.array([NOW - 20, NOW - 10, NOW]) * 1e9).astype("datetime64[ns]")
    chart.set_lines({"CPU": (times, np.array([10.0, 30.0, 20.0]))}, (NOW - 600, NOW))
    assert chart.lines.marker == "circle"  # a line of a few points shows its points
    x, y = np.asarray(chart.lines.x), np.asarray(chart.lines.y, dtype="float64")
    # warn and critical: two points each, at the window's ends (a marker at every dash
    # end would draw a row of dots)
    for row in (1, 2):
        assert set(x[row].tolist()) == {int((NOW - 600) * 1e9), int(NOW * 1e9)}
        assert not np.isnan(y[row]).any()
    assert drawn_threshold_levels(chart) == [85, 95]


def test_a_hole_in_the_data_is_drawn_as_a_gap() -> None:
    times = np.concatenate([np.arange(0, 100, 5), np.arange(400, 500, 5)]) + NOW - 500
    frame = series_frame(times, np.ones(len(times)), {})
    chart = TimeSeriesChart("load")
    chart.set_frame(frame, (NOW - 500, NOW), label=lambda _: "load")
    y = np.asarray(chart.lines.y)[0]
    assert np.isnan(y).sum() == 1
    assert 'data-points="40"' in chart.legend.value


def test_empty_data_says_so_and_keeps_the_window() -> None:
    chart = TimeSeriesChart("power", unit="W")
    chart.set_frame(series_frame(np.empty(0), np.empty(0), {"gpu": []}), (NOW - 60, NOW))
    assert chart.names == []
    assert "no data in this window" in chart.legend.value
    assert np.asarray(chart.lines.x).shape == (2,) or np.asarray(chart.lines.x).shape[0] == 1


def test_frame_lines_names_lines_by_label() -> None:
    frame = raw_frame(4, labels={"deployment_id": ["a", "a", "b", "b"],
                                 "model_group": ["g", "g", "g", "g"]})
    assert list(frame_lines(frame, "deployment_id")) == ["a", "b"]
    assert list(frame_lines(frame, ["model_group", "deployment_id"])) == ["g / a", "g / b"]
    assert list(frame_lines(frame)) == ["a / g", "b / g"]


def test_the_y_axis_grows_to_a_round_tick_above_the_data() -> None:
    chart = TimeSeriesChart("requests")
    chart.set_frame(series_frame(np.array([NOW - 10, NOW]), np.array([3.0, 8.25]), {}),
                    (NOW - 60, NOW), label=lambda _: "r")
    assert chart.y_scale.max == 10
    assert list(chart.y_axis.tick_values) == [0, 2.5, 5, 7.5, 10]
    fixed = TimeSeriesChart("cpu", y_max=100)
    fixed.set_frame(series_frame(np.array([NOW]), np.array([3.0]), {}), (NOW - 60, NOW))
    assert fixed.y_scale.max == 100


def test_secrets_are_masked() -> None:
    text = ("failed: sk-abcdef123456 Bearer eyJhbGciOiJIUzI1NiJ9.x http://u:pw@h/x?key=zzz "
            "&token=abc")
    masked = mask_secrets(text)
    for secret in ("sk-abcdef123456", "eyJhbGciOiJIUzI1NiJ9", "pw@", "zzz", "token=abc"):
        assert secret not in masked
    table = html_table(["a"], [["sk-live-0123456789"]])
    assert "sk-live" not in table
    assert "sk-live" not in values_table({"k": ("label", "sk-live-0123456789", None)})


def test_formatting_and_levels() -> None:
    assert fmt_seconds(0.4123) == "412 ms"
    assert fmt_seconds(2.5) == "2.50 s"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(None) == "–"
    threshold = Threshold(warn=5, critical=15)
    assert [level(v, threshold) for v in (1, 5, 20, None)] == ["ok", "warn", "critical", ""]


def test_error_lines_say_what_to_do(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    message = describe_error(StoreError(f"cannot read the store {empty}: no such table: series"),
                             empty)
    assert message.startswith("No data yet")
    assert "aidash record" in message
    assert describe_error(ValueError("boom sk-abcdef123456")) == "ValueError: boom sk-***"


@pytest.mark.parametrize("n", [10, 5000])
def test_chart_update_is_fast(n: int) -> None:
    chart = TimeSeriesChart("x", width_px=420)
    frame = raw_frame(n, labels={"model_group": ["a", "b"] * (n // 2)})
    started = time.perf_counter()
    chart.set_frame(frame, (NOW - n, NOW), label="model_group")
    assert time.perf_counter() - started < 1.0
