"""Measurement windows and the power sampler, on fake GPUs with known power schedules and a
manual clock: energies are checked against the exact integral of each schedule."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from energy_models.errors import MeterError
from energy_models.meters import EnergyMonitor, PowerSampler, nvml
from energy_models.meters.rapl import open_counters
from tests.fakes import NVML_ERROR_GPU_IS_LOST, FakeClock, FakeGpu, FakeNvml, FakePowercap

T0 = 1000.0


@pytest.fixture
def manual_sampler(monkeypatch):
    """The sampler's thread does nothing: every sample is taken by a window edge or the test."""
    monkeypatch.setattr(PowerSampler, "_run", lambda self: None)


def open_fakes(*gpus: FakeGpu, clock, environ: dict[str, str] | None = None):
    found, _ = nvml.visible_gpus(FakeNvml(list(gpus), clock=clock), environ or {})
    return found


def truth(gpu: FakeGpu, start: float, end: float) -> float:
    return gpu.joules(end) - gpu.joules(start)


def step_gpu(**options) -> FakeGpu:
    return FakeGpu(schedule=[(0.0, 100.0), (T0 + 5.0, 300.0), (T0 + 10.0, 50.0),
                             (T0 + 14.5, 220.0)], **options)


def advance_sampling(clock: FakeClock, sampler: PowerSampler, seconds: float,
                     step: float = 0.1) -> None:
    """Move the clock on, sampling every ``step`` seconds as the background thread would."""
    for _ in range(round(seconds / step)):
        clock.advance(step)
        sampler.sample()


class Ramp:
    """A power source whose power rises linearly with the clock: 100 W + 10 W/s · t."""

    energy_counter = False

    def __init__(self, clock: FakeClock, cuda_index: int = 0):
        self.clock = clock
        self.cuda_index = cuda_index

    def power_w(self) -> float:
        return 100.0 + 10.0 * self.clock()

    def energy_mj(self) -> int:
        raise AssertionError("a ramp has no counter")


def ramp_sampled_at(moments) -> PowerSampler:
    clock = FakeClock(0.0)
    sampler = PowerSampler([Ramp(clock)], clock=clock)
    for moment in moments:
        clock.now = float(moment)
        sampler.sample()
    return sampler


# Counter windows.


def test_window_energy_is_the_integral_of_the_schedule():
    clock = FakeClock(T0)
    gpu = step_gpu()
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
    assert monitor.sampler is None
    monitor.begin_window("run")
    clock.advance(12.0)
    result = monitor.end_window("run")
    assert result.name == "run"
    assert result.elapsed_s == 12.0
    assert result.gpu_energy_j == {0: pytest.approx(5 * 100 + 5 * 300 + 2 * 50, abs=1e-3)}
    assert result.gpu_method == {0: "counter"}
    assert result.cpu_energy_j == {}
    assert result.gpu_sampled_energy_j == {}
    assert result.gpu_total_j == pytest.approx(2100.0, abs=1e-3)
    assert result.cpu_total_j == 0


def test_gpus_are_keyed_by_cuda_index():
    clock = FakeClock(T0)
    first = FakeGpu(uuid="GPU-1", schedule=[(0.0, 60.0)])
    second = FakeGpu(uuid="GPU-2", schedule=[(0.0, 90.0), (T0 + 2.0, 400.0)])
    monitor = EnergyMonitor(open_fakes(first, second, clock=clock,
                                       environ={"CUDA_VISIBLE_DEVICES": "1,0"}), clock=clock)
    with monitor.window("both") as window:
        clock.advance(4.0)
    result = window.result
    assert result.gpu_energy_j == {0: pytest.approx(2 * 90 + 2 * 400, abs=1e-3),
                                   1: pytest.approx(4 * 60, abs=1e-3)}
    assert result.gpu_total_j == pytest.approx(980 + 240, abs=2e-3)


def test_nested_and_overlapping_windows_each_get_their_own_energy():
    clock = FakeClock(T0)
    gpu = step_gpu()
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
    edges = {"outer": (0.0, 20.0), "inner": (4.0, 8.0), "a": (9.0, 15.0), "b": (12.0, 19.0)}
    events = sorted([(start, "begin", name) for name, (start, _) in edges.items()]
                    + [(end, "end", name) for name, (_, end) in edges.items()])
    results = {}
    for moment, what, name in events:
        clock.now = T0 + moment
        if what == "begin":
            monitor.begin_window(name)
        else:
            results[name] = monitor.end_window(name)
    for name, (start, end) in edges.items():
        assert results[name].elapsed_s == pytest.approx(end - start)
        assert results[name].gpu_energy_j[0] == pytest.approx(
            truth(gpu, T0 + start, T0 + end), abs=1e-3), name
    # The overlap was not counted out of either window.
    assert results["a"].gpu_total_j + results["b"].gpu_total_j > truth(gpu, T0 + 9, T0 + 19)


def test_reopening_an_open_window_is_refused():
    clock = FakeClock(T0)
    gpu = step_gpu()
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
    monitor.begin_window("a")
    clock.advance(3.0)
    with pytest.raises(MeterError, match="window 'a' is already open"):
        monitor.begin_window("a")
    clock.advance(3.0)
    # The first opening still stands.
    assert monitor.end_window("a").gpu_total_j == pytest.approx(truth(gpu, T0, T0 + 6),
                                                                abs=1e-3)


def test_closing_an_unknown_window_is_refused():
    clock = FakeClock(T0)
    monitor = EnergyMonitor(open_fakes(FakeGpu(), clock=clock), clock=clock)
    with pytest.raises(MeterError, match=r"window 'x' was never opened \(open: none\)"):
        monitor.end_window("x")
    monitor.begin_window("a")
    monitor.begin_window("b")
    with pytest.raises(MeterError, match=r"was never opened \(open: a, b\)"):
        monitor.end_window("x")
    monitor.end_window("a")
    with pytest.raises(MeterError, match="window 'a' was never opened"):
        monitor.end_window("a")


def test_a_monitor_needs_something_to_measure():
    with pytest.raises(MeterError, match="at least one GPU or RAPL zone"):
        EnergyMonitor([], [])


def test_sync_runs_at_every_window_edge():
    clock = FakeClock(T0)
    edges = []
    monitor = EnergyMonitor(open_fakes(FakeGpu(), clock=clock), clock=clock,
                            sync=lambda: edges.append(clock()))
    with monitor.window("a"):
        clock.advance(1.0)
        with monitor.window("b"):
            clock.advance(1.0)
    assert edges == [T0, T0 + 1, T0 + 2, T0 + 2]


# The context manager.


def test_context_manager_sets_the_result():
    clock = FakeClock(T0)
    gpu = step_gpu()
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
    with monitor.window("step") as window:
        assert window.result is None
        clock.advance(7.0)
    assert window.name == "step"
    assert window.result.name == "step"
    assert window.result.elapsed_s == 7.0
    assert window.result.gpu_total_j == pytest.approx(truth(gpu, T0, T0 + 7), abs=1e-3)


def test_context_manager_discards_the_window_on_error(manual_sampler):
    clock = FakeClock(T0)
    gpu = step_gpu(counter=False)
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
    def interrupted() -> None:
        with monitor.window("doomed") as window:
            handles.append(window)
            clock.advance(1.0)
            raise KeyboardInterrupt

    handles = []
    with pytest.raises(KeyboardInterrupt):
        interrupted()
    (window,) = handles
    assert window.result is None
    assert not monitor.sampler.running
    with pytest.raises(MeterError, match="'doomed' was never opened"):
        monitor.end_window("doomed")
    # The name is free again, and the monitor still measures.
    with monitor.window("doomed") as again:
        advance_sampling(clock, monitor.sampler, 2.0)
    assert again.result.gpu_total_j == pytest.approx(200.0)


def test_error_in_a_nested_window_leaves_the_outer_one_running(manual_sampler):
    clock = FakeClock(T0)
    gpu = step_gpu(counter=False)
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
    monitor.begin_window("outer")
    def failing() -> None:
        with monitor.window("inner"):
            advance_sampling(clock, monitor.sampler, 1.0)
            raise ValueError("inner failed")

    with pytest.raises(ValueError, match="inner failed"):
        failing()
    assert monitor.sampler.running
    advance_sampling(clock, monitor.sampler, 3.0)
    assert monitor.end_window("outer").gpu_total_j == pytest.approx(400.0)
    assert not monitor.sampler.running


# Sampled power.


def test_sampled_fallback_integrates_a_step_schedule(manual_sampler):
    clock = FakeClock(T0)
    gpu = FakeGpu(counter=False, schedule=[(0.0, 100.0), (T0 + 4.02, 300.0)])
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock, sample_hz=10)
    monitor.begin_window("run")
    advance_sampling(clock, monitor.sampler, 10.0)
    result = monitor.end_window("run")
    exact = truth(gpu, T0, clock())
    assert exact == pytest.approx(4.02 * 100 + 5.98 * 300)
    assert result.gpu_method == {0: "sampled at 10 Hz"}
    # Trapezoids are exact on each flat stretch; the one 0.1 s interval holding the step gets
    # (100 + 300) / 2 · 0.1 = 20 J where the truth is 0.02 · 100 + 0.08 · 300 = 26 J.
    assert result.gpu_energy_j[0] == pytest.approx(exact - 6.0, abs=1e-6)
    assert abs(result.gpu_energy_j[0] - exact) <= (300 - 100) * 0.1 / 2


def test_sampled_error_stays_within_half_a_step_per_power_change(manual_sampler):
    for step in (1.0, 0.25, 0.05):
        clock = FakeClock(T0)
        gpu = step_gpu(counter=False)
        gpu.schedule.append((T0 + 17.3, 80.0))
        monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
        monitor.begin_window("run")
        advance_sampling(clock, monitor.sampler, 20.0, step)
        result = monitor.end_window("run")
        error = abs(result.gpu_total_j - truth(gpu, T0, clock()))
        changes = [abs(b - a) for (_, a), (_, b) in zip(gpu.schedule, gpu.schedule[1:],
                                                        strict=False)]
        assert error <= sum(changes) * step / 2 + 1e-6, step
        assert error / truth(gpu, T0, clock()) < 0.01


def test_sampler_interpolates_at_window_edges():
    sampler = ramp_sampled_at(range(4))
    # ∫ 100 + 10 t dt from 0.5 to 2.5: linear power makes trapezoids and interpolation exact.
    assert sampler.energy_j(0, 0.5, 2.5) == pytest.approx(230.0)
    assert sampler.energy_j(0, 1.2, 1.7) == pytest.approx(50.0 + 5 * (1.7**2 - 1.2**2))
    assert sampler.energy_j(0, 0.0, 3.0) == pytest.approx(345.0)


def test_sampler_refuses_windows_its_samples_do_not_cover():
    clock = FakeClock(0.0)
    sampler = PowerSampler([Ramp(clock)], clock=clock)
    with pytest.raises(MeterError, match="power samples cover"):
        sampler.energy_j(0, 0.0, 1.0)
    sampler.sample()
    with pytest.raises(MeterError, match="power samples cover"):
        sampler.energy_j(0, 0.0, 0.0)
    clock.now = 2.0
    sampler.sample()
    with pytest.raises(MeterError, match=r"cover 0.000–2.000 s, not the window 1.000–2.500 s"):
        sampler.energy_j(0, 1.0, 2.5)
    with pytest.raises(MeterError, match=r"not the window -0\.500"):
        sampler.energy_j(0, -0.5, 1.0)


def test_sampler_rate_must_be_positive():
    with pytest.raises(ValueError, match="rate_hz must be positive"):
        PowerSampler([Ramp(FakeClock())], rate_hz=0)


def test_compare_reports_sampled_energy_beside_the_counter(manual_sampler):
    clock = FakeClock(T0)
    gpu = step_gpu()
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock, compare=True)
    monitor.begin_window("run")
    advance_sampling(clock, monitor.sampler, 16.0, 0.5)
    result = monitor.end_window("run")
    exact = truth(gpu, T0, T0 + 16)
    assert result.gpu_method == {0: "counter"}
    assert result.gpu_energy_j[0] == pytest.approx(exact, abs=1e-3)
    # Every step (5, 10 and 14.5 s in) falls on a sample, which reads the new power: the
    # interval before each step gets half the change too much.
    sampled = result.gpu_sampled_energy_j[0]
    assert sampled != pytest.approx(exact, abs=1e-3)
    assert sampled == pytest.approx(exact + ((300 - 100) + (50 - 300) + (220 - 50)) / 2 * 0.5)


def test_without_compare_counter_gpus_are_not_sampled():
    clock = FakeClock(T0)
    monitor = EnergyMonitor(open_fakes(step_gpu(), clock=clock), clock=clock)
    with monitor.window("run") as window:
        clock.advance(3.0)
    assert monitor.sampler is None
    assert window.result.gpu_sampled_energy_j == {}


def test_counter_and_sampled_gpus_side_by_side(manual_sampler):
    clock = FakeClock(T0)
    counted = step_gpu(uuid="GPU-1")
    sampled = FakeGpu(uuid="GPU-2", counter=False, schedule=[(0.0, 75.0)])
    monitor = EnergyMonitor(open_fakes(counted, sampled, clock=clock), clock=clock,
                            sample_hz=4)
    with monitor.window("run") as window:
        advance_sampling(clock, monitor.sampler, 6.0, 0.25)
    result = window.result
    assert result.gpu_method == {0: "counter", 1: "sampled at 4 Hz"}
    assert result.gpu_energy_j[0] == pytest.approx(truth(counted, T0, T0 + 6), abs=1e-3)
    assert result.gpu_energy_j[1] == pytest.approx(6 * 75.0)
    assert set(monitor.sampler.trace()["gpu"]) == {1}


def test_trace_lists_every_sample_of_every_sampled_gpu(manual_sampler):
    clock = FakeClock(T0)
    gpus = [FakeGpu(uuid="GPU-1", counter=False, schedule=[(0.0, 50.0), (T0 + 1.0, 150.0)]),
            FakeGpu(uuid="GPU-2", counter=False, schedule=[(0.0, 80.0)])]
    monitor = EnergyMonitor(open_fakes(*gpus, clock=clock), clock=clock)
    monitor.begin_window("run")
    advance_sampling(clock, monitor.sampler, 2.0, 0.5)
    trace = monitor.sampler.trace()
    assert list(trace.columns) == ["time_s", "gpu", "power_w"]
    assert len(trace) == 2 * 5
    assert list(trace["gpu"]) == [0, 1] * 5
    first = trace[trace["gpu"] == 0]
    assert list(first["time_s"]) == pytest.approx([T0, T0 + 0.5, T0 + 1, T0 + 1.5, T0 + 2])
    assert list(first["power_w"]) == [50.0, 50.0, 150.0, 150.0, 150.0]
    assert set(trace.loc[trace["gpu"] == 1, "power_w"]) == {80.0}
    monitor.end_window("run")


# Forgetting samples.


def test_forget_before_keeps_the_sample_just_before():
    sampler = ramp_sampled_at(range(10))
    sampler.forget_before(4.5)
    assert list(sampler.trace()["time_s"]) == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert sampler.energy_j(0, 4.5, 9.0) == pytest.approx(4.5 * 100 + 5 * (81 - 4.5**2))
    with pytest.raises(MeterError, match=r"power samples cover 4\.000"):
        sampler.energy_j(0, 3.9, 9.0)
    sampler.forget_before(0.0)
    assert len(sampler.trace()) == 6


def test_closing_windows_forgets_only_what_no_open_window_needs(manual_sampler):
    clock = FakeClock(T0)
    gpu = step_gpu(counter=False)
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), clock=clock)
    with monitor.window("early"):
        advance_sampling(clock, monitor.sampler, 2.0)
    clock.advance(1.0)
    monitor.begin_window("long")
    long_start = clock()
    for _ in range(5):
        with monitor.window("short"):
            advance_sampling(clock, monitor.sampler, 1.0)
        advance_sampling(clock, monitor.sampler, 1.0)
        times = monitor.sampler.trace()["time_s"]
        # Samples before "long" began are gone, but for the one interpolation needs.
        assert (times < long_start).sum() <= 1
        assert times.min() <= long_start
    result = monitor.end_window("long")
    assert result.gpu_total_j == pytest.approx(truth(gpu, long_start, clock()), abs=30.0)
    # Once every window is closed, only the last samples remain.
    assert (monitor.sampler.trace()["time_s"] < clock()).sum() == 1


# RAPL through the monitor.


def rapl_server(tmp_path: Path) -> FakePowercap:
    tree = FakePowercap.server(tmp_path / "powercap")
    tree.set("intel-rapl:0", FakePowercap.MAX_RANGE_UJ - 1_000_000)
    return tree


def test_rapl_energy_over_a_window_with_a_wrap(tmp_path):
    tree = rapl_server(tmp_path)
    clock = FakeClock(T0)
    monitor = EnergyMonitor(rapl=open_counters(tree.root), clock=clock)
    monitor.begin_window("cpu")
    clock.advance(2.0)
    tree.set("intel-rapl:0", 500_000)  # Wrapped: 1 J to the top, 0.5 J past zero.
    tree.set("intel-rapl:1", 4_000_000)  # 2 J more.
    tree.set("intel-rapl:1:1", 450_000)
    result = monitor.end_window("cpu")
    assert result.cpu_energy_j == {"package-0": pytest.approx(1.5), "package-0/dram": 0.0,
                                   "package-1": pytest.approx(2.0),
                                   "package-1/dram": pytest.approx(0.25)}
    assert result.cpu_total_j == pytest.approx(3.75)
    assert result.gpu_energy_j == {}
    assert result.elapsed_s == 2.0


def test_rapl_and_gpus_in_one_window(tmp_path):
    tree = rapl_server(tmp_path)
    clock = FakeClock(T0)
    gpu = step_gpu()
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock), open_counters(tree.root), clock=clock)
    with monitor.window("outer") as outer:
        clock.advance(6.0)
        tree.set("intel-rapl:0", 2_000_000)
        with monitor.window("inner") as inner:
            clock.advance(1.0)
            tree.set("intel-rapl:0", 3_000_000)
    assert outer.result.cpu_energy_j["package-0"] == pytest.approx(4.0)
    assert inner.result.cpu_energy_j["package-0"] == pytest.approx(1.0)
    assert outer.result.gpu_total_j == pytest.approx(truth(gpu, T0, T0 + 7), abs=1e-3)
    assert monitor._poller._thread is None  # Stopped with the last window.


def test_rapl_counter_failing_mid_window(tmp_path):
    tree = rapl_server(tmp_path)
    clock = FakeClock(T0)
    monitor = EnergyMonitor(rapl=open_counters(tree.root), clock=clock)
    monitor.begin_window("cpu")
    tree.set("intel-rapl:1", "gone")  # type: ignore[arg-type]
    with pytest.raises(MeterError, match="holds 'gone', not a counter"):
        monitor.end_window("cpu")
    monitor.close()


# Threads on the real clock.


def test_sampler_thread_samples_in_the_background():
    gpu = FakeGpu(counter=False, schedule=[(0.0, 150.0)])
    found, _ = nvml.visible_gpus(FakeNvml([gpu], clock=time.monotonic), {})
    monitor = EnergyMonitor(found, sample_hz=200)
    with monitor.window("real") as window:
        time.sleep(0.1)
        assert monitor.sampler.running
        background = len(monitor.sampler.trace())
    assert background >= 5  # At 200 Hz, about 20 in 0.1 s; the edges add only two.
    assert not monitor.sampler.running
    result = window.result
    assert result.elapsed_s >= 0.1
    assert result.gpu_energy_j[0] == pytest.approx(150.0 * result.elapsed_s)
    assert result.gpu_method == {0: "sampled at 200 Hz"}


def test_gpu_lost_while_sampling_fails_the_window():
    gpu = FakeGpu(counter=False, schedule=[(0.0, 150.0)])
    found, _ = nvml.visible_gpus(FakeNvml([gpu], clock=time.monotonic), {})
    monitor = EnergyMonitor(found, sample_hz=500)
    monitor.begin_window("doomed")
    gpu.errors = dict.fromkeys(("nvmlDeviceGetFieldValues", "nvmlDeviceGetPowerUsage"),
                               NVML_ERROR_GPU_IS_LOST)
    deadline = time.monotonic() + 2.0
    while monitor.sampler.error is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "GPU 0" in str(monitor.sampler.error)
    with pytest.raises(MeterError, match=r"NVML instant power of GPU 0 .*GPU is lost"):
        monitor.end_window("doomed")
    gpu.errors = {}
    monitor.close()


def test_samples_from_two_threads_stay_in_time_order():
    """A reading whose time was taken first is stored first, whichever thread took it."""
    main = threading.current_thread()
    held = threading.Event()
    release = threading.Event()

    class Clock(FakeClock):
        def __call__(self) -> float:
            value = self.now
            if threading.current_thread() is not main and not held.is_set():
                held.set()
                release.wait(0.3)  # Gives up where the other thread cannot get in meanwhile.
            return value

    class Flat:
        cuda_index = 0
        energy_counter = False

        def power_w(self) -> float:
            return 100.0

    clock = Clock(10.0)
    sampler = PowerSampler([Flat()], clock=clock)
    other = threading.Thread(target=sampler.sample)
    other.start()
    assert held.wait(2.0)
    clock.now = 11.0
    sampler.sample()
    release.set()
    other.join(2.0)
    assert list(sampler.trace()["time_s"]) == [10.0, 11.0]
    assert sampler.energy_j(0, 10.0, 11.0) == pytest.approx(100.0)


def test_two_mig_instances_of_one_gpu_are_measured_once():
    gpu = FakeGpu(mig_mode=1, mig_instances=[f"MIG-{i}" for i in "ab"])
    found, _ = nvml.visible_gpus(FakeNvml([gpu], clock=FakeClock()),
                                 {"CUDA_VISIBLE_DEVICES": "MIG-a,MIG-b"})
    assert [g.nvml_index for g in found] == [0, 0]
    with pytest.raises(MeterError, match="MIG instances of one physical GPU"):
        EnergyMonitor(found)
    assert EnergyMonitor(found[:1]).gpus == found[:1]


def test_closing_after_a_lost_gpu_does_not_raise_again(manual_sampler):
    clock = FakeClock(T0)
    gpu = FakeGpu(counter=False)
    monitor = EnergyMonitor(open_fakes(gpu, clock=clock))
    monitor.begin_window("w")
    gpu.errors = {"nvmlDeviceGetFieldValues": NVML_ERROR_GPU_IS_LOST}
    with pytest.raises(MeterError, match="GPU is lost"):
        monitor.sampler.sample()
    monitor.sampler.error = MeterError("GPU 0 is lost")
    with pytest.raises(MeterError, match="lost"):
        monitor.end_window("w")
    monitor.close()
    assert not monitor.sampler.running


def test_a_failing_window_edge_leaves_no_thread_running():
    def broken_sync() -> None:
        raise MeterError("device fell off the bus")

    gpu = FakeGpu(counter=False)
    found, _ = nvml.visible_gpus(FakeNvml([gpu], clock=time.monotonic), {})
    monitor = EnergyMonitor(found, sync=broken_sync)
    with pytest.raises(MeterError, match="bus"):
        monitor.begin_window("w")
    assert not monitor.sampler.running
    monitor.sync = None
    monitor.begin_window("w")
    monitor.sync = broken_sync
    with pytest.raises(MeterError, match="bus"):
        monitor.end_window("w")
    assert not monitor.sampler.running
    assert "power-sampler" not in {t.name for t in threading.enumerate()}
