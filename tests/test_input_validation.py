"""Hostile inputs: each gives one line naming file and field and exit code 2, or is served right.

Every case here was found by a tester and is reproduced through the CLI.
"""

import time
import warnings

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.console import warnings_to_stderr
from workloads.spec import load_workload

runner = CliRunner()

SMALL_FLEET = {"pools": [{"id": "l4", "device": "L4", "count": 8, "devices_per_node": 4}],
               "llms": ["llama-3.1-8b"]}
FLEET = {"pools": [{"id": "h100", "device": "H100-SXM", "count": 8}],
         "llms": ["llama-3.1-8b", "llama-3.1-70b"]}
BILLION_LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi",
                                                                strict=True))


def one_line(result, *fragments: str) -> str:
    """The single error line of a run that exited with code 2."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert len(lines[0]) < 400
    return lines[0]


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def plan(*args: str):
    return runner.invoke(app, ["plan", "--no-baselines", "--time-limit", "10", *args])


def fleet_file(tmp_path, fleet=None, **changes):
    return write(tmp_path / "fleet.yaml", yaml.safe_dump({**(fleet or FLEET), **changes}))


def trace_workload(tmp_path, csv: str, **fields):
    write(tmp_path / "trace.csv", csv)
    return write(tmp_path / "w.yaml", yaml.safe_dump({"trace": "trace.csv", **fields}))


HEADER = "arrival_s,input_tokens,output_tokens,kind\n"


# ---------------------------------------------------------------- tracebacks before


@pytest.mark.parametrize("option", ["--fleet", "--workload", "--models"])
def test_non_utf8_files(tmp_path, option):
    path = write(tmp_path / "bad.yaml", b"pools: [\xff\xfe]\n")
    one_line(plan(option, str(path)), str(path), "(file)", "not UTF-8")


def test_empty_trace_csv(tmp_path):
    one_line(plan("--workload", str(trace_workload(tmp_path, ""))), "trace.csv", "empty")


def test_infinite_rack_power_cap(tmp_path):
    path = write(tmp_path / "fleet.yaml", "racks: [{id: r, power_cap_w: .inf}]\n"
                 "pools: [{id: a, device: L4, count: 4, rack: r}]\nllms: [llama-3.1-8b]\n")
    one_line(plan("--fleet", str(path)), "racks[0].power_cap_w", "finite")


@pytest.mark.parametrize("count", ["1000000000000000000000000000000", "1.0e+30"])
def test_huge_pool_count(tmp_path, count):
    path = write(tmp_path / "fleet.yaml", f"pools: [{{id: a, device: L4, count: {count}}}]\n"
                 "llms: [llama-3.1-8b]\n")
    one_line(plan("--fleet", str(path)), "fleet.yaml: pools[0].count")


@pytest.mark.parametrize(("fields", "field"), [
    ({"horizon_s": 1e9}, "horizon_s"),
    ({"traffic": [{"preset": "azure-2023-conv", "rate_rps": 1e7}]}, "horizon_s"),
])
def test_synthetic_volume_is_bounded_before_generating(tmp_path, fields, field):
    raw = {"traffic": [{"preset": "azure-2023-conv"}], **fields}
    path = write(tmp_path / "w.yaml", yaml.safe_dump(raw))
    started = time.perf_counter()
    one_line(plan("--workload", str(path)), f"w.yaml: {field}", "10,000,000")
    assert time.perf_counter() - started < 10


# ---------------------------------------------------------------- the hang


def test_ordinary_warnings_are_reemitted_once_not_forever():
    with pytest.warns(UserWarning, match="ordinary"), warnings_to_stderr():
        warnings.warn("ordinary", UserWarning, stacklevel=1)


def test_fractional_token_count_is_refused(tmp_path):
    path = trace_workload(tmp_path, HEADER + "0,100,0.4,chat\n")
    one_line(plan("--workload", str(path)), "trace.csv: row 0: output_tokens=0.4", "whole number")


# ---------------------------------------------------------------- wrong blame


def test_kinds_colliding_as_solver_ids(tmp_path):
    path = trace_workload(tmp_path, HEADER + "0,100,4,chat-x\n1,100,4,chat_x\n")
    one_line(plan("--workload", str(path)), "trace.csv: kind:", "'chat-x' and 'chat_x'")


def test_header_only_trace(tmp_path):
    one_line(plan("--workload", str(trace_workload(tmp_path, HEADER))), "trace.csv",
             "the trace has no rows")


def test_prompts_longer_than_every_context_blame_the_workload(tmp_path):
    path = trace_workload(tmp_path, HEADER + "0,200000,4,chat\n1,100,4,chat\n")
    one_line(plan("--fleet", str(fleet_file(tmp_path)), "--workload", str(path)),
             "w.yaml: requests:", "of kind 'chat'", "131,072")


def test_batch_sizes_are_bounded_in_the_fleet_file(tmp_path):
    path = fleet_file(tmp_path, defaults={"batch_sizes": [1000000]})
    one_line(plan("--fleet", str(path)), "fleet.yaml: defaults.batch_sizes[0]", "at most 65536")


def test_exact_duplicate_pool_ids(tmp_path):
    pools = [FLEET["pools"][0], FLEET["pools"][0]]
    one_line(plan("--fleet", str(fleet_file(tmp_path, pools=pools))),
             "fleet.yaml: pools[1].id: duplicate id 'h100'")


def test_yaml_alias_bomb_fails_fast_and_short(tmp_path):
    path = write(tmp_path / "fleet.yaml", BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 500
    started = time.perf_counter()
    one_line(plan("--fleet", str(path)), "fleet.yaml: (file)", "aliases")
    assert time.perf_counter() - started < 5


# ---------------------------------------------------------------- accepted silently before


@pytest.mark.parametrize("key", ["slo", "min_quality"])
def test_override_for_a_kind_with_no_requests(tmp_path, key):
    value = {"ttft_s": 1.0} if key == "slo" else 70
    raw = {"traffic": [{"preset": "azure-2023-conv"}], "horizon_s": 60, key: {"caht": value}}
    path = write(tmp_path / "w.yaml", yaml.safe_dump(raw))
    one_line(plan("--workload", str(path)), f"w.yaml: {key}.caht", "did you mean 'chat'")


def test_repeated_yaml_key(tmp_path):
    path = write(tmp_path / "fleet.yaml", "pools: [{id: a, device: L4, count: 4}]\n"
                 "llms: [llama-3.1-8b]\npools: [{id: b, device: L4, count: 4}]\n")
    one_line(plan("--fleet", str(path)), "fleet.yaml: line 3", "duplicate key 'pools'")


@pytest.mark.parametrize("price", [-1, float("inf")])
def test_bad_price(tmp_path, price):
    pools = [{**FLEET["pools"][0], "price_per_hour": price}]
    one_line(plan("--fleet", str(fleet_file(tmp_path, pools=pools))),
             "pools[0].price_per_hour")


@pytest.mark.parametrize("limit", ["-1", "nan", "inf"])
def test_time_limit_must_be_finite_and_positive(limit):
    result = runner.invoke(app, ["plan", "--time-limit", limit])
    one_line(result, "--time-limit")


@pytest.mark.parametrize("gap", ["-0.1", "1", "nan"])
def test_gap_must_be_a_fraction_below_one(gap):
    result = runner.invoke(app, ["plan", "--gap", gap])
    one_line(result, "--gap")


def measurement_table(tmp_path, **changes):
    rows = pd.DataFrame([{"llm": "llama-3.1-8b", "device": "A100-40GB", "tp": 1, "batch": b,
                          "input_tokens": m, "output_tokens": 200, "energy_j": 50.0 + m / 10,
                          "runtime_s": 5.0 + b, "energy_kind": "gross", "source": "lab"}
                         for b, m in ((1, 128), (8, 256), (32, 512), (16, 1024))])
    for column, values in changes.items():
        rows[column] = values
    path = tmp_path / "runs.csv"
    rows.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("tp", ["1e30", "1.5"])
def test_fractional_or_huge_tp_in_a_measurement_table(tmp_path, tp):
    path = measurement_table(tmp_path, tp=["1", tp, "1", "1"])
    one_line(runner.invoke(app, ["fit", str(path)]), "runs.csv row 2: tp:", "whole number")


def test_mixed_energy_kinds_in_one_pair(tmp_path):
    path = measurement_table(tmp_path, energy_kind=["gross", "idle_subtracted"] * 2)
    one_line(runner.invoke(app, ["fit", str(path)]), "runs.csv: energy_kind:",
             "llama-3.1-8b on A100-40GB tp1")


def test_cpu_rows_cannot_calibrate_gpu_predictions(tmp_path):
    path = measurement_table(tmp_path, device="Xeon-Platinum-8480+")
    result = runner.invoke(app, ["predict", "--calibrate", str(path), "--gpu", "H100",
                                 "--llm", "llama-3.1-8b", "--batch", "8"])
    one_line(result, "runs.csv: device:", "is a CPU")


def test_sweetspot_of_a_model_that_does_not_fit(tmp_path):
    result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-405b", "--device", "L4",
                                 "--input-tokens", "512"])
    one_line(result, "--llm/--device", "GB per device", "L4")


def test_vanishing_rate_is_refused_not_burst(tmp_path):
    raw = {"traffic": [{"preset": "azure-2023-code", "rate_rps": 1e-9}], "horizon_s": 300}
    path = write(tmp_path / "w.yaml", yaml.safe_dump(raw))
    one_line(plan("--workload", str(path)), "w.yaml: traffic[0].rate_rps", "expected requests")


# ---------------------------------------------------------------- semantics


AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:00.0000000,100,20\n"
         "2023-11-16 18:15:02.5000000,50,5\n")


@pytest.mark.parametrize(("name", "fields", "kind"), [
    ("AzureLLMInferenceTrace_code.csv", {}, "code"),
    ("trace.csv", {}, "chat"),
    ("trace.csv", {"kind": "code"}, "code"),
])
def test_azure_trace_kind_comes_from_the_workload(tmp_path, name, fields, kind):
    write(tmp_path / name, AZURE)
    path = write(tmp_path / "w.yaml", yaml.safe_dump({"trace": name, **fields}))
    assert set(load_workload(path).requests.kind) == {kind}


def test_kind_is_refused_for_a_trace_with_kinds(tmp_path):
    path = trace_workload(tmp_path, HEADER + "0,100,4,chat\n", kind="code")
    one_line(plan("--workload", str(path)), "trace.csv: kind:", "own kind column")


def test_infeasibility_names_the_file_that_set_the_floor(tmp_path):
    result = plan("--fleet", str(fleet_file(tmp_path, SMALL_FLEET)))
    assert result.exit_code == 2, result.output
    # Progress lines come first; the error is the last line.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: infeasible")
    assert "min_quality.code = 75 from default_workload.yaml" in last
