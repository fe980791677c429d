"""Real servers for benchmarks: the same launchers the tests use, outside pytest."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.servers.litellm import LiteLLMGateway, start_litellm  # noqa: E402
from tests.servers.process import ServerProcess, free_port, start_server  # noqa: E402


@dataclass
class Servers:
    gateway: LiteLLMGateway
    prometheus: ServerProcess
    alertmanager: ServerProcess


def _prometheus(workdir: Path) -> ServerProcess:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 5s}\n"
        f"scrape_configs:\n  - job_name: prometheus\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )
    url = f"http://127.0.0.1:{port}"
    return start_server(
        "prometheus", [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
                       f"--storage.tsdb.path={workdir / 'prom'}",
                       f"--web.listen-address=127.0.0.1:{port}", f"--web.external-url={url}/"],
        log_dir=workdir, base_url=url, ready_path="/-/ready",
    )


def _alertmanager(workdir: Path) -> ServerProcess:
    port = free_port()
    config = workdir / "alertmanager.yml"
    config.write_text("route: {receiver: none}\nreceivers:\n  - name: none\n")
    url = f"http://127.0.0.1:{port}"
    binary = shutil.which("prometheus-alertmanager") or "prometheus-alertmanager"
    return start_server(
        "alertmanager", [binary, f"--config.file={config}", f"--storage.path={workdir / 'am'}",
                         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                         f"--web.external-url={url}/"],
        log_dir=workdir, base_url=url, ready_path="/-/ready",
    )


@contextlib.contextmanager
def running_servers() -> Iterator[Servers]:
    """A LiteLLM proxy (the test config), Prometheus and Alertmanager on loopback."""
    with tempfile.TemporaryDirectory(prefix="aidash-bench-") as tmp:
        workdir = Path(tmp)
        started: list[ServerProcess] = []
        try:
            gateway = start_litellm(workdir)
            started.append(gateway.server)
            prometheus = _prometheus(workdir)
            started.append(prometheus)
            alertmanager = _alertmanager(workdir)
            started.append(alertmanager)
            yield Servers(gateway, prometheus, alertmanager)
        finally:
            for server in started:
                server.stop()
