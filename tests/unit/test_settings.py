"""Settings: validation with located errors, and the environment overrides of DESIGN.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from aidash_lib.settings import (
    REPO_CONFIG,
    SettingsError,
    load_settings,
    settings_path,
    validate_settings_file,
)
from aidash_lib.yamlfile import UnusableInput


def write(tmp_path: Path, text: str, name: str = "dashboard.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_repository_settings_are_valid_and_match_the_fields_defaults() -> None:
    settings = validate_settings_file(REPO_CONFIG)
    assert settings.gateway.url == "http://127.0.0.1:4000"
    assert settings.prometheus.url is None
    assert settings.intervals.gpu_s == 2
    assert settings.intervals.machine_s == 5
    assert settings.thresholds["gpu_temperature_c"].critical == 90
    assert [s.kind for s in settings.services] == ["process", "systemd"]


def test_errors_name_the_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, (
        "gateway:\n"
        "  url: ftp://gateway\n"
        "  timeot_s: 3\n"
        "intervals:\n"
        "  gpu_s: -1\n"
        "thresholds:\n"
        "  cpu_percent: {warn: 90, critical: 50}\n"
        "services:\n"
        "  - name: a\n"
        "    kind: podman\n"
        "    target: x\n"
    ))
    with pytest.raises(SettingsError) as caught:
        validate_settings_file(path)
    lines = str(caught.value).splitlines()
    assert f"{path}:2: gateway.url: 'ftp://gateway' is not an http(s) URL" in lines
    assert f"{path}:3: gateway.timeot_s: unknown setting" in lines[1]
    assert lines[2].startswith(f"{path}:5: intervals.gpu_s: Input should be greater than 0")
    assert f"{path}:7: thresholds.cpu_percent: critical (50.0) is below warn (90.0)" in lines
    assert lines[4].startswith(f"{path}:10: services.0.kind:")


def test_yaml_syntax_error_is_unusable_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  url: [unclosed\nintervals:\n  gpu_s: 2\n")
    with pytest.raises(UnusableInput) as caught:
        validate_settings_file(path)
    assert caught.value.problem.path == str(path)
    assert caught.value.problem.line is not None
    assert "invalid YAML" in caught.value.problem.message


def test_missing_file_is_unusable(tmp_path: Path) -> None:
    with pytest.raises(UnusableInput, match="no such file"):
        validate_settings_file(tmp_path / "absent.yaml")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  url: http://10.0.0.5:4000\nstore:\n  path: /srv/a.sqlite\n")
    env = {
        "AIDASH_GATEWAY_URL": "http://127.0.0.1:4100",
        "AIDASH_PROMETHEUS_URL": "http://127.0.0.1:9090",
        "AIDASH_ALERTMANAGER_URL": "http://127.0.0.1:9093",
        "AIDASH_STORE": str(tmp_path / "h.sqlite"),
    }
    settings = load_settings(path, environ=env)
    assert settings.gateway.url == "http://127.0.0.1:4100"
    assert settings.prometheus.url == "http://127.0.0.1:9090"
    assert settings.alertmanager.url == "http://127.0.0.1:9093"
    assert settings.store_path == tmp_path / "h.sqlite"


def test_aidash_config_names_the_settings_file(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  url: http://127.0.0.1:4555\n", "elsewhere.yaml")
    assert settings_path({"AIDASH_CONFIG": str(path)}) == path
    assert load_settings(environ={"AIDASH_CONFIG": str(path)}).gateway.url.endswith(":4555")


def test_bad_override_is_reported_as_coming_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  url: http://127.0.0.1:4000\n")
    with pytest.raises(UnusableInput, match="AIDASH_"):
        load_settings(path, environ={"AIDASH_GATEWAY_URL": "gateway:4000"})


def test_gateway_key_order_and_masking(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  key_env: MY_PROXY_KEY\n  key: sk-from-file-0000\n")
    settings = load_settings(path, environ={})
    assert settings.gateway_key({}) == "sk-from-file-0000"
    assert settings.gateway_key({"MY_PROXY_KEY": "sk-env"}) == "sk-env"
    both = {"MY_PROXY_KEY": "sk-env", "AIDASH_GATEWAY_KEY": "sk-aidash"}
    assert settings.gateway_key(both) == "sk-aidash"
    assert "sk-from-file-0000" not in repr(settings)
    assert "sk-from-file-0000" not in settings.model_dump_json()
