"""`aidash demo`: a real LiteLLM proxy with mock deployments, traffic through it, the recorder
and the dashboard, in a temporary folder, until Ctrl-C.

The proxy (from `.venv-litellm`, as `make demo` installs it) serves `config/demo/config.yaml`:
mock deployments of different latencies, one on a closed port and one that always answers 429,
both falling back to healthy groups, with aidash's request logger and the prometheus callback.
A background client sends a few requests a second across the groups (the rate swells and
ebbs over five minutes, so that the charts move); the recorder polls every few seconds. Every
panel has data within a minute of the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aidash_lib.serve import (
    DASHBOARD_NOTEBOOK,
    DEFAULT_PORT,
    DashboardServer,
    ServeError,
    Stopped,
    StopSignals,
    announce,
    port_problem,
    spawn,
    stop_process,
)
from aidash_lib.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "config" / "demo" / "config.yaml"
LOGGER_SHIM = REPO / "config" / "litellm" / "aidash_callbacks.py"
LITELLM_VENV = REPO / ".venv-litellm"
GATEWAY_READY_TIMEOUT_S = 120.0
DEFAULT_RATE = 3.0
#: The rate swells and ebbs by ±RATE_SWING over this period, so that the charts move.
RATE_PERIOD_S = 300.0
RATE_SWING = 0.5
STATUS_EVERY_S = 60.0
MAX_IN_FLIGHT = 32

#: Model groups the traffic asks for, with their share of requests.
TRAFFIC_MIX: tuple[tuple[str, float], ...] = (
    ("gpt-4o-mini", 0.40),
    ("claude-haiku", 0.15),
    ("qwen-coder", 0.15),
    ("llama3-local", 0.15),  # down: falls back to gpt-4o-mini
    ("flaky-model", 0.15),   # rate limited: falls back to claude-haiku
)
STREAM_SHARE = 0.2
PROMPTS = (
    "Say hello.",
    "Summarise the plot of Hamlet in one sentence.",
    "Write a haiku about GPUs running hot at night in a small server room.",
    "Explain, step by step and for a newcomer, how a load balancer decides where a request "
    "goes, what a fallback is, and why a deployment gets cooled down after a few failures.",
)

#: Each stops one fetch of a remote JSON file at the proxy's start-up (the demo is offline).
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "NO_PROXY": "127.0.0.1,localhost",
}

SETTINGS_TEMPLATE = """\
# aidash demo settings (written by `aidash demo`; removed when it stops).
gateway:
  url: {gateway_url}
  key_env: LITELLM_MASTER_KEY
  timeout_s: 5
  health_check_min_interval_s: 60
store:
  path: {store}
  raw_retention_h: 24
intervals:
  machine_s: 2
  gpu_s: 2
  gateway_readiness_s: 2
  gateway_metrics_s: 5
  deployments_s: 10
  services_s: 10
services:
  - name: litellm
    kind: process
    target: 'litellm .*--config'
routing:
  litellm_config: config.yaml
"""

INSTALL_HINT = ("run `make demo` (it creates .venv-litellm with the pinned LiteLLM proxy and "
                "installs aidash into it), or point AIDASH_LITELLM_BIN at a `litellm` executable")


class DemoError(Exception):
    """The demo cannot start; the message says what to do."""


def litellm_binary(environ: Mapping[str, str] | None = None) -> Path:
    """`$AIDASH_LITELLM_BIN`, else `.venv-litellm/bin/litellm` (raises `DemoError`)."""
    env = os.environ if environ is None else environ
    path = Path(env.get("AIDASH_LITELLM_BIN") or LITELLM_VENV / "bin" / "litellm")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise DemoError(f"no LiteLLM proxy at {path}: {INSTALL_HINT}")
    return path


def aidash_location(python: Path) -> str | None:
    """Where `aidash_lib` is installed in that interpreter's environment, or None."""
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; s = u.find_spec('aidash_lib'); "
                            "print(s.submodule_search_locations[0] if s else '')"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    return probe.stdout.strip() or None


def ensure_aidash_in_gateway_env(binary: Path, *, install: bool = True) -> None:
    """Install aidash (editable, from this checkout) beside the proxy when it is missing,
    so that the proxy can load aidash's request logger (raises `DemoError`)."""
    python = binary.with_name("python")
    if aidash_location(python) is not None:
        return
    if not install:
        raise DemoError("aidash is not installed in the proxy's environment "
                        f"{python.parent.parent}: {INSTALL_HINT}")
    print(f"aidash demo: installing aidash into {python.parent.parent} (once)...", flush=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO)],
                          check=False, timeout=600)
    if done.returncode != 0 or aidash_location(python) is None:
        raise DemoError(f"could not install aidash into {python.parent.parent}: {INSTALL_HINT}")


def write_demo_files(workdir: Path, gateway_port: int) -> Path:
    """The proxy's config, the logger's shim and the settings in `workdir`; the settings'
    path."""
    shutil.copyfile(DEMO_CONFIG, workdir / "config.yaml")
    shutil.copyfile(LOGGER_SHIM, workdir / LOGGER_SHIM.name)
    settings = workdir / "dashboard.yaml"
    settings.write_text(SETTINGS_TEMPLATE.format(
        gateway_url=f"http://127.0.0.1:{gateway_port}", store=workdir / "history.sqlite"))
    return settings


def free_gateway_port() -> int:
    """A free loopback port, never 4000 (LiteLLM swaps a busy 4000 for a random port)."""
    import socket

    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 4000:
            return port


def wait_for_gateway(url: str, proc: subprocess.Popen, log_path: Path,
                     timeout_s: float = GATEWAY_READY_TIMEOUT_S,
                     stop: threading.Event | None = None) -> None:
    """Wait until `/health/readiness` answers 200 (raises `DemoError`, or `Stopped` when
    `stop` is set first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            raise Stopped("stopped before the gateway was ready")
        if proc.poll() is not None:
            raise DemoError(f"the LiteLLM proxy exited with status {proc.returncode}:\n"
                            f"{_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/readiness", timeout=2.0).status_code == 200:
                return
        time.sleep(0.3)
    raise DemoError(f"the LiteLLM proxy did not become ready within {timeout_s:.0f} s:\n"
                    f"{_tail(log_path)}")


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class TrafficStats:
    """What the traffic client has seen: requests sent, by group and by HTTP status."""

    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_group: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_status.items()))
        return f"{self.sent} requests sent ({statuses or 'none answered yet'})"


class Traffic:
    """Steady chat traffic through the gateway from a background thread (asyncio inside)."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        rate: float = DEFAULT_RATE,
        mix: Sequence[tuple[str, float]] = TRAFFIC_MIX,
        seed: int | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.base_url = base_url
        self._key = key
        self.rate = rate
        self.groups = [group for group, _ in mix]
        self.weights = [weight for _, weight in mix]
        self.stats = TrafficStats()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rate_at(self, elapsed_s: float) -> float:
        """Requests per second `elapsed_s` after the start."""
        return self.rate * (1 + RATE_SWING * math.sin(2 * math.pi * elapsed_s / RATE_PERIOD_S))

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()),
                                        name="aidash-demo-traffic", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT)
        headers = {"Authorization": f"Bearer {self._key}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30.0,
                                     limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            while not self._stop.is_set():
                wait = self._rng.expovariate(self.rate_at(time.monotonic() - started))
                await asyncio.sleep(min(wait, 1.0))
                if self._stop.is_set() or len(tasks) >= MAX_IN_FLIGHT:
                    continue
                task = asyncio.create_task(self._one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=10.0)

    async def _one(self, client: httpx.AsyncClient) -> None:
        group = self._rng.choices(self.groups, self.weights)[0]
        stream = self._rng.random() < STREAM_SHARE
        body = {"model": group, "stream": stream, "max_tokens": 64,
                "messages": [{"role": "user", "content": self._rng.choice(PROMPTS)}]}
        self.stats.sent += 1
        self.stats.by_group[group] += 1
        try:
            if stream:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass
            else:
                response = await client.post("/v1/chat/completions", json=body)
            self.stats.by_status[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            self.stats.by_status[type(exc).__name__] += 1


def main_demo(
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    gateway_port: int | None = None,
    rate: float = DEFAULT_RATE,
    open_browser: bool = False,
    keep: bool = False,
    notebook: Path = DASHBOARD_NOTEBOOK,
) -> int:
    """`aidash demo`: run until SIGTERM or SIGINT (exit 0); 1 when a part fails, 2 when the
    proxy is not installed."""
    try:
        binary = litellm_binary()
        ensure_aidash_in_gateway_env(binary)
    except DemoError as exc:
        print(f"aidash demo: {exc}", file=sys.stderr)
        return 2
    problem = port_problem(host, port)
    if problem is not None:
        print(f"aidash demo: {problem}; choose another port with --port", file=sys.stderr)
        return 1
    gateway_port = gateway_port or free_gateway_port()
    workdir = Path(tempfile.mkdtemp(prefix="aidash-demo-"))
    master_key = "sk-demo-" + secrets.token_urlsafe(16)
    env = {**os.environ, **OFFLINE_ENV, "LITELLM_MASTER_KEY": master_key,
           "AIDASH_GATEWAY_KEY": master_key}
    settings_file = write_demo_files(workdir, gateway_port)
    settings: Settings = load_settings(settings_file, environ={})
    env["AIDASH_STORE"] = str(settings.store_path)
    gateway_log = workdir / "litellm.log"
    gateway_url = settings.gateway.url
    gateway: subprocess.Popen | None = None
    traffic = Traffic(gateway_url, master_key, rate=rate)
    server = DashboardServer(settings, port=port, host=host, notebook=notebook, environ=env,
                             log_path=workdir / "dashboard.log", out=sys.stdout)
    with StopSignals() as signals:
        try:
            print(f"aidash demo: files and logs in {workdir}", flush=True)
            print(f"aidash demo: starting the LiteLLM proxy on {gateway_url} (10-20 s)...",
                  flush=True)
            with open(gateway_log, "ab") as log:
                gateway = spawn(
                    [str(binary), "--config", str(workdir / "config.yaml"), "--host",
                     "127.0.0.1", "--port", str(gateway_port)],
                    env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
            server.start_recorder()
            server.start_voila()
            wait_for_gateway(gateway_url, gateway, gateway_log, stop=signals.event)
            traffic.start()
            server.wait_ready(stop=signals.event)
            print(f"aidash demo: traffic: about {rate:g} requests/s across "
                  f"{', '.join(traffic.groups)}", flush=True)
            print(announce(server.launch, host), flush=True)
            print("aidash demo: every panel fills within a minute; Ctrl-C stops everything",
                  flush=True)
            if open_browser:
                webbrowser.open(server.url)
            return _watch(signals.event, server, gateway, traffic, gateway_log)
        except Stopped:
            return 0
        except (DemoError, ServeError) as exc:
            print(f"aidash demo: {exc}", file=sys.stderr)
            return 1
        finally:
            print("aidash demo: stopping", flush=True)
            traffic.stop()
            server.stop()
            stop_process(gateway)
            if keep:
                print(f"aidash demo: kept {workdir}", flush=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def _watch(stop: threading.Event, server: DashboardServer, gateway: subprocess.Popen,
           traffic: Traffic, gateway_log: Path) -> int:
    """Until `stop`: look after the parts, print the traffic now and then."""
    next_status = time.monotonic() + STATUS_EVERY_S
    while not stop.wait(0.5):
        if gateway.poll() is not None:
            print(f"aidash demo: the LiteLLM proxy exited with status {gateway.returncode}:\n"
                  f"{_tail(gateway_log)}", file=sys.stderr)
            return 1
        reason = server.check()
        if reason is not None:
            print(f"aidash demo: {reason}", file=sys.stderr)
            return 1
        if time.monotonic() >= next_status:
            next_status += STATUS_EVERY_S
            print(f"aidash demo: traffic: {traffic.stats.summary()}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m aidash_lib.demo [--port P] [--rate R] [--open] [--keep]`."""
    parser = argparse.ArgumentParser(prog="python -m aidash_lib.demo",
                                     description="A LiteLLM proxy with traffic, and the dashboard.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the dashboard's port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--gateway-port", type=int, default=None,
                        help="the proxy's port (default: a free one)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second")
    parser.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    parser.add_argument("--keep", action="store_true", help="keep the store and logs at exit")
    args = parser.parse_args(argv)
    return main_demo(port=args.port, host=args.host, gateway_port=args.gateway_port,
                     rate=args.rate, open_browser=args.open, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
