"""Each panel on a store filled with known samples, events and request records
(`tests.unit.ui_samples`): what it shows, its thresholds, its filters, its own error line, the
GPU panel's one line without a GPU, and no secret in any widget's state."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ipywidgets.widgets.widget import _instances

from aidash_lib.settings import GatewaySettings, Settings, StoreSettings
from aidash_lib.store.schema import Event
from aidash_lib.store.sqlite import SqliteHistory, SqliteStore
from aidash_lib.ui.comparison import ComparisonPanel
from aidash_lib.ui.deployments import DeploymentsPanel
from aidash_lib.ui.gpus import GpuPanel
from aidash_lib.ui.machine import MachinePanel
from aidash_lib.ui.status import StatusPanel
from aidash_lib.ui.traffic import TrafficPanel
from aidash_lib.ui.view import DashboardView
from tests.unit.chart_rows import drawn_threshold_levels
from tests.unit.ui_samples import DEPLOYMENTS, Filled, fill

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MASTER_KEY = "sk-master-never-shown-0123456789"
VIEW = DashboardView(range_name="1h")


def settings_for(path: Path) -> Settings:
    return Settings(store=StoreSettings(path=str(path)),
                    gateway=GatewaySettings(key=MASTER_KEY))


def cells(html: str, key: str) -> list[str]:
    """The data-value of every cell with this data-key."""
    return re.findall(rf'data-key="{re.escape(key)}"[^>]*data-value="([^"]*)"', html)


def rows(html: str) -> list[str]:
    return re.findall(r'<tr data-row="([^"]*)"', html)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Filled]:
    path = tmp_path / "history.sqlite"
    return path, fill(path, minutes=60)


@pytest.fixture
def settings(store: tuple[Path, Filled]) -> Settings:
    return settings_for(store[0])


@pytest.fixture
def history(store: tuple[Path, Filled]) -> SqliteHistory:
    return SqliteHistory(store[0])


async def test_traffic_lines_by_group_summary_and_thresholds(
    history: SqliteHistory, settings: Settings,
) -> None:
    panel = TrafficPanel(history, settings)
    await panel.refresh(VIEW)
    assert panel.last_error is None
    assert "aidash-has-data" in panel._dom_classes
    assert panel.requests.names == sorted(DEPLOYMENTS)
    assert panel.quantiles.names == ["P50", "P95", "P99"]
    for chart in panel.charts:
        assert np.asarray(chart.lines.x).shape[-1] <= chart.max_points
    assert drawn_threshold_levels(panel.errors) == [2, 10]
    assert drawn_threshold_levels(panel.p95) == [5, 15]
    # 4 deployments, one attempt per 15 s each: 16 requests per minute in all
    assert float(cells(panel.summary.value, "requests_per_min")[0]) == pytest.approx(16)
    assert float(cells(panel.summary.value, "requests")[0]) == pytest.approx(16 * 60, rel=0.03)
    assert "aidash-critical" in panel.summary.value  # 25 % of attempts fail (llama3-local)


async def test_traffic_follows_the_filters(history: SqliteHistory, settings: Settings) -> None:
    panel = TrafficPanel(history, settings)
    await panel.refresh(VIEW.with_(model_group="gpt-4o-mini"))
    assert panel.requests.names == ["gpt-4o-mini"]
    panel.by.value = "deployment"
    await panel.refresh(VIEW.with_(model_group="gpt-4o-mini"))
    assert panel.requests.names == ["gpt-4o-mini-a", "gpt-4o-mini-b"]
    await panel.refresh(VIEW.with_(provider="azure"))
    assert panel.requests.names == ["gpt-4o-mini-b"]
    assert panel.quantiles.names == ["P50", "P95", "P99"]
    assert float(cells(panel.summary.value, "requests_per_min")[0]) == pytest.approx(4)


async def test_deployments_table_counts_and_states(
    history: SqliteHistory, settings: Settings, store: tuple[Path, Filled],
) -> None:
    _, filled = store
    panel = DeploymentsPanel(history, settings)
    await panel.refresh(VIEW)
    assert panel.last_error is None
    html = panel.table.value
    assert rows(html) == ["claude-haiku-1", "gpt-4o-mini-a", "gpt-4o-mini-b", "llama3-local-1"]
    assert cells(html, "state") == ["0", "0", "0", "2"]
    requests = dict(zip(rows(html), map(int, cells(html, "requests")), strict=True))
    errors = dict(zip(rows(html), map(int, cells(html, "errors")), strict=True))
    assert requests == filled.requests_by_deployment
    assert errors == {d: filled.failures_by_deployment.get(d, 0) for d in requests}
    assert "aidash-critical" in html  # llama3-local: 100 % errors
    assert panel.detail.children == ()
    await panel.refresh(VIEW.with_(provider="azure"))
    assert rows(panel.table.value) == ["gpt-4o-mini-b"]


async def test_selecting_a_deployment_shows_its_detail(
    history: SqliteHistory, settings: Settings,
) -> None:
    panel = DeploymentsPanel(history, settings)
    await panel.refresh(VIEW)
    panel.select.value = "llama3-local-1"
    await panel.refresh(VIEW.with_(range_name="15m"))
    assert panel.select.value == "llama3-local-1"
    assert panel.select.label == "llama3-local-1"
    assert panel.detail.children
    assert 'data-deployment="llama3-local-1"' in panel.detail_info.value
    errors = panel.detail_errors.value
    assert "APIConnectionError" in errors
    assert "sk-secret" not in errors and "sk-***" in errors
    fallbacks = panel.detail_fallbacks.value
    assert "aidash-fallbacks-observed" in fallbacks
    assert "gpt-4o-mini-a" in fallbacks
    assert panel.traffic.names == ["errors/min", "requests/min"]
    assert panel.latency.names == []  # an outage has no latency


async def test_comparison_colours_against_thresholds(
    history: SqliteHistory, settings: Settings,
) -> None:
    panel = ComparisonPanel(history, settings)
    await panel.refresh(VIEW)
    html = panel.table.value
    assert rows(html) == ["claude-haiku|claude-haiku-1", "gpt-4o-mini|gpt-4o-mini-a",
                          "gpt-4o-mini|gpt-4o-mini-b", "llama3-local|llama3-local-1"]
    rates = cells(html, "error_rate")
    assert float(rates[3]) == 100.0
    assert re.search(r'class="num aidash-critical" data-key="error_rate" data-value="100.0"',
                     html)
    assert re.search(r'class="num aidash-warn" data-key="error_rate"', html)  # 5 % at b
    assert "request records" in panel.source.value
    await panel.refresh(VIEW.with_(model_group="claude-haiku"))
    assert rows(panel.table.value) == ["claude-haiku|claude-haiku-1"]


async def test_comparison_without_records_uses_the_series(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    fill(path, minutes=30, records=False)
    panel = ComparisonPanel(SqliteHistory(path), settings_for(path))
    await panel.refresh(VIEW)
    assert "aidash-from-series" in panel.table.value
    assert len(rows(panel.table.value)) == 4
    assert "No request records" in panel.source.value


async def test_gpu_panel_charts_per_gpu(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    fill(path, minutes=20, gpus=2)
    panel = GpuPanel(SqliteHistory(path), settings_for(path))
    await panel.refresh(VIEW)
    assert panel.has_gpu is True
    assert panel.body.children == (panel.content,)
    assert panel.utilization.names == ["GPU 0", "GPU 1"]
    assert panel.power.names == ["GPU 0", "GPU 0 limit", "GPU 1", "GPU 1 limit"]
    assert drawn_threshold_levels(panel.utilization) == [90, 98]
    assert drawn_threshold_levels(panel.temperature) == [80, 90]
    assert float(cells(panel.summary.value, "gpu1_memory")[0]) == 81.0
    assert "not in the store" in panel.processes.value


async def test_gpu_panel_without_a_gpu_shows_one_line(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    fill(path, minutes=20, gpus=0)
    panel = GpuPanel(SqliteHistory(path), settings_for(path))
    await panel.refresh(VIEW)
    assert panel.has_gpu is False
    assert panel.body.children == (panel.nogpu,)
    assert panel.nogpu.value.startswith("No NVIDIA GPU on this machine (no NVIDIA driver")
    assert panel.last_error is None


async def test_gpu_processes_from_the_recorders_event(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    fill(path, minutes=10, gpus=1)
    detail = {"gpus": [{"index": 0, "name": "NVIDIA H200", "processes": [
        {"pid": 4242, "name": "python3", "gpu_memory_used_bytes": 40e9,
         "served_model": "meta-llama/Llama-3.1-8B", "process_type": "C",
         "cmdline": ["vllm", "serve", "--api-key", "sk-vllm-secret-123456"]}]}]}
    with SqliteStore(path) as store:
        store.write_events([Event(time.time(), "gpu_processes", "gpu", json.dumps(detail))])
    panel = GpuPanel(SqliteHistory(path), settings_for(path))
    await panel.refresh(VIEW)
    assert "meta-llama/Llama-3.1-8B" in panel.processes.value
    assert "4242" in panel.processes.value
    assert "sk-vllm" not in panel.processes.value and "--api-key" not in panel.processes.value


async def test_machine_panel(history: SqliteHistory, settings: Settings) -> None:
    panel = MachinePanel(history, settings)
    await panel.refresh(VIEW)
    assert panel.last_error is None
    assert panel.usage.names == ["CPU", "memory", "disk /"]
    assert panel.network.names == ["disk read", "disk write", "net in", "net out"]
    assert [c.title for c in panel.charts] == ["CPU, memory and disk used",
                                               "Network and disk I/O"]
    assert 0.0 <= float(cells(panel.summary.value, "load_1m")[0]) <= 2.0  # the load, now
    # CPU, memory and disk share the default 85 / 95: one pair of lines for the three
    assert drawn_threshold_levels(panel.usage) == [85, 95]
    assert 'data-for=""' in panel.usage.legend.value
    assert float(cells(panel.summary.value, "disk_percent")[0]) == 71.5
    assert float(cells(panel.summary.value, "processes")[0]) == 212
    for chart in panel.charts:
        assert np.asarray(chart.lines.x).shape[-1] <= chart.max_points
    assert "Top processes: not in the store" in panel.processes.value


@pytest.mark.parametrize("range_name", ["15m", "1h", "6h", "24h", "7d"])
async def test_a_fresh_machine_reading_is_not_called_stale_at_any_range(
    tmp_path: Path, range_name: str,
) -> None:
    """A chart point stands for its bucket's start, up to one bucket (~1 min at 6 h) before
    the last reading: only a recorder silent for longer than that is reported."""
    path = tmp_path / "history.sqlite"
    fill(path, minutes=120, machine_step_s=20.0, records=False)
    panel = MachinePanel(SqliteHistory(path), settings_for(path))
    await panel.refresh(DashboardView(range_name))
    assert panel.last_error is None, panel.last_error
    stale = tmp_path / "stale.sqlite"
    fill(stale, end_s=time.time() - 3 * 3600, minutes=120, machine_step_s=20.0, records=False)
    panel = MachinePanel(SqliteHistory(stale), settings_for(stale))
    await panel.refresh(DashboardView(range_name))
    assert "No recent machine reading" in (panel.last_error or "")


async def test_machine_top_processes_from_the_recorders_event(
    history: SqliteHistory, settings: Settings, store: tuple[Path, Filled],
) -> None:
    top = {"top_by_cpu": [{"pid": 7, "name": "litellm", "cpu_percent": 55.0,
                           "memory_rss_bytes": 3e8, "username": "op",
                           "cmdline": "litellm --api_key sk-cmdline-secret-123"}],
           "top_by_memory": [{"pid": 8, "name": "vllm", "cpu_percent": 1.0,
                              "memory_rss_bytes": 9e9, "username": "op"}]}
    with SqliteStore(store[0]) as writer:
        writer.write_events([Event(time.time(), "processes", "machine", json.dumps(top))])
    panel = MachinePanel(history, settings)
    await panel.refresh(VIEW)
    assert "aidash-top-cpu" in panel.processes.value
    assert "litellm" in panel.processes.value and "vllm" in panel.processes.value
    assert "sk-cmdline" not in panel.processes.value


async def test_status_bar(history: SqliteHistory, settings: Settings) -> None:
    panel = StatusPanel(history, settings)
    await panel.refresh(VIEW)
    html = panel.values.value
    assert cells(html, "gateway") == ["ready"]
    assert cells(html, "groups") == ["3"]
    assert cells(html, "deployments") == ["4"]
    assert cells(html, "outages") == ["1"]
    assert panel.state["outages"] == ["llama3-local-1"]
    assert panel.last_error is None


async def test_a_stopped_gateway_turns_the_gateway_panels_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    fill(path, minutes=30, gateway_down_after_s=120)
    history, settings = SqliteHistory(path), settings_for(path)
    status, traffic = StatusPanel(history, settings), TrafficPanel(history, settings)
    machine = MachinePanel(history, settings)
    for panel in (status, traffic, machine):
        await panel.refresh(VIEW)
    assert cells(status.values.value, "gateway") == ["unreachable"]
    for panel in (status, traffic):
        assert panel.last_error is not None
        assert "unreachable" in panel.last_error
        assert "aidash-has-error" in panel._dom_classes
    assert machine.last_error is None
    # the gateway answers again: the panels recover by themselves
    now = time.time()
    with SqliteStore(path) as store:
        from aidash_lib.store.schema import Sample

        store.write_samples([Sample("gateway_ready", (), now, 1.0)])
        store.write_events([Event(now, "source_recovered", "gateway.readiness", "after 120 s")])
    for panel in (status, traffic):
        await panel.refresh(VIEW)
        assert panel.last_error is None
        assert "aidash-has-error" not in panel._dom_classes
    assert cells(status.values.value, "gateway") == ["ready"]


async def test_missing_or_empty_store_is_an_error_line_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "later.sqlite"
    settings = settings_for(path)
    panels = [cls(SqliteHistory(path), settings) for cls in
              (StatusPanel, DeploymentsPanel, TrafficPanel, ComparisonPanel, GpuPanel,
               MachinePanel)]
    for panel in panels:
        await panel.refresh(VIEW)
        assert panel.last_error is not None and "no store at" in panel.last_error, panel
        assert 'class="aidash-error"' in panel.header.value, panel.header.value
    sqlite3.connect(path).close()  # a file without the store's tables
    for panel in panels:
        await panel.refresh(VIEW)
        assert panel.last_error is not None and panel.last_error.startswith("No data yet")
    fill(path, minutes=10)
    for panel in panels:
        await panel.refresh(VIEW)
        assert panel.last_error is None, (panel, panel.last_error)
        assert "aidash-error" not in panel.header.value
        assert "aidash-loading" not in panel.header.value
        assert "aidash-has-data" in panel._dom_classes


async def test_a_panel_can_run_its_own_loop(history: SqliteHistory, settings: Settings) -> None:
    panel = MachinePanel(history, settings)
    assert '<span class="aidash-loading">loading…</span>' in panel.header.value
    panel.start(interval_s=0.01, max_ticks=3)
    await panel.wait()
    assert panel.refreshes == 3
    assert '<span class="aidash-updated">updated ' in panel.header.value


def all_widget_state() -> str:
    return json.dumps(
        [w.get_state() for w in list(_instances.values())], default=lambda o: repr(o)
    )


async def test_no_secret_in_any_widget_state(
    history: SqliteHistory, settings: Settings,
) -> None:
    panels: list[Any] = [cls(history, settings) for cls in
                         (StatusPanel, DeploymentsPanel, TrafficPanel, ComparisonPanel,
                          GpuPanel, MachinePanel)]
    for panel in panels:
        await panel.refresh(VIEW)
    panels[1].select.value = "llama3-local-1"
    await panels[1].refresh(VIEW)
    state = all_widget_state()
    assert "llama3-local-1" in state
    assert MASTER_KEY not in state
    assert "sk-secret-should-be-masked" not in state
