"""notebooks/dashboard.ipynb in test mode (a bounded live loop): nbval runs it as `make test`
does (`pytest --nbval-lax --nbval-current-env`), and nbclient runs it with a check appended,
both on a temporary store filled with known samples. The notebook is committed without
outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.unit.ui_samples import fill

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "dashboard.ipynb"
TEST_MODE = {"AIDASH_MAX_TICKS": "2", "AIDASH_TICK_S": "0.2"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store whose last readings are fresh (an older one would rightly show as stale)."""
    path = tmp_path / "history.sqlite"
    fill(path, minutes=15)
    return path


def test_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "widgets" not in nb.metadata
    assert len("".join(c.source for c in code).splitlines()) <= 10  # a few lines


def test_nbval_in_test_mode(store: Path, tmp_path: Path) -> None:
    env = {**os.environ, **TEST_MODE, "AIDASH_STORE": str(store)}
    env.pop("AIDASH_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
         "--nbval-cell-timeout=120", "-p", "no:cacheprovider", "-q", str(NOTEBOOK)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def test_runs_to_the_end_with_every_panel_refreshed(
    store: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {**TEST_MODE, "AIDASH_STORE": str(store),
                        "QUERY_STRING": "range=15m&provider=azure"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AIDASH_CONFIG", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "assert dashboard.ticks == 2, dashboard.ticks\n"
        "assert dashboard.view.range_name == '15m' and dashboard.view.provider == 'azure'\n"
        "print({n: p.last_error for n, p in dashboard.panels.items()})"
    ))
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    widget_views = [o for o in outputs
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widget_views) == 1  # the dashboard, and nothing else shown
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert printed.strip() == str(dict.fromkeys(
        ["status", "deployments", "traffic", "comparison", "requests", "gpus", "machine"]))
