"""Config edits: comments and untouched lines kept byte for byte, validated, atomic, versioned."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from aidash_lib.configs import (
    HISTORY_DIR,
    ConfigConflict,
    ConfigRejected,
    open_config,
    preview_text,
    remove_item,
    save_edit,
    save_text,
)
from aidash_lib.configs import history as config_history
from aidash_lib.routing import FailureKind
from aidash_lib.settings import REPO_CONFIG

CONFIG_DIR = REPO_CONFIG.parent
REPO = CONFIG_DIR.parent


def changed_lines(diff: str) -> list[str]:
    return [line.rstrip("\n") for line in diff.splitlines(keepends=True)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.fixture
def routing_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("litellm-config.yaml", "providers.yaml", "model-mappings.yaml", "dashboard.yaml"):
        shutil.copyfile(CONFIG_DIR / name, tmp_path / name)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LITELLM_MASTER_KEY"):
        monkeypatch.setenv(name, "set")
    return tmp_path


def companions(folder: Path) -> list[Path]:
    return [folder / "providers.yaml", folder / "model-mappings.yaml"]


@pytest.mark.parametrize("path", [
    *sorted(CONFIG_DIR.glob("*.yaml")),
    REPO / "tests" / "servers" / "litellm_config.yaml",
    REPO / "tests" / "servers" / "litellm_routing_config.yaml",
], ids=lambda p: p.name)
def test_an_unedited_file_renders_byte_for_byte(path: Path) -> None:
    assert open_config(path).text() == path.read_text()


def test_captured_fixture_configs_render_byte_for_byte(shared_fixtures: Path) -> None:
    for name in ("config.yaml", "config_variant.yaml"):
        path = shared_fixtures / "litellm" / name
        assert open_config(path).text() == path.read_text()


def test_reorder_fallbacks_add_and_remove_a_deployment(routing_dir: Path) -> None:
    path = routing_dir / "litellm-config.yaml"
    config = open_config(path)
    fallbacks = config.data["router_settings"]["fallbacks"]
    fallbacks[1]["qwen2.5-coder"].reverse()
    model_list = config.data["model_list"]
    remove_item(model_list, 1)  # llama3.1-8b-ollama
    model_list.insert(3, CommentedMap([
        ("model_name", "gpt-4.1"),
        ("litellm_params", CommentedMap([("model", "openai/gpt-4.1"),
                                         ("api_key", "os.environ/OPENAI_API_KEY")])),
        ("model_info", CommentedMap([("id", "gpt-4.1-openai")])),
    ]))
    edit = config.preview(companions(routing_dir))
    [warning] = edit.problems  # no mapping leads to the new group: a warning, not an error
    assert "model group 'gpt-4.1' is not reached from any mapping" in warning.message
    assert changed_lines(edit.diff) == [
        "-  - model_name: llama3.1-8b",
        "-    litellm_params:",
        "-      model: ollama_chat/llama3.1:8b",
        "-      api_base: http://127.0.0.1:11434",
        "-    model_info:",
        "-      id: llama3.1-8b-ollama",
        "+  - model_name: gpt-4.1",
        "+    litellm_params:",
        "+      model: openai/gpt-4.1",
        "+      api_key: os.environ/OPENAI_API_KEY",
        "+    model_info:",
        "+      id: gpt-4.1-openai",
        "-    - qwen2.5-coder: [llama3.1-8b, gpt-4o-mini]",
        "+    - qwen2.5-coder: [gpt-4o-mini, llama3.1-8b]",
    ]
    assert edit.graph().chain("qwen2.5-coder") == ("gpt-4o-mini", "llama3.1-8b")
    saved = save_edit(edit)
    text = path.read_text()
    assert text == edit.new_text and saved.diff == edit.diff
    assert "# --- Llama 3.1 8B on two local servers, load-balanced ---" in text
    assert "    - chat-local: [gpt-4o-mini]       # an alias uses its own fallbacks" in text


def test_lines_ruamel_would_rewrite_are_kept(routing_dir: Path) -> None:
    path = routing_dir / "dashboard.yaml"
    config = open_config(path)
    config.data["intervals"]["gpu_s"] = 3
    saved = config.save()
    assert changed_lines(saved.diff) == ["-  gpu_s: 2", "+  gpu_s: 3"]
    assert "  url: null                         # e.g. http://127.0.0.1:9090" in path.read_text()


def test_each_save_keeps_the_previous_version(routing_dir: Path) -> None:
    path = routing_dir / "providers.yaml"
    first = path.read_text()
    config = open_config(path)
    config.data["providers"]["ollama"]["description"] = "the small box"
    saved = config.save()
    assert saved.previous is not None and saved.previous.read_text() == first
    assert saved.previous.parent == routing_dir / HISTORY_DIR
    second = path.read_text()
    assert "    description: the small box\n" in second
    again = save_text(path, second.replace("the small box", "the big box"))
    assert again.previous is not None and again.previous.read_text() == second
    assert config_history(path) == [saved.previous, again.previous]
    assert saved.previous.name.startswith("providers.") and saved.previous.suffix == ".yaml"


def test_saves_are_atomic_and_keep_permissions(routing_dir: Path) -> None:
    path = routing_dir / "providers.yaml"
    path.chmod(0o640)
    inode = path.stat().st_ino
    save_text(path, path.read_text() + "  extra:\n    type: other\n")
    assert path.stat().st_ino != inode  # replaced by a rename, never rewritten in place
    assert path.stat().st_mode & 0o777 == 0o640
    leftovers = [p.name for p in routing_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_failed_rename_leaves_the_file_as_it_was(
    routing_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = routing_dir / "providers.yaml"
    before = path.read_text()

    def broken_replace(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_text(path, before + "  extra:\n    type: other\n")
    assert path.read_text() == before
    assert [p for p in routing_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_refuses_a_config_with_errors(routing_dir: Path) -> None:
    path = routing_dir / "litellm-config.yaml"
    before = path.read_text()
    config = open_config(path)
    config.data["router_settings"]["fallbacks"][0]["llama3.1-8b"].append("gpt-5-typo")
    edit = config.preview(companions(routing_dir))
    assert not edit.can_save
    [error] = edit.errors
    assert error.path == str(path) and error.line == 70
    assert "'llama3.1-8b' falls back to 'gpt-5-typo'" in error.message
    with pytest.raises(ConfigRejected) as refused:
        save_edit(edit)
    assert refused.value.problems == (error,)
    assert path.read_text() == before
    assert not (routing_dir / HISTORY_DIR).exists()


def test_refuses_an_edit_that_breaks_a_companion(routing_dir: Path) -> None:
    path = routing_dir / "litellm-config.yaml"
    config = open_config(path)
    # remove claude-haiku: the mapping chat-cloud and several fallbacks lose their target
    del config.data["model_list"][5]
    edit = config.preview(companions(routing_dir))
    mappings = str(routing_dir / "model-mappings.yaml")
    broken = [p for p in edit.errors if p.path == mappings]
    assert any("target 'claude-haiku' is no model group" in p.message for p in broken)
    with pytest.raises(ConfigRejected):
        save_edit(edit)


def test_warnings_do_not_block_and_old_companion_errors_do_not_either(
    routing_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    mappings = routing_dir / "model-mappings.yaml"
    mappings.write_text(mappings.read_text() + "  broken:\n    targets: [nowhere]\n")
    path = routing_dir / "litellm-config.yaml"
    config = open_config(path)
    config.data["router_settings"]["num_retries"] = 2
    edit = config.preview(companions(routing_dir))
    assert edit.problems and all(p.severity.value == "warning" for p in edit.problems)
    save_edit(edit)
    assert "  num_retries: 2\n" in path.read_text()


def test_refuses_invalid_yaml_and_invalid_settings(routing_dir: Path) -> None:
    path = routing_dir / "dashboard.yaml"
    with pytest.raises(ConfigRejected, match="invalid YAML"):
        save_text(path, "gateway: [\n")
    edit = preview_text(path, path.read_text().replace("gpu_s: 2", "gpu_s: -1"))
    assert [p.line for p in edit.errors] == [24]
    assert edit.errors[0].path == str(path)


def test_refuses_a_file_changed_since_it_was_read(routing_dir: Path) -> None:
    path = routing_dir / "providers.yaml"
    config = open_config(path)
    config.data["providers"]["ollama"]["description"] = "mine"
    edit = config.preview()
    path.write_text(path.read_text() + "# someone else\n")
    with pytest.raises(ConfigConflict):
        save_edit(edit)


def test_refuses_a_file_outside_the_config_folder(routing_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    outside.write_text("providers:\n  a: {type: other}\n")
    try:
        with pytest.raises(PermissionError):
            save_text(outside, "providers:\n  b: {type: other}\n", root=routing_dir)
        inside = save_text(routing_dir / "providers.yaml", "providers: {}\n", root=routing_dir)
        assert inside.previous is not None
    finally:
        outside.unlink()


def test_new_lists_and_values_take_the_files_indentation(routing_dir: Path) -> None:
    path = routing_dir / "litellm-config.yaml"
    config = open_config(path)
    config.data["router_settings"]["model_group_alias"]["chat-cloud"] = "claude-haiku"
    config.data["router_settings"]["content_policy_fallbacks"].append(
        CommentedMap([("claude-haiku", CommentedSeq(["gpt-4o"]))]))
    edit = config.preview(companions(routing_dir))
    assert changed_lines(edit.diff) == [
        "+    chat-cloud: claude-haiku",
        "+    - claude-haiku:",
        "+        - gpt-4o",
    ]
    graph = edit.graph()
    assert graph.chain("claude-haiku", FailureKind.CONTENT_POLICY) == ("gpt-4o",)
    assert graph.resolve("chat-cloud") == "claude-haiku"


def test_remove_item_keeps_the_comments_that_follow_it(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(
        "items:\n"
        "  # first heading\n"
        "  - a: 1\n"
        "  # heading of b\n"
        "  - b: 2   # b's own comment\n"
        "  # heading of c\n"
        "  - c: [3]\n"
        "other: x\n"
    )
    config = open_config(path)
    assert remove_item(config.data["items"], 1) == {"b": 2}
    assert config.text() == (
        "items:\n"
        "  # first heading\n"
        "  - a: 1\n"
        "  # heading of b\n"
        "  # heading of c\n"
        "  - c: [3]\n"
        "other: x\n"
    )
    config = open_config(path)
    remove_item(config.data["items"], 0)
    assert config.text() == (
        "items:\n"
        "  # first heading\n"
        "  # heading of b\n"
        "  - b: 2   # b's own comment\n"
        "  # heading of c\n"
        "  - c: [3]\n"
        "other: x\n"
    )
