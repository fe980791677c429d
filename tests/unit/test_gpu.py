"""The GPU source through a small fake of the NVML calls it makes, and the real pynvml here."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pynvml
import pytest

from aidash_lib.sources.base import FaultKind, to_jsonable
from aidash_lib.sources.gpu import (
    NOT_AVAILABLE,
    GpuSource,
    format_value,
    resolve_ollama_blob,
    served_model_from_cmdline,
)

GIB = 1024**3


class FakeNvml:
    """Exactly the NVML calls `GpuSource` makes, over two GPUs with one process each."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_CLOCK_GRAPHICS = pynvml.NVML_CLOCK_GRAPHICS

    def __init__(self, pids: tuple[int, int], init_error: Exception | None = None) -> None:
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.pids = pids

    def _not_supported(self) -> Exception:
        return pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA H200"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-0000000{handle}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=87 + handle, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=141 * GIB, used=(60 + handle) * GIB, free=0)

    def nvmlDeviceGetTemperatureV(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return 55 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 412_345  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return 700_000

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        return {
            pynvml.NVML_CLOCK_SM: 1980,
            pynvml.NVML_CLOCK_MEM: 3201,
            pynvml.NVML_CLOCK_GRAPHICS: 1980,
        }[clock]

    def nvmlDeviceGetFanSpeed(self, handle: int) -> int:
        raise self._not_supported()  # passively cooled, like an H200

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        memory = None if handle == 1 else 50 * GIB  # None: NVML's "not available"
        return [SimpleNamespace(pid=self.pids[handle], usedGpuMemory=memory)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        return []


@pytest.fixture
def gpu_processes():
    """Two real processes standing in for the servers that hold the fake GPUs."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)
    ]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(5)


def _fake_cmdlines(monkeypatch: pytest.MonkeyPatch, argv: dict[int, list[str]]) -> None:
    """Give the processes `argv`'s command lines, as psutil would read them."""
    real_cmdline = psutil.Process.cmdline

    def cmdline(self: psutil.Process) -> list[str]:
        return argv.get(self.pid) or real_cmdline(self)

    monkeypatch.setattr(psutil.Process, "cmdline", cmdline)


async def test_fake_nvml_two_gpus(monkeypatch, gpu_processes):
    pids = (gpu_processes[0].pid, gpu_processes[1].pid)
    _fake_cmdlines(monkeypatch, {
        pids[0]: ["/opt/venv/bin/python3", "/opt/venv/bin/vllm", "serve", "Qwen/Qwen2.5-7B",
                  "--served-model-name", "qwen-7b", "--gpu-memory-utilization", "0.9"],
        pids[1]: ["/usr/local/bin/llama-server", "-m", "/models/Llama-3.1-8B.Q4_K_M.gguf",
                  "--port", "8080", "-ngl", "99"],
    })
    fake = FakeNvml(pids)
    source = GpuSource(nvml=fake)
    reading = await source.read()
    assert reading.ok, reading.fault
    snap = reading.value
    assert snap.driver_version == "550.54.15"
    assert snap.cuda_version == "12.4"
    assert [g.index for g in snap.gpus] == [0, 1]
    gpu0, gpu1 = snap.gpus
    assert gpu0.name == "NVIDIA H200"
    assert gpu0.uuid.startswith("GPU-00000000")
    assert gpu0.utilization_gpu_percent == 87.0
    assert gpu0.utilization_memory_percent == 40.0
    assert gpu0.memory_total_bytes == 141 * GIB
    assert gpu0.memory_used_bytes == 60 * GIB
    assert gpu0.memory_used_percent == pytest.approx(100 * 60 / 141)
    assert gpu0.temperature_c == 55.0
    assert gpu0.power_w == pytest.approx(412.345)
    assert gpu0.power_limit_w == pytest.approx(700.0)
    assert (gpu0.clock_sm_mhz, gpu0.clock_memory_mhz, gpu0.clock_graphics_mhz) == (
        1980.0, 3201.0, 1980.0,
    )
    assert gpu0.fan_percent is None
    assert gpu0.unsupported == ("fan_percent: Not Supported",)
    assert format_value(gpu0.fan_percent, "%") == NOT_AVAILABLE == "N/A"
    assert format_value(gpu0.power_w, "W", 1) == "412.3 W"

    (p0,) = gpu0.processes
    assert p0.pid == pids[0]
    assert p0.process_type == "C"
    assert p0.gpu_memory_used_bytes == 50 * GIB
    assert p0.name and p0.name.startswith("python")
    assert p0.cmdline[2] == "serve"
    assert p0.served_model == "qwen-7b"
    (p1,) = gpu1.processes
    assert p1.pid == pids[1]
    assert p1.gpu_memory_used_bytes is None
    assert p1.served_model == "Llama-3.1-8B.Q4_K_M"

    assert json.loads(json.dumps(to_jsonable(reading)))["value"]["gpus"][0]["fan_percent"] is None
    await source.aclose()
    assert fake.init_calls == 1 and fake.shutdown_calls == 1


async def test_model_from_parent_of_retitled_worker(monkeypatch, gpu_processes):
    """vLLM's GPU worker is retitled "VLLM::EngineCore"; its parent's command line tells."""
    worker = gpu_processes[0].pid
    _fake_cmdlines(monkeypatch, {
        worker: ["VLLM::EngineCore"],
        os.getpid(): ["vllm", "serve", "org/parent-model"],
    })
    reading = await GpuSource(nvml=FakeNvml((worker, 2**22 + 1))).read()
    assert reading.value.gpus[0].processes[0].served_model == "org/parent-model"
    assert reading.value.gpus[1].processes[0].served_model is None


async def test_ollama_runner_named_from_manifests(monkeypatch, gpu_processes, tmp_path):
    digest = "a" * 64
    models = tmp_path / "models"
    (models / "blobs").mkdir(parents=True)
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / "qwen3"
    manifest.mkdir(parents=True)
    (manifest / "8b").write_text(json.dumps({"layers": [{"digest": f"sha256:{digest}"}]}))
    runner = gpu_processes[0].pid
    _fake_cmdlines(monkeypatch, {
        runner: ["/usr/local/bin/ollama", "runner", "--model",
                 str(models / "blobs" / f"sha256-{digest}"), "--port", "41235"],
    })
    reading = await GpuSource(nvml=FakeNvml((runner, 2**22 + 1))).read()
    assert reading.value.gpus[0].processes[0].served_model == "qwen3:8b"


async def test_nvml_initialised_once_not_per_read():
    fake = FakeNvml((2**22 + 1, 2**22 + 2))  # pids that do not exist: names are None
    source = GpuSource(nvml=fake)
    first = await source.read()
    second = await source.read()
    assert first.ok and second.ok
    assert fake.init_calls == 1
    proc = first.value.gpus[0].processes[0]
    assert (proc.name, proc.cmdline, proc.served_model) == (None, None, None)


async def test_init_error_not_available_logged_once_and_retried_rarely(caplog):
    now = [1000.0]
    fake = FakeNvml((1, 2), init_error=pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    source = GpuSource(nvml=fake, retry_init_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="aidash_lib.sources.gpu"):
        first = await source.read()
        now[0] += 10
        second = await source.read()
        now[0] += 60
        third = await source.read()
    for reading in (first, second, third):
        assert not reading.ok
        assert reading.fault.kind is FaultKind.NOT_AVAILABLE
        assert reading.fault.message.startswith("no NVIDIA driver: NVML could not be loaded (")
        assert "Driver Not Loaded" in reading.fault.message
    assert fake.init_calls == 2  # not on the read 10 s later; again after 60 s
    warnings = [r for r in caplog.records if r.name == "aidash_lib.sources.gpu"]
    assert len(warnings) == 1
    assert "no NVIDIA driver" in warnings[0].getMessage()

    fake.init_error = None  # the driver got loaded
    now[0] += 61
    fourth = await source.read()
    assert fourth.ok and len(fourth.value.gpus) == 2


async def test_other_init_error_says_so():
    fake = FakeNvml((1, 2), init_error=pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION))
    reading = await GpuSource(nvml=fake).read()
    assert reading.fault.kind is FaultKind.NOT_AVAILABLE
    assert reading.fault.message == "NVML could not be initialised (Insufficient Permissions)"


async def test_lost_gpu_and_failed_process_query_are_not_errors():
    class Lossy(FakeNvml):
        def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
            if index == 1:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            return index

        def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)

    reading = await GpuSource(nvml=Lossy((2**22 + 1, 2**22 + 2))).read()
    assert reading.ok
    gpu0, gpu1 = reading.value.gpus
    assert gpu1.name is None and gpu1.memory_used_bytes is None
    assert gpu1.unsupported == ("device: GPU is lost",)
    assert "processes (graphics): Insufficient Permissions" in gpu0.unsupported
    assert len(gpu0.processes) == 1


async def test_sentinels_and_compute_plus_graphics():
    class Mixed(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            return 1

        def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
            return 2**32 - 1  # NVML's "not available" for 32-bit values

        def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
            return [SimpleNamespace(pid=self.pids[0], usedGpuMemory=50 * GIB)]

    reading = await GpuSource(nvml=Mixed((2**22 + 1, 0))).read()
    (gpu,) = reading.value.gpus
    assert gpu.power_w is None
    (proc,) = gpu.processes
    assert proc.process_type == "C+G"
    assert proc.gpu_memory_used_bytes == 50 * GIB


async def test_old_driver_temperature_falls_back():
    class OldDriver(FakeNvml):
        def nvmlDeviceGetTemperatureV(self, handle: int, sensor: int) -> int:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

        def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
            return 61

    reading = await GpuSource(nvml=OldDriver((2**22 + 1, 2**22 + 2))).read()
    assert [g.temperature_c for g in reading.value.gpus] == [61.0, 61.0]


async def test_real_pynvml_without_driver():
    """This machine has no NVIDIA driver: the real bindings must say so plainly."""
    source = GpuSource()
    started = time.time()
    reading = await source.read()
    assert not reading.ok
    assert reading.source == "gpu"
    assert reading.taken_at >= started
    assert reading.fault.kind is FaultKind.NOT_AVAILABLE
    assert reading.fault.message == (
        "no NVIDIA driver: NVML could not be loaded (NVML Shared Library Not Found)"
    )
    again = await source.read()
    assert again.fault == reading.fault
    json.dumps(to_jsonable(reading))


def test_module_prints_one_reading_as_json():
    out = subprocess.run(
        [sys.executable, "-m", "aidash_lib.sources.gpu"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    reading = json.loads(out.stdout)
    assert reading["source"] == "gpu"
    assert reading["ok"] is False
    assert reading["fault"]["kind"] == "not_available"


# served_model_from_cmdline ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "model"),
    [
        # vLLM
        (["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"], "meta-llama/Llama-3.1-8B-Instruct"),
        (["/opt/venv/bin/python3", "/opt/venv/bin/vllm", "serve", "Qwen/Qwen2.5-7B", "--port",
          "8001"], "Qwen/Qwen2.5-7B"),
        (["vllm", "serve", "Qwen/Qwen2.5-7B", "--served-model-name", "qwen"], "qwen"),
        (["vllm", "serve", "Qwen/Qwen2.5-7B", "--served-model-name", "qwen", "qwen-alias"],
         "qwen"),
        (["vllm", "serve", "--model", "/models/mistral-7b"], "/models/mistral-7b"),
        (["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "facebook/opt-125m"],
         "facebook/opt-125m"),
        (["python3", "-u", "-m", "vllm.entrypoints.openai.api_server", "--model=org/m",
          "--served-model-name=m"], "m"),
        (["python", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000"], None),
        (["env", "CUDA_VISIBLE_DEVICES=0", "vllm", "serve", "org/model"], "org/model"),
        # a retitled process whose command line is one string
        (["vllm serve org/model --port 8000"], "org/model"),
        # llama.cpp
        (["llama-server", "-m", "/models/qwen2.5-7b-instruct-q4_k_m.gguf", "--port", "8080"],
         "qwen2.5-7b-instruct-q4_k_m"),
        (["/usr/local/bin/llama-server", "--model", "models/phi-3.gguf", "--alias", "phi3"],
         "phi3"),
        (["llama-server", "-a", "chat", "-m", "m.gguf"], "chat"),
        (["llama-server", "-m", "/m/Llama-3.1-70B-Q4_K_M-00001-of-00003.gguf"],
         "Llama-3.1-70B-Q4_K_M"),
        (["llama-server", "-hf", "ggml-org/gemma-3-1b-it-GGUF"], "ggml-org/gemma-3-1b-it-GGUF"),
        (["llama-server", "--port", "8080"], None),
        # Ollama
        (["/usr/local/bin/ollama", "runner", "--model",
          "/usr/share/ollama/.ollama/models/blobs/sha256-" + "a" * 64, "--ctx-size", "8192",
          "--port", "41235"], "sha256-" + "a" * 64),
        (["/tmp/ollama123/runners/cuda_v12/ollama_llama_server", "--model",
          "/root/.ollama/models/blobs/sha256-" + "b" * 64, "--port", "39999"],
         "sha256-" + "b" * 64),
        (["ollama", "runner", "--ollama-engine", "--port", "41235"], None),
        (["/usr/local/bin/ollama", "serve"], None),
        # SGLang
        (["python3", "-m", "sglang.launch_server", "--model-path", "deepseek-ai/DeepSeek-V3",
          "--tp", "8"], "deepseek-ai/DeepSeek-V3"),
        (["python", "-m", "sglang.launch_server", "--model-path", "a/b", "--served-model-name",
          "b"], "b"),
        # TGI
        (["text-generation-launcher", "--model-id", "HuggingFaceH4/zephyr-7b-beta", "--port",
          "8080"], "HuggingFaceH4/zephyr-7b-beta"),
        (["/opt/conda/bin/python3.11", "/opt/conda/bin/text-generation-server", "serve",
          "bigscience/bloom-560m", "--sharded"], "bigscience/bloom-560m"),
    ],
)
def test_served_model_from_cmdline(argv, model):
    assert served_model_from_cmdline(argv) == model


@pytest.mark.parametrize(
    "argv",
    [
        [],
        [""],
        ["bash"],
        ["python", "train.py", "--model", "resnet50"],
        ["python"],
        ["python", "-m", "http.server", "8000"],
        ["/usr/bin/Xorg", "-core", ":0"],
        ["VLLM::EngineCore"],
        ["sglang::scheduler"],
        ["vim", "vllm", "serve", "x"],
        ["grep", "llama-server", "-m", "x.gguf"],
        ["nvidia-smi"],
    ],
)
def test_unrelated_commands_serve_no_model(argv):
    assert served_model_from_cmdline(argv) is None


def test_resolve_ollama_blob(tmp_path: Path):
    digest = "c" * 64
    models = tmp_path / "models"
    (models / "blobs").mkdir(parents=True)
    blob = models / "blobs" / f"sha256-{digest}"
    blob.write_bytes(b"GGUF")
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
    library = models / "manifests" / "registry.ollama.ai" / "library" / "llama3.1"
    library.mkdir(parents=True)
    (library / "8b").write_text(json.dumps({"layers": [layer]}))
    (library / "70b").write_text(json.dumps({"layers": [{"digest": "sha256:" + "d" * 64}]}))
    (library / "broken").write_text("{not json")
    assert resolve_ollama_blob(blob) == "llama3.1:8b"

    other = models / "manifests" / "hf.co" / "bartowski" / "Qwen-GGUF"
    other.mkdir(parents=True)
    digest2 = "e" * 64
    (other / "Q4_K_M").write_text(json.dumps({"layers": [{"digest": f"sha256:{digest2}"}]}))
    assert resolve_ollama_blob(models / "blobs" / f"sha256-{digest2}") == (
        "hf.co/bartowski/Qwen-GGUF:Q4_K_M"
    )
    assert resolve_ollama_blob(models / "blobs" / ("sha256-" + "f" * 64)) is None
    assert resolve_ollama_blob(tmp_path / "nowhere" / "blobs" / "sha256-x") is None
