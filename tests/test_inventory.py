import re

import pytest
import yaml

from scheduler.errors import InputError
from scheduler.inventory import load_fleet, parse_fleet

GOOD = {
    "racks": [{"id": "r1", "power_cap_w": 10000}],
    "pools": [{"id": "h100", "device": "H100-SXM", "count": 8, "devices_per_node": 8,
               "rack": "r1", "power_cap_w": 500, "price_per_hour": 4.0}],
    "llms": ["llama-3.1-8b"],
    "defaults": {"slo": {"ttft_s": 1.0, "itl_s": 0.05}, "min_quality": 60,
                 "batch_sizes": [32, 8]},
}


def _with_pool(**changes):
    return {**GOOD, "pools": [{**GOOD["pools"][0], **changes}]}


def test_default_fleet_loads():
    fleet = load_fleet()
    assert {p.device for p in fleet.pools} >= {"H100-SXM", "A100-40GB", "L4"}
    assert any(p.device.startswith("Xeon") for p in fleet.pools)


def test_good_fleet_parses_with_aliases_and_defaults():
    fleet = parse_fleet(_with_pool(device="nvidia h100 80gb hbm3"), "f.yaml")
    assert fleet.pools[0].device == "H100-SXM"
    assert fleet.defaults.batch_sizes == (8, 32)
    assert fleet.defaults.max_utilization == 0.8
    assert fleet.defaults.slo.e2e_s is None


@pytest.mark.parametrize(
    ("raw", "field", "hint"),
    [
        (_with_pool(device="H100-SMX"), "pools[0].device", "did you mean 'H100-SXM'"),
        (_with_pool(count=-4), "pools[0].count", "positive"),
        (_with_pool(count=2.5), "pools[0].count", "whole number"),
        (_with_pool(count=12), "pools[0].devices_per_node", "multiple"),
        (_with_pool(rack="r9"), "pools[0].rack", "declare it under racks"),
        (_with_pool(power_cap_w=10), "pools[0].power_cap_w", "idle power"),
        (_with_pool(colour="red"), "pools[0].colour", "unknown field"),
        ({**GOOD, "llms": ["lama-3.1-8b"]}, "llms[0]", "did you mean 'llama-3.1-8b'"),
        ({**GOOD, "llms": []}, "llms", "missing or empty"),
        ({**GOOD, "pools": []}, "pools", "missing or empty"),
        ({**GOOD, "defaults": {"max_utilization": 1.5}}, "defaults.max_utilization", "at most 1"),
        ({**GOOD, "defaults": {"slo": {"ttft_s": float("nan")}}}, "defaults.slo.ttft_s", "number"),
        ({**GOOD, "defaults": {"engine": "tgi"}}, "defaults.engine",
         "unknown serving stack 'tgi'; known: vllm, vllm-0.5, hf"),
        ([1, 2], "(top level)", "mapping"),
    ],
)
def test_bad_fleet_names_file_and_field(raw, field, hint):
    with pytest.raises(InputError) as info:
        parse_fleet(raw, "fleet.yaml")
    message = str(info.value)
    assert message.startswith(f"fleet.yaml: {field}: ")
    assert re.search(re.escape(hint), message)
    assert "\n" not in message


def test_malformed_yaml_gives_line_and_column(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("pools: [\n  {id: a, device: L4\n")
    with pytest.raises(InputError, match=r"fleet.yaml: line \d+, column \d+: .*fix the YAML"):
        load_fleet(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file; check the path"):
        load_fleet(tmp_path / "absent.yaml")


def test_round_trip_through_a_file(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    fleet = load_fleet(path)
    assert fleet.name == "fleet"
    assert fleet.racks[0].power_cap_w == 10000
