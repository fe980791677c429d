"""`notebooks/explore.ipynb` runs in a real kernel over a store with known requests: the
inspector shows, and its DataFrame cells give the filtered set."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from aidash_lib.store.sqlite import SqliteStore
from tests.unit.test_inspector import RECORDS

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore.ipynb"


def test_explore_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "history.sqlite"
    with SqliteStore(store) as writer:
        writer.write_requests(RECORDS)
    monkeypatch.setenv("AIDASH_STORE", str(store))
    monkeypatch.delenv("AIDASH_CONFIG", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    widget = outputs[0][0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in widget
    fallbacks = outputs[1][0]["data"]["text/plain"]
    assert "flaky-model-1 (RateLimitError)" in fallbacks
    assert "llama3-local-1 (APIConnectionError)" in fallbacks
    described = outputs[2][0]["data"]["text/plain"]
    assert "gpt-4o-mini-a" in described and "99%" in described
