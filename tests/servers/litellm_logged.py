"""A real LiteLLM proxy with aidash's request logger enabled, as an operator enables it.

The proxy runs in `.venv-litellm` (its own environment) with `aidash` installed there
(`make litellm-venv-aidash`); its config is the test config with
`callbacks: ["prometheus", "aidash_callbacks.handler"]` and the one-line shim
`config/litellm/aidash_callbacks.py` copied beside it. Records go to `AIDASH_STORE`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers.litellm import (
    CONFIG,
    MASTER_KEY,
    OFFLINE_ENV,
    READY_TIMEOUT_S,
    REPO,
    LiteLLMGateway,
    litellm_binary,
)
from tests.servers.process import free_port, start_server

SHIM = REPO / "config" / "litellm" / "aidash_callbacks.py"
PROMETHEUS_ONLY = 'callbacks: ["prometheus"]'
WITH_AIDASH = 'callbacks: ["prometheus", "aidash_callbacks.handler"]'


@dataclass
class LoggedGateway:
    """A running proxy whose aidash logger writes to `store_path`."""

    gateway: LiteLLMGateway
    store_path: Path

    @property
    def log_text(self) -> str:
        return self.gateway.server.log_path.read_text(errors="replace")


def require_aidash_in_litellm_env(binary: str) -> None:
    """Fail with the fix when `aidash_lib` is missing from the proxy's environment, or is a
    copy of another tree (the tests must run the code of this checkout)."""
    python = Path(binary).with_name("python")
    probe = subprocess.run(
        [str(python), "-c",
         "import importlib.util; s = importlib.util.find_spec('aidash_lib'); "
         "print(s.submodule_search_locations[0] if s else '')"],
        capture_output=True, text=True, timeout=60,
    )
    location = probe.stdout.strip()
    if not location or Path(location).resolve() != (REPO / "aidash_lib").resolve():
        pytest.fail(
            f"aidash is not installed (editable, from {REPO}) in the gateway's environment "
            f"{python.parent.parent} (found: {location or 'nothing'}): run "
            "`make litellm-venv-aidash`, which runs `.venv-litellm/bin/pip install -e .`",
            pytrace=False,
        )


def write_config(workdir: Path, *, aidash: bool = True) -> Path:
    """The test config in `workdir`, with the aidash callback and its shim (or without)."""
    text = CONFIG.read_text()
    if PROMETHEUS_ONLY not in text:
        raise AssertionError(f"{CONFIG} no longer has `{PROMETHEUS_ONLY}`")
    if aidash:
        text = text.replace(PROMETHEUS_ONLY, WITH_AIDASH)
        (workdir / SHIM.name).write_text(SHIM.read_text())
    config = workdir / "config.yaml"
    config.write_text(text)
    return config


def start_logged_litellm(
    log_dir: Path,
    store_path: Path,
    *,
    name: str = "litellm-logged",
    aidash: bool = True,
    env: Mapping[str, str] | None = None,
) -> LoggedGateway:
    """Start a proxy on a free loopback port with the aidash logger writing to `store_path`
    (with `aidash=False`: the same proxy with the prometheus callback only)."""
    binary = litellm_binary()
    if aidash:
        require_aidash_in_litellm_env(binary)
    port = free_port()
    while port == 4000:
        port = free_port()
    workdir = log_dir / f"{name}-{port}"
    workdir.mkdir(parents=True)
    config = write_config(workdir, aidash=aidash)
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(
        f"{name}-{port}",
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        log_dir=log_dir, base_url=base_url, ready_path="/health/readiness",
        env={**OFFLINE_ENV, "AIDASH_STORE": str(store_path), **(env or {})},
        cwd=workdir, ready_timeout_s=READY_TIMEOUT_S,
    )
    return LoggedGateway(LiteLLMGateway(base_url, MASTER_KEY, server, config), store_path)


@pytest.fixture(scope="session")
def litellm_logged_gateway(
    server_logs: Path, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LoggedGateway]:
    """One proxy with the aidash logger and a store of its own, for the session."""
    store = tmp_path_factory.mktemp("aidash-store") / "history.sqlite"
    logged = start_logged_litellm(server_logs, store)
    try:
        yield logged
    finally:
        logged.gateway.server.stop()


@pytest.fixture
def litellm_logged_gateway_factory(
    server_logs: Path,
) -> Iterator[Callable[..., LoggedGateway]]:
    """Starts private logged proxies: `start(store_path, env={...})`; stopped at test end."""
    started: list[LoggedGateway] = []

    def start(store_path: Path, env: Mapping[str, str] | None = None) -> LoggedGateway:
        logged = start_logged_litellm(
            server_logs, store_path, name="litellm-logged-private", env=env)
        started.append(logged)
        return logged

    try:
        yield start
    finally:
        for logged in started:
            logged.gateway.server.stop()


@dataclass
class Sent:
    """One chat completion sent through the gateway and what it answered."""

    kind: str
    model: str
    stream: bool
    status: int
    call_id: str
    served_by: str | None  # x-litellm-model-id
    done_s: float  # when the response had been read completely


def send_chat(client: httpx.Client, kind: str, model: str, stream: bool = False, *,
              marker: str = "aidash test") -> Sent:
    """One chat completion of a kind of the known mix (`context_fallback` gets a prompt too
    long for its group's context window); `marker` starts the prompt."""
    content = f"{marker} {kind}"
    if kind == "context_fallback":
        content += " " + "long context " * 3000
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.read()
    else:
        response = client.post("/v1/chat/completions", json=body)
    return Sent(kind, model, stream, response.status_code,
                response.headers.get("x-litellm-call-id", ""),
                response.headers.get("x-litellm-model-id"), time.time())
