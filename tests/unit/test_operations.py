"""The notebook's editing helpers on a copy of the sample config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aidash_lib.configs import ConfigRejected, history
from aidash_lib.operations import EditError, RoutingEditor, changes, problem_lines
from aidash_lib.routing import FailureKind, load_graph
from aidash_lib.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
FILES = ("litellm-config.yaml", "providers.yaml", "model-mappings.yaml")


@pytest.fixture
def editor(tmp_path: Path) -> RoutingEditor:
    for name in FILES:
        shutil.copy(REPO / "config" / name, tmp_path / name)
    settings_file = tmp_path / "dashboard.yaml"
    settings_file.write_text(f"store:\n  path: {tmp_path / 'h.sqlite'}\n")
    return RoutingEditor.open(load_settings(settings_file, environ={}))


def test_open_finds_the_litellm_config_and_its_companions(editor: RoutingEditor) -> None:
    assert editor.path.name == "litellm-config.yaml"
    assert sorted(p.name for p in editor.companions) == ["model-mappings.yaml", "providers.yaml"]
    assert editor.root == editor.path.parent


def test_fallbacks_reordered_added_and_removed(editor: RoutingEditor) -> None:
    assert editor.fallbacks("qwen2.5-coder") == ["llama3.1-8b", "gpt-4o-mini"]
    editor.set_fallbacks("qwen2.5-coder", ["gpt-4o-mini", "llama3.1-8b"])
    editor.set_fallbacks("claude-haiku", ["gpt-4o"], kind="content_policy")
    editor.set_fallbacks("gpt-4o-mini", [], kind=FailureKind.CONTEXT_WINDOW)
    edit = editor.preview()
    assert "+    - qwen2.5-coder: [gpt-4o-mini, llama3.1-8b]" in edit.diff
    assert "+    - claude-haiku: [gpt-4o]" in edit.diff
    assert "-    - gpt-4o-mini: [gpt-4o]" in edit.diff
    graph = edit.graph()
    assert graph.chain("qwen2.5-coder") == ("gpt-4o-mini", "llama3.1-8b")
    assert graph.chain("claude-haiku", FailureKind.CONTENT_POLICY) == ("gpt-4o",)
    assert graph.chain("gpt-4o-mini", FailureKind.CONTEXT_WINDOW) == ()
    assert "qwen2.5-coder, on general error: llama3.1-8b → gpt-4o-mini  ⇒  gpt-4o-mini → " \
        "llama3.1-8b" in changes(editor.before, graph)
    with pytest.raises(EditError):
        editor.set_fallbacks("no-such-group", ["gpt-4o"])


def test_a_new_deployment_goes_after_its_group_keeping_the_comments(
        editor: RoutingEditor) -> None:
    editor.add_deployment("qwen2.5-coder", "openai/qwen2.5-coder-7b", "qwen-b",
                          api_base="http://127.0.0.1:8081/v1", api_key="none")
    editor.add_deployment("mistral", "ollama_chat/mistral", "mistral-ollama",
                          api_base="http://127.0.0.1:11434")
    text = editor.config.text()
    lines = text.splitlines()
    heading = lines.index("  # --- cloud APIs: keys come from the gateway's environment ---")
    assert lines[heading - 1] == "      id: qwen-b"
    assert lines[heading + 1] == "  - model_name: gpt-4o-mini"
    graph = editor.preview().graph()
    assert graph.groups["qwen2.5-coder"].deployment_ids == ("qwen2.5-coder-llamacpp", "qwen-b")
    assert graph.deployments["mistral-ollama"].provider == "ollama"
    with pytest.raises(EditError, match="exists already"):
        editor.add_deployment("x", "openai/x", "qwen-b")


def test_removing_a_groups_last_deployment_is_refused_on_save(editor: RoutingEditor) -> None:
    original = editor.path.read_text()
    removed = editor.remove_deployment("gpt-4o-openai")
    assert removed["model_name"] == "gpt-4o"
    edit = editor.preview()
    assert edit.errors
    assert problem_lines(edit).startswith(str(editor.path))
    with pytest.raises(ConfigRejected):
        editor.save()
    assert editor.path.read_text() == original and history(editor.path) == []
    with pytest.raises(EditError):
        editor.remove_deployment("no-such-deployment")


def test_save_keeps_the_previous_version_and_continues_from_the_saved_text(
        editor: RoutingEditor) -> None:
    original = editor.path.read_text()
    editor.set_fallbacks("gpt-4o-mini", ["gpt-4o", "claude-haiku"])
    saved = editor.save()
    assert saved.previous is not None and saved.previous.read_text() == original
    assert load_graph([editor.path]).chain("gpt-4o-mini") == ("gpt-4o", "claude-haiku")
    assert editor.before.chain("gpt-4o-mini") == ("gpt-4o", "claude-haiku")
    assert editor.preview().diff == ""


def test_generated_ids_are_found(tmp_path: Path) -> None:
    path = tmp_path / "litellm.yaml"
    path.write_text("model_list:\n  - model_name: a\n    litellm_params:\n"
                    "      model: openai/gpt-4o-mini\n      api_key: none\n"
                    "  - model_name: b\n    litellm_params:\n      model: openai/gpt-4o\n"
                    "      api_key: none\n")
    (tmp_path / "dashboard.yaml").write_text("routing:\n  litellm_config: litellm.yaml\n")
    editor = RoutingEditor.open(load_settings(tmp_path / "dashboard.yaml", environ={}))
    (generated, _other) = load_graph([path]).deployments
    editor.remove_deployment(generated)
    assert list(editor.preview().graph().groups) == ["b"]
