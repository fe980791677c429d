"""providers.yaml and model-mappings.yaml: schemas with located errors, defaults."""

from __future__ import annotations

from pathlib import Path

from aidash_lib.routing_files import ProviderSpec, parse_mappings, parse_providers
from aidash_lib.settings import REPO_CONFIG
from aidash_lib.yamlfile import load_yaml
from tests.unit.test_routing_helpers import write


def test_repository_files_are_valid() -> None:
    providers, problems = parse_providers(load_yaml(REPO_CONFIG.parent / "providers.yaml"))
    assert problems == [] and providers is not None
    assert providers.providers["ollama"].health_url == "http://127.0.0.1:11434/api/version"
    mappings, problems = parse_mappings(load_yaml(REPO_CONFIG.parent / "model-mappings.yaml"))
    assert problems == [] and mappings is not None
    assert [t.label for t in mappings.mappings["code"].targets] == [
        "qwen2.5-coder", "ollama:qwen2.5-coder:7b"]


def test_provider_problems_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """
        providers:
          box:
            type: vllm
          cloud:
            type: openai
            base_url: api.openai.com
          odd:
            type: tgi
            base_url: http://x
          "bad name":
            type: other
          extra:
            type: other
            colour: blue
    """)
    parsed, problems = parse_providers(load_yaml(path))
    assert parsed is None
    found = {(p.line, p.message.split(":")[0]) for p in problems}
    assert (2, "providers.box") in found  # base_url is required for vllm
    assert (6, "providers.cloud.base_url") in found
    assert (8, "providers.odd.type") in found
    assert (14, "providers.extra.colour") in found
    messages = " ".join(p.message for p in problems)
    assert "base_url is required for a provider of type 'vllm'" in messages
    assert "'bad name': use letters, digits" in messages
    assert "unknown setting" in messages


def test_health_urls_by_type_and_by_setting() -> None:
    def url(**fields: object) -> str | None:
        return ProviderSpec.model_validate(fields).health_url

    assert url(type="vllm", base_url="http://h:8000/v1") == "http://h:8000/health"
    assert url(type="openai-compatible", base_url="http://h:8000/v1/") == "http://h:8000/v1/models"
    assert url(type="ollama", base_url="http://h:11434", health="/") == "http://h:11434/"
    assert url(type="anthropic") is None
    assert url(type="other", health="https://status.example/ok") == "https://status.example/ok"
    assert url(type="vllm", base_url="http://h:8000", health=None) is None


def test_mapping_problems_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", """
        mappings:
          chat:
            targets:
              - gpt-4o-mini
              - provider: box
          code:
            targets: []
          both:
            targets:
              - {group: a, provider: b, model: c}
              - {group: a, model: c}
    """)
    parsed, problems = parse_mappings(load_yaml(path))
    assert parsed is None
    lines = {p.line: p.message for p in problems}
    assert "a provider target needs the model it serves" in lines[5]
    assert "at least 1 item" in lines[7]
    assert "give either group, or provider and model" in lines[10]
    assert "model goes with provider, not with group" in lines[11]


def test_empty_sections_are_valid(tmp_path: Path) -> None:
    parsed, problems = parse_providers(load_yaml(write(tmp_path, "p.yaml", "providers:\n")))
    assert problems == [] and parsed is not None and parsed.providers == {}
    _, problems = parse_mappings(load_yaml(write(tmp_path, "m.yaml", "mappings: [a]\n")))
    assert problems[0].line == 1 and "valid dictionary" in problems[0].message
