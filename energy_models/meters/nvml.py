"""NVIDIA GPUs through NVML (``nvidia-ml-py``'s ``pynvml`` module).

Energy comes from NVML's total-energy counter (mJ since the driver loaded) on Volta and newer;
where a GPU has no counter, the monitor integrates polled power instead. NVML numbers GPUs in PCI
order whatever ``CUDA_VISIBLE_DEVICES`` says, so :func:`visible_gpus` maps CUDA's view (indices,
``GPU-`` and ``MIG-`` UUIDs) onto NVML's. Every NVML error is translated here, where NVML is
called, into :class:`MeterError` or :class:`MeterUnavailableError`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from energy_models.errors import MeterError, MeterUnavailableError

_INIT_HINTS = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "libnvidia-ml.so was not found: this machine has no NVIDIA "
                                    "driver (install it, or measure on a GPU machine)",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA driver is not loaded (`nvidia-smi` says why)",
    "NVML_ERROR_NO_PERMISSION": "NVML refused access (run as a user allowed to query the GPU)",
}


def library() -> Any:
    """The ``pynvml`` module, initialised; tests put a fake one in ``sys.modules``."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        raise MeterUnavailableError("NVML: the nvidia-ml-py package is missing; "
                                    "`pip install nvidia-ml-py`") from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise MeterUnavailableError(f"NVML: {_reason(nvml, exc)}") from None
    return nvml


def _reason(nvml: Any, exc: Exception) -> str:
    for constant, hint in _INIT_HINTS.items():
        if getattr(exc, "value", None) == getattr(nvml, constant, object()):
            return hint
    return str(exc)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _is(nvml: Any, exc: Exception, constant: str) -> bool:
    return getattr(exc, "value", None) == getattr(nvml, constant)


@dataclass
class NvmlGpu:
    """One GPU as CUDA sees it, read through NVML. Build it with :func:`visible_gpus`."""

    nvml: Any = field(repr=False)
    handle: Any = field(repr=False)
    cuda_index: int
    nvml_index: int
    name: str
    uuid: str
    energy_counter: bool
    """True where NVML's total-energy counter works; else energy is integrated from power."""
    why_no_counter: str | None
    instant_power: bool
    """True where NVML reports instantaneous power; else its ~1 s moving average."""
    mig: str | None = None
    """Why energy here is the whole GPU's: a MIG instance or a GPU in MIG mode."""

    def _call(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(self.handle, *args)
        except self.nvml.NVMLError as exc:
            raise MeterError(f"NVML {what} of GPU {self.cuda_index} ({self.name}): "
                             f"{exc}") from None

    def energy_mj(self) -> int:
        """The energy counter, in millijoules since the driver loaded."""
        return int(self._call("energy", self.nvml.nvmlDeviceGetTotalEnergyConsumption))

    def power_w(self) -> float:
        if self.instant_power:
            value = self._call("instant power", self.nvml.nvmlDeviceGetFieldValues,
                               [self.nvml.NVML_FI_DEV_POWER_INSTANT])[0]
            if value.nvmlReturn == self.nvml.NVML_SUCCESS:
                return value.value.uiVal / 1000.0
        return self._call("power", self.nvml.nvmlDeviceGetPowerUsage) / 1000.0

    def utilization_pct(self) -> float | None:
        """GPU utilisation, or None where NVML cannot say (GPUs in MIG mode)."""
        try:
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
        except self.nvml.NVMLError as exc:
            if _is(self.nvml, exc, "NVML_ERROR_NOT_SUPPORTED"):
                return None
            raise MeterError(f"NVML utilisation of GPU {self.cuda_index} ({self.name}): "
                             f"{exc}") from None
        return float(rates.gpu)

    def temperature_c(self) -> float:
        return float(self._call("temperature", self.nvml.nvmlDeviceGetTemperature,
                                self.nvml.NVML_TEMPERATURE_GPU))

    def power_limit_w(self) -> float | None:
        try:
            return self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1000.0
        except self.nvml.NVMLError:
            return None

    @property
    def power_kind(self) -> str:
        return "instant" if self.instant_power else "1 s average"


def _energy_counter(nvml: Any, handle: Any) -> str | None:
    """Why the energy counter cannot be used, or None where it works."""
    try:
        if nvml.nvmlDeviceGetArchitecture(handle) < nvml.NVML_DEVICE_ARCH_VOLTA:
            return "no energy counter before Volta"
    except nvml.NVMLError:
        pass  # Older drivers cannot say; the counter call itself decides.
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except nvml.NVMLError as exc:
        if _is(nvml, exc, "NVML_ERROR_NOT_SUPPORTED"):
            return "the energy counter is not supported on this GPU"
        return f"the energy counter failed: {exc}"
    return None


def _instant_power(nvml: Any, handle: Any) -> bool:
    try:
        value = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
    except (nvml.NVMLError, AttributeError):
        return False
    return value.nvmlReturn == nvml.NVML_SUCCESS


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        return False
    return current == nvml.NVML_DEVICE_MIG_ENABLE


def _open(nvml: Any, handle: Any, cuda_index: int, nvml_index: int,
          mig: str | None) -> NvmlGpu:
    why = _energy_counter(nvml, handle)
    if mig is None and _mig_enabled(nvml, handle):
        mig = "MIG mode is on: energy and power are the whole GPU's, every instance included"
    try:
        nvml.nvmlDeviceGetPowerUsage(handle)
    except nvml.NVMLError as exc:
        if why:
            raise MeterUnavailableError(f"GPU {cuda_index}: {why}, and NVML cannot read its power "
                                        f"({exc})") from None
    return NvmlGpu(nvml, handle, cuda_index, nvml_index, _text(nvml.nvmlDeviceGetName(handle)),
                   _text(nvml.nvmlDeviceGetUUID(handle)), why is None, why,
                   _instant_power(nvml, handle), mig)


def _resolve(nvml: Any, entry: str, handles: list[Any], uuids: list[str]
             ) -> tuple[int, Any, str | None]:
    """One ``CUDA_VISIBLE_DEVICES`` entry → (NVML index, handle, MIG note)."""
    fix = "; fix CUDA_VISIBLE_DEVICES"
    if entry.isdigit():
        index = int(entry)
        if index >= len(handles):
            raise MeterUnavailableError(f"CUDA_VISIBLE_DEVICES entry {entry!r}: this machine has "
                                        f"{len(handles)} GPU(s){fix}")
        return index, handles[index], None
    if entry.startswith("MIG-"):
        try:
            instance = nvml.nvmlDeviceGetHandleByUUID(entry)
            parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(instance)
        except nvml.NVMLError as exc:
            raise MeterUnavailableError(
                f"CUDA_VISIBLE_DEVICES entry {entry!r}: {exc}{fix}") from None
        parent_uuid = _text(nvml.nvmlDeviceGetUUID(parent))
        if parent_uuid not in uuids:
            raise MeterUnavailableError(f"CUDA_VISIBLE_DEVICES entry {entry!r}: its GPU "
                                        f"{parent_uuid} is not among NVML's{fix}")
        index = uuids.index(parent_uuid)
        return index, handles[index], (f"{entry} is a MIG instance: NVML measures the whole "
                                       f"GPU, other instances included")
    matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(entry)]
    if entry.startswith("GPU-") and len(matches) == 1:
        return matches[0], handles[matches[0]], None
    problem = "matches several GPUs" if len(matches) > 1 else "names no GPU here"
    raise MeterUnavailableError(f"CUDA_VISIBLE_DEVICES entry {entry!r} {problem}{fix}")


def visible_gpus(nvml: Any, environ: Mapping[str, str] | None = None
                 ) -> tuple[list[NvmlGpu], list[str]]:
    """The GPUs CUDA would use here, in CUDA's order, and notes on how they map to NVML's."""
    try:
        return _visible_gpus(nvml, os.environ if environ is None else environ)
    except nvml.NVMLError as exc:
        raise MeterUnavailableError(f"NVML cannot list the GPUs: {exc}") from None


def _visible_gpus(nvml: Any, environ: Mapping[str, str]) -> tuple[list[NvmlGpu], list[str]]:
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
    if not handles:
        raise MeterUnavailableError("NVML sees no GPU on this machine")
    spec = environ.get("CUDA_VISIBLE_DEVICES")
    notes = []
    entries: list[str] = []
    if spec is None:
        chosen = [(i, h, None) for i, h in enumerate(handles)]
    else:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        if not entries:
            raise MeterUnavailableError("CUDA_VISIBLE_DEVICES is empty, so CUDA sees no GPU; "
                                        "unset it or list the GPUs to measure")
        chosen = [_resolve(nvml, entry, handles, uuids) for entry in entries]
    numbered = spec is None or any(e.isdigit() for e in entries)
    names = {_text(nvml.nvmlDeviceGetName(h)) for h in handles}
    if numbered and len(names) > 1 and environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        notes.append("CUDA_DEVICE_ORDER is not PCI_BUS_ID, so CUDA may number these mixed GPUs "
                     "differently from NVML; set CUDA_DEVICE_ORDER=PCI_BUS_ID")
    gpus = [_open(nvml, handle, cuda, index, mig)
            for cuda, (index, handle, mig) in enumerate(chosen)]
    return gpus, notes


def driver_version(nvml: Any) -> str:
    try:
        return _text(nvml.nvmlSystemGetDriverVersion())
    except nvml.NVMLError:
        return "unknown"
