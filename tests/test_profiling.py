"""The profiling harness end to end on a fake backend, fake NVML and a manual clock: schema rows,
idle handling, settling, atomic rewrites and resuming after a kill."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from energy_models.errors import MeasurementError
from energy_models.measurements.schema import MEASUREMENT_COLUMNS, read_table, validate
from energy_models.meters import EnergyMonitor, NvmlGpu, PowerSampler, nvml
from energy_models.profiling.harness import (
    EXTRA_COLUMNS,
    GRIDS,
    Generation,
    Grid,
    IdlePolicy,
    ProfileSettings,
    counter_agreement,
    measure_idle_w,
    profile,
    read_runs,
    wait_for_idle,
    write_meta,
)
from tests.fakes import FakeBackend, FakeClock, FakeGpu, FakeNvml

LLM = "llama-3.1-8b"
DEVICE = "H100-SXM"
FAST_IDLE = IdlePolicy(steady_s=2.0, poll_s=0.5, timeout_s=10.0, idle_window_s=3.0)
TINY = GRIDS["tiny"]


@dataclass
class Rig:
    clock: FakeClock
    gpu: FakeGpu
    gpus: list[NvmlGpu]
    monitor: EnergyMonitor
    backend: FakeBackend

    def run(self, out: Path, grid: Grid = TINY, **options):
        settings = ProfileSettings(LLM, DEVICE, repetitions=options.pop("repetitions", 2),
                                   warmup=options.pop("warmup", 1),
                                   idle=options.pop("idle", FAST_IDLE),
                                   tp=options.pop("tp", 1))
        return profile(self.backend, grid, settings, self.monitor, self.gpus, out,
                       clock=self.clock, sleep=self.clock.sleep, **options)


def make_rig(idle_w: float = 70.0, busy_w: float = 400.0, *, compare: bool = False,
             backend: type[FakeBackend] = FakeBackend, **backend_options) -> Rig:
    clock = FakeClock()
    gpu = FakeGpu(schedule=[(0.0, idle_w)])
    gpus, _ = nvml.visible_gpus(FakeNvml([gpu], clock=clock), {})
    monitor = EnergyMonitor(gpus, clock=clock, compare=compare)
    return Rig(clock, gpu, gpus, monitor,
               backend(clock, gpu, busy_w=busy_w, idle_w=idle_w, **backend_options))


def config(point: tuple[int, int, int]) -> str:
    m, n, b = point
    return f"b{b}.m{m}.n{n}"


class Probe:
    """An idle probe whose readings are functions of the clock."""

    def __init__(self, clock: FakeClock, power=lambda t: 70.0, utilization=lambda t: 0.0,
                 temperature=lambda t: 35.0):
        self.clock = clock
        self.start = clock()
        self._power, self._utilization, self._temperature = power, utilization, temperature

    def power_w(self) -> float:
        return self._power(self.clock() - self.start)

    def utilization_pct(self) -> float:
        return self._utilization(self.clock() - self.start)

    def temperature_c(self) -> float:
        return self._temperature(self.clock() - self.start)


# Grids.


def test_grid_points_put_small_batches_first_in_sorted_order():
    grid = Grid((64, 32), (16, 8), (2, 1))
    assert grid.points() == [(32, 8, 1), (32, 16, 1), (64, 8, 1), (64, 16, 1),
                             (32, 8, 2), (32, 16, 2), (64, 8, 2), (64, 16, 2)]
    assert grid.points() == TINY.points()


def test_shipped_grids():
    assert len(GRIDS["tiny"].points()) == 8
    assert len(GRIDS["small"].points()) == 8
    assert len(GRIDS["standard"].points()) == 75
    assert len(set(GRIDS["standard"].points())) == 75


@pytest.mark.parametrize(("values", "field"), [
    (((), (8,), (1,)), "input_tokens"),
    (((32,), (0,), (1,)), "output_tokens"),
    (((32,), (8,), (1, -2)), "batches"),
    (((32, 1.5), (8,), (1,)), "input_tokens"),
])
def test_grid_validation(values, field):
    with pytest.raises(MeasurementError, match=rf"grid {field}: needs positive whole numbers"):
        Grid(*values)


def test_grid_accepts_whole_floats():
    assert Grid((32.0,), (8,), (1,)).points() == [(32.0, 8, 1)]


# Waiting for idle.


def test_wait_for_idle_settles_after_the_steady_time():
    clock = FakeClock()
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    settled = wait_for_idle([Probe(clock)], FAST_IDLE, clock, sleep)
    assert settled.settled is True
    assert settled.waited_s == 2.0
    assert sleeps == [0.5] * 4


def test_wait_for_idle_waits_for_cooling_power():
    clock = FakeClock()
    cooling = Probe(clock, power=lambda t: max(70.0, 200.0 - 20.0 * t))
    settled = wait_for_idle([cooling], FAST_IDLE, clock, clock.sleep)
    # Power reaches 70 W at 6.5 s; at 8 s the 2 s look-back still holds 80 W at 6 s.
    assert settled == type(settled)(True, 8.5)


@pytest.mark.parametrize("probe_options", [
    {"utilization": lambda t: 30.0},
    {"power": lambda t: 70.0 + 20.0 * (round(t / 0.5) % 2)},
    {"temperature": lambda t: 35.0 + t},
])
def test_wait_for_idle_times_out_when_not_steady(probe_options):
    clock = FakeClock()
    probes = [Probe(clock), Probe(clock, **probe_options)]
    settled = wait_for_idle(probes, FAST_IDLE, clock, clock.sleep)
    assert settled.settled is False
    assert settled.waited_s == FAST_IDLE.timeout_s


def test_wait_for_idle_tolerates_noise_within_the_bands():
    clock = FakeClock()
    noisy = Probe(clock, power=lambda t: 70.0 + 4.0 * (round(t / 0.5) % 2),
                  temperature=lambda t: 35.0 + 0.5 * (round(t / 0.5) % 2))
    assert wait_for_idle([noisy], FAST_IDLE, clock, clock.sleep).settled


def test_measure_idle_power():
    rig = make_rig(idle_w=63.5)
    assert measure_idle_w(rig.monitor, 3.0, rig.clock.sleep) == pytest.approx(63.5, abs=1e-3)
    assert rig.clock() == 1003.0


# The harness end to end.


def test_profile_writes_schema_rows_for_every_point(tmp_path):
    rig = make_rig()
    out = tmp_path / "runs.csv"
    result = rig.run(out)
    points = TINY.points()
    table = result.table
    assert result.measured == points
    assert result.resumed == []
    assert result.unsettled == []
    assert list(table.columns) == [*MEASUREMENT_COLUMNS, *EXTRA_COLUMNS]
    assert len(table) == 2 * len(points)

    checked = validate(table, "harness")
    assert checked.dropped == []
    assert len(checked.table) == len(table)

    # Grid order, each point's repetitions together.
    assert list(table["config"]) == [config(p) for p in points for _ in range(2)]
    assert list(table["repetition"]) == [0, 1] * len(points)
    m, n, b = table["input_tokens"], table["output_tokens"], table["batch"]
    assert list(zip(m, n, b, strict=True))[::2] == points

    runtime = 1e-5 * m * b + 0.02 * n
    np.testing.assert_allclose(table["runtime_s"], runtime, rtol=1e-9)
    np.testing.assert_allclose(table["gross_energy_j"], 400.0 * runtime, atol=2e-3)
    np.testing.assert_allclose(table["energy_j"], table["gross_energy_j"] / b, rtol=1e-12)
    np.testing.assert_allclose(table["idle_power_w"], 70.0, atol=1e-3)
    np.testing.assert_allclose(table["idle_energy_j"], table["idle_power_w"] * runtime,
                               rtol=1e-9)
    np.testing.assert_allclose(table["mean_power_w"], 400.0, rtol=1e-4)
    np.testing.assert_allclose(table["ttft_s"], 1e-5 * m * b + 0.02, rtol=1e-9)
    np.testing.assert_allclose(table["itl_s"], 0.02)
    assert set(table["energy_kind"]) == {"gross"}
    assert set(table["engine"]) == {"fake"}
    assert set(table["source"]) == {"wattsched measure, fake backend"}
    assert set(table["llm"]) == {LLM}
    assert set(table["device"]) == {DEVICE}
    assert set(table["tp"]) == {1}
    assert set(table["energy_method"]) == {"counter"}
    assert table["idle_settled"].all()
    assert table["sampled_energy_j"].isna().all()
    assert table["cpu_energy_j"].isna().all()

    # One warm-up before the first point, then per point one warm-up and two measured runs.
    assert len(rig.backend.runs) == 1 + 3 * len(points)
    assert rig.backend.runs[:2] == [points[0], points[0]]

    written = read_runs(out)
    assert len(written) == len(table)
    pd.testing.assert_frame_equal(written, table, check_dtype=False, rtol=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == ["runs.csv"]


def test_idle_power_follows_the_gpu(tmp_path):
    rig = make_rig(idle_w=48.0, busy_w=250.0)
    table = rig.run(tmp_path / "runs.csv", Grid((32,), (8,), (1,))).table
    np.testing.assert_allclose(table["idle_power_w"], 48.0, atol=1e-3)
    np.testing.assert_allclose(table["mean_power_w"], 250.0, rtol=1e-4)
    np.testing.assert_allclose(table["idle_energy_j"] / table["gross_energy_j"], 48 / 250,
                               rtol=1e-4)


@pytest.mark.parametrize("repetitions", [1, 4])
def test_repetitions_and_warmups(tmp_path, repetitions):
    rig = make_rig()
    grid = Grid((32,), (8, 16), (1,))
    table = rig.run(tmp_path / "runs.csv", grid, repetitions=repetitions, warmup=0).table
    assert table.groupby("config").size().to_dict() == {"b1.m32.n8": repetitions,
                                                        "b1.m32.n16": repetitions}
    assert len(rig.backend.runs) == 2 * repetitions


def test_repetitions_must_be_positive(tmp_path):
    with pytest.raises(MeasurementError, match="repetitions must be at least 1"):
        make_rig().run(tmp_path / "runs.csv", repetitions=0)


def test_output_is_rewritten_after_every_point(tmp_path):
    rig = make_rig()
    out = tmp_path / "runs.csv"
    seen = []

    def progress(done: int, total: int, label: str) -> None:
        rows = len(read_runs(out)) if out.exists() else 0
        seen.append((done, total, label, rows))

    rig.run(out, progress=progress)
    points = TINY.points()
    assert seen == [(i, 8, config(p), 2 * i) for i, p in enumerate(points)] + [
        (8, 8, "done", 16)]


def test_unsettled_gpus_are_marked(tmp_path):
    rig = make_rig()
    rig.gpu.utilization = 40.0
    grid = Grid((32,), (8,), (1, 2))
    result = rig.run(tmp_path / "runs.csv", grid)
    assert result.unsettled == grid.points()
    assert not result.table["idle_settled"].any()
    assert len(result.table) == 4  # Measured all the same.


# Resuming.


def test_resume_after_a_kill_measures_only_the_rest(tmp_path):
    points = TINY.points()
    clean = make_rig().run(tmp_path / "clean.csv").table

    rig = make_rig()
    out = tmp_path / "runs.csv"
    rig.backend.fail_on = points[3]
    with pytest.raises(KeyboardInterrupt):
        rig.run(out)
    killed = read_runs(out)
    assert list(dict.fromkeys(killed["config"])) == [config(p) for p in points[:3]]
    assert len(killed) == 2 * 3

    rig.backend.fail_on = None
    rig.backend.runs.clear()
    result = rig.run(out)
    assert result.resumed == points[:3]
    assert result.measured == points[3:]
    assert set(rig.backend.runs) == set(points[3:])
    table = result.table
    pd.testing.assert_frame_equal(read_runs(out), table, check_dtype=False, rtol=1e-9)

    assert validate(table, "resumed").dropped == []
    key = ["config", "repetition"]
    ordered = table.sort_values(key).reset_index(drop=True)
    expected = clean.sort_values(key).reset_index(drop=True)
    assert list(ordered["config"]) == list(expected["config"])
    for column in ("runtime_s", "energy_j", "gross_energy_j", "idle_power_w"):
        np.testing.assert_allclose(ordered[column], expected[column], atol=2e-3)


def test_kill_inside_a_measured_window_keeps_the_monitor_usable(tmp_path):
    points = TINY.points()
    rig = make_rig()
    out = tmp_path / "runs.csv"
    rig.backend.fail_on = points[5]
    with pytest.raises(KeyboardInterrupt):
        rig.run(out, warmup=0)  # No warm-up: the kill lands in the first measured window.
    assert len(read_runs(out)) == 2 * 5
    rig.backend.fail_on = None
    result = rig.run(out, warmup=0)
    assert result.measured == points[5:]
    assert len(result.table) == 2 * len(points)


def test_resume_of_a_finished_output_measures_nothing(tmp_path):
    rig = make_rig()
    out = tmp_path / "runs.csv"
    first = rig.run(out).table
    rig.backend.runs.clear()
    again = rig.run(out)
    assert again.measured == []
    assert again.resumed == TINY.points()
    assert rig.backend.runs == []
    pd.testing.assert_frame_equal(again.table.reset_index(drop=True), read_runs(out))
    assert len(again.table) == len(first)


def test_resume_remeasures_points_with_too_few_repetitions(tmp_path):
    rig = make_rig()
    out = tmp_path / "runs.csv"
    grid = Grid((32,), (8, 16), (1,))
    rig.run(out, grid, repetitions=2)
    result = rig.run(out, grid, repetitions=3)
    assert result.resumed == []
    assert result.measured == grid.points()
    assert result.table.groupby("config").size().to_dict() == {"b1.m32.n8": 3, "b1.m32.n16": 3}


def test_empty_output_starts_afresh(tmp_path):
    out = tmp_path / "runs.csv"
    out.write_text(",".join([*MEASUREMENT_COLUMNS, *EXTRA_COLUMNS]) + "\n")
    result = make_rig().run(out, Grid((32,), (8,), (1,)))
    assert result.measured == [(32, 8, 1)]
    assert len(read_runs(out)) == 2


@pytest.mark.parametrize(("change", "column"), [
    ({"llm": "mistral-7b"}, "llm"), ({"device": "A100-80GB"}, "device"), ({"tp": 2}, "tp"),
    ({"engine": "vllm"}, "engine"),
])
def test_output_of_another_run_is_refused(tmp_path, change, column):
    out = tmp_path / "runs.csv"
    make_rig().run(out, Grid((32,), (8,), (1,)))
    before = out.read_bytes()
    rig = make_rig()
    settings = {"llm": LLM, "device": DEVICE, "tp": 1}
    settings.update({k: v for k, v in change.items() if k != "engine"})
    if "engine" in change:
        rig.backend.engine = change["engine"]
    with pytest.raises(MeasurementError, match=rf"holds {column} .*not {change[column]!r}; "
                                               rf"give another --out"):
        profile(rig.backend, TINY, ProfileSettings(**settings, idle=FAST_IDLE), rig.monitor,
                rig.gpus, out, clock=rig.clock, sleep=rig.clock.sleep)
    assert out.read_bytes() == before
    assert rig.backend.runs == []


def test_output_that_is_no_harness_table_is_refused(tmp_path):
    out = tmp_path / "runs.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(MeasurementError, match="holds llm nothing"):
        make_rig().run(out)
    assert out.read_text() == "a,b\n1,2\n"


def test_unreadable_output_is_refused(tmp_path):
    out = tmp_path / "runs.parquet"
    out.write_bytes(b"not parquet at all")
    with pytest.raises(MeasurementError, match=r"cannot read it to resume.*move it away"):
        make_rig().run(out)


# File formats.


def test_parquet_output_round_trips_and_resumes(tmp_path):
    pytest.importorskip("pyarrow")
    rig = make_rig()
    out = tmp_path / "runs.parquet"
    rig.backend.fail_on = TINY.points()[2]
    with pytest.raises(KeyboardInterrupt):
        rig.run(out)
    assert len(read_runs(out)) == 4
    rig.backend.fail_on = None
    result = rig.run(out)
    assert result.resumed == TINY.points()[:2]
    written = read_runs(out)
    pd.testing.assert_frame_equal(written, result.table, check_dtype=False)
    assert written["idle_settled"].dtype == bool
    measurements = read_table(out)
    assert measurements.dropped == []
    assert len(measurements.table) == 16


def test_csv_output_is_readable_as_measurements(tmp_path):
    out = tmp_path / "runs.csv"
    make_rig().run(out)
    measurements = read_table(out)
    assert measurements.dropped == []
    assert len(measurements.table) == 16
    assert set(measurements.table["energy_kind"]) == {"gross"}


def test_write_meta_beside_the_output(tmp_path):
    out = tmp_path / "runs.csv"
    write_meta(out, {"llm": LLM, "out": out, "grid": [1, 2]})
    meta = json.loads((tmp_path / "runs.csv.meta.json").read_text())
    assert meta == {"llm": LLM, "out": str(out), "grid": [1, 2]}


# Counter against integrated power.


class SampledBackend(FakeBackend):
    """Samples power every 0.1 s of a run, as the sampler's thread would on the real clock."""

    sampler: PowerSampler | None = None

    def generate(self, input_tokens: int, output_tokens: int, batch: int) -> Generation:
        seconds = self.prefill_s_per_token * input_tokens * batch + self.decode_s * output_tokens
        self.runs.append((input_tokens, output_tokens, batch))
        self.gpu.schedule.append((self.clock(), self.busy_w))
        steps = round(seconds / 0.1)
        for step in range(1, steps + 1):
            self.clock.advance(0.1)
            if self.sampler and self.sampler.running and step < steps:
                self.sampler.sample()  # The window's end takes the last one.
        self.gpu.schedule.append((self.clock(), self.idle_w))
        return Generation(output_tokens, self.decode_s, self.decode_s)


def test_counter_agreement_on_long_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(PowerSampler, "_run", lambda self: None)  # Samples come from runs.
    rig = make_rig(compare=True, backend=SampledBackend, decode_s=1.5, prefill_s_per_token=0.0)
    rig.backend.sampler = rig.monitor.sampler
    table = rig.run(tmp_path / "runs.csv", Grid((32,), (4, 8), (1,))).table
    assert table["sampled_energy_j"].notna().all()
    assert set(table["energy_method"]) == {"counter"}
    agreement = counter_agreement(table)
    # 4 tokens take 6 s, too short to compare; 8 take 12 s.
    assert set(agreement["output_tokens"]) == {8}
    assert len(agreement) == 2
    # The samples at each edge of a window read idle power (the run has not started, or has
    # ended): each edge loses half of one 0.1 s step from 70 to 400 W.
    expected = -2 * (400 - 70) / 2 * 0.1 / (400 * 12)
    np.testing.assert_allclose(agreement["relative_difference"], expected, atol=1e-4)
    assert (agreement["relative_difference"].abs() < 0.01).all()
    assert len(counter_agreement(table, min_window_s=5.0)) == 4


def test_counter_agreement_keeps_only_comparable_rows():
    table = pd.DataFrame({
        "runtime_s": [12.0, 30.0, 9.9, 20.0, 15.0],
        "gross_energy_j": [1000.0, 2000.0, 500.0, 800.0, 900.0],
        "sampled_energy_j": [1010.0, 1900.0, 505.0, np.nan, 950.0],
        "energy_method": ["counter", "counter", "counter", "counter", "sampled at 10 Hz"],
    })
    agreement = counter_agreement(table)
    assert list(agreement.index) == [0, 1]
    np.testing.assert_allclose(agreement["relative_difference"], [0.01, -0.05])


def test_unknown_utilisation_leaves_idle_to_power_and_temperature():
    class MigProbe:
        def power_w(self) -> float:
            return 90.0

        def utilization_pct(self) -> None:
            return None

        def temperature_c(self) -> float:
            return 40.0

    clock = FakeClock()
    policy = IdlePolicy(steady_s=2.0, poll_s=0.5, timeout_s=10.0)
    settled = wait_for_idle([MigProbe()], policy, clock, clock.advance)
    assert settled.settled
    assert settled.waited_s == pytest.approx(2.0)
