"""Reading back what a `TimeSeriesChart`'s one mark draws."""

from __future__ import annotations

import numpy as np

from aidash_lib.ui.charts import TimeSeriesChart


def drawn_thresholds(chart: TimeSeriesChart) -> list[tuple[str, float]]:
    """(label, level) of the warn and critical rows, in the order drawn."""
    y = np.asarray(chart.lines.y, dtype="float64")
    return [(label, float(np.nanmax(row))) for label, row in zip(chart.lines.labels, y,
                                                                  strict=True)
            if label not in chart.names and label != "window"]


def drawn_threshold_levels(chart: TimeSeriesChart) -> list[float]:
    return [level for _, level in drawn_thresholds(chart)]
