"""notebooks/operations.ipynb run top to bottom (nbclient, a real kernel) against a temporary
copy of config/: its edits land in the copy only, saved with the previous version kept, and a
save with problems of the error kind is refused."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from aidash_lib.configs import history
from aidash_lib.routing import FailureKind, load_graph

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "operations.ipynb"
ROUTING_FILES = ("litellm-config.yaml", "providers.yaml", "model-mappings.yaml")


@pytest.fixture
def config_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """config/'s routing files and a settings file in a temporary folder (AIDASH_CONFIG)."""
    folder = tmp_path / "config"
    folder.mkdir()
    for name in ROUTING_FILES:
        shutil.copy(REPO / "config" / name, folder / name)
    settings = folder / "dashboard.yaml"
    settings.write_text(f"store:\n  path: {tmp_path / 'history.sqlite'}\n")
    monkeypatch.setenv("AIDASH_CONFIG", str(settings))
    monkeypatch.delenv("AIDASH_STORE", raising=False)
    return folder


def repo_config_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "config").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def run_notebook(workdir: Path, **parameters: Any) -> str:
    """Run the notebook with its parameters cell overridden; all its text output."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    texts = []
    for code in nb.cells:
        for output in code.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output["text"])
            elif "data" in output and "text/plain" in output["data"]:
                texts.append(output["data"]["text/plain"])
    return "\n".join(texts)


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")
    assert "widgets" not in nb.metadata


def test_edit_previews_then_saves_into_the_copy(config_copy: Path) -> None:
    before_repo = repo_config_digest()
    path = config_copy / "litellm-config.yaml"
    original = path.read_text()
    text = run_notebook(config_copy, SAVE=True)

    assert "qwen2.5-coder: fallbacks ['llama3.1-8b', 'gpt-4o-mini'] -> " in text
    assert "deployments added: llama3.1-8b-vllm-2" in text
    assert "deployments removed: llama3.1-8b-ollama" in text
    assert "problems (0 errors)" in text
    assert "+    - qwen2.5-coder: [gpt-4o-mini, llama3.1-8b]" in text  # the diff
    assert "RoutingPanel" in text or "VBox" in text  # the pictures were built
    assert f"saved {path}" in text

    saved = path.read_text()
    graph = load_graph([path, config_copy / "providers.yaml", config_copy / "model-mappings.yaml"])
    assert graph.chain("qwen2.5-coder", FailureKind.GENERAL) == ("gpt-4o-mini", "llama3.1-8b")
    assert graph.groups["llama3.1-8b"].deployment_ids == ("llama3.1-8b-vllm", "llama3.1-8b-vllm-2")
    assert not graph.errors
    # comments and untouched lines stay, byte for byte
    comments = [line for line in original.splitlines() if line.strip().startswith("#")]
    assert all(line in saved.splitlines() for line in comments)
    assert "    - chat-local: [gpt-4o-mini]       # an alias uses its own fallbacks" in saved
    # the previous version is kept, and the save is in the store for postmortems
    (previous,) = history(path)
    assert previous.read_text() == original
    with sqlite3.connect(config_copy.parent / "history.sqlite") as conn:
        events = conn.execute("SELECT kind, subject FROM events").fetchall()
    assert ("config_save", str(path)) in events
    assert repo_config_digest() == before_repo


def test_a_save_with_errors_is_refused(config_copy: Path) -> None:
    path = config_copy / "litellm-config.yaml"
    original = path.read_text()
    text = run_notebook(config_copy, REORDER={}, ADD=[], REMOVE=["gpt-4o-openai"], SAVE=True)
    assert "deployments removed: gpt-4o-openai" in text
    assert "falls back to 'gpt-4o', which no model group" in text
    assert "not saved:" in text and "the new version has errors" in text
    assert path.read_text() == original
    assert history(path) == []


def test_without_save_nothing_is_written(config_copy: Path) -> None:
    path = config_copy / "litellm-config.yaml"
    original = path.read_text()
    text = run_notebook(config_copy)
    assert "not saved: set SAVE = True" in text
    assert "+      id: llama3.1-8b-vllm-2" in text
    assert path.read_text() == original
    assert history(path) == []
