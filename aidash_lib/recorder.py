"""The recorder: the one process that polls the gateway and the machine, and writes the store.

`aidash record` runs it; dashboards only read the store, so any number of them add no load
to the gateway. Each source is polled by its own task on its own interval (`intervals:` in the
settings): the machine, the GPUs, the gateway's readiness, its `/metrics/` (from which
`aidash_lib.derive` computes rates and percentiles between consecutive scrapes), its
deployments (`/model/info`), the configured services, and Prometheus and Alertmanager when
they are configured. It never calls the gateway's `/health`, which makes LiteLLM call every
deployment for real.

What it reads is written as soon as it is read, so a recorder killed with SIGKILL loses at most
one interval. A second recorder on the same store refuses to start (`StoreLocked`).

Faults are logged once per episode: when a source stops answering (with the reason) and when
it answers again, never every interval; both are stored as `source_fault` / `source_recovered`
events. A store that cannot be written (full disk, read-only file) does not stop the recorder:
the unsaved samples are kept in memory, bounded (the oldest are dropped and counted), the fault
is logged once, and the write is retried at every poll. The latest `/model/info` is stored as an
`Event(kind="deployments", subject=<gateway url>, detail=<JSON list>)` whenever it changes
(and once at start-up), so the dashboard can read the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx

from aidash_lib import derive
from aidash_lib.settings import Settings
from aidash_lib.sources.alertmanager import AlertmanagerSource
from aidash_lib.sources.base import Fault, FaultKind, to_jsonable
from aidash_lib.sources.gateway import Deployment, GatewaySource
from aidash_lib.sources.gpu import GpuSource
from aidash_lib.sources.prometheus import PrometheusSource
from aidash_lib.sources.services import ServiceSpec, ServicesSource
from aidash_lib.sources.system import SystemSource
from aidash_lib.store.schema import Event, Sample
from aidash_lib.store.sqlite import SqliteStore, StoreLocked, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Unsaved samples kept in memory while the store cannot be written; the oldest go first.
MAX_PENDING_SAMPLES = 50_000
#: Unsaved events kept in memory while the store cannot be written.
MAX_PENDING_EVENTS = 2_000
#: How often the store prunes old samples and rolls them up.
MAINTAIN_INTERVAL_S = 60.0
#: Rates are not derived across a gap between scrapes longer than
#: max(MIN_RATE_GAP_S, MAX_RATE_GAP_INTERVALS × the metrics interval), as after a long outage
#: of the gateway: the next scrape starts afresh instead of giving one long flat average.
MAX_RATE_GAP_INTERVALS = 5
MIN_RATE_GAP_S = 60.0


class RecorderStore(Protocol):
    """What the recorder needs of a store (`aidash_lib.store.sqlite.SqliteStore`)."""

    def write_samples(self, samples: Iterable[Sample]) -> int: ...

    def write_events(self, events: Iterable[Event]) -> int: ...

    def maintain(self, now_s: float | None = None) -> Any: ...

    def acquire_recorder_lock(self) -> Any:
        """Take the single-recorder lock (an object with `release()`), or raise
        `StoreLocked`."""
        ...

    def close(self) -> None: ...


StoreFactory = Callable[[], RecorderStore]


def sqlite_store_factory(settings: Settings) -> StoreFactory:
    """Opens the SQLite store at the settings' path with their retention."""

    def open_store() -> RecorderStore:
        return SqliteStore(
            settings.store_path,
            raw_retention_s=settings.store.raw_retention_h * 3600.0,
            rollup_retention_s=settings.store.rollup_retention_d * 86400.0,
        )

    return open_store


def gateway_source(
    settings: Settings, client: httpx.AsyncClient, environ: Mapping[str, str] | None = None,
) -> GatewaySource:
    """The gateway source as `aidash snapshot` builds it (same key, timeouts and limits)."""
    return GatewaySource(
        client, settings.gateway.url, settings.gateway_key(environ),
        timeout=httpx.Timeout(
            settings.gateway.timeout_s, connect=min(2.0, settings.gateway.timeout_s)
        ),
        health_check_min_interval_s=settings.gateway.health_check_min_interval_s,
    )


# -- what one poll gives ---------------------------------------------------------------------


@dataclass
class Collected:
    """What one poll of one source gave: samples and events to write, or why it failed."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    fault: Fault | None = None


@dataclass(frozen=True)
class Job:
    """One source polled every `interval_s` seconds."""

    name: str
    interval_s: float
    poll: Callable[[], Awaitable[Collected]]


@dataclass
class _Episode:
    since_s: float
    reason: str


class FaultLog:
    """Logs a source's fault once when it begins and once when it ends, and makes the
    matching `source_fault` / `source_recovered` events."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._open: dict[str, _Episode] = {}
        self._clock = clock

    @property
    def faulty(self) -> dict[str, str]:
        """Sources in a fault episode now, with the reason it began."""
        return {name: episode.reason for name, episode in self._open.items()}

    def update(
        self, source: str, fault: Fault | None, *, error: BaseException | None = None,
    ) -> list[Event]:
        """Record the outcome of one poll; returns the events to store (none mid-episode)."""
        now = self._clock()
        episode = self._open.get(source)
        if fault is None and error is None:
            if episode is None:
                return []
            del self._open[source]
            down_s = now - episode.since_s
            log.info("%s: recovered after %.0f s (was: %s)", source, down_s, episode.reason)
            return [Event(now, "source_recovered", source,
                          f"after {down_s:.0f} s; was: {episode.reason}")]
        if episode is not None:
            return []
        if error is not None:
            reason = f"internal error: {type(error).__name__}: {error}"
            log.error("%s: %s; recording of the other sources continues", source, reason,
                      exc_info=error)
        else:
            assert fault is not None
            reason = str(fault)
            level = logging.INFO if fault.kind is FaultKind.NOT_AVAILABLE else logging.WARNING
            log.log(level, "%s: %s (logged once; retried every interval)", source, reason)
        self._open[source] = _Episode(now, reason)
        return [Event(now, "source_fault", source, reason)]


# -- the store, written from one thread ------------------------------------------------------


class StoreWriter:
    """Writes batches into the store from one dedicated thread; keeps what it could not write.

    Every store call runs in the same worker thread (SQLite connections belong to the thread
    that opened them) and never blocks the event loop.
    """

    def __init__(
        self,
        open_store: StoreFactory,
        *,
        description: str = "the store",
        max_pending_samples: int = MAX_PENDING_SAMPLES,
        max_pending_events: int = MAX_PENDING_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._open_store = open_store
        self.description = description
        self._samples: deque[Sample] = deque()
        self._events: deque[Event] = deque()
        self.max_pending_samples = max_pending_samples
        self.max_pending_events = max_pending_events
        self.dropped_samples = 0
        self.dropped_events = 0
        self.written_samples = 0
        self._store: RecorderStore | None = None
        self._recorder_lock: Any = None
        self._failing: str | None = None
        self._maintain_failing: str | None = None
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aidash-store")
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> tuple[int, int]:
        """Samples and events waiting to be written."""
        return len(self._samples), len(self._events)

    @property
    def available(self) -> bool:
        """False while the store is failing (since the last failed write)."""
        return self._failing is None and self._store is not None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        """Open the store and take the recorder's lock. Raises `StoreLocked` when another
        recorder holds it; a store that cannot be opened now is retried at each write."""
        async with self._lock:
            await self._ensure_open()

    async def _ensure_open(self) -> bool:
        if self._store is not None:
            return True
        try:
            store = await self._call(self._open_store)
        except StoreLocked:
            raise
        except Exception as exc:
            self._note_failure(exc)
            return False
        try:
            self._recorder_lock = await self._call(store.acquire_recorder_lock)
        except StoreLocked:
            await self._call(store.close)
            raise
        except Exception as exc:
            await self._call(store.close)
            self._note_failure(exc)
            return False
        self._store = store
        return True

    async def write(self, samples: Sequence[Sample], events: Sequence[Event] = ()) -> None:
        """Queue a batch and write everything queued; faults are kept, not raised, except
        `StoreLocked` (another recorder took the store)."""
        async with self._lock:
            self._queue(samples, events)
            await self._flush()

    def _queue(self, samples: Sequence[Sample], events: Sequence[Event]) -> None:
        self._samples.extend(samples)
        self._events.extend(events)
        while len(self._samples) > self.max_pending_samples:
            self._samples.popleft()
            self.dropped_samples += 1
        while len(self._events) > self.max_pending_events:
            self._events.popleft()
            self.dropped_events += 1

    async def _flush(self) -> None:
        if not (self._samples or self._events) or not await self._ensure_open():
            return
        store = self._store
        assert store is not None
        try:
            if self._samples:
                batch = list(self._samples)
                await self._call(store.write_samples, batch)
                self._samples.clear()
                self.written_samples += len(batch)
            if self._failing is not None:
                self._recovered()
            if self._events:
                await self._call(store.write_events, list(self._events))
                self._events.clear()
        except StoreLocked:
            raise
        except Exception as exc:
            self._note_failure(exc)

    def _note_failure(self, exc: BaseException) -> None:
        if self._failing is not None:
            return
        expected = isinstance(exc, StoreUnavailable)
        self._failing = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        log.error(
            "cannot write %s: %s; recording continues, keeping up to %d unsaved samples in "
            "memory and retrying at every poll", self.description, self._failing,
            self.max_pending_samples, exc_info=not expected,
        )
        self._events.appendleft(Event(self._clock(), "store_fault", self.description,
                                      self._failing))

    def _recovered(self) -> None:
        dropped = f"; {self.dropped_samples} samples were dropped" if self.dropped_samples else ""
        log.info("%s is writable again; the unsaved samples were written%s",
                 self.description, dropped)
        self._failing = None
        detail = (f"{self.dropped_samples} samples and {self.dropped_events} events dropped "
                  "since the recorder started")
        self._queue((), [Event(self._clock(), "store_recovered", self.description, detail)])

    async def maintain(self) -> None:
        """Let the store prune and roll up; a failure is logged once, never raised."""
        if self._store is None:
            return
        try:
            await self._call(self._store.maintain, self._clock())
        except Exception as exc:
            if self._maintain_failing is None:
                log.warning("store maintenance failed: %s: %s (retried later)",
                            type(exc).__name__, exc)
            self._maintain_failing = str(exc)
            return
        self._maintain_failing = None

    async def close(self) -> None:
        """Write what is pending (one last try), close the store (releasing its lock)."""
        async with self._lock:
            if self._store is not None:
                with contextlib.suppress(Exception):
                    await self._flush()
            if self._store is not None:
                store, self._store = self._store, None
                lock, self._recorder_lock = self._recorder_lock, None
                try:
                    await self._call(store.close)
                except Exception as exc:
                    log.warning("closing the store failed: %s", exc)
                release = getattr(lock, "release", None)
                if release is not None:
                    await self._call(release)
        samples, events = self.pending
        if samples or events:
            log.error("%d samples and %d events could not be written before stopping",
                      samples, events)
        self._executor.shutdown(wait=True)


# -- the recorder ----------------------------------------------------------------------------


class Recorder:
    """Polls every configured source on its own interval and writes what it reads."""

    def __init__(
        self,
        settings: Settings,
        *,
        store_factory: StoreFactory | None = None,
        client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
        gpu: GpuSource | None = None,
        system: SystemSource | None = None,
    ) -> None:
        self.settings = settings
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(limits=httpx.Limits(max_connections=10))
        self.gateway = gateway_source(settings, self.client, environ)
        self.gpu = gpu or GpuSource()
        self.system = system or SystemSource(top_n=TOP_PROCESSES)
        self.services = ServicesSource([
            ServiceSpec(s.name, s.kind, s.target) for s in settings.services
        ])
        self.prometheus = PrometheusSource(
            self.client, settings.prometheus.url,
            timeout=httpx.Timeout(settings.prometheus.timeout_s),
        ) if settings.prometheus.url else None
        self.alertmanager = AlertmanagerSource(
            self.client, settings.alertmanager.url,
            timeout=httpx.Timeout(settings.alertmanager.timeout_s),
        ) if settings.alertmanager.url else None
        self.writer = StoreWriter(
            store_factory or sqlite_store_factory(settings),
            description=f"the store at {settings.store_path}",
        )
        self.faults = FaultLog()
        self.polls: dict[str, int] = {}
        self._deployments: tuple[Deployment, ...] = ()
        self.changes = ChangeEvents()
        self._firing: dict[str, str] = {}
        self._last_scrape: derive.Scrape | None = None
        self._fatal: BaseException | None = None

    def jobs(self) -> list[Job]:
        """The sources to poll, each with its interval."""
        intervals = self.settings.intervals
        jobs = [
            Job("machine", intervals.machine_s, self._poll_machine),
            Job("gpu", intervals.gpu_s, self._poll_gpu),
            Job("gateway.readiness", intervals.gateway_readiness_s, self._poll_readiness),
            Job("gateway.metrics", intervals.gateway_metrics_s, self._poll_metrics),
            Job("gateway.deployments", intervals.deployments_s, self._poll_deployments),
        ]
        if self.settings.services:
            jobs.append(Job("services", intervals.services_s, self._poll_services))
        if self.prometheus is not None:
            jobs.append(Job("prometheus", intervals.gateway_readiness_s, self._poll_prometheus))
        if self.alertmanager is not None:
            jobs.append(
                Job("alertmanager", intervals.gateway_readiness_s, self._poll_alertmanager))
        return jobs

    async def run(self, stop: asyncio.Event | None = None, max_cycles: int | None = None) -> None:
        """Poll until `stop` is set, or until the most frequent source has been polled
        `max_cycles` times (every source is polled at least once). Raises `StoreLocked`."""
        stop = stop or asyncio.Event()
        try:
            await self.writer.open()
            await self.system.prime()  # so the first machine reading has rates and top processes
            jobs = self.jobs()
            fastest = min(jobs, key=lambda j: j.interval_s)
            log.info(
                "recording into %s: %s", self.settings.store_path,
                ", ".join(f"{j.name} every {j.interval_s:g} s" for j in jobs),
            )
            tasks = [
                asyncio.create_task(
                    self._loop(job, stop, max_cycles if job is fastest else None),
                    name=f"aidash-recorder-{job.name}",
                )
                for job in jobs
            ]
            tasks.append(asyncio.create_task(self._maintain_loop(stop)))
            try:
                await asyncio.gather(*tasks)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self._close()
        if self._fatal is not None:
            raise self._fatal

    async def _close(self) -> None:
        await self.writer.close()
        with contextlib.suppress(Exception):
            await self.gpu.aclose()
        if self._own_client:
            await self.client.aclose()

    async def _loop(self, job: Job, stop: asyncio.Event, limit: int | None) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.poll_once(job)
            if self._fatal is not None:
                stop.set()
            if limit is not None and self.polls.get(job.name, 0) >= limit:
                stop.set()
            if stop.is_set():
                return
            next_at += job.interval_s
            now = loop.time()
            if next_at < now:  # the poll overran its interval: skip the missed ticks
                next_at = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=next_at - now)
            if stop.is_set():
                return

    async def _maintain_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.writer.maintain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=MAINTAIN_INTERVAL_S)

    async def poll_once(self, job: Job) -> Collected:
        """Poll one source, note its fault state, write what it gave."""
        try:
            collected = await job.poll()
            events = self.faults.update(job.name, collected.fault)
        except Exception as exc:  # a bug in one source must not stop the others
            collected = Collected()
            events = self.faults.update(job.name, None, error=exc)
        self.polls[job.name] = self.polls.get(job.name, 0) + 1
        try:
            await self.writer.write(collected.samples, [*events, *collected.events])
        except Exception as exc:  # StoreLocked: another recorder took the store
            self._fatal = exc
        return collected

    # -- one poll per source ---------------------------------------------------------------

    async def _poll_machine(self) -> Collected:
        reading = await self.system.read()
        if not reading.ok or reading.value is None:
            return Collected(fault=reading.fault)
        snap = reading.value
        top = {"top_by_cpu": _without_cmdlines(snap.top_by_cpu),
               "top_by_memory": _without_cmdlines(snap.top_by_memory)}
        events = self.changes.event("processes", "machine", top, reading.taken_at,
                                    min_interval_s=PROCESSES_EVENT_S)
        return Collected(derive.system_samples(snap, reading.taken_at), events)

    async def _poll_gpu(self) -> Collected:
        reading = await self.gpu.read()
        if not reading.ok or reading.value is None:
            return Collected(fault=reading.fault)
        gpus = to_jsonable(reading.value)
        for gpu in gpus["gpus"]:
            gpu["processes"] = _without_cmdlines(gpu["processes"])
        events = self.changes.event("gpu_processes", "gpu", gpus, reading.taken_at,
                                    min_interval_s=PROCESSES_EVENT_S)
        return Collected(derive.gpu_samples(reading.value, reading.taken_at), events)

    async def _poll_readiness(self) -> Collected:
        reading = await self.gateway.readiness()
        events = []
        if reading.ok and reading.value is not None:
            events = self.changes.event("gateway_readiness", self.settings.gateway.url,
                                        to_jsonable(reading.value), reading.taken_at)
        return Collected(derive.readiness_samples(reading), events, fault=reading.fault)

    async def _poll_metrics(self) -> Collected:
        reading = await self.gateway.metrics()
        if not reading.ok or reading.value is None:
            return Collected(fault=reading.fault)
        scrape = derive.Scrape(reading.value, reading.taken_at)
        samples = derive.gateway_gauge_samples(scrape, self._deployments)
        events: list[Event] = []
        previous, self._last_scrape = self._last_scrape, scrape
        max_gap = max(MIN_RATE_GAP_S,
                      MAX_RATE_GAP_INTERVALS * self.settings.intervals.gateway_metrics_s)
        if previous is not None and scrape.time_s - previous.time_s <= max_gap:
            # A busy gateway exposes thousands of series: derive off the event loop.
            interval = await asyncio.to_thread(
                derive.gateway_interval, previous, scrape, self._deployments)
            if interval is not None:
                samples += interval.samples()
                if interval.counter_reset:
                    log.info("the gateway's counters went back: it restarted")
                    events.append(Event(scrape.time_s, "gateway_restart", self.settings.gateway.url,
                                        "counters were reset between two scrapes"))
        return Collected(samples, events)

    async def _poll_deployments(self) -> Collected:
        reading = await self.gateway.deployments()
        if not reading.ok or reading.value is None:
            return Collected(fault=reading.fault)
        self._deployments = reading.value
        samples = [Sample("gateway_deployment_count", (), reading.taken_at,
                          float(len(reading.value)))]
        events = self.changes.event("deployments", self.settings.gateway.url,
                                    to_jsonable(reading.value), reading.taken_at)
        return Collected(samples, events)

    async def _poll_services(self) -> Collected:
        reading = await self.services.read()
        if not reading.ok or reading.value is None:
            return Collected(fault=reading.fault)
        return Collected(derive.service_samples(reading.value, reading.taken_at))

    async def _poll_prometheus(self) -> Collected:
        assert self.prometheus is not None
        reading = await self.prometheus.ready()
        return Collected(derive.server_ready_samples("prometheus_ready", reading),
                         fault=reading.fault)

    async def _poll_alertmanager(self) -> Collected:
        """Alertmanager's readiness, and its active alerts as events with a beginning
        (`firing`) and an end (`resolved`)."""
        assert self.alertmanager is not None
        reading = await self.alertmanager.active_alerts()
        ready = 1.0 if reading.ok else 0.0
        samples = [Sample("alertmanager_ready", (), reading.taken_at, ready)]
        if not reading.ok or reading.value is None:
            return Collected(samples, fault=reading.fault)
        now = {alert.name: json.dumps({"status": "firing", "severity": alert.severity,
                                       "summary": alert.summary, "since": alert.starts_at})
               for alert in reading.value}
        events = [Event(reading.taken_at, "alert", name, detail)
                  for name, detail in now.items() if name not in self._firing]
        events += [Event(reading.taken_at, "alert", name, json.dumps({"status": "resolved"}))
                   for name in self._firing if name not in now]
        self._firing = now
        return Collected(samples, events)


class ChangeEvents:
    """Events that carry the latest state of something (deployments, top processes...):
    written when it changed, and no more often than asked."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[str, float]] = {}

    def event(self, kind: str, subject: str, payload: Any, time_s: float, *,
              min_interval_s: float = 0.0) -> list[Event]:
        detail = json.dumps(payload, sort_keys=True, allow_nan=False)
        previous = self._last.get((kind, subject))
        if previous is not None and (previous[0] == detail
                                     or time_s - previous[1] < min_interval_s):
            return []
        self._last[(kind, subject)] = (detail, time_s)
        return [Event(time_s, kind, subject, detail)]


def _without_cmdlines(processes: Any) -> list[dict[str, Any]]:
    """Processes as JSON without their command lines: those can hold keys."""
    return [{k: v for k, v in to_jsonable(p).items() if k != "cmdline"} for p in processes]


#: Top processes kept per machine reading, and how often their list is written at most.
TOP_PROCESSES = 5
PROCESSES_EVENT_S = 60.0


async def run_recorder(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    max_cycles: int | None = None,
    store_factory: StoreFactory | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Record until `stop` is set (or for `max_cycles` polls of the most frequent source).

    Raises `aidash_lib.store.sqlite.StoreLocked` when another recorder holds the store.
    """
    recorder = Recorder(settings, store_factory=store_factory, environ=environ)
    await recorder.run(stop, max_cycles)


def main_record(settings: Settings) -> int:
    """`aidash record`: run until SIGTERM or SIGINT (exit 0); 1 when another recorder holds
    the store."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)  # fault and recovery lines are the recorder's output
    try:
        asyncio.run(_record_until_signalled(settings))
    except StoreLocked as exc:
        print(f"aidash record: not started: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _record_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await run_recorder(settings, stop=stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    log.info("recorder stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m aidash_lib.recorder [--config FILE]`: the recorder without the CLI."""
    from aidash_lib.settings import SettingsError, load_settings
    from aidash_lib.yamlfile import UnusableInput

    parser = argparse.ArgumentParser(prog="python -m aidash_lib.recorder",
                                     description="Record every configured source into the store.")
    parser.add_argument("--config", help="the settings file (default: AIDASH_CONFIG, else "
                                         "config/dashboard.yaml)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except (SettingsError, UnusableInput) as exc:
        print(exc, file=sys.stderr)
        return 2
    return main_record(settings)


if __name__ == "__main__":
    sys.exit(main())
