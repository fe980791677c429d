"""The system source against this machine's real psutil, and its rates through injected counters."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from aidash_lib.sources.base import to_jsonable
from aidash_lib.sources.system import (
    IoCounters,
    SystemSource,
    _ProcessSample,
    counter_rate,
    read_io_counters,
    shorten,
)

BUSY_LOOP = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"


def _write_and_fsync(path: Path, size: int = 8 * 1024 * 1024) -> None:
    with path.open("wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


def _loopback_transfer(size: int = 4 * 1024 * 1024) -> None:
    """Send `size` bytes through a TCP connection on 127.0.0.1."""
    server = socket.create_server(("127.0.0.1", 0))
    received = 0

    def receive() -> None:
        nonlocal received
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received += len(chunk)

    thread = threading.Thread(target=receive)
    thread.start()
    with socket.create_connection(server.getsockname()) as client:
        client.sendall(b"x" * size)
    thread.join(10)
    server.close()
    assert received == size


async def test_two_real_reads_give_rates_and_plausible_totals(tmp_path: Path):
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        # A wide top list: on a shared machine other processes may outrun the busy loop.
        source = SystemSource(top_n=100, disk_paths=("/", str(tmp_path)), net_exclude=())
        first = await source.read()
        assert first.ok, first.fault
        snap = first.value
        for rate in (snap.disk_read_bytes_per_s, snap.disk_write_bytes_per_s,
                     snap.net_rx_bytes_per_s, snap.net_tx_bytes_per_s, snap.interval_s):
            assert rate is None  # no previous counters yet

        _write_and_fsync(tmp_path / "io.bin")
        _loopback_transfer()
        time.sleep(0.5)
        second = await source.read()
    finally:
        busy.kill()
        busy.wait(5)
    assert second.ok, second.fault
    snap = second.value
    assert snap.interval_s is not None and snap.interval_s > 0.4
    rates = (snap.disk_read_bytes_per_s, snap.disk_write_bytes_per_s,
             snap.net_rx_bytes_per_s, snap.net_tx_bytes_per_s)
    for rate in rates:
        assert rate is None or rate >= 0
    if psutil.disk_io_counters() is not None:
        assert snap.disk_write_bytes_per_s is not None
    # 4 MiB over loopback, counted both ways, in well under 10 s.
    assert snap.net_rx_bytes_per_s is not None and snap.net_rx_bytes_per_s > 4e5
    assert snap.net_tx_bytes_per_s is not None and snap.net_tx_bytes_per_s > 4e5

    assert snap.cpu_count == psutil.cpu_count() >= 1
    assert snap.cpu_percent is not None and 0 <= snap.cpu_percent <= 100
    assert snap.cpu_per_core_percent is not None
    assert len(snap.cpu_per_core_percent) == snap.cpu_count
    assert all(0 <= c <= 100 for c in snap.cpu_per_core_percent)
    assert snap.load_average_1m is not None and snap.load_average_1m >= 0
    assert 0 < snap.memory_used_bytes < snap.memory_total_bytes
    assert 0 < snap.memory_available_bytes <= snap.memory_total_bytes
    assert 0 < snap.memory_used_percent < 100
    assert 0 <= snap.swap_used_bytes <= snap.swap_total_bytes
    root, tmp = snap.disks
    assert root.path == "/" and root.error is None
    assert 0 < root.used_bytes < root.total_bytes and 0 <= root.used_percent <= 100
    assert tmp.total_bytes and tmp.total_bytes > 0
    assert snap.process_count > 5

    assert 1 <= len(snap.top_by_memory) <= 100
    rss = [p.memory_rss_bytes for p in snap.top_by_memory]
    assert rss == sorted(rss, reverse=True)
    assert 1 <= len(snap.top_by_cpu) <= 100
    cpu = [p.cpu_percent for p in snap.top_by_cpu]
    assert cpu == sorted(cpu, reverse=True)
    hog = next(p for p in snap.top_by_cpu if p.pid == busy.pid)
    assert hog.cpu_percent is not None and hog.cpu_percent > 30
    assert hog.name and hog.name.startswith("python")
    assert hog.username == psutil.Process().username()
    assert hog.cmdline is not None and "while time.time() < end: pass" in hog.cmdline
    json.dumps(to_jsonable(second))


async def test_first_read_has_process_cpu_and_missing_disk_is_reported():
    reading = await SystemSource(top_n=2, disk_paths=("/no/such/disk",)).read()
    assert reading.ok
    (disk,) = reading.value.disks
    assert disk.total_bytes is None and disk.error == "No such file or directory"
    assert len(reading.value.top_by_memory) == 2
    assert all(p.cpu_percent is None or p.cpu_percent > 0 for p in reading.value.top_by_cpu)


async def test_top_n_zero_lists_no_processes():
    reading = await SystemSource(top_n=0).read()
    assert reading.value.top_by_cpu == () and reading.value.top_by_memory == ()
    assert reading.value.process_count > 0


async def test_counter_reset_gives_none_never_negative():
    samples = iter([
        IoCounters(disk_read_bytes=1_000, disk_write_bytes=5_000, net_rx_bytes=100,
                   net_tx_bytes=200),
        # disk read counter reset (e.g. a disk removed); the others went up over 2 s
        IoCounters(disk_read_bytes=10, disk_write_bytes=9_000, net_rx_bytes=300,
                   net_tx_bytes=200),
        # an interface vanished; net counters unknown
        IoCounters(disk_read_bytes=30, disk_write_bytes=9_000, net_rx_bytes=None,
                   net_tx_bytes=None),
    ])
    now = [100.0]
    source = SystemSource(top_n=0, io_counters=lambda: next(samples), clock=lambda: now[0])
    first = (await source.read()).value
    assert first.disk_read_bytes_per_s is None and first.interval_s is None
    now[0] += 2.0
    second = (await source.read()).value
    assert second.interval_s == 2.0
    assert second.disk_read_bytes_per_s is None
    assert second.disk_write_bytes_per_s == 2_000.0
    assert second.net_rx_bytes_per_s == 100.0
    assert second.net_tx_bytes_per_s == 0.0
    now[0] += 4.0
    third = (await source.read()).value
    assert third.disk_read_bytes_per_s == 5.0  # counts again from the new base
    assert third.net_rx_bytes_per_s is None and third.net_tx_bytes_per_s is None


@pytest.mark.parametrize(
    ("previous", "current", "elapsed", "rate"),
    [
        (100, 300, 2.0, 100.0),
        (100, 100, 2.0, 0.0),
        (300, 100, 2.0, None),
        (None, 100, 2.0, None),
        (100, None, 2.0, None),
        (100, 300, 0.0, None),
    ],
)
def test_counter_rate(previous, current, elapsed, rate):
    assert counter_rate(previous, current, elapsed) == rate


def test_read_io_counters_excludes_loopback_by_default():
    with_lo = read_io_counters(net_exclude=())
    without_lo = read_io_counters()
    assert with_lo.net_rx_bytes is not None and without_lo.net_rx_bytes is not None
    assert without_lo.net_rx_bytes <= with_lo.net_rx_bytes


def test_shorten():
    assert shorten("abc", 5) == "abc"
    assert shorten("abcdefgh", 5) == "abcd…"
    assert len(shorten("x" * 1000)) == 200


async def test_reads_do_not_block_the_event_loop():
    """While a read scans processes in a thread, other tasks keep running."""
    source = SystemSource(top_n=5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await source.read()
    task.cancel()
    assert ticks >= 10  # the first read waits 0.25 s for process CPU without blocking


async def test_prime_makes_the_first_read_give_rates_without_waiting(monkeypatch) -> None:
    async def no_wait(seconds: float) -> None:
        raise AssertionError(f"read() waited {seconds} s after prime()")

    source = SystemSource()
    await source.prime()
    monkeypatch.setattr("aidash_lib.sources.system.asyncio.sleep", no_wait)
    reading = await source.read()
    assert reading.ok
    snap = reading.value
    assert snap.disk_read_bytes_per_s is not None and snap.disk_read_bytes_per_s >= 0
    assert snap.net_rx_bytes_per_s is not None and snap.net_rx_bytes_per_s >= 0


def test_process_cpu_is_over_the_time_between_its_own_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scan reads one process after another; on a busy machine a scan takes long, so the
    time between two scans is not the time between two reads of a process. Each process's CPU
    time is divided by the time between its own reads. Dividing by the time between the scans'
    starts showed 212 % for a process on two cores, and by their ends 2085 %."""
    now = [100.0]
    cpu_s = {"first": iter([10.0, 10.5]), "last": iter([20.0, 21.0])}
    per_process_s = iter([0.5, 2.0])  # the second scan is slower: the machine got busy
    source = SystemSource(top_n=5, clock=lambda: now[0])

    def scan() -> dict:
        samples, step = {}, next(per_process_s)
        for pid, name in ((1, "first"), (2, "last")):
            samples[(pid, 1.0)] = _ProcessSample(name=name, cpu_s=next(cpu_s[name]),
                                                 rss_bytes=1, read_at=now[0])
            now[0] += step
        return samples

    monkeypatch.setattr(source, "_scan_processes", scan)
    source._sample_processes_first()  # "first" read at 100, "last" at 100.5; ends at 101
    now[0] += 0.25  # the first read's wait (FIRST_PROCESS_SAMPLE_S)
    top_cpu, _, _ = source._top_processes()  # "first" read at 101.25, "last" at 103.25
    shown = {p.name: p.cpu_percent for p in top_cpu}
    assert shown["first"] == pytest.approx(100 * 0.5 / 1.25, abs=0.1)
    assert shown["last"] == pytest.approx(100 * 1.0 / 2.75, abs=0.1)  # not 80 %
