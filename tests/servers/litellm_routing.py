"""A real LiteLLM proxy with the routing test config (`litellm_routing_config.yaml`).

Started by `start_routing_gateway`, which reuses the pieces of `tests.servers.litellm` (binary,
offline environment, free port) with a config and environment of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.servers.litellm import (
    MASTER_KEY,
    OFFLINE_ENV,
    READY_TIMEOUT_S,
    LiteLLMGateway,
    litellm_binary,
)
from tests.servers.process import free_port, start_server

ROUTING_CONFIG = Path(__file__).with_name("litellm_routing_config.yaml")
#: The variable the config's `os.environ/` references name, and its (fake) value.
ROUTING_ENV = {"AIDASH_ROUTING_TEST_KEY": "sk-fake-routing-env-key"}


def start_routing_gateway(log_dir: Path, name: str = "litellm-routing") -> LiteLLMGateway:
    """Start a proxy serving the routing config on a free loopback port (never 4000)."""
    binary = litellm_binary()
    port = free_port()
    while port == 4000:
        port = free_port()
    workdir = log_dir / f"{name}-{port}"
    workdir.mkdir(parents=True)
    config = workdir / "config.yaml"
    shutil.copyfile(ROUTING_CONFIG, config)
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(
        f"{name}-{port}",
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        log_dir=log_dir, base_url=base_url, ready_path="/health/readiness",
        env={**OFFLINE_ENV, **ROUTING_ENV}, cwd=workdir, ready_timeout_s=READY_TIMEOUT_S,
    )
    return LiteLLMGateway(base_url, MASTER_KEY, server, config)
