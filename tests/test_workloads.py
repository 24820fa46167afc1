import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from workloads.azure import derive_params, load_azure_trace
from workloads.classes import bin_requests
from workloads.errors import WorkloadError
from workloads.requests import read_request_csv, validate_requests
from workloads.spec import load_workload, parse_workload
from workloads.synthetic import TrafficParams, generate, presets


def test_generate_is_seeded_and_matches_rates():
    traffic = list(presets().values())
    first = generate(traffic, 600, seed=3)
    again = generate(traffic, 600, seed=3)
    other = generate(traffic, 600, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    for params in traffic:
        count = (first.kind == params.kind).sum()
        expected = params.rate_rps * 600
        # Code traffic is bursty (CV ~13), so its count varies more than Poisson's.
        assert abs(count - expected) < 0.5 * expected
    assert first.arrival_s.between(0, 600).all()
    assert (first.input_tokens >= 1).all()
    assert (first.output_tokens >= 1).all()


def test_generated_quantiles_follow_the_parameters():
    chat = presets()["azure-2023-conv"]
    table = generate([chat], 20000, seed=1)
    median = np.median(table.output_tokens)
    assert chat.output_quantiles[9] <= median <= chat.output_quantiles[11]


def test_bundled_params_are_derived_from_the_trace(shared_data):
    root = shared_data / "azure-llm-inference-trace-2023"
    for kind, preset in (("chat", "azure-2023-conv"), ("code", "azure-2023-code")):
        derived = derive_params(load_azure_trace(root, kind), kind)
        assert derived == presets()[preset]


def test_bad_traffic_params_are_refused():
    base = dataclasses.asdict(presets()["azure-2023-conv"])
    with pytest.raises(ValueError, match="rate_rps"):
        TrafficParams(**{**base, "rate_rps": 0})
    with pytest.raises(ValueError, match="input_quantiles"):
        TrafficParams(**{**base, "input_quantiles": (1.0, 2.0)})


def test_validate_requests_names_the_bad_row():
    table = pd.DataFrame({"arrival_s": [0.0, 1.0], "input_tokens": [10, -3],
                          "output_tokens": [5, 5], "kind": ["chat", "chat"]})
    with pytest.raises(WorkloadError, match=r"row 1: input_tokens=-3"):
        validate_requests(table, "t.csv")
    missing = table.drop(columns="output_tokens")
    with pytest.raises(WorkloadError, match="missing column 'output_tokens'"):
        validate_requests(missing, "t.csv")
    nan = table.assign(input_tokens=[10, float("nan")])
    with pytest.raises(WorkloadError, match="row 1"):
        validate_requests(nan, "t.csv")


def test_read_request_csv_accepts_azure_format(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:00.0000000,100,20\n2023-11-16 18:15:02.5000000,50,5\n")
    table = read_request_csv(str(path))
    assert table.arrival_s.tolist() == [0.0, 2.5]
    assert table.input_tokens.tolist() == [100, 50]


def test_bin_requests_partitions_every_request():
    table = generate(list(presets().values()), 900, seed=2)
    classes, labels = bin_requests(table, input_bins=3, output_bins=2)
    assert classes["count"].sum() == len(table)
    assert set(labels) == set(classes.class_id)
    assert len(classes) <= 2 * 3 * 2
    for row in classes.itertuples():
        members = table[labels == row.class_id]
        assert row.input_tokens == pytest.approx(members.input_tokens.mean())
        assert row.context_max == (members.input_tokens + members.output_tokens).max()


def test_default_workload_loads():
    work = load_workload()
    assert work.horizon_s == 3600
    assert set(work.requests.kind) == {"chat", "code"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"traffic": [{"preset": "nope"}]}, "traffic[0].preset"),
        ({"traffic": [{"preset": "azure-2023-conv", "rate_rps": -1}]}, "traffic[0].rate_rps"),
        ({"traffic": [{"preset": "azure-2023-conv"}], "horizon_s": "soon"}, "horizon_s"),
        ({"traffic": [{"kind": "chat"}]}, "traffic[0]."),
        ({}, "traffic"),
        ({"traffic": [{"preset": "azure-2023-conv"}], "colour": 1}, "colour"),
        ({"traffic": [{"preset": "azure-2023-conv"}], "slo": {"chat": {"ttft_s": -1}}},
         "slo.chat.ttft_s"),
    ],
)
def test_bad_workload_files_name_the_field(raw, field):
    with pytest.raises(WorkloadError, match="w.yaml: " + re.escape(field)):
        parse_workload(raw, "w.yaml")


def test_workload_trace_is_relative_to_the_file(tmp_path):
    (tmp_path / "reqs.csv").write_text(
        "arrival_s,input_tokens,output_tokens,kind\n0,100,10,chat\n5,200,20,code\n"
    )
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"trace": "reqs.csv", "horizon_s": 60}))
    work = load_workload(tmp_path / "w.yaml")
    assert len(work.requests) == 2
    assert work.horizon_s == 60


def _azure_csv(path, seconds: list[float], start: str = "2023-11-16 18:15:00") -> None:
    base = pd.Timestamp(start)
    rows = [f"{base + pd.Timedelta(seconds=s)},{100 + i},{10 + i}" for i, s in enumerate(seconds)]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")


def test_several_traces_are_served_together_each_from_its_own_start(tmp_path):
    _azure_csv(tmp_path / "a.csv", [0.0, 4.0, 8.0])
    _azure_csv(tmp_path / "b.csv", [0.0, 1.0], start="2023-11-16 18:17:00")
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"trace": [
        {"path": "a.csv", "kind": "code"}, {"path": "b.csv", "kind": "chat"}], "horizon_s": 10}))
    work = load_workload(tmp_path / "w.yaml")
    requests = work.requests
    assert requests.arrival_s.tolist() == [0.0, 0.0, 1.0, 4.0, 8.0]
    assert requests.kind.tolist() == ["chat", "code", "chat", "code", "code"]
    assert sorted(requests.input_tokens[requests.kind == "code"]) == [100, 101, 102]


@pytest.mark.parametrize(
    ("trace", "extra", "field"),
    [
        ([{"path": "a.csv"}, {"path": "missing.csv"}], {}, "trace[1].path"),
        ([{"path": "a.csv"}], {"kind": "chat"}, "kind"),
        ([], {}, "trace"),
        ([{"path": "a.csv", "colour": 1}], {}, "trace"),
    ],
)
def test_bad_trace_lists_name_the_field(tmp_path, trace, extra, field):
    _azure_csv(tmp_path / "a.csv", [0.0, 1.0])
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"trace": trace, **extra}))
    with pytest.raises(WorkloadError, match=re.escape(f"w.yaml: {field}")):
        load_workload(tmp_path / "w.yaml")


def test_kinds_that_clash_across_traces_are_refused(tmp_path):
    _azure_csv(tmp_path / "a.csv", [0.0])
    _azure_csv(tmp_path / "b.csv", [0.0])
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"trace": [
        {"path": "a.csv", "kind": "chat-1"}, {"path": "b.csv", "kind": "chat_1"}]}))
    with pytest.raises(WorkloadError, match="kind: kinds"):
        load_workload(tmp_path / "w.yaml")
