"""The command line against the real servers: what the foundation issue's "done when" asks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.process import closed_port

pytestmark = pytest.mark.integration

AIDASH = [sys.executable, "-m", "aidash_lib.cli"]


def run_aidash(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIDASH_", "LITELLM_"))}
    return subprocess.run(
        [*AIDASH, *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True,
        timeout=60,
    )


def write_settings(tmp_path: Path, gateway_url: str, **servers: str) -> Path:
    lines = [f"gateway:\n  url: {gateway_url}\n  key_env: TEST_PROXY_KEY\n"]
    for name, url in servers.items():
        lines.append(f"{name}:\n  url: {url}\n")
    lines.append(
        "services:\n  - name: gateway\n    kind: process\n    target: 'litellm .*--config'\n"
    )
    path = tmp_path / "dashboard.yaml"
    path.write_text("".join(lines))
    return path


def test_snapshot_json_reports_the_live_gateway(
    litellm_gateway, prometheus_server, alertmanager, tmp_path: Path
) -> None:
    litellm_gateway.chat(2, model="gpt-4o-mini")
    litellm_gateway.chat(1, model="llama3-local")  # closed port: fails, then falls back
    settings = write_settings(
        tmp_path, litellm_gateway.base_url,
        prometheus=prometheus_server.base_url, alertmanager=alertmanager.base_url,
    )
    done = run_aidash(
        "--config", str(settings), "snapshot", "--json",
        env={"TEST_PROXY_KEY": litellm_gateway.master_key}, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert litellm_gateway.master_key not in done.stdout + done.stderr
    snap = json.loads(done.stdout)
    assert snap["ok"] is True and snap["failures"] == {}
    readings = snap["readings"]
    readiness = readings["gateway.readiness"]["value"]
    assert readiness["healthy"] is True
    assert readiness["litellm_version"] == "1.108.7"
    groups = {g["name"] for g in readings["gateway.model_groups"]["value"]}
    assert groups == {"gpt-4o-mini", "claude-haiku", "llama3-local", "flaky-model",
                      "small-context-model"}
    views = {v["deployment"]["deployment_id"]: v for v in snap["deployments"]}
    assert len(views) == 7
    assert views["gpt-4o-mini-a"]["deployment"]["provider"] == "openai"
    assert views["llama3-local-1"]["deployment"]["api_base"] == "http://127.0.0.1:9"
    assert views["llama3-local-1"]["state"] in {"partial", "outage"}
    assert views["llama3-local-1"]["failures"] >= 1
    served = sum(views[f"gpt-4o-mini-{x}"]["requests"] for x in "abc")
    assert served >= 3  # 2 asked directly, 1 as llama3-local's fallback
    assert readings["prometheus"]["value"]["ready"] is True
    assert readings["alertmanager.alerts"]["ok"] is True
    assert readings["machine"]["value"]["memory_total_bytes"] > 0
    gateway_service = readings["services"]["value"][0]
    assert gateway_service["state"] == "running"
    assert readings["gpu"]["ok"] or readings["gpu"]["fault"]["kind"] == "not_available"


def test_snapshot_summary_of_the_live_gateway(litellm_gateway, tmp_path: Path) -> None:
    settings = write_settings(tmp_path, litellm_gateway.base_url)
    done = run_aidash(
        "--config", str(settings), "snapshot",
        env={"TEST_PROXY_KEY": litellm_gateway.master_key}, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ready (db Not connected, LiteLLM 1.108.7" in out
    assert "gpt-4o-mini-b" in out and "llama3-local-1" in out
    assert "fallbacks: llama3-local -> gpt-4o-mini" in out
    assert "every source answered" in out
    assert litellm_gateway.master_key not in out + done.stderr


def test_snapshot_with_the_gateway_down_exits_1_and_still_reports_the_machine(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    settings = write_settings(tmp_path, url)
    done = run_aidash("--config", str(settings), "snapshot", env={}, cwd=tmp_path)
    assert done.returncode == 1
    assert f"unreachable at {url}: connection refused" in done.stdout
    assert "FAILED gateway" in done.stdout
    assert "memory" in done.stdout and "CPU" in done.stdout

    as_json = run_aidash("--config", str(settings), "snapshot", "--json", env={}, cwd=tmp_path)
    assert as_json.returncode == 1
    snap = json.loads(as_json.stdout)
    assert snap["failures"]["gateway.readiness"].startswith(f"unreachable ({url}/health/readiness)")
    assert snap["readings"]["machine"]["ok"] is True


def test_environment_points_the_snapshot_elsewhere(litellm_gateway, tmp_path: Path) -> None:
    settings = write_settings(tmp_path, f"http://127.0.0.1:{closed_port()}")
    done = run_aidash(
        "snapshot", "--json",
        env={"AIDASH_CONFIG": str(settings), "AIDASH_GATEWAY_URL": litellm_gateway.base_url,
             "AIDASH_GATEWAY_KEY": litellm_gateway.master_key},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["gateway_url"] == litellm_gateway.base_url


def test_snapshot_refuses_unusable_settings(tmp_path: Path) -> None:
    bad = tmp_path / "dashboard.yaml"
    bad.write_text("gateway:\n  url: nowhere\n")
    done = run_aidash("--config", str(bad), "snapshot", env={}, cwd=tmp_path)
    assert done.returncode == 2
    assert f"{bad}:2: gateway.url: 'nowhere' is not an http(s) URL" in done.stderr


def test_check_command_exit_codes(tmp_path: Path) -> None:
    repo_config = Path(__file__).resolve().parents[2] / "config" / "dashboard.yaml"
    assert run_aidash("check", str(repo_config), env={}, cwd=tmp_path).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("intervals:\n  gpu_s: 0\n")
    done = run_aidash("check", str(bad), env={}, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.strip() == f"{bad}:2: intervals.gpu_s: Input should be greater than 0"
    assert run_aidash("check", str(tmp_path / "none.yaml"), env={}, cwd=tmp_path).returncode == 2
