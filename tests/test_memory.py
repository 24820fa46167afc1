"""vLLM's memory rules: weights, overheads and paged KV blocks per device, resident sequences
and preemption; checked against the configurations ML.ENERGY v3 ran on H100."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_models.catalog.specs import get_device, get_llm
from energy_models.memory import BLOCK_TOKENS, serving_memory, serving_settings

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "memory_rules.py"
V3_ROWS = 222


def _rules() -> dict:
    return runpy.run_path(str(BENCHMARK), run_name="memory_rules")


def test_every_v3_configuration_that_ran_is_admitted(shared_data):
    rules = _rules()
    rows = pd.read_csv(shared_data / rules["V3_CSV"])
    assert len(rows) == V3_ROWS
    table = rules["assess"](rows)
    unresolved = sorted(set(rows.model_id) - set(table.model_id))
    # Printed so a run shows how much of the data the catalog covers; all of it once every
    # v3 model is catalogued.
    print(f"{len(table)} of {len(rows)} v3 configurations resolve; unresolved models: "
          f"{unresolved}")
    assert len(table) > len(rows) // 2
    refused = table[~table.admitted]
    assert refused.empty, refused.problem.tolist()


def test_planner_candidates_run_every_measured_lowest_energy_setting(shared_data):
    """Per (model, task) the v3 setting with the least J/token is one the planner considers by
    default, or is covered by a smaller max_num_seqs that keeps as many sequences resident."""
    rules = _rules()
    table = rules["assess"](pd.read_csv(shared_data / rules["V3_CSV"]))
    best = table.loc[table.groupby(["model_id", "task"]).energy_per_token_j.idxmin()]
    assert len(best) >= 16
    assert best.covered.all(), best.loc[~best.covered, ["model_id", "task", "max_num_seqs"]]
    assert best.in_candidates.mean() >= 0.9


def test_v3_rows_resolve_to_the_row_precision(shared_data):
    rules = _rules()
    rows = pd.read_csv(shared_data / rules["V3_CSV"])
    fp8 = rows[rows.model_id == "meta-llama/Llama-3.1-405B-Instruct-FP8"].iloc[0]
    spec = rules["row_llm"](fp8)
    assert spec.weight_dtype == "fp8"
    # The FP8 release quantizes only the MLP weights of 124 of 126 layers (124 x 3 x 16384 x
    # 53248 = 324.5 B parameters, one byte each); the rest stays BF16: weights as served are
    # 324.5 + 2 x (405.9 - 324.5) = 487.2 GB, between one and two bytes per parameter.
    mlp_fp8_b = 124 * 3 * 16384 * 53248 / 1e9
    assert spec.weight_gb == pytest.approx(mlp_fp8_b + 2 * (spec.params_b - mlp_fp8_b),
                                           rel=0.01)
    assert spec.params_b < spec.weight_gb < 2 * spec.params_b
    assert spec.layers == get_llm("llama-3.1-405b").layers


def test_weights_that_do_not_fit_are_refused_with_the_numbers():
    memory = serving_memory(get_llm("llama-3.1-70b"), get_device("H100-SXM"), 1, 8, 1000)
    assert memory.problem is not None
    assert memory.resident_seqs == 0
    for part in ("llama-3.1-70b", "H100-SXM", "tp 1", f"({memory.weights_gb:.1f} GB)",
                 "offers 72.0 GB"):
        assert part in memory.problem


def test_min_concurrency_is_what_must_fit():
    llm, h100 = get_llm("llama-3.1-8b"), get_device("H100-SXM")
    one = serving_memory(llm, h100, 1, 1, 100_000)
    assert one.problem is None
    assert one.seq_capacity >= 1
    many = serving_memory(llm, h100, 1, 1, 100_000, min_concurrency=one.seq_capacity + 1)
    assert many.problem is not None
    assert f"{one.seq_capacity + 1} sequence(s) of 100,000 tokens" in many.problem


def test_beyond_capacity_shrinks_resident_sequences_and_preempts():
    llm, h100 = get_llm("llama-3.1-8b"), get_device("H100-SXM")
    fits = serving_memory(llm, h100, 1, 64, 2000)
    assert not fits.preempted
    assert fits.resident_seqs == 64
    assert fits.recompute_tokens_per_seq == 0
    over = serving_memory(llm, h100, 1, 4096, 2000)
    assert over.problem is None
    assert over.preempted
    assert over.resident_seqs == over.seq_capacity < 4096
    assert 0 < over.recompute_tokens_per_seq < 2000
    assert over.memory_need_gb <= over.usable_gb <= h100.memory_gb


def test_kv_is_counted_in_whole_blocks_and_split_over_kv_heads():
    llm, h100 = get_llm("llama-3.1-8b"), get_device("H100-SXM")
    one_token = serving_memory(llm, h100, 1, 1, 1)
    assert one_token.kv_per_seq_gb * 1e9 == pytest.approx(BLOCK_TOKENS * llm.kv_bytes_per_token)
    assert serving_memory(llm, h100, 1, 1, BLOCK_TOKENS).kv_per_seq_gb == one_token.kv_per_seq_gb
    tp8 = serving_memory(llm, h100, 8, 1, 1)
    assert tp8.kv_per_seq_gb == pytest.approx(one_token.kv_per_seq_gb / 8)  # 8 KV heads
    four_heads = dataclasses.replace(llm, kv_heads=4)
    # Past the KV heads vLLM replicates them: tp 8 with 4 heads splits the cache 4 ways.
    assert serving_memory(four_heads, h100, 8, 1, 1).kv_per_seq_gb == pytest.approx(
        serving_memory(four_heads, h100, 4, 1, 1).kv_per_seq_gb)


def test_expert_parallel_places_whole_experts():
    moe = dataclasses.replace(get_llm("qwen3-30b-a3b"), experts=128, experts_per_token=8)
    h100 = get_device("H100-SXM")
    even = serving_memory(moe, h100, 8, 8, 1000, expert_parallel=True)
    assert even.weights_gb == pytest.approx(moe.weight_gb / 8)
    uneven = serving_memory(moe, h100, 6, 8, 1000, expert_parallel=True)
    assert uneven.weights_gb > moe.weight_gb / 6


def test_settings_keep_one_per_resident_concurrency():
    llm, h100 = get_llm("llama-3.1-8b"), get_device("H100-SXM")
    found = serving_settings(llm, h100, (1,), (8, 4096, 8192), 2000)
    assert [m.max_num_seqs for m in found] == [8, 4096]


SETTING = {
    "llm": st.sampled_from(["llama-3.1-8b", "qwen2.5-14b", "gemma-2-27b", "llama-3.1-70b",
                            "gpt-oss-120b"]),
    "gpu": st.sampled_from(["L4", "A100-40GB", "H100-SXM", "H100-NVL", "B200"]),
    "tp": st.sampled_from([1, 2, 4, 8]),
    "max_num_seqs": st.integers(1, 4096),
    "context": st.floats(1, 100_000),
}


@settings(max_examples=60, deadline=None)
@given(**SETTING, extra_gb=st.floats(0.1, 200))
def test_more_memory_never_holds_fewer_sequences(llm, gpu, tp, max_num_seqs, context,
                                                 extra_gb):
    spec, device = get_llm(llm), get_device(gpu)
    bigger = dataclasses.replace(device, memory_gb=device.memory_gb + extra_gb)
    small = serving_memory(spec, device, tp, max_num_seqs, context)
    large = serving_memory(spec, bigger, tp, max_num_seqs, context)
    assert large.resident_seqs >= small.resident_seqs
    assert large.problem is None or small.problem is not None


@settings(max_examples=60, deadline=None)
@given(**SETTING, longer=st.floats(0, 100_000))
def test_longer_context_never_holds_more_sequences(llm, gpu, tp, max_num_seqs, context,
                                                   longer):
    spec, device = get_llm(llm), get_device(gpu)
    short = serving_memory(spec, device, tp, max_num_seqs, context)
    long = serving_memory(spec, device, tp, max_num_seqs, context + longer)
    assert long.resident_seqs <= short.resident_seqs
    assert long.memory_need_gb <= long.usable_gb or long.problem is not None
