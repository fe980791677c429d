"""`aidash check` with routing files (kinds by content, checked together) and `aidash routes`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aidash_lib.check import FileKind, check_file, check_files
from aidash_lib.cli import main
from aidash_lib.settings import REPO_CONFIG
from tests.unit.test_routing_helpers import deployment, write

LITELLM = "model_list:\n" + (
    deployment("a", "a-1")
    + deployment("b", "b-1", "ollama/llama3", "api_base: http://127.0.0.1:11434")
    + deployment("c", "c-1", "anthropic/claude-haiku-4-5")
) + (
    "router_settings:\n"
    "  num_retries: 0\n"
    "  fallbacks: [{a: [b, c]}, {b: [c]}]\n"
    "  context_window_fallbacks: [{a: [c]}]\n"
)
PROVIDERS = "providers:\n  box: {type: ollama, base_url: 'http://127.0.0.1:11434'}\n"
MAPPINGS = "mappings:\n  chat:\n    targets: [a]\n    fallbacks: [c]\n"
REPO_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LITELLM_MASTER_KEY")


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    return [write(tmp_path, "gateway.yml", LITELLM), write(tmp_path, "whatever.yaml", PROVIDERS),
            write(tmp_path, "routes.yaml", MAPPINGS)]


def test_kinds_are_told_by_content(files: list[Path]) -> None:
    assert [check_file(f).kind for f in files] == [
        FileKind.LITELLM_CONFIG, FileKind.PROVIDERS, FileKind.MAPPINGS]


def test_check_reports_routing_problems_of_a_litellm_config(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "proxy.yaml", LITELLM.replace("{b: [c]}", "{b: [c]}, {d: [a]}"))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{path}:20: fallbacks: fallbacks are set for 'd', which no model group,"
                   " alias or wildcard group serves"]


def test_check_judges_references_between_files_given_together(tmp_path: Path, capsys) -> None:
    litellm = write(tmp_path, "proxy.yaml", LITELLM.replace(
        "      id: a-1\n", "      id: a-1\n      provider: gpu-box\n"))
    providers = write(tmp_path, "providers.yaml", PROVIDERS)
    mappings = write(tmp_path, "mappings.yaml", "mappings:\n  chat:\n    targets: [nope]\n")
    assert main(["check", str(mappings)]) == 0  # alone, a group target is not judged
    assert main(["check", str(litellm)]) == 0  # alone, a provider reference is not judged
    capsys.readouterr()
    assert main(["check", str(litellm), str(providers), str(mappings)]) == 1
    out = capsys.readouterr().out
    assert f"{litellm}:7: provider 'gpu-box' is not defined in the providers file" in out
    assert f"{mappings}:2: mappings.chat: target 'nope' is no model group" in out
    assert f"{mappings}:2: mappings.chat: unreachable" in out


def test_check_of_the_repository_routing_files(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in REPO_ENV:
        monkeypatch.setenv(name, "set")
    report = check_files([REPO_CONFIG.parent / name for name in
                          ("litellm-config.yaml", "providers.yaml", "model-mappings.yaml")])
    assert report.problems == [] and report.exit_code == 0


def test_routes_text(files: list[Path], capsys) -> None:
    assert main(["routes", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert "routing strategy simple-shuffle, 0 retries" in out
    assert "a: 1 deployment\n  a-1  openai/gpt-4o-mini  (provider openai)\n" in out
    assert "  on general error: b → c\n  on context window error: c\n" in out
    assert "  on context window error: no fallback (context_window_fallbacks is set" in out
    assert "mapping chat\n  targets: a\n  fallbacks: c" in out
    assert "  box  ollama  http://127.0.0.1:11434  (providers file, 1 deployment)" in out


def test_routes_what_if(files: list[Path], capsys) -> None:
    assert main(["routes", *map(str, files), "--down", "box", "--down", "a-1"]) == 0
    out = capsys.readouterr().out
    assert "down: deployments a-1, b-1; providers box\n" in out
    assert "  a     → c [c-1] (after a, b)\n" in out
    assert "  chat  → c [c-1] (after a, b)\n" in out
    assert "  b     → c [c-1] (after b)\n" in out
    assert out.rstrip().endswith("lose service: none")


def test_routes_one_model_as_json(files: list[Path], capsys) -> None:
    assert main(["routes", *map(str, files), "--json", "--model", "a", "--down", "a-1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["group"] == "a"
    assert data["model"]["route"]["served_by"] == "b"
    assert [a["name"] for a in data["model"]["route"]["attempts"]] == ["a", "b"]
    assert data["what_if"]["down"]["deployments"] == ["a-1"]
    assert data["groups"]["a"]["fallbacks"]["context_window"] == ["c"]
    assert data["providers"]["box"]["defined"] is True
    assert data["problems"] == []


def test_routes_exit_codes(tmp_path: Path, files: list[Path], capsys) -> None:
    broken = write(tmp_path, "broken.yaml", LITELLM.replace("[b, c]", "[b, ghost]"))
    assert main(["routes", str(broken)]) == 1
    assert f"{broken}:20: fallbacks: 'a' falls back to 'ghost'" in capsys.readouterr().out
    warned = write(tmp_path, "warned.yaml", LITELLM.replace("{b: [c]}", "{b: [a]}"))
    assert main(["routes", str(warned)]) == 0  # a cycle is a warning
    assert "warning: fallbacks: fallback cycle a → b → a" in capsys.readouterr().out
    assert main(["routes", str(tmp_path / "missing.yaml")]) == 2
    assert main(["routes", str(REPO_CONFIG)]) == 2  # dashboard settings: not a routing file
    assert "not a routing file" in capsys.readouterr().err
    assert main(["routes", str(files[0]), "--down", "nobody"]) == 2
    assert "no deployment, provider or group is named nobody" in capsys.readouterr().err
    assert main(["routes", str(files[0]), "--model", "nobody"]) == 2
    assert main(["routes", str(files[0]), str(files[0])]) == 2


def test_routes_defaults_to_the_settings_routing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
) -> None:
    write(tmp_path, "gw.yaml", LITELLM)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "p.yaml", PROVIDERS)
    settings = write(tmp_path, "dashboard.yaml", (
        "routing:\n  litellm_config: gw.yaml\n  providers: sub/p.yaml\n  mappings: none.yaml\n"))
    monkeypatch.setenv("AIDASH_CONFIG", str(settings))
    assert main(["routes"]) == 0
    assert capsys.readouterr().out.startswith(
        f"files: {tmp_path / 'gw.yaml'}, {tmp_path / 'sub' / 'p.yaml'}\n")
    monkeypatch.setenv("AIDASH_CONFIG", str(write(tmp_path, "empty.yaml", (
        "routing: {litellm_config: a.yaml, providers: b.yaml, mappings: c.yaml}\n"))))
    assert main(["routes"]) == 2


def test_routes_of_the_repository_files_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys,
) -> None:
    monkeypatch.delenv("AIDASH_CONFIG", raising=False)
    for name in REPO_ENV:
        monkeypatch.setenv(name, "set")
    assert main(["routes", "--model", "chat", "--down", "gpu-box-vllm", "ollama"]) == 0
    out = capsys.readouterr().out
    assert "  chat  → gpt-4o-mini [gpt-4o-mini-openai] (after llama3.1-8b)" in out
