"""Service checks: a real child process, this machine's systemctl and docker, captured output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from aidash_lib.sources.base import to_jsonable
from aidash_lib.sources.services import (
    ProcessInfo,
    ServiceSpec,
    ServicesSource,
    ServiceState,
    docker_status,
    parse_systemctl_show,
    process_status,
    run_command,
    scan_processes,
    systemd_status,
)

UNIT = ServiceSpec("ollama", "systemd", "ollama.service")
CONTAINER = ServiceSpec("vllm", "docker", "vllm-qwen")


# Processes --------------------------------------------------------------------------------------


async def test_real_process_running_then_stopped():
    marker = f"aidash-test-marker-{uuid.uuid4().hex}"
    started = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    spec = ServiceSpec("sleeper", "process", rf"time\.sleep\(60\) {marker}$")
    source = ServicesSource([spec])
    try:
        (status,) = (await source.read()).value
        assert status.state is ServiceState.RUNNING
        assert status.pids == (child.pid,)
        assert status.detail == f"pid {child.pid}"
        assert status.since == pytest.approx(psutil.Process(child.pid).create_time())
        assert abs(status.since - started) < 2.0
    finally:
        child.kill()
        child.wait(5)
    (status,) = (await source.read()).value
    assert status.state is ServiceState.STOPPED
    assert status.since is None and status.pids == ()
    assert status.detail == "no matching process"


def test_process_status_earliest_start_and_many_pids():
    spec = ServiceSpec("ollama runners", "process", r"ollama runner")
    procs = [
        ProcessInfo(300 + i, ("/usr/bin/ollama", "runner", "--port", str(4000 + i)), 1000.0 + i)
        for i in range(10)
    ]
    procs.append(ProcessInfo(50, ("/usr/bin/ollama", "serve"), 10.0))
    procs.append(ProcessInfo(51, (), 5.0))  # a kernel thread: no command line
    status = process_status(spec, procs)
    assert status.state is ServiceState.RUNNING
    assert status.since == 1000.0
    assert status.pids == tuple(range(300, 310))
    assert status.detail == "pids 300, 301, 302, 303, 304, 305, 306, 307 (+2 more)"


def test_spec_validation():
    with pytest.raises(ValueError, match="not a valid regex"):
        ServiceSpec("bad", "process", "vllm(")
    with pytest.raises(ValueError, match="kind must be one of systemd, docker, process"):
        ServiceSpec("bad", "launchd", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target is empty"):
        ServiceSpec("bad", "docker", "")


# systemd ---------------------------------------------------------------------------------------

SHOW_ACTIVE = """\
MainPID=1289
LoadState=loaded
ActiveState=active
SubState=running
StateChangeTimestamp=Tue 2024-05-14 10:23:45 UTC
StateChangeTimestampMonotonic=8123456
ActiveEnterTimestamp=Tue 2024-05-14 10:23:45 UTC
ActiveEnterTimestampMonotonic=8123456
InactiveEnterTimestamp=
InactiveEnterTimestampMonotonic=0
"""

SHOW_FAILED = """\
MainPID=0
LoadState=loaded
ActiveState=failed
SubState=failed
StateChangeTimestamp=Tue 2024-05-14 11:00:00 UTC
StateChangeTimestampMonotonic=2000000000
ActiveEnterTimestamp=Tue 2024-05-14 10:23:45 UTC
ActiveEnterTimestampMonotonic=8123456
InactiveEnterTimestamp=Tue 2024-05-14 11:00:00 UTC
InactiveEnterTimestampMonotonic=2000000000
"""

SHOW_ACTIVATING = """\
MainPID=2210
LoadState=loaded
ActiveState=activating
SubState=auto-restart
StateChangeTimestamp=Tue 2024-05-14 11:05:00 UTC
StateChangeTimestampMonotonic=2300000000
ActiveEnterTimestampMonotonic=0
InactiveEnterTimestampMonotonic=2299000000
"""

SHOW_NOT_FOUND = """\
MainPID=0
LoadState=not-found
ActiveState=inactive
SubState=dead
StateChangeTimestampMonotonic=0
ActiveEnterTimestamp=
ActiveEnterTimestampMonotonic=0
InactiveEnterTimestamp=
InactiveEnterTimestampMonotonic=0
"""

NO_SYSTEMD = (
    "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
    "Failed to connect to bus: Host is down\n"
)


def test_parse_systemctl_show():
    props = parse_systemctl_show(SHOW_ACTIVE)
    assert props["ActiveState"] == "active"
    assert props["InactiveEnterTimestamp"] == ""
    assert props["ActiveEnterTimestamp"] == "Tue 2024-05-14 10:23:45 UTC"


def test_systemd_active_since_from_monotonic():
    # 8.123456 s after boot; now is 100 s after boot at epoch 1_700_000_000
    status = systemd_status(UNIT, 0, SHOW_ACTIVE, "", now=1_700_000_000.0, monotonic_now=100.0)
    assert status.state is ServiceState.RUNNING
    assert status.detail == "active (running)"
    assert status.pids == (1289,)
    assert status.since == pytest.approx(1_700_000_000.0 - 100.0 + 8.123456)


def test_systemd_failed_since_it_stopped():
    status = systemd_status(UNIT, 0, SHOW_FAILED, "", now=1e9, monotonic_now=3000.0)
    assert status.state is ServiceState.STOPPED
    assert status.detail == "failed (failed)"
    assert status.pids == ()
    assert status.since == pytest.approx(1e9 - 1000.0)


def test_systemd_restarting_is_stopped_since_state_change():
    status = systemd_status(UNIT, 0, SHOW_ACTIVATING, "", now=1e9, monotonic_now=2400.0)
    assert status.state is ServiceState.STOPPED
    assert status.detail == "activating (auto-restart)"
    assert status.since == pytest.approx(1e9 - 100.0)


def test_systemd_wall_clock_fallback():
    text = "LoadState=loaded\nActiveState=active\nSubState=running\n" \
           "ActiveEnterTimestamp=Tue 2024-05-14 10:23:45 UTC\n"
    status = systemd_status(UNIT, 0, text, "")
    assert status.since == 1715682225.0
    unix = text.replace("Tue 2024-05-14 10:23:45 UTC", "@1715682225")
    assert systemd_status(UNIT, 0, unix, "").since == 1715682225.0


def test_systemd_unit_not_found_is_stopped():
    status = systemd_status(UNIT, 0, SHOW_NOT_FOUND, "")
    assert (status.state, status.detail, status.since) == (
        ServiceState.STOPPED, "no such unit", None,
    )


def test_systemd_errors_are_unknown():
    status = systemd_status(UNIT, 1, "", NO_SYSTEMD)
    assert status.state is ServiceState.UNKNOWN
    assert status.detail == (
        "systemd unreachable: System has not been booted with systemd as init system (PID 1). "
        "Can't operate."
    )
    other = systemd_status(UNIT, 1, "", "Unit name foo@ is not valid.\n")
    assert other.detail == "systemctl failed: Unit name foo@ is not valid."
    assert systemd_status(UNIT, 0, "", "").state is ServiceState.UNKNOWN


def _systemd_booted() -> bool:
    return Path("/run/systemd/system").is_dir()


async def test_real_systemctl_here():
    """Without systemd as init (this machine) the unit is unknown and says why."""
    name = f"aidash-test-{uuid.uuid4().hex[:8]}.service"
    (status,) = (await ServicesSource([ServiceSpec("x", "systemd", name)]).read()).value
    if shutil.which("systemctl") is None:
        assert (status.state, status.detail) == (ServiceState.UNKNOWN, "systemctl not found")
    elif _systemd_booted():
        assert (status.state, status.detail) == (ServiceState.STOPPED, "no such unit")
    else:
        assert status.state is ServiceState.UNKNOWN
        assert status.detail.startswith("systemd unreachable: System has not been booted")


# Docker ----------------------------------------------------------------------------------------

STATE_RUNNING = {
    "Status": "running", "Running": True, "Paused": False, "Restarting": False,
    "OOMKilled": False, "Dead": False, "Pid": 4242, "ExitCode": 0, "Error": "",
    "StartedAt": "2024-05-14T10:23:45.123456789Z", "FinishedAt": "0001-01-01T00:00:00Z",
    "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []},
}
STATE_EXITED = {
    "Status": "exited", "Running": False, "Paused": False, "Restarting": False,
    "OOMKilled": True, "Dead": False, "Pid": 0, "ExitCode": 137, "Error": "",
    "StartedAt": "2024-05-14T10:23:45.123456789Z", "FinishedAt": "2024-05-14T12:00:00.5Z",
}
STATE_PAUSED = {**STATE_RUNNING, "Status": "paused", "Paused": True, "Health": None}


def test_docker_running():
    status = docker_status(CONTAINER, 0, json.dumps(STATE_RUNNING) + "\n", "")
    assert status.state is ServiceState.RUNNING
    assert status.detail == "running (healthy)"
    assert status.pids == (4242,)
    assert status.since == pytest.approx(1715682225.123456)


def test_docker_exited_since_finished():
    status = docker_status(CONTAINER, 0, json.dumps(STATE_EXITED), "")
    assert status.state is ServiceState.STOPPED
    assert status.detail == "exited (exit code 137, OOM killed)"
    assert status.since == pytest.approx(1715688000.5)
    assert status.pids == ()


def test_docker_paused_is_stopped():
    status = docker_status(CONTAINER, 0, json.dumps(STATE_PAUSED), "")
    assert (status.state, status.detail, status.since) == (ServiceState.STOPPED, "paused", None)


@pytest.mark.parametrize(
    ("stderr", "state", "detail"),
    [
        ("Error: No such container: vllm-qwen\n", ServiceState.STOPPED, "no such container"),
        ("Error: No such object: vllm-qwen\n", ServiceState.STOPPED, "no such container"),
        (
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
            "Is the docker daemon running?\n",
            ServiceState.UNKNOWN,
            "docker daemon unreachable: Cannot connect to the Docker daemon at "
            "unix:///var/run/docker.sock. Is the docker daemon running?",
        ),
        (
            "permission denied while trying to connect to the Docker daemon socket at "
            "unix:///var/run/docker.sock: dial unix /var/run/docker.sock: connect: "
            "permission denied\n",
            ServiceState.UNKNOWN,
            "no permission to reach the docker daemon: permission denied while trying to "
            "connect to the Docker daemon socket at unix:///var/run/docker.sock: dial unix "
            "/var/run/docker.sock: connect: permission denied",
        ),
        ("template: :1: unexpected EOF\n", ServiceState.UNKNOWN,
         "docker inspect failed: template: :1: unexpected EOF"),
    ],
)
def test_docker_errors(stderr, state, detail):
    status = docker_status(CONTAINER, 1, "", stderr)
    assert (status.state, status.detail) == (state, detail)


def test_docker_garbage_is_unknown():
    assert docker_status(CONTAINER, 0, "<html>", "").state is ServiceState.UNKNOWN
    assert docker_status(CONTAINER, 0, "null", "").state is ServiceState.UNKNOWN


def _docker_daemon_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, timeout=20, check=False)
    return done.returncode == 0


async def test_real_docker_here():
    """Without a Docker engine (this machine) the container is unknown and says why."""
    name = f"aidash-test-{uuid.uuid4().hex[:8]}"
    (status,) = (await ServicesSource([ServiceSpec("x", "docker", name)]).read()).value
    if shutil.which("docker") is None:
        assert (status.state, status.detail) == (ServiceState.UNKNOWN, "docker not found")
    elif _docker_daemon_reachable():
        assert (status.state, status.detail) == (ServiceState.STOPPED, "no such container")
    else:
        assert status.state is ServiceState.UNKNOWN
        assert status.detail.startswith("docker daemon unreachable: ")


# The source as a whole -------------------------------------------------------------------------


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


async def test_fake_commands_end_to_end(tmp_path: Path):
    """Real subprocesses that print captured output, through the whole source."""
    systemctl = _script(tmp_path / "systemctl", f"import sys\nsys.stdout.write({SHOW_ACTIVE!r})\n")
    docker = _script(
        tmp_path / "docker",
        "import sys\n"
        "sys.stderr.write('Error: No such container: ' + sys.argv[-1] + '\\n')\nsys.exit(1)\n",
    )
    source = ServicesSource([UNIT, CONTAINER], systemctl=systemctl, docker=docker)
    reading = await source.read()
    assert reading.ok
    unit, container = reading.value
    assert (unit.state, unit.detail, unit.pids) == (ServiceState.RUNNING, "active (running)",
                                                    (1289,))
    assert (container.state, container.detail) == (ServiceState.STOPPED, "no such container")


async def test_one_failure_never_fails_the_others(tmp_path: Path):
    slow = _script(tmp_path / "slow-systemctl", "import time\ntime.sleep(30)\n")
    marker = f"aidash-test-marker-{uuid.uuid4().hex}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        source = ServicesSource(
            [
                UNIT,
                CONTAINER,
                ServiceSpec("sleeper", "process", marker),
            ],
            timeout_s=0.5,
            systemctl=slow,
            docker=str(tmp_path / "no-docker-here"),
        )
        started = time.monotonic()
        reading = await source.read()
        assert time.monotonic() - started < 5
    finally:
        child.kill()
        child.wait(5)
    assert reading.ok
    unit, container, sleeper = reading.value
    assert (unit.state, unit.detail) == (ServiceState.UNKNOWN,
                                         "slow-systemctl did not answer within 0.5 s")
    assert (container.state, container.detail) == (ServiceState.UNKNOWN,
                                                   "no-docker-here not found")
    assert sleeper.state is ServiceState.RUNNING
    encoded = json.loads(json.dumps(to_jsonable(reading)))
    assert [s["state"] for s in encoded["value"]] == ["unknown", "unknown", "running"]


async def test_run_command_kills_on_timeout(tmp_path: Path):
    pid_file = tmp_path / "pid"
    slow = _script(
        tmp_path / "slow",
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(30)\n",
    )
    result = await run_command([slow], 0.5)
    assert result == "slow did not answer within 0.5 s"
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_no_specs_is_an_empty_ok_reading():
    reading = await ServicesSource([]).read()
    assert reading.ok and reading.value == ()


def test_self_is_not_matched():
    """The checking process's own command line is never a match (like `ps | grep`)."""
    assert os.getpid() not in {p.pid for p in scan_processes()}
