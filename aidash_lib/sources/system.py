"""The machine through psutil: CPU, load, memory, swap, disks, I/O rates and the busiest processes.

Rates (disk and network bytes per second, CPU percentages) are differences of counters between
two consecutive reads of the same source, so each `SystemSource` keeps its own previous sample
rather than psutil's process-wide one: two sources (a recorder and a notebook) never shorten each
other's intervals. The first read has no previous counters, so its I/O rates are None; a counter
that went backwards (a reset, a removed interface) gives None, never a negative rate.

Everything psutil does here reads /proc and may take tens of milliseconds on a busy machine, so
each read runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from aidash_lib.sources.base import Fault, FaultKind, Reading

#: Longest command line kept for a top process, in characters.
CMDLINE_MAX_CHARS = 200

#: On the first read, process CPU usage is sampled over this many seconds (awaited, not blocked).
FIRST_PROCESS_SAMPLE_S = 0.25

#: Network interfaces left out of the network rates by default (traffic that never leaves).
DEFAULT_NET_EXCLUDE: tuple[str, ...] = ("lo",)


@dataclass(frozen=True)
class IoCounters:
    """Cumulative byte counters since boot; None where the machine has no such counter."""

    disk_read_bytes: int | None
    disk_write_bytes: int | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None


@dataclass(frozen=True)
class DiskUsage:
    """Space on the filesystem holding `path`; `error` says why the values are None."""

    path: str
    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None
    used_percent: float | None
    error: str | None = None


@dataclass(frozen=True)
class TopProcess:
    """One of the busiest processes.

    `cpu_percent` is of one core (100 = one core busy), as in top, over the interval since the
    previous read; None when the process was not seen then. Processes that used no CPU are not
    listed among the top by CPU.
    """

    pid: int
    name: str | None
    cpu_percent: float | None
    memory_rss_bytes: int | None
    username: str | None
    cmdline: str | None


@dataclass(frozen=True)
class SystemSnapshot:
    """The machine at one moment. Rates are per second over the interval since the last read."""

    cpu_count: int
    cpu_percent: float | None
    cpu_per_core_percent: tuple[float, ...] | None
    load_average_1m: float | None
    load_average_5m: float | None
    load_average_15m: float | None
    memory_total_bytes: int
    memory_used_bytes: int
    memory_available_bytes: int
    memory_used_percent: float
    swap_total_bytes: int
    swap_used_bytes: int
    swap_used_percent: float
    disks: tuple[DiskUsage, ...]
    disk_read_bytes_per_s: float | None
    disk_write_bytes_per_s: float | None
    net_rx_bytes_per_s: float | None
    net_tx_bytes_per_s: float | None
    process_count: int
    top_by_cpu: tuple[TopProcess, ...]
    top_by_memory: tuple[TopProcess, ...]
    interval_s: float | None


def counter_rate(previous: float | None, current: float | None, elapsed_s: float) -> float | None:
    """Per-second rate of a cumulative counter; None when unknown or when it went backwards."""
    if previous is None or current is None or elapsed_s <= 0 or current < previous:
        return None
    return (current - previous) / elapsed_s


def read_io_counters(net_exclude: Sequence[str] = DEFAULT_NET_EXCLUDE) -> IoCounters:
    """This machine's disk and network byte counters, summed over disks and interfaces."""
    try:
        disk = psutil.disk_io_counters()
    except OSError:  # no /proc/diskstats (some containers)
        disk = None
    try:
        nics = psutil.net_io_counters(pernic=True)
    except OSError:
        nics = {}
    kept = [c for name, c in nics.items() if name not in net_exclude]
    return IoCounters(
        disk_read_bytes=disk.read_bytes if disk is not None else None,
        disk_write_bytes=disk.write_bytes if disk is not None else None,
        net_rx_bytes=sum(c.bytes_recv for c in kept) if nics else None,
        net_tx_bytes=sum(c.bytes_sent for c in kept) if nics else None,
    )


def shorten(text: str, limit: int = CMDLINE_MAX_CHARS) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# (pid, create_time) identifies a process across samples even when a pid is reused.
_ProcessKey = tuple[int, float]


@dataclass
class _ProcessSample:
    name: str | None
    cpu_s: float
    rss_bytes: int | None
    #: When this process was read (the source's clock): a scan reads one process after
    #: another, and each one's CPU time is divided by the time between its own two reads.
    read_at: float


class SystemSource:
    """Reads this machine through psutil; keeps the previous counters to compute rates."""

    source = "system"

    def __init__(
        self,
        *,
        top_n: int = 5,
        disk_paths: Sequence[str] = ("/",),
        net_exclude: Sequence[str] = DEFAULT_NET_EXCLUDE,
        io_counters: Callable[[], IoCounters] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.top_n = top_n
        self.disk_paths = tuple(disk_paths)
        self.net_exclude = tuple(net_exclude)
        self._io_counters = io_counters or (lambda: read_io_counters(self.net_exclude))
        self._clock = clock
        self._lock = threading.Lock()
        self._cpu_times = psutil.cpu_times()
        self._per_cpu_times = psutil.cpu_times(percpu=True)
        self._io: IoCounters | None = None
        self._io_at: float | None = None
        self._processes: dict[_ProcessKey, _ProcessSample] | None = None

    async def read(self) -> Reading[SystemSnapshot]:
        """One snapshot of the machine, with rates since this source's previous read."""
        started = time.time()
        try:
            if self._processes is None and self.top_n > 0:
                await asyncio.to_thread(self._sample_processes_first)
                await asyncio.sleep(FIRST_PROCESS_SAMPLE_S)
            snapshot = await asyncio.to_thread(self._collect)
        except (OSError, psutil.Error) as exc:
            fault = Fault(FaultKind.NOT_AVAILABLE, f"psutil could not read the machine ({exc})")
            return Reading.failure(self.source, fault, started)
        return Reading.success(self.source, snapshot, started)

    async def prime(self) -> None:
        """Take the baseline counters now (processes, disk and network), so that the next
        `read()` gives rates over the time in between without waiting on its own."""
        await asyncio.to_thread(self._prime)

    # All below runs in a worker thread.

    def _prime(self) -> None:
        with self._lock:
            self._processes = self._scan_processes()
            self._io, self._io_at = self._io_counters(), self._clock()

    def _sample_processes_first(self) -> None:
        with self._lock:
            if self._processes is None:
                self._processes = self._scan_processes()

    def _collect(self) -> SystemSnapshot:
        with self._lock:
            cpu_percent, per_core = self._cpu()
            io_rates, interval = self._io_rates()
            top_cpu, top_memory, count = self._top_processes()
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        try:
            load: tuple[float | None, ...] = tuple(psutil.getloadavg())
        except (OSError, AttributeError):
            load = (None, None, None)
        return SystemSnapshot(
            cpu_count=psutil.cpu_count() or len(per_core or ()) or 1,
            cpu_percent=cpu_percent,
            cpu_per_core_percent=per_core,
            load_average_1m=load[0],
            load_average_5m=load[1],
            load_average_15m=load[2],
            memory_total_bytes=memory.total,
            memory_used_bytes=memory.used,
            memory_available_bytes=memory.available,
            memory_used_percent=memory.percent,
            swap_total_bytes=swap.total,
            swap_used_bytes=swap.used,
            swap_used_percent=swap.percent,
            disks=tuple(_disk_usage(path) for path in self.disk_paths),
            disk_read_bytes_per_s=io_rates[0],
            disk_write_bytes_per_s=io_rates[1],
            net_rx_bytes_per_s=io_rates[2],
            net_tx_bytes_per_s=io_rates[3],
            process_count=count,
            top_by_cpu=top_cpu,
            top_by_memory=top_memory,
            interval_s=interval,
        )

    def _cpu(self) -> tuple[float | None, tuple[float, ...] | None]:
        now, now_per_cpu = psutil.cpu_times(), psutil.cpu_times(percpu=True)
        total = _busy_percent(self._cpu_times, now)
        per_core: tuple[float, ...] | None = None
        if len(now_per_cpu) == len(self._per_cpu_times):
            cores = [_busy_percent(a, b) for a, b in zip(self._per_cpu_times, now_per_cpu,
                                                          strict=True)]
            if all(c is not None for c in cores):
                per_core = tuple(c for c in cores if c is not None)
        self._cpu_times, self._per_cpu_times = now, now_per_cpu
        return total, per_core

    def _io_rates(self) -> tuple[tuple[float | None, ...], float | None]:
        now = self._clock()
        current = self._io_counters()
        previous, previous_at = self._io, self._io_at
        self._io, self._io_at = current, now
        if previous is None or previous_at is None:
            return (None, None, None, None), None
        elapsed = now - previous_at
        rates = tuple(
            counter_rate(getattr(previous, name), getattr(current, name), elapsed)
            for name in ("disk_read_bytes", "disk_write_bytes", "net_rx_bytes", "net_tx_bytes")
        )
        return rates, elapsed

    def _scan_processes(self) -> dict[_ProcessKey, _ProcessSample]:
        """CPU time and memory of every process: only the cheap per-process reads."""
        samples: dict[_ProcessKey, _ProcessSample] = {}
        for proc in psutil.process_iter(["name", "cpu_times", "memory_info", "create_time"]):
            info = proc.info
            cpu_times, created = info.get("cpu_times"), info.get("create_time")
            if cpu_times is None or created is None:
                continue
            memory = info.get("memory_info")
            samples[(proc.pid, created)] = _ProcessSample(
                name=info.get("name"),
                cpu_s=cpu_times.user + cpu_times.system,
                rss_bytes=memory.rss if memory is not None else None,
                read_at=self._clock(),
            )
        return samples

    def _top_processes(self) -> tuple[tuple[TopProcess, ...], tuple[TopProcess, ...], int]:
        previous = self._processes or {}
        self._processes = self._scan_processes()
        current = self._processes or {}
        cpu: dict[_ProcessKey, float | None] = {}
        for key, sample in current.items():
            before = previous.get(key)
            elapsed = sample.read_at - before.read_at if before is not None else 0.0
            cpu[key] = (
                max(0.0, (sample.cpu_s - before.cpu_s) / elapsed * 100.0)
                if before is not None and elapsed > 0 else None
            )
        if self.top_n <= 0:
            return (), (), len(current)
        by_cpu = sorted(
            (k for k in current if cpu[k]), key=lambda k: cpu[k] or 0.0, reverse=True
        )[: self.top_n]
        by_memory = sorted(current, key=lambda k: current[k].rss_bytes or 0, reverse=True)
        details = _details({k[0] for k in (*by_cpu, *by_memory[: self.top_n])})

        def top(key: _ProcessKey) -> TopProcess:
            sample = current[key]
            username, cmdline = details.get(key[0], (None, None))
            return TopProcess(
                pid=key[0],
                name=sample.name,
                cpu_percent=None if cpu[key] is None else round(cpu[key] or 0.0, 1),
                memory_rss_bytes=sample.rss_bytes,
                username=username,
                cmdline=cmdline,
            )

        return (
            tuple(top(k) for k in by_cpu),
            tuple(top(k) for k in by_memory[: self.top_n]),
            len(current),
        )


def _details(pids: set[int]) -> dict[int, tuple[str | None, str | None]]:
    """Username and shortened command line of the few processes shown (the costlier reads)."""
    out: dict[int, tuple[str | None, str | None]] = {}
    for pid in pids:
        username: str | None = None
        cmdline: str | None = None
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                try:
                    username = proc.username()
                except (KeyError, psutil.AccessDenied):
                    username = str(proc.uids().real) if os.name == "posix" else None
                argv = proc.cmdline()
            cmdline = shorten(" ".join(" ".join(argv).split())) if argv else None
        except (psutil.Error, OSError):
            pass
        out[pid] = (username, cmdline)
    return out


def _busy_percent(before: object, after: object) -> float | None:
    """Busy CPU percentage between two `cpu_times` samples, as psutil computes it."""
    total_before, total_after = _total_time(before), _total_time(after)
    elapsed = total_after - total_before
    if elapsed <= 0:
        return None
    idle = _idle_time(after) - _idle_time(before)
    busy = elapsed - idle
    return round(min(100.0, max(0.0, 100.0 * busy / elapsed)), 1)


def _total_time(times: object) -> float:
    # guest time is already counted in user time on Linux.
    total = sum(times)  # type: ignore[call-overload]
    return total - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle_time(times: object) -> float:
    return getattr(times, "idle", 0.0) + getattr(times, "iowait", 0.0)


def _disk_usage(path: str) -> DiskUsage:
    try:
        usage = psutil.disk_usage(path)
    except OSError as exc:
        return DiskUsage(path, None, None, None, None, error=exc.strerror or str(exc))
    return DiskUsage(path, usage.total, usage.used, usage.free, usage.percent)
