"""A real LiteLLM proxy (the pinned release) for integration tests, fully offline.

`litellm_gateway` is one proxy for the whole session; `litellm_gateway_factory` starts private
ones (for tests that kill or reconfigure them), stopped when the test ends. The deployments are
mocks, plus `llama3-local` on the closed port 127.0.0.1:9 (see `litellm_config.yaml`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers.process import ServerProcess, free_port, start_server

LITELLM_VERSION = "1.108.7"
MASTER_KEY = "sk-test-master-aidash"
CONFIG = Path(__file__).with_name("litellm_config.yaml")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO / ".venv-litellm" / "bin" / "litellm"
READY_TIMEOUT_S = 90.0

#: What the config serves: group -> deployment ids.
GROUPS: dict[str, tuple[str, ...]] = {
    "gpt-4o-mini": ("gpt-4o-mini-a", "gpt-4o-mini-b", "gpt-4o-mini-c"),
    "claude-haiku": ("claude-haiku-1",),
    "llama3-local": ("llama3-local-1",),
    "flaky-model": ("flaky-model-1",),
    "small-context-model": ("small-context-model-1",),
}

#: Each stops one fetch of a remote JSON file at import or start-up (no network in tests).
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "NO_PROXY": "127.0.0.1,localhost",
}


@dataclass
class LiteLLMGateway:
    """A running proxy: where it listens, its master key, its process and log."""

    base_url: str
    master_key: str = field(repr=False)
    server: ServerProcess
    config_path: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}

    def chat(
        self, n: int = 1, model: str = "gpt-4o-mini", content: str = "hello",
        timeout_s: float = 30.0,
    ) -> list[httpx.Response]:
        """Send `n` chat completions (sequentially) so the gateway has traffic to report."""
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout_s) as c:
            return [
                c.post("/v1/chat/completions",
                       json={"model": model, "messages": [{"role": "user", "content": content}]})
                for _ in range(n)
            ]


def litellm_binary() -> str:
    """The proxy's executable: `$AIDASH_LITELLM_BIN`, else the repository's `.venv-litellm`."""
    path = Path(os.environ.get("AIDASH_LITELLM_BIN") or DEFAULT_BINARY)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"the LiteLLM proxy is not installed at {path}: run `make litellm-venv` "
            f"(a venv at .venv-litellm with 'litellm[proxy]=={LITELLM_VERSION}' "
            "'prometheus-client==0.26.0' 'prisma==0.15.0'), or point AIDASH_LITELLM_BIN at one",
            pytrace=False,
        )
    return str(path)


def start_litellm(log_dir: Path, name: str = "litellm") -> LiteLLMGateway:
    """Start a proxy on a free loopback port (never 4000: LiteLLM swaps a busy 4000 for a
    random port) with the test config copied to its own folder."""
    binary = litellm_binary()
    port = free_port()
    while port == 4000:
        port = free_port()
    workdir = log_dir / f"{name}-{port}"
    workdir.mkdir(parents=True)
    config = workdir / "config.yaml"
    shutil.copyfile(CONFIG, config)
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(
        f"{name}-{port}",
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        log_dir=log_dir, base_url=base_url, ready_path="/health/readiness",
        env=OFFLINE_ENV, cwd=workdir, ready_timeout_s=READY_TIMEOUT_S,
    )
    return LiteLLMGateway(base_url, MASTER_KEY, server, config)


@pytest.fixture(scope="session")
def litellm_gateway(server_logs: Path) -> Iterator[LiteLLMGateway]:
    """One real LiteLLM proxy for the session. Other tests send traffic too: assert on
    changes (after - before), not on absolute counts."""
    gateway = start_litellm(server_logs)
    try:
        yield gateway
    finally:
        gateway.server.stop()


@pytest.fixture
def litellm_gateway_factory(server_logs: Path) -> Iterator[Callable[[], LiteLLMGateway]]:
    """Starts private proxies (~10 s each); all are stopped when the test ends."""
    started: list[LiteLLMGateway] = []

    def start() -> LiteLLMGateway:
        gateway = start_litellm(server_logs, name="litellm-private")
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.server.stop()
