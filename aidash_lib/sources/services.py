"""Whether the services behind the gateway run: systemd units, Docker containers and processes.

Each service is checked its own way (`systemctl show`, `docker inspect`, a regex over process
command lines) and reported as running, stopped or unknown, with since when and why. `unknown`
means the check itself could not be made (no systemd, Docker daemon unreachable, a timeout); a
unit or container that does not exist is `stopped`, since nothing by that name is serving.
One service's failed check never affects another's, and the reading as a whole stays ok.

The parsers of `systemctl` and `docker` output are pure functions, tested on captured text.
Commands run as asyncio subprocesses with a timeout; process scans run in a worker thread.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import psutil

from aidash_lib.sources.base import Reading

log = logging.getLogger(__name__)

ServiceKind = Literal["systemd", "docker", "process"]
SERVICE_KINDS: tuple[str, ...] = ("systemd", "docker", "process")

#: How long `systemctl` or `docker` may take before the service is reported unknown.
DEFAULT_COMMAND_TIMEOUT_S = 5.0

#: Properties asked of `systemctl show`.
SYSTEMD_PROPERTIES: tuple[str, ...] = (
    "LoadState", "ActiveState", "SubState", "MainPID",
    "ActiveEnterTimestamp", "ActiveEnterTimestampMonotonic",
    "InactiveEnterTimestamp", "InactiveEnterTimestampMonotonic",
    "StateChangeTimestamp", "StateChangeTimestampMonotonic",
)

# The most pids spelled out in a detail line.
_PIDS_SHOWN = 8


class ServiceState(enum.StrEnum):
    """Whether a service runs. UNKNOWN: the check could not be made; `detail` says why."""

    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServiceSpec:
    """A service to watch: a systemd unit, a Docker container, or processes whose command line
    matches the regex `target`."""

    name: str
    kind: ServiceKind
    target: str

    def __post_init__(self) -> None:
        if self.kind not in SERVICE_KINDS:
            raise ValueError(
                f"service {self.name!r}: kind must be one of {', '.join(SERVICE_KINDS)}, "
                f"not {self.kind!r}"
            )
        if not self.target:
            raise ValueError(f"service {self.name!r}: target is empty")
        if self.kind == "process":
            try:
                re.compile(self.target)
            except re.error as exc:
                raise ValueError(
                    f"service {self.name!r}: target is not a valid regex ({exc})"
                ) from None


@dataclass(frozen=True)
class ServiceStatus:
    """What a check found. `since` (epoch seconds) is when the service entered its current
    state, when known; `detail` is the state in the service manager's words, or why unknown."""

    name: str
    kind: str
    target: str
    state: ServiceState
    since: float | None = None
    detail: str = ""
    pids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def running(self) -> bool:
        return self.state is ServiceState.RUNNING


def _status(
    spec: ServiceSpec,
    state: ServiceState,
    detail: str,
    since: float | None = None,
    pids: Iterable[int] = (),
) -> ServiceStatus:
    return ServiceStatus(spec.name, spec.kind, spec.target, state, since, detail, tuple(pids))


# systemd ---------------------------------------------------------------------------------------


def parse_systemctl_show(text: str) -> dict[str, str]:
    """`systemctl show`'s `Key=value` lines as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            props[key.strip()] = value.strip()
    return props


def systemd_status(
    spec: ServiceSpec,
    returncode: int,
    stdout: str,
    stderr: str,
    *,
    now: float | None = None,
    monotonic_now: float | None = None,
) -> ServiceStatus:
    """A unit's status from `systemctl show UNIT --property=...`'s exit code and output.

    `since` comes from the `...TimestampMonotonic` properties (microseconds on the same clock
    as `time.monotonic()`), which unlike the wall-clock ones carry no locale or time zone.
    """
    if returncode != 0:
        return _status(spec, ServiceState.UNKNOWN, _systemctl_error(returncode, stderr))
    props = parse_systemctl_show(stdout)
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    if not active:
        return _status(spec, ServiceState.UNKNOWN, "systemctl show gave no ActiveState")
    load = props.get("LoadState", "")
    if load == "not-found":
        return _status(spec, ServiceState.STOPPED, "no such unit")
    if load == "masked":
        return _status(spec, ServiceState.STOPPED, "unit is masked")
    detail = f"{active} ({sub})" if sub else active
    main_pid = _int(props.get("MainPID"))
    pids = (main_pid,) if main_pid else ()
    now = time.time() if now is None else now
    monotonic_now = time.monotonic() if monotonic_now is None else monotonic_now
    if active in ("active", "reloading"):
        since = _systemd_time(props, "ActiveEnterTimestamp", now, monotonic_now)
        return _status(spec, ServiceState.RUNNING, detail, since, pids)
    if active in ("inactive", "failed", "activating", "deactivating", "maintenance"):
        since = None
        if active in ("inactive", "failed"):
            since = _systemd_time(props, "InactiveEnterTimestamp", now, monotonic_now)
        if since is None:
            since = _systemd_time(props, "StateChangeTimestamp", now, monotonic_now)
        return _status(spec, ServiceState.STOPPED, detail, since, pids)
    return _status(spec, ServiceState.UNKNOWN, f"unrecognised state: {detail}", pids=pids)


def _systemctl_error(returncode: int, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = lines[0] if lines else f"exit status {returncode}"
    joined = " ".join(lines)
    if "not been booted with systemd" in joined or "Failed to connect to bus" in joined:
        return f"systemd unreachable: {text}"
    return f"systemctl failed: {text}"


def _systemd_time(
    props: dict[str, str], key: str, now: float, monotonic_now: float
) -> float | None:
    """Epoch seconds of a systemd timestamp property, from its monotonic twin if set."""
    monotonic_us = _int(props.get(f"{key}Monotonic"))
    if monotonic_us:
        return now - (monotonic_now - monotonic_us / 1e6)
    wall = props.get(key, "")
    if wall.startswith("@"):  # `--timestamp=unix`
        return _float(wall[1:])
    if wall.endswith(" UTC"):
        try:
            parsed = datetime.strptime(wall, "%a %Y-%m-%d %H:%M:%S %Z")
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC).timestamp()
    return None


# Docker ----------------------------------------------------------------------------------------


def docker_status(spec: ServiceSpec, returncode: int, stdout: str, stderr: str) -> ServiceStatus:
    """A container's status from `docker inspect --type container --format '{{json .State}}'`."""
    if returncode != 0:
        text = " ".join(stderr.split())
        lowered = text.lower()
        if "no such container" in lowered or "no such object" in lowered:
            return _status(spec, ServiceState.STOPPED, "no such container")
        if "cannot connect to the docker daemon" in lowered or "is the docker daemon running" in (
            lowered
        ):
            return _status(spec, ServiceState.UNKNOWN, f"docker daemon unreachable: {text}")
        if "permission denied" in lowered:
            return _status(
                spec, ServiceState.UNKNOWN, f"no permission to reach the docker daemon: {text}"
            )
        return _status(
            spec, ServiceState.UNKNOWN, f"docker inspect failed: {text or f'exit {returncode}'}"
        )
    try:
        state = json.loads(stdout)
    except ValueError:
        return _status(spec, ServiceState.UNKNOWN, f"docker inspect gave no JSON: {stdout[:80]!r}")
    if isinstance(state, list):  # several names given, or an old client: take the first
        state = state[0] if state else None
    if not isinstance(state, dict):
        return _status(spec, ServiceState.UNKNOWN, "docker inspect gave no container state")
    status = str(state.get("Status") or "")
    pid = _int(state.get("Pid"))
    pids = (pid,) if pid else ()
    health = state.get("Health")
    health_status = health.get("Status") if isinstance(health, dict) else None
    if state.get("Running") and not state.get("Paused") and not state.get("Restarting"):
        detail = status or "running"
        if health_status:
            detail += f" ({health_status})"
        return _status(spec, ServiceState.RUNNING, detail, _docker_time(state.get("StartedAt")),
                       pids)
    detail = status or "not running"
    if status in ("exited", "dead") or state.get("Restarting"):
        extras = [f"exit code {state.get('ExitCode')}"]
        if state.get("OOMKilled"):
            extras.append("OOM killed")
        if state.get("Error"):
            extras.append(str(state["Error"]))
        detail += f" ({', '.join(extras)})"
    since = _docker_time(state.get("FinishedAt"))
    if status == "paused":
        since = None
    return _status(spec, ServiceState.STOPPED, detail, since, pids)


def _docker_time(value: object) -> float | None:
    """Epoch seconds of Docker's RFC 3339 nanosecond times; None for its zero time."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# Processes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    """What the process check needs of one process."""

    pid: int
    cmdline: tuple[str, ...]
    create_time: float


def process_status(spec: ServiceSpec, processes: Iterable[ProcessInfo]) -> ServiceStatus:
    """Running when some process's command line (joined by spaces) matches `spec.target`,
    since the earliest of them started; stopped when none does."""
    pattern = re.compile(spec.target)
    matched = sorted(
        (p for p in processes if p.cmdline and pattern.search(" ".join(p.cmdline))),
        key=lambda p: p.pid,
    )
    if not matched:
        return _status(spec, ServiceState.STOPPED, "no matching process")
    pids = [p.pid for p in matched]
    shown = ", ".join(str(pid) for pid in pids[:_PIDS_SHOWN])
    if len(pids) > _PIDS_SHOWN:
        shown += f" (+{len(pids) - _PIDS_SHOWN} more)"
    detail = f"pid {shown}" if len(pids) == 1 else f"pids {shown}"
    since = min(p.create_time for p in matched)
    return _status(spec, ServiceState.RUNNING, detail, since, pids)


def scan_processes() -> list[ProcessInfo]:
    """Every other process whose command line we may read (blocking: run it in a thread).

    This process is left out: its own command line may hold the pattern it looks for
    (`python -c '...'`), as `ps | grep` finds itself.
    """
    found: list[ProcessInfo] = []
    me = os.getpid()
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        if proc.pid == me:
            continue
        cmdline, created = proc.info.get("cmdline"), proc.info.get("create_time")
        if cmdline and created is not None:
            found.append(ProcessInfo(proc.pid, tuple(cmdline), created))
    return found


# The source ------------------------------------------------------------------------------------


class ServicesSource:
    """Checks every configured service at once; each check fails alone, as `unknown`."""

    source = "services"

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        systemctl: str = "systemctl",
        docker: str = "docker",
    ) -> None:
        self.specs = tuple(specs)
        self.timeout_s = timeout_s
        self.systemctl = systemctl
        self.docker = docker

    async def read(self) -> Reading[tuple[ServiceStatus, ...]]:
        """The status of every service, in the order of the specs."""
        started = time.time()
        processes: asyncio.Future[list[ProcessInfo]] | None = None
        if any(spec.kind == "process" for spec in self.specs):
            processes = asyncio.ensure_future(asyncio.to_thread(scan_processes))
        statuses = await asyncio.gather(
            *(self._check(spec, processes) for spec in self.specs)
        )
        return Reading.success(self.source, tuple(statuses), started)

    async def _check(
        self, spec: ServiceSpec, processes: asyncio.Future[list[ProcessInfo]] | None
    ) -> ServiceStatus:
        try:
            if spec.kind == "systemd":
                return await self._systemd(spec)
            if spec.kind == "docker":
                return await self._docker(spec)
            assert processes is not None
            return process_status(spec, await processes)
        except (OSError, psutil.Error) as exc:
            return _status(spec, ServiceState.UNKNOWN, f"check failed: {exc}")
        except Exception as exc:  # a bug must not hide the other services
            log.exception("services source: checking %s failed", spec.name)
            return _status(spec, ServiceState.UNKNOWN, f"internal error: {exc!r}")

    async def _systemd(self, spec: ServiceSpec) -> ServiceStatus:
        argv = [self.systemctl, "show", spec.target, "--no-pager",
                f"--property={','.join(SYSTEMD_PROPERTIES)}"]
        result = await run_command(argv, self.timeout_s, env={"LC_ALL": "C", "SYSTEMD_COLORS": "0"})
        if isinstance(result, str):
            return _status(spec, ServiceState.UNKNOWN, result)
        return systemd_status(spec, *result)

    async def _docker(self, spec: ServiceSpec) -> ServiceStatus:
        argv = [self.docker, "inspect", "--type", "container", "--format", "{{json .State}}",
                spec.target]
        result = await run_command(argv, self.timeout_s)
        if isinstance(result, str):
            return _status(spec, ServiceState.UNKNOWN, result)
        return docker_status(spec, *result)


async def run_command(
    argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None
) -> tuple[int, str, str] | str:
    """Run a command: (exit code, stdout, stderr), or why it could not run, in words.

    The child is killed on timeout and when the caller is cancelled.
    """
    program = os.path.basename(argv[0])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env} if env else None,
        )
    except FileNotFoundError:
        return f"{program} not found"
    except OSError as exc:
        return f"{program} could not be run ({exc.strerror or exc})"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        return f"{program} did not answer within {timeout_s:g} s"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None

