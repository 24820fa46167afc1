"""`wattsched meters` and `wattsched measure` against a fake NVML, a fake powercap tree and a
fake backend that drives the fake GPU's power in real time."""

import importlib.util
import json
import sys
import time
from typing import ClassVar

import pandas as pd
import pytest
from typer.testing import CliRunner

from energy_models.measurements.schema import read_table
from energy_models.profiling import backends
from energy_models.profiling.harness import Generation
from scheduler.cli import app
from tests.fakes import NVML_ERROR_LIBRARY_NOT_FOUND, FakeBackend, FakeGpu, FakeNvml, FakePowercap

runner = CliRunner()
FAST = ["--settle", "0.05", "--idle-window", "0.05", "--settle-timeout", "1", "--warmup", "0",
        "--sample-hz", "100"]


class RealTimeBackend(FakeBackend):
    """The fake backend on the wall clock: a run sleeps and raises the GPU's power meanwhile."""

    instances: ClassVar[list] = []

    def __init__(self, llm, gpu: FakeGpu, **options):
        super().__init__(clock=time.monotonic, gpu=gpu, decode_s=0.001)
        self.options = options
        self.loaded = False
        RealTimeBackend.instances.append(self)

    def load(self) -> None:
        self.loaded = True

    def synchronize(self) -> None:
        pass

    def generate(self, input_tokens: int, output_tokens: int, batch: int) -> Generation:
        self.runs.append((input_tokens, output_tokens, batch))
        seconds = self.decode_s * output_tokens
        self.gpu.schedule.append((time.monotonic(), self.busy_w))
        time.sleep(seconds)
        self.gpu.schedule.append((time.monotonic(), self.idle_w))
        return Generation(output_tokens, self.decode_s, self.decode_s)


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml",
                        FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))


@pytest.fixture
def h100(monkeypatch) -> FakeGpu:
    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([gpu]))
    return gpu


@pytest.fixture
def fake_backend(monkeypatch, h100):
    RealTimeBackend.instances = []
    monkeypatch.setitem(backends.BACKENDS, "fake",
                        lambda llm, **options: RealTimeBackend(llm, h100, **options))


def test_meters_with_nothing_to_measure_fails_on_one_line(no_nvml, tmp_path):
    result = runner.invoke(app, ["meters", "--rapl-root", str(tmp_path / "absent")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nothing to measure" in lines[0]
    assert "no NVIDIA driver" in lines[0]
    assert "intel_rapl_common" in lines[0]


def test_meters_lists_gpus_and_rapl_zones(h100, tmp_path):
    tree = FakePowercap.server(tmp_path / "powercap")
    result = runner.invoke(app, ["meters", "--rapl-root", str(tree.root), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [g["catalog_name"] for g in doc["gpus"]] == ["H100-SXM"]
    assert doc["gpus"][0]["energy"] == "counter"
    assert doc["gpus"][0]["power_limit_w"] == 700
    counted = [z["label"] for z in doc["rapl_zones"] if z["counted"]]
    assert counted == ["package-0", "package-0/dram", "package-1", "package-1/dram"]
    psys = next(z for z in doc["rapl_zones"] if z["label"] == "psys")
    assert "twice" in psys["why_not"]

    table = runner.invoke(app, ["meters", "--rapl-root", str(tree.root)])
    assert table.exit_code == 0
    assert "NVIDIA H100 80GB HBM3" in table.stdout
    assert "package-1/dram" in table.stdout


def test_meters_with_rapl_only_says_why_no_gpu(no_nvml, tmp_path):
    tree = FakePowercap.server(tmp_path / "powercap", packages=1)
    result = runner.invoke(app, ["meters", "--rapl-root", str(tree.root)])
    assert result.exit_code == 0
    assert "GPUs: none measurable" in result.stdout
    assert "package-0" in result.stdout


def test_measure_without_gpu_fails_on_one_line(no_nvml, tmp_path):
    result = runner.invoke(app, ["measure", "--llm", "llama-3.1-8b", "--out",
                                 str(tmp_path / "runs.parquet")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no GPU to measure" in result.stderr
    assert not (tmp_path / "runs.parquet").exists()


@pytest.mark.parametrize(("args", "field"), [
    (["--llm", "llama-9000"], "llama-9000"),
    (["--llm", "llama-3.1-8b", "--repetitions", "0"], "--repetitions"),
    (["--llm", "llama-3.1-8b", "--batch", "1,x"], "--batch"),
    (["--llm", "llama-3.1-8b", "--gpu", "3"], "--gpu"),
    (["--llm", "llama-3.1-8b", "--backend", "vllm-magic"], "--backend"),
    (["--llm", "llama-3.1-8b", "--device", "H9000"], "H9000"),
])
def test_measure_bad_options_exit_2(h100, tmp_path, args, field):
    result = runner.invoke(app, ["measure", *args, "--out", str(tmp_path / "runs.csv")])
    assert result.exit_code == 2, result.output
    assert field in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_measure_bad_out_suffix(h100, tmp_path):
    result = runner.invoke(app, ["measure", "--llm", "llama-3.1-8b", "--out",
                                 str(tmp_path / "runs.xlsx")])
    assert result.exit_code == 2
    assert "--out" in result.stderr


def test_measure_writes_schema_rows_meta_and_resumes(fake_backend, h100, tmp_path):
    out = tmp_path / "runs.csv"
    args = ["measure", "--llm", "llama-3.2-1b", "--backend", "fake", "--grid", "tiny",
            "--output-tokens", "10,20", "--repetitions", "2", "--out", str(out), *FAST,
            "--trace", str(tmp_path / "trace.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    measurements = read_table(out)
    assert measurements.dropped == []
    table = measurements.table
    assert len(table) == 2 * 2 * 2 * 2
    assert set(table["device"]) == {"H100-SXM"}
    assert set(table["llm"]) == {"llama-3.2-1b"}
    assert set(table["energy_kind"]) == {"gross"}
    raw = pd.read_csv(out)
    # Energy per request is the window's gross energy over the batch; idle kept apart.
    assert (raw["energy_j"] * raw["batch"]).to_numpy() == pytest.approx(raw["gross_energy_j"])
    assert raw["idle_energy_j"].to_numpy() == pytest.approx(raw["idle_power_w"]
                                                            * raw["runtime_s"])
    assert raw["idle_power_w"].to_numpy() == pytest.approx(70.0, rel=0.05)
    assert (raw["mean_power_w"] > raw["idle_power_w"]).all()
    assert set(raw["energy_method"]) == {"counter"}
    meta = json.loads((tmp_path / "runs.csv.meta.json").read_text())
    assert meta["gpu"] == "NVIDIA H100 80GB HBM3"
    assert meta["driver_version"] == "550.54.15"
    assert meta["grid"]["output_tokens"] == [10, 20]
    assert RealTimeBackend.instances[0].loaded
    assert RealTimeBackend.instances[0].options == {"device": "cuda:0", "dtype": "bfloat16",
                                                     "max_positions": 64 + 20}
    assert "J/token" in result.stdout
    assert f"wattsched fit {out}" in result.stdout

    trace = pd.read_csv(tmp_path / "trace.csv")
    assert list(trace.columns) == ["time_s", "gpu", "power_w"]
    assert trace["time_s"].min() == 0
    assert trace["time_s"].is_monotonic_increasing
    assert set(trace["gpu"]) == {0}
    # The trace sees both the idle GPU and the runs.
    assert trace["power_w"].min() == pytest.approx(70.0)
    assert trace["power_w"].max() == pytest.approx(400.0)

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert RealTimeBackend.instances[1].runs == []
    assert "resumed: 8 point(s)" in again.stdout
    assert pd.read_csv(out).equals(raw)


def test_measure_refuses_to_resume_another_llm(fake_backend, tmp_path):
    out = tmp_path / "runs.csv"
    first = ["measure", "--llm", "llama-3.2-1b", "--backend", "fake", "--grid", "tiny",
             "--batch", "1", "--input-tokens", "32", "--repetitions", "1", "--out", str(out),
             *FAST]
    assert runner.invoke(app, first).exit_code == 0
    meta = (tmp_path / "runs.csv.meta.json").read_text()
    other = [a if a != "llama-3.2-1b" else "llama-3.2-3b" for a in first]
    result = runner.invoke(app, other)
    assert result.exit_code == 2
    assert "llama-3.2-1b" in result.stderr
    assert "another --out" in result.stderr
    # Refused before the model is built, and the first run's meta file is left as it was.
    assert not RealTimeBackend.instances[-1].loaded
    assert (tmp_path / "runs.csv.meta.json").read_text() == meta

    float16 = runner.invoke(app, [*first, "--dtype", "float16"])
    assert float16.exit_code == 2
    assert "dtype 'bfloat16', not 'float16'" in float16.stderr
    assert (tmp_path / "runs.csv.meta.json").read_text() == meta


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_measure_hf_random_without_torch_names_the_install(h100, tmp_path):
    result = runner.invoke(app, ["measure", "--llm", "llama-3.2-1b", "--grid", "tiny", "--out",
                                 str(tmp_path / "runs.csv"), *FAST])
    assert result.exit_code == 2
    assert "wattsched[hf]" in result.stderr
