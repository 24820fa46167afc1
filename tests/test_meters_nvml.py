"""NVML access against the fake ``pynvml``: energy counters and their fallbacks, power kinds,
CUDA_VISIBLE_DEVICES mapping, MIG, and how NVML errors are translated."""

from __future__ import annotations

import sys

import pytest

from energy_models.errors import MeterError, MeterUnavailableError
from energy_models.meters import nvml, survey
from tests.fakes import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    FakeClock,
    FakeGpu,
    FakeNvml,
    NVMLError,
)

UUID_A = "GPU-aaaa1111-0000-0000-0000-000000000001"
UUID_B = "GPU-aaaa2222-0000-0000-0000-000000000002"
UUID_C = "GPU-cccc3333-0000-0000-0000-000000000003"
MIG_UUID = "MIG-4f1c8a6e-5b1d-5e7a-9a3b-0123456789ab"


def three_gpus() -> list[FakeGpu]:
    return [FakeGpu(uuid=UUID_A, schedule=[(0.0, 60.0)]),
            FakeGpu(uuid=UUID_B, schedule=[(0.0, 80.0)]),
            FakeGpu(uuid=UUID_C, schedule=[(0.0, 100.0)])]


def open_gpus(gpus: list[FakeGpu], environ: dict[str, str] | None = None,
              clock: FakeClock | None = None):
    fake = FakeNvml(gpus, clock=clock or FakeClock())
    found, notes = nvml.visible_gpus(fake, environ or {})
    return fake, found, notes


# Energy counter and its fallbacks.


def test_counter_gpu_reads_millijoules_of_the_schedule():
    clock = FakeClock(1000.0)
    gpu = FakeGpu(schedule=[(0.0, 100.0), (1005.0, 250.0)])
    _, (found,), notes = open_gpus([gpu], clock=clock)
    assert notes == []
    assert found.energy_counter is True
    assert found.why_no_counter is None
    assert (found.cuda_index, found.nvml_index) == (0, 0)
    assert found.name == "NVIDIA H100 80GB HBM3"
    assert found.uuid == gpu.uuid
    before = found.energy_mj()
    clock.advance(10.0)
    # 5 s at 100 W then 5 s at 250 W.
    assert found.energy_mj() - before == 1_750_000
    assert found.power_w() == pytest.approx(250.0)
    assert found.utilization_pct() == 0.0
    assert found.temperature_c() == 35.0
    assert found.power_limit_w() == pytest.approx(700.0)


def test_counter_not_supported_falls_back_to_sampled_power():
    gpu = FakeGpu(counter=False, schedule=[(0.0, 42.5)])
    _, (found,), _ = open_gpus([gpu])
    assert found.energy_counter is False
    assert "not supported" in found.why_no_counter
    assert found.power_w() == pytest.approx(42.5)
    with pytest.raises(MeterError, match=r"energy of GPU 0 .*Not Supported"):
        found.energy_mj()


def test_pre_volta_gpu_does_not_trust_the_counter():
    gpu = FakeGpu(name="Tesla P100-PCIE-16GB", architecture=4, counter=True)
    fake, (found,), _ = open_gpus([gpu])
    assert found.energy_counter is False
    assert "before Volta" in found.why_no_counter
    assert "nvmlDeviceGetTotalEnergyConsumption" not in fake.calls


def test_volta_itself_has_a_counter():
    _, (found,), _ = open_gpus([FakeGpu(name="Tesla V100-SXM2-32GB", architecture=5)])
    assert found.energy_counter is True


def test_unknown_architecture_lets_the_counter_call_decide():
    working = FakeGpu(errors={"nvmlDeviceGetArchitecture": NVML_ERROR_NOT_SUPPORTED})
    missing = FakeGpu(uuid=UUID_B, counter=False,
                      errors={"nvmlDeviceGetArchitecture": NVML_ERROR_NOT_SUPPORTED})
    _, (first, second), _ = open_gpus([working, missing])
    assert first.energy_counter is True
    assert second.energy_counter is False
    assert "not supported" in second.why_no_counter


def test_counter_failing_otherwise_is_explained():
    gpu = FakeGpu(errors={"nvmlDeviceGetTotalEnergyConsumption": NVML_ERROR_NO_PERMISSION})
    _, (found,), _ = open_gpus([gpu])
    assert found.energy_counter is False
    assert found.why_no_counter == "the energy counter failed: Insufficient Permissions"


def test_gpu_with_neither_counter_nor_power_is_unavailable():
    gpu = FakeGpu(counter=False, errors={"nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED})
    with pytest.raises(MeterUnavailableError, match=r"GPU 0: .*not supported.*cannot read its "
                                                    r"power \(Not Supported\)"):
        open_gpus([gpu])


def test_counter_gpu_without_power_reading_is_still_usable():
    gpu = FakeGpu(errors={"nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED})
    _, (found,), _ = open_gpus([gpu])
    assert found.energy_counter is True


# Instantaneous power or NVML's one-second average.


def test_instant_power_is_read_from_the_field_value():
    fake, (found,), _ = open_gpus([FakeGpu(schedule=[(0.0, 123.456)])])
    assert found.instant_power is True
    assert found.power_kind == "instant"
    fake.calls.clear()
    assert found.power_w() == pytest.approx(123.456)
    assert fake.calls == ["nvmlDeviceGetFieldValues"]


def test_average_power_where_instant_is_not_supported():
    fake, (found,), _ = open_gpus([FakeGpu(instant=False, schedule=[(0.0, 77.0)])])
    assert found.instant_power is False
    assert found.power_kind == "1 s average"
    fake.calls.clear()
    assert found.power_w() == pytest.approx(77.0)
    assert fake.calls == ["nvmlDeviceGetPowerUsage"]


def test_average_power_where_field_values_raise():
    gpu = FakeGpu(errors={"nvmlDeviceGetFieldValues": NVML_ERROR_NOT_SUPPORTED})
    _, (found,), _ = open_gpus([gpu])
    assert found.instant_power is False
    assert found.power_w() == pytest.approx(70.0)


def test_average_power_where_pynvml_is_too_old_for_the_field():
    class OldNvml(FakeNvml):
        def __getattribute__(self, name: str):
            if name == "NVML_FI_DEV_POWER_INSTANT":
                raise AttributeError(name)
            return super().__getattribute__(name)

    found, _ = nvml.visible_gpus(OldNvml([FakeGpu()], clock=FakeClock()), {})
    assert found[0].instant_power is False
    assert found[0].power_w() == pytest.approx(70.0)


def test_instant_power_falls_back_per_reading_when_the_field_stops_working():
    gpu = FakeGpu(schedule=[(0.0, 90.0)])
    fake, (found,), _ = open_gpus([gpu])
    gpu.instant = False
    fake.calls.clear()
    assert found.power_w() == pytest.approx(90.0)
    assert fake.calls == ["nvmlDeviceGetFieldValues", "nvmlDeviceGetPowerUsage"]


# CUDA_VISIBLE_DEVICES.


def test_unset_visible_devices_means_every_gpu_in_nvml_order():
    _, found, notes = open_gpus(three_gpus())
    assert [(g.cuda_index, g.nvml_index, g.uuid) for g in found] == [
        (0, 0, UUID_A), (1, 1, UUID_B), (2, 2, UUID_C)]
    assert notes == []


def test_visible_devices_by_index_renumber_in_cuda_order():
    _, found, _ = open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": "2,0"})
    assert [(g.cuda_index, g.nvml_index, g.uuid) for g in found] == [(0, 2, UUID_C),
                                                                     (1, 0, UUID_A)]
    assert [g.power_w() for g in found] == [pytest.approx(100.0), pytest.approx(60.0)]


def test_visible_devices_tolerate_spaces_and_trailing_commas():
    _, found, _ = open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": " 1 , "})
    assert [(g.cuda_index, g.nvml_index) for g in found] == [(0, 1)]


def test_visible_devices_by_uuid_and_uuid_prefix():
    _, found, _ = open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": f"GPU-cccc,{UUID_A}"})
    assert [(g.cuda_index, g.nvml_index) for g in found] == [(0, 2), (1, 0)]


def test_ambiguous_uuid_prefix_is_refused():
    with pytest.raises(MeterUnavailableError,
                       match=r"'GPU-aaaa' matches several GPUs; fix CUDA_VISIBLE_DEVICES"):
        open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": "GPU-aaaa"})


@pytest.mark.parametrize("entry", ["GPU-ffff", "nonsense", "-1"])
def test_unknown_entry_is_refused_naming_the_variable(entry):
    with pytest.raises(MeterUnavailableError,
                       match=rf"CUDA_VISIBLE_DEVICES entry '{entry}' names no GPU here"):
        open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": f"0,{entry}"})


def test_index_beyond_the_machine_is_refused():
    with pytest.raises(MeterUnavailableError, match=r"entry '3': this machine has 3 GPU\(s\); "
                                                    r"fix CUDA_VISIBLE_DEVICES"):
        open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": "3"})


@pytest.mark.parametrize("value", ["", " ", ",", " , "])
def test_empty_visible_devices_means_no_gpu(value):
    with pytest.raises(MeterUnavailableError, match="CUDA_VISIBLE_DEVICES is empty"):
        open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": value})


def test_mig_instance_resolves_to_its_parent_with_a_note():
    gpus = three_gpus()
    gpus[1].mig_mode = 1
    gpus[1].mig_instances = [MIG_UUID]
    _, (found,), _ = open_gpus(gpus, {"CUDA_VISIBLE_DEVICES": MIG_UUID})
    assert (found.cuda_index, found.nvml_index, found.uuid) == (0, 1, UUID_B)
    assert MIG_UUID in found.mig
    assert "whole GPU" in found.mig
    assert found.power_w() == pytest.approx(80.0)


def test_unknown_mig_instance_is_refused_naming_the_variable():
    with pytest.raises(MeterUnavailableError,
                       match=rf"entry '{MIG_UUID}': Not Found; fix CUDA_VISIBLE_DEVICES"):
        open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": MIG_UUID})


def test_gpu_in_mig_mode_gets_a_note():
    gpus = three_gpus()
    gpus[0].mig_mode = 1
    _, found, _ = open_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert "MIG mode is on" in found[0].mig
    assert found[1].mig is None


def test_mig_mode_query_failing_means_no_mig():
    gpu = FakeGpu(errors={"nvmlDeviceGetMigMode": NVML_ERROR_NOT_SUPPORTED})
    _, (found,), _ = open_gpus([gpu])
    assert found.mig is None


def test_mixed_gpus_without_pci_order_get_a_note():
    gpus = three_gpus()
    gpus[2].name = "NVIDIA A100-SXM4-80GB"
    _, _, notes = open_gpus(gpus)
    assert len(notes) == 1
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in notes[0]
    _, _, pci = open_gpus(gpus, {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert pci == []
    # CUDA numbers GPUs fastest first by default, so any numeric entry on a mixed machine may
    # name another GPU than NVML's index, even when the chosen GPUs look alike.
    _, _, alike = open_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert alike == notes
    _, _, single = open_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "2"})
    assert single == notes
    _, _, by_uuid = open_gpus(gpus, {"CUDA_VISIBLE_DEVICES": f"{UUID_A},{UUID_C}"})
    assert by_uuid == []
    _, _, alike_machine = open_gpus(three_gpus(), {"CUDA_VISIBLE_DEVICES": "2"})
    assert alike_machine == []


def test_bytes_names_and_uuids_from_old_pynvml_are_decoded():
    gpus = [FakeGpu(name=b"NVIDIA A100-SXM4-40GB", uuid=UUID_A.encode())]
    _, (found,), _ = open_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "GPU-aaaa1"})
    assert found.name == "NVIDIA A100-SXM4-40GB"
    assert found.uuid == UUID_A


def test_machine_without_gpus_is_unavailable():
    with pytest.raises(MeterUnavailableError, match="NVML sees no GPU"):
        open_gpus([])


def test_failing_gpu_listing_is_unavailable():
    class Broken(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:  # noqa: N802 (pynvml's name)
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    with pytest.raises(MeterUnavailableError, match="cannot list the GPUs: Uninitialized"):
        nvml.visible_gpus(Broken(), {})


# Errors while measuring.


def test_lost_gpu_becomes_a_meter_error_naming_the_gpu():
    gpus = three_gpus()
    _, found, _ = open_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "1"})
    gpus[1].errors = dict.fromkeys((
        "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetPowerUsage", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetTemperature",
        "nvmlDeviceGetEnforcedPowerLimit"), NVML_ERROR_GPU_IS_LOST)
    calls = {"energy": found[0].energy_mj, "instant power": found[0].power_w,
             "utilisation": found[0].utilization_pct, "temperature": found[0].temperature_c}
    for what, call in calls.items():
        with pytest.raises(MeterError) as caught:
            call()
        assert type(caught.value) is MeterError
        assert str(caught.value) == (f"NVML {what} of GPU 0 (NVIDIA H100 80GB HBM3): "
                                     f"GPU is lost")
    assert found[0].power_limit_w() is None


# The library itself.


def test_library_initialises_the_module(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert nvml.library() is fake


def test_library_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(MeterUnavailableError, match="`pip install nvidia-ml-py`"):
        nvml.library()


@pytest.mark.parametrize(("code", "hint"), [
    (NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so was not found: this machine has no NVIDIA "
                                   "driver"),
    (NVML_ERROR_DRIVER_NOT_LOADED, "the NVIDIA driver is not loaded (`nvidia-smi` says why)"),
    (NVML_ERROR_NO_PERMISSION, "NVML refused access"),
    (NVML_ERROR_UNINITIALIZED, "Uninitialized"),
])
def test_library_init_failures_are_unavailable_with_a_hint(monkeypatch, code, hint):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(init_error=code))
    with pytest.raises(MeterUnavailableError) as caught:
        nvml.library()
    assert str(caught.value).startswith("NVML: ")
    assert hint in str(caught.value)


def test_driver_version():
    assert nvml.driver_version(FakeNvml(driver="535.104.05")) == "535.104.05"
    assert nvml.driver_version(FakeNvml(driver=b"470.1")) == "470.1"

    class Broken(FakeNvml):
        def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802 (pynvml's name)
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    assert nvml.driver_version(Broken()) == "unknown"


# The survey's GPU half.


def test_survey_lists_visible_gpus_and_notes(monkeypatch, tmp_path):
    gpus = three_gpus()
    gpus[0].name = "NVIDIA L4"
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus, driver="550.1"))
    report = survey(tmp_path / "absent", {"CUDA_VISIBLE_DEVICES": "0,2"})
    assert [g.uuid for g in report.gpus] == [UUID_A, UUID_C]
    assert report.driver_version == "550.1"
    assert report.gpu_problem is None
    assert len(report.gpu_notes) == 1
    assert "no powercap tree" in report.cpu_problem
    assert report.nothing is None


def test_survey_without_gpu_or_rapl_says_why_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml",
                        FakeNvml(init_error=NVML_ERROR_DRIVER_NOT_LOADED))
    report = survey(tmp_path / "absent", {})
    assert report.gpus == []
    assert "driver is not loaded" in report.gpu_problem
    assert "\n" not in report.nothing
    assert report.nothing.startswith("nothing to measure on this machine: GPU: NVML: the "
                                     "NVIDIA driver")
    assert "CPU: no powercap tree" in report.nothing


def test_survey_with_a_bad_visible_devices_value(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(three_gpus()))
    report = survey(tmp_path / "absent", {"CUDA_VISIBLE_DEVICES": "7"})
    assert report.gpus == []
    assert "CUDA_VISIBLE_DEVICES" in report.gpu_problem


def test_nvml_failing_to_name_a_gpu_is_unavailable_not_a_crash():
    gpus = three_gpus()
    gpus[2].errors = {"nvmlDeviceGetName": NVML_ERROR_GPU_IS_LOST}
    with pytest.raises(MeterUnavailableError, match="NVML cannot list the GPUs: GPU is lost"):
        open_gpus(gpus)
