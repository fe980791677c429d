"""`aidash serve`: the recorder (when none runs) and Voilà on the dashboard notebook.

- loopback by default; a token whenever it listens on anything else. The token reaches Voilà
  through a private file (`JUPYTER_TOKEN_FILE`), never its command line, and is printed once,
  in the URL to open; Voilà itself logs `?token=...`;
- kernels shut down when a page closes (Voilà 0.5's beacon needs XSRF checks off, which is
  why a non-loopback server must have a token) and idle kernels culled;
- the port is the one asked for, never silently another (`port_retries=0`);
- one poller: the recorder is started beside Voilà only if no recorder holds the store, and
  the dashboard's kernels read the store; they never get the gateway's key.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx

from aidash_lib.settings import Settings
from aidash_lib.store.sqlite import recorder_holder

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
DASHBOARD_NOTEBOOK = NOTEBOOKS / "dashboard.ipynb"
DEFAULT_PORT = 8866
CULL_IDLE_S = 600
CULL_INTERVAL_S = 60
#: A preheated kernel taken by a page is replaced this long after: not while that page loads,
#: which a second kernel running the notebook on the same cores would slow down.
PREHEAT_REFILL_S = 20
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
#: A recorder that exits is started again after this long (unless another one took the store).
RECORDER_RESTART_S = 5.0
#: Answers any request without starting a kernel: readiness of a Voilà server.
READY_PATH = "/voila/api/shutdown/aidash-ready"
#: Variables that hold the gateway's key or a server token: kept from the dashboard's kernels.
SECRET_VARIABLES = ("AIDASH_GATEWAY_KEY", "LITELLM_MASTER_KEY", "JUPYTER_TOKEN")

Popen = Callable[..., subprocess.Popen]


@dataclass(frozen=True)
class VoilaLaunch:
    """The command that serves the dashboard, and the URL a person opens."""

    argv: tuple[str, ...]
    url: str
    token: str | None

    def __repr__(self) -> str:  # the token is a secret: never in logs
        return f"VoilaLaunch(url={self.url_without_token!r})"

    @property
    def url_without_token(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def base_url(self) -> str:
        """The server's root, without a trailing slash (for readiness probes)."""
        return self.url_without_token.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def voila_launch(
    notebook: Path = DASHBOARD_NOTEBOOK,
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    token: str | None = None,
    python: str = sys.executable,
    preheated_kernels: int = 0,
    extra: Sequence[str] = (),
) -> VoilaLaunch:
    """The Voilà command line for the dashboard at the server's root URL.

    With `preheated_kernels` > 0, Voilà keeps that many kernels that have already run the
    notebook (`--preheat_kernel`), refilled `PREHEAT_REFILL_S` after a page takes one; see
    `aidash_lib.ui.voila_page`.

    With a token (always, off loopback) the command asks Voilà to require one
    (`--Voila.auto_token=True`); the value itself is given through `voila_environment`.
    """
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    argv = [
        python, "-m", "voila", str(notebook), "--no-browser",
        f"--port={port}", f"--Voila.ip={host}", "--Voila.port_retries=0",
        "--Voila.tornado_settings={'disable_check_xsrf': True}",
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
        "--show_tracebacks=False",
    ]
    if token:
        argv.append("--Voila.auto_token=True")
    if preheated_kernels > 0:
        argv += ["--preheat_kernel=True", f"--pool_size={int(preheated_kernels)}",
                 f"--VoilaKernelManager.fill_delay={PREHEAT_REFILL_S}"]
    argv.extend(extra)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    return VoilaLaunch(tuple(argv), url, token)


def settings_environment(
    settings: Settings, environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`environ` with the `AIDASH_*` variables that make a child process load `settings`."""
    env = dict(os.environ if environ is None else environ)
    if settings.source_path:
        env["AIDASH_CONFIG"] = str(Path(settings.source_path).resolve())
    env["AIDASH_GATEWAY_URL"] = settings.gateway.url
    env["AIDASH_STORE"] = str(settings.store_path)
    env["AIDASH_PROMETHEUS_URL"] = settings.prometheus.url or ""
    env["AIDASH_ALERTMANAGER_URL"] = settings.alertmanager.url or ""
    return env


def voila_environment(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    token_file: Path | None = None,
) -> dict[str, str]:
    """The environment of Voilà and so of every dashboard kernel: the settings, no secrets.

    The kernels read the store, never the gateway, so they get neither its key nor the
    server's token; Voilà reads the token from `token_file`.
    """
    env = settings_environment(settings, environ)
    for name in (*SECRET_VARIABLES, settings.gateway.key_env, "JUPYTER_TOKEN_FILE"):
        env.pop(name, None)
    if token_file is not None:
        env["JUPYTER_TOKEN_FILE"] = str(token_file)
    return env


def write_token_file(token: str, directory: Path) -> Path:
    """The token in a file only this user can read (Voilà's `JUPYTER_TOKEN_FILE`)."""
    path = directory / "voila-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return path


def recorder_command(settings: Settings, python: str = sys.executable) -> list[str]:
    """`python -m aidash_lib.recorder [--config FILE]` for these settings."""
    argv = [python, "-m", "aidash_lib.recorder"]
    if settings.source_path:
        argv += ["--config", str(Path(settings.source_path).resolve())]
    return argv


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be served, or None when it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _child_setup() -> None:  # pragma: no cover - runs in the child
    """Own session (a Ctrl-C reaches aidash, which stops the child in order) and SIGTERM
    when aidash dies, so that no Voilà or recorder outlives it."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(argv: Sequence[str], *, env: Mapping[str, str], popen: Popen = subprocess.Popen,
          **kwargs: Any) -> subprocess.Popen:
    """Start a child process that stops with aidash; stdin closed, output inherited."""
    return popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL,
                 preexec_fn=_child_setup, **kwargs)


def stop_process(proc: subprocess.Popen | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


class ServeError(Exception):
    """The dashboard could not be served; the message says why and what to do."""


class Stopped(ServeError):
    """A stop was asked for (SIGTERM, SIGINT) while starting."""


class DashboardServer:
    """The recorder (when none holds the store) and Voilà, as child processes."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        notebook: Path = DASHBOARD_NOTEBOOK,
        python: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        popen: Popen = subprocess.Popen,
        out: TextIO | None = None,
        voila_extra: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.host = host
        self.port = port
        self.notebook = notebook
        self.python = python
        self.environ = dict(os.environ if environ is None else environ)
        self.popen = popen
        self.out = out if out is not None else sys.stderr
        self.launch = voila_launch(
            notebook, port=port, host=host, python=python,
            preheated_kernels=settings.dashboard.preheated_kernels, extra=voila_extra)
        self.recorder: subprocess.Popen | None = None
        self.voila: subprocess.Popen | None = None
        self._private_dir: Path | None = None
        self._recorder_exited_at: float | None = None
        self._other_recorder_noted = False

    def _say(self, message: str) -> None:
        print(f"aidash serve: {message}", file=self.out, flush=True)

    @property
    def url(self) -> str:
        """The URL to open (with the token, if there is one: show it to the user only)."""
        return self.launch.url

    def start_recorder(self) -> bool:
        """Start the recorder unless one holds the store; True when this one was started."""
        holder = recorder_holder(self.settings.store_path)
        if holder is not None:
            self._say(f"a recorder already writes {self.settings.store_path} "
                      f"({holder.describe()}); the dashboard reads what it records")
            return False
        self.recorder = self._spawn(recorder_command(self.settings, self.python),
                                    settings_environment(self.settings, self.environ))
        self._recorder_exited_at = None
        return True

    def start_voila(self) -> None:
        """Start Voilà on the notebook (raises `ServeError` when it cannot)."""
        if not self.notebook.is_file():
            raise ServeError(f"the dashboard notebook {self.notebook} does not exist")
        if self.python == sys.executable and importlib.util.find_spec("voila") is None:
            raise ServeError("Voilà is not installed: run `make dashboard`, or "
                             "`pip install 'aidash[dashboard]'`")
        problem = port_problem(self.host, self.port)
        if problem is not None:
            raise ServeError(f"{problem}; is another dashboard running? Choose another "
                             "port with --port")
        token_file = None
        if self.launch.token:
            self._private_dir = Path(tempfile.mkdtemp(prefix="aidash-serve-"))
            token_file = write_token_file(self.launch.token, self._private_dir)
        env = voila_environment(self.settings, self.environ, token_file=token_file)
        self.voila = self._spawn(self.launch.argv, env)

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
        if self.log_path is None:
            return spawn(argv, env=env, popen=self.popen)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            return spawn(argv, env=env, popen=self.popen, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S,
                   stop: threading.Event | None = None) -> None:
        """Wait until Voilà answers (with a URL that starts no kernel); `Stopped` when `stop`
        is set first."""
        assert self.voila is not None
        deadline = time.monotonic() + timeout_s
        probe = self.launch.base_url + READY_PATH
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise Stopped("stopped before the dashboard was ready")
            code = self.voila.poll()
            if code is not None:
                raise ServeError(f"Voilà exited with status {code} before it was ready "
                                 "(its messages are above)")
            try:
                httpx.get(probe, timeout=1.0)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            self._remove_private_dir()  # Voilà has read its token: no copy left on disk
            return
        raise ServeError(f"Voilà did not answer on {self.launch.url_without_token} "
                         f"within {timeout_s:.0f} s")

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S,
              stop: threading.Event | None = None) -> None:
        """Recorder (if needed), then Voilà, ready to serve."""
        self.start_recorder()
        self.start_voila()
        self.wait_ready(ready_timeout_s, stop)

    def check(self) -> str | None:
        """Look after the children: restart a recorder that exited (unless another took the
        store); the reason to stop when Voilà has exited, else None."""
        if self.voila is not None and self.voila.poll() is not None:
            return f"Voilà exited with status {self.voila.returncode}"
        if self.recorder is not None and self.recorder.poll() is not None:
            now = time.monotonic()
            if self._recorder_exited_at is None:
                self._recorder_exited_at = now
                self._say(f"the recorder exited with status {self.recorder.returncode}")
            elif now - self._recorder_exited_at >= RECORDER_RESTART_S:
                holder = recorder_holder(self.settings.store_path)
                if holder is None:
                    self._say("starting the recorder again")
                    self.start_recorder()
                elif not self._other_recorder_noted:
                    self._other_recorder_noted = True
                    self._say(f"another recorder writes the store ({holder.describe()})")
        return None

    def stop(self) -> None:
        """Stop Voilà (it shuts its kernels down), then the recorder."""
        stop_process(self.voila)
        stop_process(self.recorder)
        self._remove_private_dir()

    def _remove_private_dir(self) -> None:
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StopSignals:
    """SIGTERM and SIGINT set `event` (instead of killing or raising) while in effect."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def __enter__(self) -> StopSignals:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def without_credentials(url: str) -> str:
    """`url` with any `user:password@` masked."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", url)


def announce(launch: VoilaLaunch, host: str) -> str:
    """The line that tells the user where the dashboard is: the token only off loopback."""
    if launch.token and not is_loopback(host):
        return (f"dashboard: {launch.url}\n"
                f"(listening on {host}: open it with this token; keep it private)")
    return f"dashboard: {launch.url_without_token}"


def main_serve(
    settings: Settings,
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    open_browser: bool = False,
    notebook: Path = DASHBOARD_NOTEBOOK,
) -> int:
    """`aidash serve`: run until SIGTERM or SIGINT (exit 0); 1 when it cannot serve or Voilà
    stops on its own."""
    with StopSignals() as signals, DashboardServer(
            settings, port=port, host=host, notebook=notebook) as server:
        try:
            server.start(stop=signals.event)
        except Stopped:
            return 0
        except ServeError as exc:
            print(f"aidash serve: {exc}", file=sys.stderr)
            return 1
        print(announce(server.launch, host), flush=True)
        print(f"gateway: {without_credentials(settings.gateway.url)}  store: "
              f"{settings.store_path}", flush=True)
        if open_browser:
            webbrowser.open(server.url)
        while not signals.event.wait(0.5):
            reason = server.check()
            if reason is not None:
                print(f"aidash serve: {reason}; stopping", file=sys.stderr)
                return 1
        print("aidash serve: stopping", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m aidash_lib.serve [--config FILE] [--port P] [--host H] [--open]`."""
    from aidash_lib.settings import SettingsError, load_settings
    from aidash_lib.yamlfile import UnusableInput

    parser = argparse.ArgumentParser(prog="python -m aidash_lib.serve",
                                     description="The recorder (if none runs) and the dashboard.")
    parser.add_argument("--config", help="the settings file (default: AIDASH_CONFIG, else "
                                         "config/dashboard.yaml)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but loopback requires a token")
    parser.add_argument("--open", action="store_true", help="open it in a browser")
    parser.add_argument("--notebook", type=Path, default=DASHBOARD_NOTEBOOK, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except (SettingsError, UnusableInput) as exc:
        print(exc, file=sys.stderr)
        return 2
    return main_serve(settings, port=args.port, host=args.host, open_browser=args.open,
                      notebook=args.notebook)


if __name__ == "__main__":
    sys.exit(main())
