"""Starting real servers for tests: free loopback ports, readiness waits, clean teardown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port with nothing listening: connections to it are refused."""
    return free_port()


def require_binary(name: str, how_to_install: str) -> str:
    """The path of an executable, or a test failure that says how to install it.

    Missing components fail (they are never skipped): CI installs everything.
    """
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH. Install it: {how_to_install}", pytrace=False)
    return path


@dataclass
class ServerProcess:
    """A server started by a fixture, with its log file for post-mortem reading."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    base_url: str

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    base_url: str,
    ready_path: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout_s: float = 60.0,
    ready_status: Sequence[int] = (200,),
) -> ServerProcess:
    """Start `argv`, wait until `base_url + ready_path` answers one of `ready_status`."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    server = ServerProcess(name, proc, log_path, base_url)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{name} exited with {proc.returncode} before it was ready:\n{server.log_tail()}",
                pytrace=False,
            )
        try:
            if httpx.get(base_url + ready_path, timeout=1.0).status_code in ready_status:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    pytest.fail(
        f"{name} not ready after {ready_timeout_s:.0f} s:\n{server.log_tail()}", pytrace=False
    )
    raise AssertionError("unreachable")
