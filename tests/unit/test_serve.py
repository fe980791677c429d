"""`aidash serve`: the Voilà command line, the token, the environment of the kernels, and the
recorder started only when none holds the store."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest

from aidash_lib import demo, serve
from aidash_lib.serve import (
    DashboardServer,
    announce,
    is_loopback,
    port_problem,
    recorder_command,
    settings_environment,
    voila_environment,
    voila_launch,
    write_token_file,
)
from aidash_lib.settings import DashboardSettings, Settings, StoreSettings, load_settings
from aidash_lib.store.sqlite import SqliteStore
from tests.servers.process import closed_port, free_port

REPO = Path(__file__).resolve().parents[2]


class FakeProcess:
    """Stands for a child process: records how it was started."""

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        self.args = argv
        self.kwargs = kwargs
        self.returncode: int | None = None
        self.pid = 0

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.returncode = -signum

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode or 0

    def kill(self) -> None:
        self.returncode = -9


class FakePopen:
    def __init__(self) -> None:
        self.started: list[FakeProcess] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> FakeProcess:
        proc = FakeProcess(argv, **kwargs)
        self.started.append(proc)
        return proc


def settings_for(tmp_path: Path, **environ: str) -> Settings:
    config = tmp_path / "dashboard.yaml"
    config.write_text("gateway:\n  url: http://127.0.0.1:4111\n  key_env: MY_GATEWAY_KEY\n"
                      f"store:\n  path: {tmp_path / 'store' / 'history.sqlite'}\n")
    return load_settings(config, environ=environ)


# -- the command line ------------------------------------------------------------------------


def test_loopback_command_line_has_the_safe_flags_and_no_token(tmp_path: Path) -> None:
    launch = voila_launch(tmp_path / "nb.ipynb", port=8899, python="PY")
    argv = list(launch.argv)
    assert argv[:5] == ["PY", "-m", "voila", str(tmp_path / "nb.ipynb"), "--no-browser"]
    for flag in ("--port=8899", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
                 "--Voila.tornado_settings={'disable_check_xsrf': True}",
                 f"--MappingKernelManager.cull_idle_timeout={serve.CULL_IDLE_S}",
                 f"--MappingKernelManager.cull_interval={serve.CULL_INTERVAL_S}",
                 "--show_tracebacks=False"):
        assert flag in argv
    assert launch.token is None
    assert not any("token" in a for a in argv)
    assert launch.url == "http://127.0.0.1:8899/"
    assert launch.base_url == "http://127.0.0.1:8899"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_a_token_whenever_it_listens_beyond_loopback(host: str) -> None:
    launch = voila_launch(port=8866, host=host)
    assert launch.token and len(launch.token) >= 24
    assert "--Voila.auto_token=True" in launch.argv
    assert not any(launch.token in a for a in launch.argv), "the token is visible in ps"
    assert launch.url.endswith(f"/?token={launch.token}")
    assert launch.token not in repr(launch)
    assert voila_launch(port=8866, host=host).token != launch.token


def test_ipv6_hosts_are_bracketed_in_the_url() -> None:
    assert voila_launch(port=9000, host="::1").url == "http://[::1]:9000/"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.org", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_url_is_printed_with_its_token_only_off_loopback() -> None:
    local = voila_launch(port=8866)
    assert announce(local, "127.0.0.1") == "dashboard: http://127.0.0.1:8866/"
    remote = voila_launch(port=8866, host="0.0.0.0")
    assert remote.token is not None
    assert f"?token={remote.token}" in announce(remote, "0.0.0.0")


def test_credentials_in_the_gateway_url_are_masked() -> None:
    assert serve.without_credentials("http://op:s3cret@gw:4000/x") == "http://***@gw:4000/x"
    assert serve.without_credentials("http://gw:4000") == "http://gw:4000"


def test_a_busy_port_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        problem = port_problem("127.0.0.1", port)
    assert problem is not None and str(port) in problem
    assert port_problem("127.0.0.1", free_port()) is None


# -- the environment -------------------------------------------------------------------------


def test_children_get_the_settings_through_the_environment(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    env = settings_environment(settings, {"PATH": "/bin"})
    assert env["AIDASH_CONFIG"] == str((tmp_path / "dashboard.yaml").resolve())
    assert env["AIDASH_GATEWAY_URL"] == "http://127.0.0.1:4111"
    assert env["AIDASH_STORE"] == str(tmp_path / "store" / "history.sqlite")
    assert env["AIDASH_PROMETHEUS_URL"] == "" and env["AIDASH_ALERTMANAGER_URL"] == ""
    assert env["PATH"] == "/bin"
    assert load_settings(environ=env) == settings


def test_the_kernels_get_no_key_and_no_token(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    secret_env = {"AIDASH_GATEWAY_KEY": "sk-a", "LITELLM_MASTER_KEY": "sk-b",
                  "MY_GATEWAY_KEY": "sk-c", "JUPYTER_TOKEN": "t", "JUPYTER_TOKEN_FILE": "/x",
                  "HOME": "/home/op"}
    env = voila_environment(settings, secret_env)
    for name in ("AIDASH_GATEWAY_KEY", "LITELLM_MASTER_KEY", "MY_GATEWAY_KEY", "JUPYTER_TOKEN",
                 "JUPYTER_TOKEN_FILE"):
        assert name not in env
    assert env["HOME"] == "/home/op"
    assert env["AIDASH_STORE"] == str(settings.store_path)
    token_file = tmp_path / "token"
    assert voila_environment(settings, secret_env, token_file=token_file)[
        "JUPYTER_TOKEN_FILE"] == str(token_file)
    recorder_env = settings_environment(settings, secret_env)
    assert recorder_env["MY_GATEWAY_KEY"] == "sk-c", "the recorder needs the key"


def test_the_token_file_is_private(tmp_path: Path) -> None:
    path = write_token_file("s3cret", tmp_path)
    assert path.read_text() == "s3cret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_recorder_command(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert recorder_command(settings, "PY") == [
        "PY", "-m", "aidash_lib.recorder", "--config", str((tmp_path / "dashboard.yaml").resolve())]
    assert recorder_command(Settings(), "PY") == ["PY", "-m", "aidash_lib.recorder"]


# -- the recorder: only when none holds the store --------------------------------------------


def test_the_recorder_is_started_when_none_holds_the_store(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, MY_GATEWAY_KEY="sk-gw")
    popen = FakePopen()
    server = DashboardServer(settings, popen=popen, python="PY", environ={"MY_GATEWAY_KEY": "k"})
    assert server.start_recorder() is True
    (proc,) = popen.started
    assert proc.args[:3] == ["PY", "-m", "aidash_lib.recorder"]
    assert proc.kwargs["env"]["AIDASH_STORE"] == str(settings.store_path)
    assert proc.kwargs["env"]["MY_GATEWAY_KEY"] == "k"
    assert proc.kwargs["stdin"] == subprocess.DEVNULL


def test_no_recorder_when_one_holds_the_store(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    popen = FakePopen()
    out = tmp_path / "out.txt"
    with SqliteStore(settings.store_path) as store, store.acquire_recorder_lock(), \
            out.open("w") as handle:
        server = DashboardServer(settings, popen=popen, out=handle)
        assert server.start_recorder() is False
    assert popen.started == []
    assert f"pid {os.getpid()}" in out.read_text()


def test_a_recorder_that_exits_is_started_again_unless_another_took_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serve, "RECORDER_RESTART_S", 0.0)
    settings = settings_for(tmp_path)
    popen = FakePopen()
    with (tmp_path / "out.txt").open("w") as handle:
        server = DashboardServer(settings, popen=popen, out=handle)
        server.start_recorder()
        popen.started[0].returncode = 1
        assert server.check() is None  # noted
        assert server.check() is None  # started again
        assert len(popen.started) == 2
        popen.started[1].returncode = 1
        with SqliteStore(settings.store_path) as store, store.acquire_recorder_lock():
            server.check()
            server.check()
        assert len(popen.started) == 2


def test_voila_exiting_stops_the_server(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}")
    popen = FakePopen()
    server = DashboardServer(settings, popen=popen, notebook=notebook, port=free_port())
    server.start_voila()
    assert server.check() is None
    popen.started[0].returncode = 3
    assert server.check() == "Voilà exited with status 3"


def test_a_missing_notebook_is_named(tmp_path: Path) -> None:
    server = DashboardServer(settings_for(tmp_path), popen=FakePopen(),
                             notebook=tmp_path / "missing.ipynb")
    with pytest.raises(serve.ServeError, match=r"missing\.ipynb"):
        server.start_voila()


def test_off_loopback_voila_reads_the_token_from_a_private_file(tmp_path: Path) -> None:
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}")
    popen = FakePopen()
    server = DashboardServer(settings_for(tmp_path), popen=popen, notebook=notebook,
                             host="0.0.0.0", port=free_port())
    server.start_voila()
    env = popen.started[0].kwargs["env"]
    token_file = Path(env["JUPYTER_TOKEN_FILE"])
    assert token_file.read_text() == server.launch.token
    server.stop()
    assert not token_file.exists()


# -- for real: Voilà and the recorder as `python -m aidash_lib.serve` runs them --------------


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, ipywidgets\n"
        "ipywidgets.HTML('store ' + os.environ['AIDASH_STORE'] + ' key '"
        " + str(os.environ.get('LITELLM_MASTER_KEY')))")]
    nbformat.write(nb, path)
    return path


def _serve(tmp_path: Path, name: str, host: str, port: int, notebook: Path,
           env: dict[str, str]) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aidash_lib.serve", "--config", str(tmp_path / "dashboard.yaml"),
             "--host", host, "--port", str(port), "--notebook", str(notebook)],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=REPO,
            env={**os.environ, **env})
    return proc, out, err


def _wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.integration
def test_served_for_real_token_off_loopback_and_one_recorder(tmp_path: Path) -> None:
    (tmp_path / "dashboard.yaml").write_text(
        f"gateway:\n  url: http://127.0.0.1:{closed_port()}\n"
        f"store:\n  path: {tmp_path / 'history.sqlite'}\n")
    notebook = _notebook(tmp_path / "nb.ipynb")
    env = {"LITELLM_MASTER_KEY": "sk-never-shown-123"}
    remote_port, local_port = free_port(), free_port()
    remote, remote_out, remote_err = _serve(tmp_path, "remote", "0.0.0.0", remote_port,
                                            notebook, env)
    local = None
    try:
        _wait_for(lambda: "dashboard:" in remote_out.read_text() or remote.poll() is not None,
                  90, "the first server")
        printed = remote_out.read_text()
        token = printed.split("?token=", 1)[1].split()[0]
        assert len(token) >= 24
        base = f"http://127.0.0.1:{remote_port}/"
        assert httpx.get(base, timeout=30).status_code == 302  # to the login page
        page = httpx.get(f"{base}?token={token}", timeout=60).text
        assert "store " + str(tmp_path / "history.sqlite") in page
        assert "sk-never-shown-123" not in page and "key None" in page

        local, local_out, local_err = _serve(tmp_path, "local", "127.0.0.1", local_port,
                                             notebook, env)
        _wait_for(lambda: "dashboard:" in local_out.read_text() or local.poll() is not None,
                  90, "the second server")
        assert local_out.read_text().startswith(f"dashboard: http://127.0.0.1:{local_port}/\n")
        assert "already writes" in local_err.read_text()
        recorders = [line for line in local_err.read_text().splitlines()
                     if "recording into" in line]
        assert recorders == [], "a second recorder started"
    finally:
        for proc in (remote, local):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        assert remote.wait(30) == 0
        if local is not None:
            assert local.wait(30) == 0
    logs = remote_err.read_text() + (local_err.read_text() if local else "")
    assert token not in logs, "the token was logged"
    assert printed.count(token) == 1
    assert "sk-never-shown-123" not in logs + printed
    assert "recording into" in remote_err.read_text()


def test_a_stop_while_starting_ends_the_wait(tmp_path: Path) -> None:
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}")
    server = DashboardServer(settings_for(tmp_path), popen=FakePopen(), notebook=notebook,
                             port=free_port())
    server.start_voila()
    stop = threading.Event()
    stop.set()
    with pytest.raises(serve.Stopped):
        server.wait_ready(5.0, stop)


# -- the demo's parts ------------------------------------------------------------------------


def test_the_demo_files_are_valid_and_route_every_traffic_group(tmp_path: Path) -> None:
    from aidash_lib.check import check_files
    from aidash_lib.routing import load_graph

    settings_file = demo.write_demo_files(tmp_path, 4321)
    assert (tmp_path / "aidash_callbacks.py").read_text() == demo.LOGGER_SHIM.read_text()
    settings = load_settings(settings_file, environ={})
    assert settings.gateway.url == "http://127.0.0.1:4321"
    assert settings.store_path == tmp_path / "history.sqlite"
    assert settings.intervals.gateway_metrics_s <= 5
    report = check_files([str(settings_file), str(tmp_path / "config.yaml")])
    assert report.exit_code == 0, [str(p) for p in report.problems]
    graph = load_graph([str(tmp_path / "config.yaml")])
    for group, _ in demo.TRAFFIC_MIX:
        assert group in graph.entry_names
    config = (tmp_path / "config.yaml").read_text()
    assert '"aidash_callbacks.handler"' in config and '"prometheus"' in config
    assert "127.0.0.1:9" in config and "litellm.RateLimitError" in config


def test_the_demo_says_how_to_install_the_proxy(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoError, match="make demo"):
        demo.litellm_binary({"AIDASH_LITELLM_BIN": str(tmp_path / "nothing")})


def test_the_demo_traffic_swells_and_ebbs_around_its_rate() -> None:
    traffic = demo.Traffic("http://127.0.0.1:9", "sk-x", rate=2.0)
    rates = [traffic.rate_at(t) for t in range(0, int(demo.RATE_PERIOD_S), 10)]
    assert min(rates) == pytest.approx(2.0 * (1 - demo.RATE_SWING), rel=0.05)
    assert max(rates) == pytest.approx(2.0 * (1 + demo.RATE_SWING), rel=0.05)
    with pytest.raises(ValueError):
        demo.Traffic("http://127.0.0.1:9", "sk-x", rate=0)


def test_preheated_kernels_on_the_command_line() -> None:
    argv = voila_launch(port=8866, preheated_kernels=2).argv
    assert "--preheat_kernel=True" in argv and "--pool_size=2" in argv
    assert f"--VoilaKernelManager.fill_delay={serve.PREHEAT_REFILL_S}" in argv
    assert not any("preheat" in a or "pool_size" in a
                   for a in voila_launch(port=8866, preheated_kernels=0).argv)


def test_the_server_preheats_as_the_settings_say(tmp_path: Path) -> None:
    settings = Settings(store=StoreSettings(path=str(tmp_path / "h.sqlite")))
    assert settings.dashboard.preheated_kernels == 1
    served = DashboardServer(settings, port=8866)
    assert "--pool_size=1" in served.launch.argv
    none = settings.model_copy(update={"dashboard": DashboardSettings(preheated_kernels=0)})
    assert not any("preheat" in a for a in DashboardServer(none, port=8866).launch.argv)
