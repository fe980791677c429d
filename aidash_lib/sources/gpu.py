"""NVIDIA GPUs through NVML (`nvidia-ml-py`): utilisation, memory, power, clocks and processes.

Each GPU value is a `float` or `None`, where `None` means NVML cannot give it on this GPU
(a fan on a passively cooled H200, power on some boards): one unsupported query never fails the
reading, as in nvitop, and `format_value` renders it as "N/A". The processes on each GPU are named
from their command lines, including the model an inference server serves (vLLM, llama.cpp,
Ollama, SGLang, TGI), so an operator sees which model holds which memory.

Without an NVIDIA driver the reading is a `NOT_AVAILABLE` fault that says so, logged once; NVML
is initialised once per source and a failed initialisation is retried at most once a minute.
NVML calls block, so every read runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, TypeVar

import psutil
import pynvml

from aidash_lib.sources.base import Fault, FaultKind, Reading, to_jsonable

log = logging.getLogger(__name__)

#: How a value NVML cannot give is shown to a person.
NOT_AVAILABLE = "N/A"

#: A failed NVML initialisation is not retried sooner than this.
DEFAULT_RETRY_INIT_S = 60.0

#: How many ancestors of a GPU process are searched for the command line that names its model
#: (vLLM's and SGLang's GPU workers retitle themselves, e.g. "VLLM::EngineCore").
MODEL_SEARCH_ANCESTORS = 3

# NVML's "value not available" sentinels for 32- and 64-bit counters.
_UINT_MAX = 2**32 - 1
_ULONGLONG_MAX = 2**64 - 1

# nvmlInit errors that mean there is no usable driver on this machine.
_NO_DRIVER_ERRORS = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")

_V = TypeVar("_V")

# The measured fields of `GpuDevice`, all None for a GPU NVML cannot open.
_DEVICE_VALUES = (
    "name", "uuid", "utilization_gpu_percent", "utilization_memory_percent",
    "memory_used_bytes", "memory_total_bytes", "temperature_c", "power_w", "power_limit_w",
    "clock_sm_mhz", "clock_memory_mhz", "clock_graphics_mhz", "fan_percent",
)


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU, as NVML lists it and psutil names it.

    `process_type` is nvidia-smi's: "C" (compute), "G" (graphics) or "C+G". `name` and
    `cmdline` are None when the process has gone or belongs to someone we may not inspect
    (or lives in another PID namespace). `served_model` is the model its server serves, when
    its command line (or a parent's) tells.
    """

    pid: int
    process_type: str
    gpu_memory_used_bytes: float | None
    name: str | None
    cmdline: tuple[str, ...] | None
    served_model: str | None


@dataclass(frozen=True)
class GpuDevice:
    """One GPU's state. A value of None means NVML cannot give it here ("N/A").

    `unsupported` names the fields NVML refused, with its reason, e.g.
    `("fan_percent: Not Supported",)`.
    """

    index: int
    name: str | None
    uuid: str | None
    utilization_gpu_percent: float | None
    utilization_memory_percent: float | None
    memory_used_bytes: float | None
    memory_total_bytes: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    clock_sm_mhz: float | None
    clock_memory_mhz: float | None
    clock_graphics_mhz: float | None
    fan_percent: float | None
    processes: tuple[GpuProcess, ...] = ()
    unsupported: tuple[str, ...] = ()

    @property
    def memory_used_percent(self) -> float | None:
        """Memory used as a percentage of total, or None when either is not available."""
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes


@dataclass(frozen=True)
class GpuSnapshot:
    """All GPUs of the machine at one moment, with the driver and CUDA versions."""

    driver_version: str | None
    cuda_version: str | None
    gpus: tuple[GpuDevice, ...] = field(default_factory=tuple)


def format_value(value: float | None, unit: str = "", digits: int = 0) -> str:
    """`value` with `digits` decimals and its unit, or "N/A" when it is not available."""
    if value is None:
        return NOT_AVAILABLE
    text = f"{value:.{digits}f}"
    return f"{text} {unit}" if unit else text


# Which model a server process serves, from its command line ---------------------------------

_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
_GGUF_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
_OLLAMA_BLOB = re.compile(r"^sha256[-:][0-9a-f]{64}$")

# Interpreter options that take a value (`python -X importtime -m vllm...`).
_PYTHON_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "-Q"})


def served_model_from_cmdline(argv: Sequence[str]) -> str | None:
    """The model an inference server serves, read from its command line; None if it does not tell.

    Knows vLLM (`vllm serve MODEL`, `-m vllm.entrypoints.openai.api_server --model MODEL`),
    llama.cpp (`llama-server -m path/model.gguf` gives the file's stem, `--alias` or `-hf`),
    Ollama runners (`ollama runner --model .../blobs/sha256-...`: the blob's name, since the
    command line does not carry the model's tag; `resolve_ollama_blob` maps it back), SGLang
    (`--model-path`) and TGI (`text-generation-launcher --model-id`). A served-model name given
    on the command line (`--served-model-name`, `--alias`) wins over the model's path.
    """
    argv = _split_single(argv)
    entry = _entry_point(argv)
    if entry is None:
        return None
    program, args = entry
    if program in ("vllm", "vllm.exe") and args[:1] == ["serve"]:
        return _vllm_model(args[1:], positional=True)
    if program.startswith("vllm.entrypoints."):
        return _vllm_model(args, positional=False)
    if program in ("llama-server", "llama-server.exe"):
        return _llama_cpp_model(args)
    if program in ("ollama", "ollama.exe") and args[:1] == ["runner"]:
        return _ollama_model(args[1:])
    if program == "ollama_llama_server":
        return _ollama_model(args)
    if program.startswith("sglang.launch_server") or (
        program == "sglang" and args[:1] == ["serve"]
    ):
        return _option(args, ("--served-model-name",)) or _option(
            args, ("--model-path", "--model")
        )
    if program == "text-generation-launcher":
        return _option(args, ("--served-model-name",)) or _option(args, ("--model-id",))
    if program == "text-generation-server" and args[:1] == ["serve"]:
        return _first_positional(args[1:])
    return None


def _split_single(argv: Sequence[str]) -> list[str]:
    """A command line given as one string (a retitled process) split at whitespace."""
    if len(argv) == 1 and any(ch.isspace() for ch in argv[0]):
        return argv[0].split()
    return list(argv)


def _entry_point(argv: list[str]) -> tuple[str, list[str]] | None:
    """The program run (basename, or `-m` module) and its arguments, seeing through
    `env VAR=x ...`, interpreters and their options."""
    i = 0
    while i < len(argv) and (PurePath(argv[i]).name == "env" or "=" in argv[i].split("/")[0]):
        i += 1
    if i >= len(argv):
        return None
    program = PurePath(argv[i]).name
    if not _PYTHON.match(program):
        return program, argv[i + 1 :]
    i += 1
    while i < len(argv):
        token = argv[i]
        if token == "-m" and i + 1 < len(argv):
            return argv[i + 1], argv[i + 2 :]
        if token == "-c":
            return None
        if token in _PYTHON_OPTIONS_WITH_VALUE:
            i += 2
        elif token.startswith("-"):
            i += 1
        else:
            return PurePath(token).name, argv[i + 1 :]
    return None


def _option(args: Sequence[str], names: Sequence[str]) -> str | None:
    """The value of the last of the options `names` (`--opt value` or `--opt=value`)."""
    found: str | None = None
    for i, token in enumerate(args):
        if token in names:
            if i + 1 < len(args) and not args[i + 1].startswith("-"):
                found = args[i + 1]
        else:
            name, sep, value = token.partition("=")
            if sep and name in names and value:
                found = value
    return found


def _first_positional(args: Sequence[str]) -> str | None:
    """The first argument that is not an option (only meaningful before any option)."""
    return args[0] if args and not args[0].startswith("-") else None


def _vllm_model(args: list[str], *, positional: bool) -> str | None:
    served = _option(args, ("--served-model-name",))
    if served:
        return served
    model = _first_positional(args) if positional else None
    return model or _option(args, ("--model",))


def _llama_cpp_model(args: list[str]) -> str | None:
    alias = _option(args, ("--alias", "-a"))
    if alias:
        return alias
    path = _option(args, ("-m", "--model"))
    if path:
        return _GGUF_SHARD.sub("", PurePath(path).stem)
    return _option(args, ("-hf", "-hfr", "--hf-repo"))


def _ollama_model(args: list[str]) -> str | None:
    path = _option(args, ("--model",))
    if path is None:
        return None
    name = PurePath(path).name
    return name if _OLLAMA_BLOB.match(name) else PurePath(path).stem


def resolve_ollama_blob(blob_path: str | Path) -> str | None:
    """The `name:tag` whose manifest has `blob_path` as its model layer, or None.

    Ollama keeps `models/blobs/sha256-<hex>` and `models/manifests/<host>/<namespace>/<name>/<tag>`
    side by side; models from the default library are named without host and namespace.
    Unreadable manifests are skipped.
    """
    blob = Path(blob_path)
    digest = blob.name.replace("sha256-", "sha256:", 1)
    manifests = blob.parent.parent / "manifests"
    try:
        candidates = sorted(p for p in manifests.rglob("*") if p.is_file())
    except OSError:
        return None
    for manifest in candidates:
        try:
            layers = json.loads(manifest.read_text()).get("layers", [])
        except (OSError, ValueError, AttributeError):
            continue
        if any(isinstance(layer, dict) and layer.get("digest") == digest for layer in layers):
            return _ollama_name(manifest.relative_to(manifests).parts)
    return None


def _ollama_name(parts: tuple[str, ...]) -> str:
    *where, name, tag = parts
    if where[:2] == ["registry.ollama.ai", "library"]:
        where = where[2:]
    elif where[:1] == ["registry.ollama.ai"]:
        where = where[1:]
    return "/".join([*where, name]) + f":{tag}"


# The source ----------------------------------------------------------------------------------


class GpuSource:
    """Reads every NVIDIA GPU of this machine through NVML.

    `nvml` is the `pynvml` module by default; tests pass a small fake with the same calls.
    """

    source = "gpu"

    def __init__(
        self,
        nvml: Any | None = None,
        *,
        retry_init_s: float = DEFAULT_RETRY_INIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = nvml if nvml is not None else pynvml
        self._retry_init_s = retry_init_s
        self._clock = clock
        self._lock = threading.Lock()
        self._initialized = False
        self._init_fault: Fault | None = None
        self._init_failed_at = 0.0
        self._warned = False
        self._ollama_names: dict[str, str | None] = {}

    async def read(self) -> Reading[GpuSnapshot]:
        """One snapshot of all GPUs, or a NOT_AVAILABLE fault when NVML cannot be used here."""
        started = time.time()
        result = await asyncio.to_thread(self._collect)
        if isinstance(result, Fault):
            return Reading.failure(self.source, result, started)
        return Reading.success(self.source, result, started)

    async def aclose(self) -> None:
        """Shut NVML down if this source initialised it."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Shut NVML down if this source initialised it (blocking)."""
        with self._lock:
            if self._initialized:
                self._initialized = False
                with contextlib.suppress(self._nvml.NVMLError):
                    self._nvml.nvmlShutdown()

    # All below runs in a worker thread.

    def _ensure_init(self) -> Fault | None:
        nvml = self._nvml
        with self._lock:
            if self._initialized:
                return None
            now = self._clock()
            if self._init_fault is not None and now - self._init_failed_at < self._retry_init_s:
                return self._init_fault
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                self._init_fault = _init_fault(exc)
                self._init_failed_at = now
                if not self._warned:
                    self._warned = True
                    log.warning("GPU source: %s", self._init_fault.message)
                return self._init_fault
            if self._init_fault is not None:
                log.info("GPU source: NVML initialised after an earlier failure")
            self._initialized = True
            self._init_fault = None
            return None

    def _collect(self) -> GpuSnapshot | Fault:
        fault = self._ensure_init()
        if fault is not None:
            return fault
        nvml = self._nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self._forget_init()
            return Fault(FaultKind.NOT_AVAILABLE, f"NVML could not list the GPUs ({exc})")
        driver, _ = self._query(nvml.nvmlSystemGetDriverVersion)
        cuda, _ = self._query(nvml.nvmlSystemGetCudaDriverVersion)
        gpus = tuple(self._device(index) for index in range(count))
        return GpuSnapshot(
            driver_version=_text(driver),
            cuda_version=_cuda_version(cuda),
            gpus=gpus,
        )

    def _forget_init(self) -> None:
        """After NVML stopped answering (driver reloaded), initialise again on the next read."""
        with self._lock:
            self._initialized = False
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()

    def _query(self, fn: Callable[..., _V], *args: Any) -> tuple[_V | None, str | None]:
        """Call one NVML function: its value, or None and NVML's reason (nvitop's "N/A")."""
        try:
            return fn(*args), None
        except self._nvml.NVMLError as exc:
            return None, str(exc) or type(exc).__name__

    def _device(self, index: int) -> GpuDevice:
        nvml = self._nvml
        handle, why = self._query(nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            empty = dict.fromkeys(_DEVICE_VALUES)
            return GpuDevice(index, **empty, unsupported=(f"device: {why}",))
        unsupported: list[str] = []

        def get(field_name: str, fn: Callable[..., Any], *args: Any) -> Any:
            value, reason = self._query(fn, handle, *args)
            if reason is not None:
                unsupported.append(f"{field_name}: {reason}")
            return value

        utilization = get("utilization", nvml.nvmlDeviceGetUtilizationRates)
        memory = get("memory", nvml.nvmlDeviceGetMemoryInfo)
        values = {
            "name": _text(get("name", nvml.nvmlDeviceGetName)),
            "uuid": _text(get("uuid", nvml.nvmlDeviceGetUUID)),
            "utilization_gpu_percent": _number(getattr(utilization, "gpu", None)),
            "utilization_memory_percent": _number(getattr(utilization, "memory", None)),
            "memory_used_bytes": _number(getattr(memory, "used", None)),
            "memory_total_bytes": _number(getattr(memory, "total", None)),
            "temperature_c": _number(get("temperature_c", self._temperature)),
            "power_w": _scaled(get("power_w", nvml.nvmlDeviceGetPowerUsage), 1e-3),
            "power_limit_w": _scaled(
                get("power_limit_w", nvml.nvmlDeviceGetEnforcedPowerLimit), 1e-3
            ),
            "fan_percent": _number(get("fan_percent", nvml.nvmlDeviceGetFanSpeed)),
        }
        for field_name, clock in (
            ("clock_sm_mhz", nvml.NVML_CLOCK_SM),
            ("clock_memory_mhz", nvml.NVML_CLOCK_MEM),
            ("clock_graphics_mhz", nvml.NVML_CLOCK_GRAPHICS),
        ):
            values[field_name] = _number(get(field_name, nvml.nvmlDeviceGetClockInfo, clock))
        processes = self._processes(handle, unsupported)
        return GpuDevice(index, **values, processes=processes, unsupported=tuple(unsupported))

    def _temperature(self, handle: Any) -> Any:
        """The GPU die's temperature: `nvmlDeviceGetTemperatureV`, or on drivers older than it,
        the deprecated `nvmlDeviceGetTemperature`."""
        nvml = self._nvml
        versioned = getattr(nvml, "nvmlDeviceGetTemperatureV", None)
        if versioned is not None:
            try:
                return versioned(handle, nvml.NVML_TEMPERATURE_GPU)
            except nvml.NVMLError as exc:
                if type(exc).__name__ != "NVMLError_FunctionNotFound":
                    raise
        return nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)

    def _processes(self, handle: Any, unsupported: list[str]) -> tuple[GpuProcess, ...]:
        nvml = self._nvml
        found: dict[int, tuple[set[str], float | None]] = {}
        for kind, fn in (
            ("C", nvml.nvmlDeviceGetComputeRunningProcesses),
            ("G", nvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            listed, reason = self._query(fn, handle)
            if reason is not None:
                unsupported.append(f"processes ({'compute' if kind == 'C' else 'graphics'}): "
                                   f"{reason}")
                continue
            for info in listed or ():
                kinds, memory = found.get(info.pid, (set(), None))
                used = _number(getattr(info, "usedGpuMemory", None))
                kinds.add(kind)
                found[info.pid] = (kinds, used if memory is None else max(memory, used or 0))
        return tuple(
            self._process(pid, "+".join(sorted(kinds)), memory)
            for pid, (kinds, memory) in sorted(found.items())
        )

    def _process(self, pid: int, process_type: str, memory: float | None) -> GpuProcess:
        name: str | None = None
        cmdline: tuple[str, ...] | None = None
        served: str | None = None
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                name = proc.name()
                cmdline = tuple(proc.cmdline())
            served = self._served_model(proc, cmdline)
        except (psutil.Error, OSError):
            pass
        return GpuProcess(pid, process_type, memory, name, cmdline, served)

    def _served_model(self, proc: psutil.Process, cmdline: tuple[str, ...]) -> str | None:
        """The model named by the process's command line, else by its nearest ancestor's."""
        argv: Sequence[str] = cmdline
        for _ in range(MODEL_SEARCH_ANCESTORS + 1):
            model = served_model_from_cmdline(argv)
            if model is not None:
                return self._ollama_name(argv, model)
            try:
                parent = proc.parent()
                if parent is None or parent.pid <= 1:
                    return None
                proc, argv = parent, parent.cmdline()
            except (psutil.Error, OSError):
                return None
        return None

    def _ollama_name(self, argv: Sequence[str], model: str) -> str:
        """An Ollama blob's `name:tag` from the manifests beside it, when they are readable."""
        if not _OLLAMA_BLOB.match(model):
            return model
        path = _option(_split_single(argv), ("--model",))
        if path is None:
            return model
        if path not in self._ollama_names:
            self._ollama_names[path] = resolve_ollama_blob(path)
        return self._ollama_names[path] or model


def _init_fault(exc: Exception) -> Fault:
    reason = str(exc) or type(exc).__name__
    if type(exc).__name__ in _NO_DRIVER_ERRORS:
        message = f"no NVIDIA driver: NVML could not be loaded ({reason})"
        return Fault(FaultKind.NOT_AVAILABLE, message)
    return Fault(FaultKind.NOT_AVAILABLE, f"NVML could not be initialised ({reason})")


def _number(value: Any) -> float | None:
    """A float, or None for a missing value or one of NVML's "not available" sentinels."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if isinstance(value, int) and value in (_UINT_MAX, _ULONGLONG_MAX):
        return None
    return number


def _scaled(value: Any, factor: float) -> float | None:
    number = _number(value)
    return None if number is None else number * factor


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _cuda_version(value: Any) -> str | None:
    """NVML's CUDA driver version as "major.minor" (12040 -> "12.4")."""
    number = _number(value)
    if number is None or number <= 0:
        return None
    version = int(number)
    return f"{version // 1000}.{version % 1000 // 10}"


async def _main() -> None:
    source = GpuSource()
    reading = await source.read()
    await source.aclose()
    print(json.dumps(to_jsonable(reading), indent=2))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main())
