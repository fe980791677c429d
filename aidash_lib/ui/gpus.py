"""GPUs: utilisation, memory, temperature and power over time per GPU, with threshold lines,
and the processes on each GPU with their memory and the model they serve. Without a GPU, one
line that says so (with the GPU source's reason) instead of empty charts.

Reads the series `gpu_utilization_percent`, `gpu_memory_used_percent`, `gpu_temperature_c`,
`gpu_power_w`, `gpu_power_limit_w` (label `gpu`), the GPU source's `source_fault` events
(subject `gpu`), and the last `gpu_processes` event when the recorder stores one: its detail
is the JSON of `sources.gpu.GpuSnapshot` (`{"gpus": [{"index", "name", "processes": [{"pid",
"name", "gpu_memory_used_bytes", "served_model", ...}]}]}`). Command lines are never shown.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.base import (
    PanelBase,
    esc,
    fmt_bytes,
    fmt_number,
    fmt_percent,
    fmt_when,
    html_table,
    level,
    note,
    values_table,
)
from aidash_lib.ui.charts import TimeSeriesChart, series_step
from aidash_lib.ui.common import PROCESSES_MAX_AGE_S, last_values, open_faults
from aidash_lib.ui.traffic import chart_row
from aidash_lib.ui.view import DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History



def no_gpu_line(reason: str | None) -> str:
    """The one line shown instead of the charts when there is no GPU reading."""
    if reason is None:
        return ("No GPU readings in this window (no NVIDIA GPU here, or the recorder is not "
                "running)")
    for prefix in ("not_available: ", "not_available"):
        reason = reason.removeprefix(prefix)
    return f"No NVIDIA GPU on this machine ({reason.strip()})"


def parse_gpu_processes(detail: str) -> list[dict[str, Any]]:
    """GPUs with their processes from a `gpu_processes` event's detail."""
    try:
        data = json.loads(detail)
    except ValueError:
        return []
    gpus = data.get("gpus") if isinstance(data, dict) else data
    return [g for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []


def _gpu_label(labels: dict[str, str]) -> str:
    return f"GPU {labels.get('gpu', '?')}"


class GpuPanel(PanelBase):
    """Per-GPU charts and process table, or the line saying there is no GPU."""

    css_class = "aidash-gpus"
    title = "GPUs"
    utilization: TimeSeriesChart
    memory: TimeSeriesChart
    temperature: TimeSeriesChart
    power: TimeSeriesChart

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(history, settings, **kwargs)
        self.nogpu = shared.html("", "aidash-nogpu")
        self.summary = shared.html("", "aidash-gpu-summary")
        self.processes = shared.html("", "aidash-gpu-processes")
        self.charts: list[TimeSeriesChart] = []
        self.content: widgets.VBox | None = None
        self.body.children = []
        self.has_gpu: bool | None = None

    def _ensure_charts(self) -> widgets.VBox:
        """The charts, made on the first GPU reading: a machine without a GPU never sends
        them to the page (and charts drawn while hidden would have no size)."""
        if self.content is not None:
            return self.content
        s = self.settings.dashboard
        th = self.settings.thresholds
        size = {"width_px": s.chart_width_px, "height_px": s.chart_height_px}
        self.utilization = TimeSeriesChart(
            "GPU utilisation", unit="%", y_max=100, threshold=th.get("gpu_utilization_percent"),
            css="aidash-chart-gpu-util", **size)
        self.memory = TimeSeriesChart(
            "GPU memory used", unit="%", y_max=100, threshold=th.get("gpu_memory_percent"),
            css="aidash-chart-gpu-memory", **size)
        self.temperature = TimeSeriesChart(
            "GPU temperature", unit="°C", threshold=th.get("gpu_temperature_c"),
            css="aidash-chart-gpu-temperature", **size)
        self.power = TimeSeriesChart("GPU power", unit="W", css="aidash-chart-gpu-power", **size)
        self.charts = [self.utilization, self.memory, self.temperature, self.power]
        self.content = shared.vbox([self.summary, chart_row(self.charts), self.processes])
        return self.content

    def _show_gpu(self, present: bool) -> None:
        self.has_gpu = present
        children = (self._ensure_charts(),) if present else (self.nogpu,)
        if tuple(self.body.children) != children:
            self.body.children = children

    async def _update(self, view: DashboardView) -> None:
        now = time.time()
        window = view.window(now)
        step = series_step(*window, self.settings.dashboard.chart_width_px)
        frames = {
            name: await self.history.series(metric, *window, step_s=step)
            for name, metric in (
                ("util", "gpu_utilization_percent"), ("memory", "gpu_memory_used_percent"),
                ("temperature", "gpu_temperature_c"), ("power", "gpu_power_w"),
                ("limit", "gpu_power_limit_w"),
            )
        }
        faults = await open_faults(self.history, window[1])
        fault = faults.get("gpu")
        if all(frames[k].empty for k in ("util", "memory", "temperature", "power")):
            self.nogpu.value = esc(no_gpu_line(fault.reason if fault else None))
            self._show_gpu(False)
            return
        self._show_gpu(True)
        self.nogpu.value = ""
        self.utilization.set_frame(frames["util"], window, label=_gpu_label)
        self.memory.set_frame(frames["memory"], window, label=_gpu_label)
        self.temperature.set_frame(frames["temperature"], window, label=_gpu_label)
        power = frames["power"].assign(kind="draw")
        limit = frames["limit"].assign(kind="limit")
        self.power.set_frame(
            pd.concat([power, limit]) if not limit.empty else power, window,
            label=lambda labels: f"GPU {labels.get('gpu', '?')}"
            + (" limit" if labels.get("kind") == "limit" else ""),
        )
        self._summary(frames)
        await self._processes(window[1], now)
        if fault is not None:
            self.problem(f"GPU source: {fault.reason} (since {fmt_when(fault.since_s, now)})")

    def _summary(self, frames: dict[str, pd.DataFrame]) -> None:
        th = self.settings.thresholds
        util = last_values(frames["util"], "gpu")
        memory = last_values(frames["memory"], "gpu")
        temperature = last_values(frames["temperature"], "gpu")
        power = last_values(frames["power"], "gpu")
        values: dict[str, Any] = {}
        for gpu in sorted(set(util) | set(memory) | set(temperature), key=str):
            u = util.get(gpu, (None, None))[0]
            m = memory.get(gpu, (None, None))[0]
            t = temperature.get(gpu, (None, None))[0]
            p = power.get(gpu, (None, None))[0]
            lu, lm = level(u, th.get("gpu_utilization_percent")), level(m, th.get(
                "gpu_memory_percent"))
            lt = level(t, th.get("gpu_temperature_c"))
            values[f"gpu{gpu}_util"] = (f"GPU {gpu} util", fmt_percent(u, 0), u,
                                        f"aidash-{lu}" if lu else "")
            values[f"gpu{gpu}_memory"] = (f"GPU {gpu} memory", fmt_percent(m, 0), m,
                                          f"aidash-{lm}" if lm else "")
            values[f"gpu{gpu}_temperature"] = (f"GPU {gpu} temp",
                                               f"{fmt_number(t, 0)} °C", t,
                                               f"aidash-{lt}" if lt else "")
            values[f"gpu{gpu}_power"] = (f"GPU {gpu} power", f"{fmt_number(p, 0)} W", p)
        self.summary.value = values_table(values)

    async def _processes(self, end_s: float, now: float) -> None:
        events = await self.history.events(end_s - PROCESSES_MAX_AGE_S, end_s,
                                           kind="gpu_processes")
        if events.empty:
            self.processes.value = note(
                "GPU processes: not in the store (the recorder does not record them yet).")
            return
        last = events.iloc[-1]
        gpus = parse_gpu_processes(str(last["detail"]))
        rows = []
        for gpu in gpus:
            for proc in gpu.get("processes") or []:
                rows.append([
                    f"GPU {gpu.get('index', '?')}", str(proc.get("pid", "–")),
                    str(proc.get("name") or "–"), str(proc.get("served_model") or "–"),
                    fmt_bytes(proc.get("gpu_memory_used_bytes")),
                    str(proc.get("process_type") or "–"),
                ])
        when = fmt_when(pd.Timestamp(last["time"]).timestamp(), now)
        if not rows:
            self.processes.value = note(f"No process on any GPU (at {when}).")
            return
        self.processes.value = f"<b>Processes</b> (at {esc(when)})" + html_table(
            ["GPU", "pid", "process", "model served", "GPU memory", "type"], rows,
            css="aidash-table aidash-gpu-process-table", numeric=(1, 4))
