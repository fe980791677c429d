"""The machine's three sources read together, as the recorder does, and serialised as JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest

from aidash_lib.sources.base import FaultKind, to_jsonable
from aidash_lib.sources.gpu import GpuSource
from aidash_lib.sources.services import ServiceSpec, ServicesSource, ServiceState
from aidash_lib.sources.system import SystemSource

pytestmark = pytest.mark.integration


async def test_gpu_system_and_services_at_once():
    marker = f"aidash-live-marker-{uuid.uuid4().hex}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    gpu = GpuSource()
    system = SystemSource(top_n=3)
    services = ServicesSource([
        ServiceSpec("gateway", "systemd", "litellm.service"),
        ServiceSpec("vllm", "docker", "vllm"),
        ServiceSpec("sleeper", "process", marker),
        ServiceSpec("no such server", "process", r"aidash-no-such-server-[0-9]{12}"),
    ])
    try:
        readings = await asyncio.wait_for(
            asyncio.gather(gpu.read(), system.read(), services.read()), timeout=30
        )
    finally:
        await gpu.aclose()
        child.kill()
        child.wait(5)
    gpu_reading, system_reading, services_reading = readings
    assert [r.source for r in readings] == ["gpu", "system", "services"]

    if gpu_reading.ok:  # a machine with NVIDIA GPUs
        assert gpu_reading.value.gpus
    else:
        assert gpu_reading.fault.kind is FaultKind.NOT_AVAILABLE
        assert "NVML" in gpu_reading.fault.message

    assert system_reading.ok, system_reading.fault
    assert system_reading.value.memory_total_bytes > 0

    assert services_reading.ok
    by_name = {s.name: s for s in services_reading.value}
    assert by_name["no such server"].state is ServiceState.STOPPED
    assert by_name["gateway"].detail and by_name["vllm"].detail
    assert by_name["sleeper"].state is ServiceState.RUNNING
    assert by_name["sleeper"].pids == (child.pid,)

    encoded = json.loads(json.dumps([to_jsonable(r) for r in readings], allow_nan=False))
    assert [r["ok"] for r in encoded] == [r.ok for r in readings]
    assert encoded[2]["value"][3]["state"] == "stopped"
    assert isinstance(encoded[1]["value"]["disks"][0]["total_bytes"], int)
