"""Real Prometheus, Alertmanager and node_exporter (Debian's packages) for integration tests.

Each server runs once per session on a free 127.0.0.1 port with its data in a temporary folder.
Prometheus scrapes itself, node_exporter, Alertmanager and a target on a closed port every
second; the rule `AidashTestTargetDown` (for: 1s) fires on that dead target within seconds, so
Alertmanager holds a real active alert. Before Prometheus starts, `promtool` writes an hour of
known history (`SEED`) into its TSDB, so range queries can be checked value by value.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pytest

from tests.servers.process import (
    ServerProcess,
    closed_port,
    free_port,
    require_binary,
    start_server,
)

HERE = Path(__file__).resolve().parent
CONFIG_TEMPLATE = HERE / "prometheus.yml"
RULES_FILE = HERE / "prometheus_rules.yml"
ALERTMANAGER_CONFIG = HERE / "prometheus_alertmanager.yml"

INSTALL = "apt-get install prometheus prometheus-alertmanager prometheus-node-exporter"

#: The alert the rule file fires against the dead target, and that target's job.
TEST_ALERT_NAME = "AidashTestTargetDown"
DEAD_JOB = "deadtarget"


@dataclass(frozen=True)
class SeededHistory:
    """A gauge written into the TSDB before Prometheus starts, with values known in advance.

    One series per pattern (label `pattern`), one sample every `step_s` seconds from `start_s`
    to `end_s` inclusive (both on whole minutes): `ramp` is 0, 1, 2, ..., `square` is 0, 1, 0,
    1, ... A range query from `start_s` to `end_s` with step `step_s` returns exactly these.
    """

    metric: str
    start_s: int
    end_s: int
    step_s: int
    values: Mapping[str, tuple[float, ...]] = field(hash=False)

    @property
    def timestamps_s(self) -> tuple[int, ...]:
        return tuple(range(self.start_s, self.end_s + 1, self.step_s))

    def openmetrics(self) -> str:
        """The history as OpenMetrics text, as `promtool tsdb create-blocks-from` reads it."""
        lines = [
            f"# HELP {self.metric} Known history seeded by the aidash test fixture.",
            f"# TYPE {self.metric} gauge",
        ]
        for pattern, values in self.values.items():
            for ts, value in zip(self.timestamps_s, values, strict=True):
                lines.append(f'{self.metric}{{pattern="{pattern}"}} {value:g} {ts}')
        lines.append("# EOF")
        return "\n".join(lines) + "\n"


def make_seed(now_s: float | None = None, *, minutes: int = 60) -> SeededHistory:
    """An hour of one-minute samples ending at least a minute before `now_s`."""
    now_s = time.time() if now_s is None else now_s
    end_s = int(math.floor(now_s / 60) * 60) - 60
    start_s = end_s - minutes * 60
    count = minutes + 1
    return SeededHistory(
        metric="aidash_seed_value",
        start_s=start_s,
        end_s=end_s,
        step_s=60,
        values={
            "ramp": tuple(float(k) for k in range(count)),
            "square": tuple(float(k % 2) for k in range(count)),
        },
    )


@dataclass
class PrometheusServer:
    """The running Prometheus, what it scrapes, and the history seeded into it."""

    process: ServerProcess
    base_url: str
    config_path: Path
    data_dir: Path
    node_exporter_url: str
    alertmanager_url: str
    dead_target: str
    seed: SeededHistory

    def log_tail(self, chars: int = 3000) -> str:
        return self.process.log_tail(chars)


@pytest.fixture(scope="session")
def node_exporter(server_logs: Path) -> Iterator[ServerProcess]:
    """`prometheus-node-exporter` on a free loopback port (`base_url` + `/metrics`)."""
    binary = require_binary("prometheus-node-exporter", INSTALL)
    port = free_port()
    server = start_server(
        "node_exporter",
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--no-collector.systemd"],
        log_dir=server_logs,
        base_url=f"http://127.0.0.1:{port}",
        ready_path="/metrics",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def alertmanager(
    server_logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """`prometheus-alertmanager` on a free loopback port, gossip off, notifying nowhere."""
    binary = require_binary("prometheus-alertmanager", INSTALL)
    data = tmp_path_factory.mktemp("alertmanager-data")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(
        "alertmanager",
        [
            binary,
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--storage.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--web.external-url={base_url}/",
        ],
        log_dir=server_logs,
        base_url=base_url,
        ready_path="/-/ready",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus_server(
    server_logs: Path,
    tmp_path_factory: pytest.TempPathFactory,
    node_exporter: ServerProcess,
    alertmanager: ServerProcess,
) -> Iterator[PrometheusServer]:
    """`prometheus` with seeded history, scraping node_exporter, Alertmanager and itself."""
    binary = require_binary("prometheus", INSTALL)
    promtool = require_binary("promtool", INSTALL)
    root = tmp_path_factory.mktemp("prometheus")
    data = root / "data"
    data.mkdir()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    dead_target = f"127.0.0.1:{closed_port()}"

    seed = make_seed()
    history = root / "history.om"
    history.write_text(seed.openmetrics())
    made = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(history), str(data)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if made.returncode != 0:
        pytest.fail(f"promtool could not seed the TSDB:\n{made.stdout}{made.stderr}", pytrace=False)

    config = root / "prometheus.yml"
    config.write_text(
        Template(CONFIG_TEMPLATE.read_text()).substitute(
            prometheus=f"127.0.0.1:{port}",
            node=node_exporter.base_url.removeprefix("http://"),
            alertmanager=alertmanager.base_url.removeprefix("http://"),
            dead_target=dead_target,
            rules=str(RULES_FILE),
        )
    )
    process = start_server(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={base_url}/",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
        ],
        log_dir=server_logs,
        base_url=base_url,
        ready_path="/-/ready",
    )
    yield PrometheusServer(
        process=process,
        base_url=base_url,
        config_path=config,
        data_dir=data,
        node_exporter_url=node_exporter.base_url,
        alertmanager_url=alertmanager.base_url,
        dead_target=dead_target,
        seed=seed,
    )
    process.stop()
