"""Serving-stack families (energy_models.stacks) and how inputs naming a stack are checked."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from energy_models.registry import UnknownNameError
from energy_models.stacks import DEFAULT_STACK, STACKS, Stack, stack
from scheduler.cli import app
from scheduler.errors import InputError
from scheduler.inventory import Defaults, load_fleet, parse_fleet
from tests.cli_checks import one_line_error

runner = CliRunner()

KNOWN = "vllm, vllm-0.5, hf"
FLEET = {
    "pools": [{"id": "h100", "device": "H100-SXM", "count": 8, "devices_per_node": 8}],
    "llms": ["llama-3.1-8b"],
}


# --- The registry ------------------------------------------------------------------------


def test_registry_holds_the_three_families_and_vllm_is_the_default():
    assert list(STACKS) == ["vllm", "vllm-0.5", "hf"]
    assert DEFAULT_STACK == "vllm"
    assert DEFAULT_STACK in STACKS
    for name, entry in STACKS.items():
        assert isinstance(entry, Stack)
        assert entry.name == name
        assert entry.description
        assert entry.itl_definition
        assert entry.measured_versions
        assert all(version for version in entry.measured_versions)
        assert stack(name) is entry


def test_each_family_names_the_engine_versions_it_was_measured_with():
    assert any("0.11" in v for v in STACKS["vllm"].measured_versions)
    assert any("0.10" in v for v in STACKS["vllm"].measured_versions)
    assert any("0.5.4" in v for v in STACKS["vllm-0.5"].measured_versions)
    assert any("transformers" in v for v in STACKS["hf"].measured_versions)
    # The families define ITL differently: a row's number means what its family says.
    assert len({s.itl_definition for s in STACKS.values()}) == len(STACKS)


@pytest.mark.parametrize("name", ["tgi", "vllm-0.4", "VLLM-0.6", ""])
def test_unknown_stack_names_the_known_ones(name):
    with pytest.raises(UnknownNameError) as caught:
        stack(name)
    message = str(caught.value)
    assert f"unknown serving stack {name!r}" in message
    assert f"known: {KNOWN}" in message
    assert "\n" not in message
    assert caught.value.known == ["vllm", "vllm-0.5", "hf"]


def test_registry_refuses_a_family_twice():
    with pytest.raises(ValueError, match="already registered"):
        STACKS.register("vllm")(STACKS["vllm"])
    assert list(STACKS) == ["vllm", "vllm-0.5", "hf"]


# --- Fleet inventory ---------------------------------------------------------------------


def test_fleet_engine_defaults_to_todays_vllm():
    assert parse_fleet(FLEET, "fleet.yaml").defaults.engine == "vllm"
    assert Defaults().engine == DEFAULT_STACK


@pytest.mark.parametrize("engine", ["vllm", "vllm-0.5", "hf"])
def test_fleet_accepts_every_stack_family(engine):
    fleet = parse_fleet({**FLEET, "defaults": {"engine": engine}}, "fleet.yaml")
    assert fleet.defaults.engine == engine


@pytest.mark.parametrize("engine", ["vllm-0.4", "tgi", "VLLM"])
def test_fleet_with_an_unknown_stack_is_refused_in_one_line(tmp_path, engine):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({**FLEET, "defaults": {"engine": engine}}))
    with pytest.raises(InputError) as caught:
        load_fleet(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "defaults.engine" in message
    assert f"unknown serving stack {engine!r}" in message
    assert f"known: {KNOWN}" in message


def test_plan_with_a_fleet_on_vllm_0_4_exits_2_naming_the_field_and_the_stacks(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({**FLEET, "defaults": {"engine": "vllm-0.4"}}))
    out = tmp_path / "plan.json"
    result = subprocess.run(
        [sys.executable, "-c", "from scheduler.cli import main; main()", "plan", "--fleet",
         str(fleet), "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "defaults.engine" in lines[0]
    assert "unknown serving stack 'vllm-0.4'" in lines[0]
    assert KNOWN in lines[0]
    assert not out.exists()
    assert "Traceback" not in result.stderr


# --- Command line ------------------------------------------------------------------------


def test_predict_with_an_unknown_engine_exits_2_naming_engine():
    line = one_line_error(runner.invoke(app, ["predict", "--llm", "llama-3.1-8b", "--gpu",
                                               "B200", "--engine", "tgi"]))
    assert "--engine" in line
    assert "'tgi'" in line
    for name in STACKS:
        assert name in line


def test_sweetspot_takes_every_family_and_refuses_others_in_one_line():
    """sweetspot prices with the analytical model alone (no shipped predictor)."""
    for name in STACKS:
        result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-8b", "--device", "H100-SXM",
                                     "--input-tokens", "512", "--engine", name])
        assert result.exit_code == 0, (name, result.output)
    result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-8b", "--device", "H100-SXM",
                                 "--input-tokens", "512", "--engine", "tgi"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "'tgi'" in lines[0]
