"""Hardware fakes at the library boundary: a fake ``pynvml`` module, a fake powercap tree,
a manual clock and a fake inference backend.

The fake NVML mirrors the functions, constants and error classes of ``nvidia-ml-py`` that the
meters call; install it with ``monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(...))``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(code)`` builds the subclass for that code."""

    _classes: ClassVar[dict[int, type]] = {}

    def __new__(cls, value: int):
        if cls is NVMLError:
            cls = NVMLError._classes.get(value, cls)
        error = Exception.__new__(cls)
        error.value = value
        return error

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"Unknown Error {self.value}")


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_NoPermission(NVMLError):
    pass


NVMLError._classes.update({NVML_ERROR_NOT_SUPPORTED: NVMLError_NotSupported,
                           NVML_ERROR_NO_PERMISSION: NVMLError_NoPermission})


class FakeClock:
    """A clock that moves only when told; ``sleep`` moves it."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    sleep = advance


@dataclass
class FakeGpu:
    """A GPU whose power follows ``schedule``: ``[(from_time, watts), ...]``, piecewise constant.

    The energy counter is the exact integral of that schedule, so tests know the truth.
    """

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-1111-2222-3333-444444444444"
    architecture: int = 9
    counter: bool = True
    instant: bool = True
    schedule: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 70.0)])
    utilization: float = 0.0
    temperature: float = 35.0
    power_limit_w: float = 700.0
    mig_mode: int = 0
    mig_instances: list[str] = field(default_factory=list)
    counter_offset_mj: int = 123_456_789
    errors: dict[str, int] = field(default_factory=dict)
    """Function name → NVML error code it raises."""

    def watts(self, moment: float) -> float:
        current = self.schedule[0][1]
        for start, watts in self.schedule:
            if moment >= start:
                current = watts
        return current

    def joules(self, moment: float) -> float:
        total = 0.0
        points = [*self.schedule, (float("inf"), 0.0)]
        for (start, watts), (end, _) in itertools.pairwise(points):
            if moment <= start:
                break
            total += watts * (min(moment, end) - max(start, 0.0))
        return total


@dataclass
class _Mig:
    uuid: str
    parent: FakeGpu


class FakeNvml:
    """Stands in for the ``pynvml`` module over a list of :class:`FakeGpu`."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_DEVICE_ARCH_VOLTA = 5
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, gpus: list[FakeGpu] | None = None, clock=time.monotonic,
                 init_error: int | None = None, driver: str = "550.54.15"):
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.clock = clock
        self.init_error = init_error
        self.driver = driver
        self.calls: list[str] = []

    def _check(self, function: str, gpu: FakeGpu) -> None:
        self.calls.append(function)
        if function in gpu.errors:
            raise NVMLError(gpu.errors[function])

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes):
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
            if uuid in gpu.mig_instances:
                return _Mig(uuid, gpu)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: _Mig) -> FakeGpu:
        return handle.parent

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        self._check("nvmlDeviceGetName", gpu)
        return gpu.name

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        self._check("nvmlDeviceGetUUID", gpu)
        return gpu.uuid

    def nvmlDeviceGetArchitecture(self, gpu: FakeGpu) -> int:
        self._check("nvmlDeviceGetArchitecture", gpu)
        return gpu.architecture

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> tuple[int, int]:
        self._check("nvmlDeviceGetMigMode", gpu)
        return gpu.mig_mode, gpu.mig_mode

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: FakeGpu) -> int:
        self._check("nvmlDeviceGetTotalEnergyConsumption", gpu)
        if not gpu.counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.counter_offset_mj + round(gpu.joules(self.clock()) * 1000)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        self._check("nvmlDeviceGetPowerUsage", gpu)
        return round(gpu.watts(self.clock()) * 1000)

    def nvmlDeviceGetFieldValues(self, gpu: FakeGpu, field_ids: list[int]):
        self._check("nvmlDeviceGetFieldValues", gpu)
        code = NVML_SUCCESS if gpu.instant else NVML_ERROR_NOT_SUPPORTED
        milliwatts = round(gpu.watts(self.clock()) * 1000)
        return [SimpleNamespace(fieldId=f, nvmlReturn=code,
                                value=SimpleNamespace(uiVal=milliwatts)) for f in field_ids]

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu):
        self._check("nvmlDeviceGetUtilizationRates", gpu)
        return SimpleNamespace(gpu=gpu.utilization, memory=0)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        self._check("nvmlDeviceGetTemperature", gpu)
        return round(gpu.temperature)

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        self._check("nvmlDeviceGetEnforcedPowerLimit", gpu)
        return round(gpu.power_limit_w * 1000)


class FakePowercap:
    """A powercap tree in a folder, laid out like ``/sys/class/powercap``.

    ``deny(zone)`` makes a zone's ``energy_uj`` unreadable; as root a mode of 000 does not stop
    reads, so the ``denied`` set is also honoured by the ``unreadable_powercap`` fixture.
    """

    MAX_RANGE_UJ = 262_143_328_850

    def __init__(self, root: Path):
        self.root = root
        self.denied: set[Path] = set()
        root.mkdir(parents=True, exist_ok=True)

    def add(self, zone: str, name: str, energy_uj: int = 0,
            max_range_uj: int = MAX_RANGE_UJ) -> Path:
        path = self.root / zone
        path.mkdir()
        (path / "name").write_text(f"{name}\n")
        (path / "energy_uj").write_text(f"{energy_uj}\n")
        (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        return path

    def set(self, zone: str, energy_uj: int) -> None:
        (self.root / zone / "energy_uj").write_text(f"{energy_uj}\n")

    def deny(self, zone: str) -> None:
        path = self.root / zone / "energy_uj"
        path.chmod(0)
        self.denied.add(path)

    @classmethod
    def server(cls, root: Path, packages: int = 2) -> FakePowercap:
        """A two-socket server: packages with core and dram sub-zones, plus psys."""
        tree = cls(root)
        for p in range(packages):
            tree.add(f"intel-rapl:{p}", f"package-{p}", 1_000_000 * (p + 1))
            tree.add(f"intel-rapl:{p}:0", "core", 500_000)
            tree.add(f"intel-rapl:{p}:1", "dram", 200_000, 65_712_999_613)
        tree.add(f"intel-rapl:{packages}", "psys", 9_000_000)
        return tree


class FakeBackend:
    """An inference backend whose runs take known time and drive a fake GPU at known power.

    Each run of ``batch`` × (``m`` in, ``n`` out) takes ``prefill_s_per_token·m·batch +
    decode_s·n`` seconds of fake time at ``busy_w`` watts on the fake GPU.
    """

    name = "fake"
    engine = "fake"

    def __init__(self, clock: FakeClock, gpu: FakeGpu, busy_w: float = 400.0,
                 idle_w: float = 70.0, decode_s: float = 0.02,
                 prefill_s_per_token: float = 1e-5):
        self.clock = clock
        self.gpu = gpu
        self.busy_w = busy_w
        self.idle_w = idle_w
        self.decode_s = decode_s
        self.prefill_s_per_token = prefill_s_per_token
        self.runs: list[tuple[int, int, int]] = []
        self.fail_on: tuple[int, int, int] | None = None

    def version(self) -> str:
        return "fake 1.0"

    def generate(self, input_tokens: int, output_tokens: int, batch: int):
        from energy_models.profiling.harness import Generation

        if self.fail_on == (input_tokens, output_tokens, batch):
            raise KeyboardInterrupt
        self.runs.append((input_tokens, output_tokens, batch))
        prefill = self.prefill_s_per_token * input_tokens * batch
        decode = self.decode_s * output_tokens
        start = self.clock()
        self.gpu.schedule.append((start, self.busy_w))
        self.clock.advance(prefill + decode)
        self.gpu.schedule.append((self.clock(), self.idle_w))
        return Generation(output_tokens=output_tokens, ttft_s=prefill + self.decode_s,
                          itl_s=self.decode_s)
