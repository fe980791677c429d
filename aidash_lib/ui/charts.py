"""Time-series charts (bqplot) that take series frames from the store.

One `TimeSeriesChart` draws any number of lines on a `DateScale`, with warn / critical
threshold lines. Every line gets at most `width_px` points (one per pixel): the store is asked
for that resolution (`series_step`) and `analysis.downsample_indices` thins whatever comes back
bigger. All lines live in one `bqplot.Lines` mark whose x and y change together inside
`hold_sync()`, so an update is one message. The warn and critical lines are rows of the same
mark, dashed by gaps (NaN) across the window: a mark of their own would cost the page a view
and a tooltip that forces a layout when it is made, for each chart. An invisible row (opacity
0, at y = 0) spanning the window keeps the x axis on the chosen range. A gap in the data
longer than a few sampling intervals is drawn as a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import bqplot as bq
import ipywidgets as widgets
import numpy as np
import pandas as pd

from aidash_lib.analysis import downsample_indices
from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import esc

if TYPE_CHECKING:
    from aidash_lib.settings import Threshold

#: Line colours, in order (Tableau 10).
PALETTE: tuple[str, ...] = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)
WARN_COLOUR = "#d4a017"
CRITICAL_COLOUR = "#d62728"

#: Bucket widths the store is asked for, in seconds (the first at least span / points).
NICE_STEPS_S: tuple[float, ...] = (
    1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600,
    43200, 86400,
)

#: A gap between points longer than this many times the typical spacing is drawn as a gap.
GAP_FACTOR = 3.0
#: Lines with fewer points than this are drawn with a marker at each point.
SPARSE_POINTS = 30
#: A threshold line's dash and gap, in pixels of the chart's width (dash = gap).
THRESHOLD_DASH_PX = 5


def series_step(start_s: float, end_s: float, points: int) -> float:
    """The smallest readable bucket width giving at most `points` buckets over the window."""
    raw = max(end_s - start_s, 1.0) / max(points, 1)
    for step in NICE_STEPS_S:
        if step >= raw:
            return float(step)
    return float(np.ceil(raw / 86400) * 86400)


def nice_ticks(top: float, count: int = 4) -> np.ndarray:
    """Round tick values from 0 to at least `top`, about `count` intervals (1, 2, 2.5, 5 × 10^n
    apart); the last tick is the top of the axis."""
    if not np.isfinite(top) or top <= 0:
        top = 1.0
    raw = top / count
    magnitude = 10.0 ** np.floor(np.log10(raw))
    step = next(f * magnitude for f in (1, 2, 2.5, 5, 10) if f * magnitude >= raw * 0.999)
    last = np.ceil(top / step - 1e-9) * step
    return np.round(np.arange(0.0, last + step / 2, step), 12)


def _with_gaps(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN point where the spacing jumps (the recorder was down), so the line breaks
    there instead of drawing a straight line across the hole."""
    if len(times) < 3:
        return times, values
    dt = np.diff(times.astype("int64"))
    typical = float(np.median(dt))
    if typical <= 0:
        return times, values
    holes = np.flatnonzero(dt > GAP_FACTOR * typical)
    if not len(holes):
        return times, values
    mid = times[holes] + (times[holes + 1] - times[holes]) // 2
    return np.insert(times, holes + 1, mid), np.insert(values, holes + 1, np.nan)


def _as_times(values: pd.Series | np.ndarray) -> np.ndarray:
    """Times as naive datetime64[ns] (UTC): an aware column's instants, as they are stored
    (converting the column first cost 50 times more)."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.to_numpy(dtype="datetime64[ns]")
    return np.asarray(values, dtype="datetime64[ns]")


def frame_lines(
    frame: pd.DataFrame,
    label: str | Sequence[str] | Callable[[Mapping[str, str]], str] | None = None,
    *,
    scale: float = 1.0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A series frame as {line name: (times, values)}, one line per label combination.

    `label` names the line: a label column, several (joined with " / "), or a function of the
    labels; without one, the line is named by all its labels (or "value")."""
    labels = [c for c in frame.columns if c not in ("time", "value")]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if frame.empty:
        return out
    all_times = _as_times(frame["time"])
    all_values = frame["value"].to_numpy("float64") * scale
    if not labels:
        groups: list[tuple[dict[str, str], np.ndarray]] = [({}, np.arange(len(frame)))]
    else:
        # Positions per label combination, without building a frame per line.
        found = frame.groupby(labels, observed=True, sort=True, dropna=False).indices
        groups = []
        for key, positions in found.items():
            keys = key if isinstance(key, tuple) else (key,)
            groups.append(({n: "" if pd.isna(v) else str(v) for n, v in
                            zip(labels, keys, strict=True)}, positions))
        groups.sort(key=lambda group: tuple(group[0].values()))
    for names, positions in groups:
        if callable(label):
            name = label(names)
        elif isinstance(label, str):
            name = names.get(label, "") or "value"
        elif label is not None:
            name = " / ".join(names.get(n, "") for n in label) or "value"
        else:
            name = " / ".join(v for v in names.values() if v) or "value"
        times, values = all_times[positions], all_values[positions]
        if name in out:  # two series with the same name: keep both points
            times = np.concatenate([out[name][0], times])
            values = np.concatenate([out[name][1], values])
        order = np.argsort(times, kind="stable")
        out[name] = (times[order], values[order])
    return out


class TimeSeriesChart(widgets.VBox):
    """A bqplot chart of lines over time with optional warn / critical lines.

    `set_lines({name: (times, values)}, window=(start_s, end_s))` replaces every line in one
    message. `unit` is shown on the y axis; `y_max` fixes the top (100 for percentages).
    `threshold` draws warn and critical lines (from the first `set_lines`: they span its
    window); `thresholds` those of several named quantities sharing the chart (CPU, memory,
    ...), one pair for the names that share one. Threshold lines do not stretch the y axis:
    they show when the data comes near them.
    """

    def __init__(
        self,
        title: str,
        *,
        unit: str = "",
        width_px: int = 520,
        height_px: int = 220,
        threshold: Threshold | None = None,
        thresholds: Mapping[str, Threshold | None] | None = None,
        y_max: float | None = None,
        tick_format: str | None = None,
        css: str | None = None,
    ) -> None:
        self.title = title
        self.unit = unit
        self.width_px = int(width_px)
        #: (whose, threshold) pairs drawn: whose is "" when a pair is every line's.
        self.thresholds = threshold_pairs(threshold, thresholds)
        self.x_scale = bq.DateScale()
        self.y_max = y_max
        ticks = nice_ticks(y_max) if y_max else nice_ticks(1.0)
        self.y_scale = bq.LinearScale(min=0.0, max=float(ticks[-1]))
        self.lines = bq.Lines(
            x=np.zeros(0, dtype="datetime64[ns]"), y=np.zeros(0),
            scales={"x": self.x_scale, "y": self.y_scale},
            colors=list(PALETTE), stroke_width=1.6, marker_size=12,
        )
        # The figure's own 0..1 scales (the figure needs some; the marks use the above).
        unit_scale = shared.constant("unit-scale", _unit_scale)
        x_axis = bq.Axis(scale=self.x_scale, grid_lines="none")
        y_axis = bq.Axis(
            scale=self.y_scale, orientation="vertical", label=unit, grid_lines="dashed",
            tick_format=tick_format or ".3~g", label_offset="42px", tick_values=ticks,
        )
        self.y_axis = y_axis
        self.figure = bq.Figure(
            marks=[self.lines], axes=[x_axis, y_axis], title=title, scale_x=unit_scale,
            scale_y=unit_scale,
            fig_margin={"top": 30, "bottom": 28, "left": 58, "right": 12},
            layout=shared.layout(width=f"{self.width_px}px", height=f"{int(height_px)}px"),
            min_aspect_ratio=0.01, max_aspect_ratio=100, animation_duration=0, padding_y=0.0,
            title_style={"font-size": "13px"},
        )
        self.legend = shared.html("", "aidash-legend")
        super().__init__([self.figure, self.legend],
                         layout=shared.layout(width=f"{self.width_px + 8}px"))
        self.add_class("aidash-chart")
        if css:
            self.add_class(css)
        self.names: list[str] = []
        self.updates = 0

    @property
    def max_points(self) -> int:
        """The most points one line receives (one per pixel of width)."""
        return self.width_px

    def step_s(self, window: tuple[float, float]) -> float:
        """The bucket width to ask the store for, for this chart and window."""
        return series_step(window[0], window[1], self.max_points)

    def set_frame(
        self,
        frame: pd.DataFrame,
        window: tuple[float, float],
        label: str | Sequence[str] | Callable[[Mapping[str, str]], str] | None = None,
        *,
        scale: float = 1.0,
    ) -> None:
        """Draw a series frame (one line per label combination), each line thinned to
        `max_points` (by `set_lines`)."""
        self.set_lines(frame_lines(frame, label, scale=scale), window)

    def set_lines(
        self,
        lines: Mapping[str, tuple[np.ndarray, np.ndarray]],
        window: tuple[float, float],
    ) -> None:
        """Replace every line (name -> (times, values)); the x axis spans `window`."""
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        names: list[str] = []
        for name, (times, values) in lines.items():
            times = _as_times(times)
            values = np.asarray(values, dtype="float64")
            if len(times) > self.max_points:
                keep = _thin(times, values, self.max_points)
                times, values = times[keep], values[keep]
            if not len(times):
                continue
            times, values = _with_gaps(times, values)
            rows.append((times, values))
            names.append(name)
        start, end = (np.datetime64(int(w * 1e9), "ns") for w in window)
        # A line of a few points (a recorder that just started) shows its points.
        sparse = bool(names) and max(len(t) for t, _ in rows) < SPARSE_POINTS
        data_rows = len(rows)
        rows.extend(self._threshold_rows(start, end, dashed=not sparse))
        rows.append((np.array([start, end], dtype="datetime64[ns]"), np.zeros(2)))
        width = max(len(t) for t, _ in rows)
        x = np.empty((len(rows), width), dtype="datetime64[ns]")
        y = np.empty((len(rows), width), dtype="float64")
        for i, (times, values) in enumerate(rows):
            n = len(times)
            x[i, :n], y[i, :n] = times, values
            x[i, n:], y[i, n:] = times[-1], values[-1]  # repeat the last point: draws nothing
        colours = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
        levels = [(f"{whose} {kind}".strip(), colour) for whose, _ in self.thresholds
                  for kind, colour in (("warn", WARN_COLOUR), ("critical", CRITICAL_COLOUR))]
        with self.lines.hold_sync():
            self.lines.x = x
            self.lines.y = y
            self.lines.marker = "circle" if sparse else None
            self.lines.colors = [*colours, *(colour for _, colour in levels), "#ffffff"]
            self.lines.opacities = [1.0] * (len(rows) - 1) + [0.0]
            self.lines.labels = [*names, *(name for name, _ in levels), "window"]
        self.names = names
        self.updates += 1
        if not self.y_max:  # threshold lines do not stretch the axis
            finite = [v[np.isfinite(v)] for _, v in rows[:data_rows]]
            top = max((float(v.max()) for v in finite if len(v)), default=0.0)
            self._set_top(top)
        self._legend(names, rows[:data_rows], colours)

    def _threshold_rows(self, start: np.datetime64, end: np.datetime64, *,
                        dashed: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Warn and critical as rows across the window: dashes (pairs of points between gaps),
        or, while every point carries a marker (not `dashed`), a plain line of two points (a
        dashed one would draw a marker at both ends of every dash)."""
        if not self.thresholds:
            return []
        if dashed:
            dashes = max(self.width_px // (2 * THRESHOLD_DASH_PX), 2)
            edges = np.linspace(start.astype("int64"), end.astype("int64"), 2 * dashes)
            pairs = edges.astype("int64").reshape(-1, 2)
            # The gap repeats the dash's end; the row ends on a dash (bqplot places a line's
            # label at its last point, which must be a number).
            x = np.column_stack([pairs, pairs[:, 1]]).ravel()[:-1]
            shape = np.resize(np.array([1.0, 1.0, np.nan]), len(x))
        else:
            x = np.array([start, end], dtype="datetime64[ns]").astype("int64")
            shape = np.ones(2)
        times = x.astype("datetime64[ns]")
        return [(times, shape * level) for _, t in self.thresholds
                for level in (t.warn, t.critical)]

    def _set_top(self, top: float) -> None:
        """Round the y axis up to a tick above `top` (only a change is sent)."""
        ticks = nice_ticks(top)
        if float(ticks[-1]) != self.y_scale.max:
            self.y_scale.max = float(ticks[-1])
            self.y_axis.tick_values = ticks

    def _legend(self, names: Sequence[str], rows: Sequence[tuple[np.ndarray, np.ndarray]],
                colours: Sequence[str]) -> None:
        items = []
        for name, (_, values), colour in zip(names, rows, colours, strict=False):
            finite = values[np.isfinite(values)]
            last = float(finite[-1]) if len(finite) else None
            unit = f" {self.unit}" if self.unit else ""
            last_text = "–" if last is None else f"{last:.3g}{unit}"
            items.append(
                f'<span class="aidash-legend-item" data-series="{esc(name)}" '
                f'data-last="{"" if last is None else f"{last:.6g}"}" '
                f'data-points="{int(np.isfinite(values).sum())}">'
                f'<span class="aidash-swatch" style="background:{colour}"></span>'
                f"{esc(name)}: {esc(last_text)}</span>"
            )
        unit = f" {self.unit}" if self.unit else ""
        for whose, threshold in self.thresholds:
            items.append(
                f'<span class="aidash-legend-threshold" data-warn="{threshold.warn:g}" '
                f'data-critical="{threshold.critical:g}" data-for="{esc(whose)}">'
                + (f"{esc(whose)}: " if whose else "")
                + f'<span class="aidash-swatch" style="background:{WARN_COLOUR}"></span>'
                f"warn {threshold.warn:g}{esc(unit)}"
                f'<span class="aidash-swatch" style="background:{CRITICAL_COLOUR}"></span>'
                f"critical {threshold.critical:g}{esc(unit)}</span>"
            )
        if not names:
            items.insert(0, '<span class="aidash-muted aidash-nodata">no data in this window'
                            "</span>")
        text = " ".join(items)
        if self.legend.value != text:
            self.legend.value = text


def threshold_pairs(
    threshold: Threshold | None, named: Mapping[str, Threshold | None] | None = None,
) -> list[tuple[str, Threshold]]:
    """The warn / critical pairs a chart draws, as (whose, threshold): `threshold` alone
    (whose ""), or the `named` ones with the names that share a pair joined ("CPU, disk"),
    and whose "" when one pair is every name's."""
    if named is None:
        return [] if threshold is None else [("", threshold)]
    shared_by: dict[tuple[float, float], tuple[list[str], Threshold]] = {}
    for name, found in named.items():
        if found is not None:
            shared_by.setdefault((found.warn, found.critical), ([], found))[0].append(name)
    if len(shared_by) == 1:
        names, only = next(iter(shared_by.values()))
        return [("" if len(names) == len(named) else ", ".join(names), only)]
    return [(", ".join(names), found) for names, found in shared_by.values()]


def _unit_scale() -> bq.LinearScale:
    return bq.LinearScale(min=0.0, max=1.0, allow_padding=False)


def _thin(times: np.ndarray, values: np.ndarray, points: int) -> np.ndarray:
    return downsample_indices(times, values, max(points, 4))
