"""The recorder's scheduling, fault episodes and store handling, against a gateway made of
captured responses (httpx.MockTransport) and a small in-memory store."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aidash_lib.recorder import FaultLog, Job, Recorder, StoreWriter
from aidash_lib.settings import Settings
from aidash_lib.sources.base import Fault, FaultKind, Reading
from aidash_lib.sources.system import SystemSource
from aidash_lib.store.schema import Event, Sample
from aidash_lib.store.sqlite import StoreLocked, StoreUnavailable

KEY = "sk-test-master-recorder"
GATEWAY = "http://gateway.test:4000"
FAST = 0.05


class FakeStore:
    """The store's recorder-facing methods, in memory; can refuse writes or its lock."""

    def __init__(self, *, failing: bool = False, locked: bool = False) -> None:
        self.samples: list[Sample] = []
        self.events: list[Event] = []
        self.failing = failing
        self.locked = locked
        self.lock_held = False
        self.closed = False
        self.maintained = 0
        self.refused = 0

    def acquire_recorder_lock(self) -> None:
        if self.locked:
            raise StoreLocked("another recorder (pid 4242) is recording into this store")
        self.lock_held = True

    def _check(self) -> None:
        if self.failing:
            self.refused += 1
            raise StoreUnavailable("the store is read-only (attempt to write a readonly database)")

    def write_samples(self, samples: Iterable[Sample]) -> int:
        self._check()
        batch = list(samples)
        self.samples.extend(batch)
        return len(batch)

    def write_events(self, events: Iterable[Event]) -> int:
        self._check()
        batch = list(events)
        self.events.extend(batch)
        return len(batch)

    def maintain(self, now_s: float | None = None) -> None:
        self.maintained += 1

    def close(self) -> None:
        self.closed = True
        self.lock_held = False

    def metrics(self) -> set[str]:
        return {s.metric for s in self.samples}

    def kinds(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class FakeGateway:
    """Captured LiteLLM answers; `up = False` refuses connections. Records every path."""

    def __init__(self, fixtures: Path) -> None:
        self.fixtures = fixtures
        self.up = True
        self.paths: list[str] = []
        self.scrapes = 0

    def _file(self, name: str) -> httpx.Response:
        media = "text/plain; version=0.0.4" if name.endswith(".txt") else "application/json"
        return httpx.Response(200, content=(self.fixtures / name).read_bytes(),
                              headers={"content-type": media})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if not self.up:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        path = request.url.path
        if path == "/health/readiness":
            return self._file("health_readiness.json")
        if path == "/health/readiness/details":
            return self._file("health_readiness_details.json")
        if path == "/model/info":
            return self._file("model_info.json")
        if path == "/metrics/":
            self.scrapes += 1
            return self._file("metrics_before_traffic.txt" if self.scrapes == 1 else "metrics.txt")
        return httpx.Response(404, json={"detail": "Not Found"})


class NoGpu:
    """A GPU source on a machine without a driver."""

    async def read(self) -> Reading[Any]:
        return Reading.failure("gpu", Fault(FaultKind.NOT_AVAILABLE, "no NVIDIA driver"))

    async def aclose(self) -> None:
        return None


def make_settings(tmp_path: Path, interval_s: float = FAST, **extra: Any) -> Settings:
    return Settings.model_validate({
        "gateway": {"url": GATEWAY, "key": KEY, "timeout_s": 1.0},
        "store": {"path": str(tmp_path / "history.sqlite")},
        "intervals": {name: interval_s for name in (
            "machine_s", "gpu_s", "gateway_readiness_s", "gateway_metrics_s", "deployments_s",
            "services_s")},
        **extra,
    })


@pytest.fixture
def gateway(shared_fixtures: Path) -> FakeGateway:
    return FakeGateway(shared_fixtures / "litellm")


def make_recorder(settings: Settings, gateway: FakeGateway, store: FakeStore) -> Recorder:
    client = httpx.AsyncClient(transport=httpx.MockTransport(gateway))
    # No process scan: these tests time the scheduling, not psutil on a busy machine.
    return Recorder(settings, store_factory=lambda: store, client=client, environ={},
                    gpu=NoGpu(), system=SystemSource(top_n=0))  # type: ignore[arg-type]


async def test_records_every_source_and_derives_gateway_rates(tmp_path, gateway):
    store = FakeStore()
    recorder = make_recorder(make_settings(tmp_path), gateway, store)
    await asyncio.wait_for(recorder.run(max_cycles=4), timeout=30)
    metrics = store.metrics()
    assert {"system_cpu_percent", "system_memory_used_percent", "gateway_ready",
            "gateway_deployment_state", "gateway_deployment_count"} <= metrics
    # Rates need two scrapes: the second one (metrics.txt) gives them.
    assert {"gateway_group_requests_per_min", "gateway_group_latency_p95_s",
            "gateway_deployment_error_rate_percent"} <= metrics
    ready = [s for s in store.samples if s.metric == "gateway_ready"]
    assert ready and all(s.value == 1.0 for s in ready)
    deployments = store.kinds("deployments")
    assert len(deployments) == 1  # unchanged lists are not written again
    listed = json.loads(deployments[0].detail)
    assert deployments[0].subject == GATEWAY
    assert {d["deployment_id"] for d in listed} >= {"gpt-4o-mini-a", "llama3-local-1"}
    assert "api_key" not in deployments[0].detail
    # The one fault here is the missing GPU driver: one event, not one per poll.
    assert [e.subject for e in store.kinds("source_fault")] == ["gpu"]
    assert store.closed and not store.lock_held and store.maintained >= 1


async def test_never_calls_the_paid_health_endpoint(tmp_path, gateway):
    recorder = make_recorder(make_settings(tmp_path), gateway, FakeStore())
    await asyncio.wait_for(recorder.run(max_cycles=3), timeout=30)
    assert gateway.paths
    assert not [p for p in gateway.paths if p in ("/health", "/health/")]
    assert set(gateway.paths) <= {"/health/readiness", "/health/readiness/details",
                                  "/metrics/", "/model/info"}


async def test_each_source_polls_on_its_own_interval(tmp_path, gateway):
    settings = make_settings(tmp_path).model_copy(update={
        "intervals": make_settings(tmp_path).intervals.model_copy(
            update={"deployments_s": 60.0, "gateway_metrics_s": 0.2})})
    recorder = make_recorder(settings, gateway, FakeStore())
    started = time.monotonic()
    await asyncio.wait_for(recorder.run(max_cycles=12), timeout=30)
    elapsed_s = time.monotonic() - started
    assert recorder.polls["machine"] >= 12
    assert recorder.polls["gateway.deployments"] == 1
    # Never more often than its own interval, however fast or slow the machine's reads are.
    assert 2 <= recorder.polls["gateway.metrics"] <= elapsed_s / 0.2 + 1


async def test_a_source_down_is_logged_once_and_its_recovery_once(tmp_path, gateway, caplog):
    caplog.set_level(logging.INFO, logger="aidash_lib.recorder")
    store = FakeStore()
    recorder = make_recorder(make_settings(tmp_path), gateway, store)
    gateway.up = False
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await _until(lambda: recorder.polls.get("gateway.readiness", 0) >= 6)
    machine_before = recorder.polls["machine"]
    gateway.up = True
    await _until(lambda: "gateway.readiness" not in recorder.faults.faulty)
    await _until(lambda: recorder.polls["machine"] >= machine_before + 3)
    stop.set()
    await asyncio.wait_for(task, timeout=10)

    down = [r for r in caplog.records if "gateway.readiness" in r.getMessage()
            and r.levelno == logging.WARNING]
    assert len(down) == 1 and "connection refused" in down[0].getMessage()
    back = [r for r in caplog.records if "gateway.readiness: recovered" in r.getMessage()]
    assert len(back) == 1
    faults = [e for e in store.kinds("source_fault") if e.subject == "gateway.readiness"]
    recovered = [e for e in store.kinds("source_recovered") if e.subject == "gateway.readiness"]
    assert len(faults) == 1 and len(recovered) == 1
    assert "unreachable" in faults[0].detail
    # The machine kept being recorded while the gateway was down, and gateway_ready said 0.
    ready = [s.value for s in store.samples if s.metric == "gateway_ready"]
    assert ready[0] == 0.0 and ready[-1] == 1.0
    cpu_times = [s.time_s for s in store.samples if s.metric == "system_cpu_percent"]
    assert len(cpu_times) >= 6


async def test_a_failing_store_keeps_the_recorder_running_and_catches_up(tmp_path, gateway,
                                                                         caplog):
    caplog.set_level(logging.INFO, logger="aidash_lib.recorder")
    store = FakeStore(failing=True)
    recorder = make_recorder(make_settings(tmp_path), gateway, store)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await _until(lambda: store.refused >= 10)
    assert not task.done()
    pending_samples, _ = recorder.writer.pending
    assert pending_samples > 0
    store.failing = False
    await _until(lambda: recorder.writer.available and recorder.writer.pending == (0, 0))
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    errors = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors) == 1 and "read-only" in errors[0].getMessage()
    assert len(store.kinds("store_fault")) == 1 and len(store.kinds("store_recovered")) == 1
    # What was read while the store refused was written once it came back.
    first_cpu = min(s.time_s for s in store.samples if s.metric == "system_cpu_percent")
    assert first_cpu <= store.kinds("store_fault")[0].time_s + 1.0


async def test_unsaved_samples_are_bounded():
    store = FakeStore(failing=True)
    writer = StoreWriter(lambda: store, max_pending_samples=100, max_pending_events=5)
    await writer.open()
    for k in range(30):
        await writer.write([Sample("m", (), float(k * 10 + j), 1.0) for j in range(10)],
                           [Event(float(k), "x", "y")])
    assert writer.pending == (100, 5)
    assert writer.dropped_samples == 200
    store.failing = False
    await writer.write([])
    assert writer.pending == (0, 0)
    kept = [s.time_s for s in store.samples]
    assert kept[0] == 200.0 and kept[-1] == 299.0  # the newest were kept
    await writer.close()


async def test_a_store_that_cannot_be_opened_is_retried(tmp_path):
    attempts: list[int] = []
    store = FakeStore()

    def open_store() -> FakeStore:
        attempts.append(1)
        if len(attempts) < 3:
            raise StoreUnavailable("disk full")
        return store

    writer = StoreWriter(open_store)
    await writer.open()
    await writer.write([Sample("m", (), 1.0, 1.0)])
    assert not writer.available and writer.pending[0] == 1
    await writer.write([Sample("m", (), 2.0, 1.0)])
    assert writer.available and store.lock_held
    assert [s.time_s for s in store.samples] == [1.0, 2.0]
    await writer.close()


async def test_a_second_recorder_is_refused(tmp_path, gateway):
    recorder = make_recorder(make_settings(tmp_path), gateway, FakeStore(locked=True))
    with pytest.raises(StoreLocked, match="another recorder"):
        await asyncio.wait_for(recorder.run(max_cycles=1), timeout=10)
    assert recorder.polls == {}


async def test_a_bug_in_one_source_is_logged_once_and_the_others_go_on(tmp_path, gateway,
                                                                       caplog):
    caplog.set_level(logging.INFO, logger="aidash_lib.recorder")
    store = FakeStore()
    recorder = make_recorder(make_settings(tmp_path), gateway, store)

    async def broken() -> Any:
        raise ZeroDivisionError("oops")

    recorder.system.read = broken  # type: ignore[method-assign]
    await asyncio.wait_for(recorder.run(max_cycles=5), timeout=30)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "internal error: ZeroDivisionError" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "gateway_ready" in store.metrics()


async def test_stop_ends_the_run_promptly(tmp_path, gateway):
    settings = make_settings(tmp_path, interval_s=30.0)
    recorder = make_recorder(settings, gateway, FakeStore())
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await _until(lambda: recorder.polls.get("machine", 0) >= 1)
    stop.set()
    await asyncio.wait_for(task, timeout=5)


def test_fault_log_episodes():
    clock = iter([10.0, 11.0, 12.0, 20.0, 21.0]).__next__
    faults = FaultLog(clock=clock)
    refused = Fault(FaultKind.UNREACHABLE, "connection refused", url="http://x")
    timeout = Fault(FaultKind.TIMEOUT, "no answer in time", url="http://x")
    first = faults.update("gateway", refused)
    assert [(e.kind, e.time_s) for e in first] == [("source_fault", 10.0)]
    assert faults.update("gateway", refused) == []
    assert faults.update("gateway", timeout) == []  # same episode, another reason
    back = faults.update("gateway", None)
    assert [(e.kind, e.time_s) for e in back] == [("source_recovered", 20.0)]
    assert "after 10 s" in back[0].detail and "connection refused" in back[0].detail
    assert faults.update("gateway", None) == []


async def test_poll_once_counts_and_writes(tmp_path, gateway):
    store = FakeStore()
    recorder = make_recorder(make_settings(tmp_path), gateway, store)
    await recorder.writer.open()

    async def poll() -> Any:
        from aidash_lib.recorder import Collected
        return Collected([Sample("x_value", (), 1.0, 2.0)])

    await recorder.poll_once(Job("x", 1.0, poll))
    await recorder.writer.close()
    assert recorder.polls == {"x": 1}
    assert store.samples == [Sample("x_value", (), 1.0, 2.0)]


async def _until(condition, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_change_events_are_written_on_change_and_at_most_as_often_as_asked() -> None:
    from aidash_lib.recorder import ChangeEvents

    changes = ChangeEvents()
    assert len(changes.event("deployments", "gw", [1], 100.0)) == 1
    assert changes.event("deployments", "gw", [1], 101.0) == []  # unchanged
    assert len(changes.event("deployments", "gw", [2], 102.0)) == 1
    assert len(changes.event("processes", "m", {"a": 1}, 100.0, min_interval_s=60)) == 1
    assert changes.event("processes", "m", {"a": 2}, 130.0, min_interval_s=60) == []
    assert len(changes.event("processes", "m", {"a": 2}, 161.0, min_interval_s=60)) == 1


async def test_alerts_become_events_with_a_beginning_and_an_end(tmp_path) -> None:
    import httpx

    from aidash_lib.recorder import Recorder
    from aidash_lib.settings import Settings

    firing = [{"labels": {"alertname": "GatewayDown", "severity": "critical"},
               "annotations": {"summary": "the gateway is down"},
               "startsAt": "2026-11-29T08:00:00Z", "endsAt": "2026-11-29T09:00:00Z",
               "fingerprint": "f1", "status": {"state": "active", "silencedBy": [],
                                               "inhibitedBy": []}}]
    answers = [firing, firing, []]

    def alertmanager(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers.pop(0))

    settings = Settings.model_validate({
        "alertmanager": {"url": "http://127.0.0.1:9093"},
        "store": {"path": str(tmp_path / "h.sqlite")},
    })
    async with httpx.AsyncClient(transport=httpx.MockTransport(alertmanager)) as client:
        recorder = Recorder(settings, client=client)
        first = await recorder._poll_alertmanager()
        second = await recorder._poll_alertmanager()
        third = await recorder._poll_alertmanager()
    assert [(e.kind, e.subject) for e in first.events] == [("alert", "GatewayDown")]
    assert '"status": "firing"' in first.events[0].detail
    assert second.events == []  # still firing: no new event
    assert [e.detail for e in third.events] == ['{"status": "resolved"}']
    assert [s.value for s in first.samples] == [1.0]


def test_process_lists_are_stored_without_command_lines() -> None:
    from aidash_lib.recorder import _without_cmdlines
    from aidash_lib.sources.system import TopProcess

    process = TopProcess(pid=1, name="vllm", cpu_percent=5.0, memory_rss_bytes=10,
                         username="root", cmdline="vllm serve m --api-key sk-secret")
    assert _without_cmdlines([process]) == [
        {"pid": 1, "name": "vllm", "cpu_percent": 5.0, "memory_rss_bytes": 10,
         "username": "root"}
    ]
