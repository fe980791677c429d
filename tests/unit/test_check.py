"""`aidash check`: file kinds told by content, located problems, exit codes."""

from __future__ import annotations

from pathlib import Path

from aidash_lib.check import FileKind, check_file, check_files
from aidash_lib.cli import main
from aidash_lib.settings import REPO_CONFIG


def test_repository_settings_pass(capsys) -> None:
    assert main(["check", str(REPO_CONFIG)]) == 0
    assert "ok (dashboard settings)" in capsys.readouterr().err


def test_captured_litellm_config_is_recognised_and_valid(shared_fixtures: Path) -> None:
    checked = check_file(shared_fixtures / "litellm" / "config.yaml")
    assert checked.kind is FileKind.LITELLM_CONFIG
    assert checked.problems == ()


def test_kind_is_told_by_content_not_name(tmp_path: Path) -> None:
    odd = tmp_path / "whatever.yml"
    odd.write_text("model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n")
    assert check_file(odd).kind is FileKind.LITELLM_CONFIG
    settings = tmp_path / "model_list.yaml"
    settings.write_text("intervals:\n  gpu_s: 1\n")
    assert check_file(settings).kind is FileKind.DASHBOARD_SETTINGS


def test_litellm_structure_problems_are_located(tmp_path: Path, capsys) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: a\n"
        "    litellm_params: {model: openai/x}\n"
        "    model_info: {id: dup}\n"
        "  - litellm_params:\n"
        "      api_base: http://x\n"
        "    model_info:\n"
        "      id: dup\n"
    )
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{path}:5: model_list.1: model_name: missing (the model group's name)" in out
    assert f"{path}:5: model_list.1.litellm_params: litellm_params.model: missing" in out[1]
    assert out[2] == (
        f"{path}:8: model_list.1.model_info.id: model_info.id 'dup' is used twice"
        " (first on line 4)"
    )


def test_exit_codes(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("intervals:\n  gpu_s: zero\n")
    assert main(["check", str(bad)]) == 1
    assert f"{bad}:2: intervals.gpu_s:" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "missing.yaml")]) == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("gateway: [\n")
    assert main(["check", str(broken)]) == 2
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("hello: world\n")
    assert main(["check", str(unknown)]) == 2
    assert "not a config file aidash knows" in capsys.readouterr().out


def test_several_files_worst_exit_wins(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("intervals:\n  gpu_s: 0\n")
    report = check_files([REPO_CONFIG, bad])
    assert report.exit_code == 1
    assert len(report.problems) == 1
