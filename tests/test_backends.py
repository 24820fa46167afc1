"""The backend registry and the hf-random backend (its model tests need torch and transformers,
installed with `pip install 'wattsched[hf]'`, and skip without them)."""

import dataclasses

import pytest

from energy_models.catalog.specs import get_llm, llms
from energy_models.errors import MeasurementError, MeterUnavailableError
from energy_models.measurements.schema import read_table
from energy_models.meters import EnergyMonitor, nvml
from energy_models.profiling.backends import (
    BACKENDS,
    hf_config,
    llama_parameters,
    make_backend,
    tied_embeddings,
)
from energy_models.profiling.harness import Grid, IdlePolicy, ProfileSettings, profile
from energy_models.registry import UnknownNameError
from tests.fakes import FakeGpu, FakeNvml

_SHAPE = dataclasses.replace(get_llm("llama-3.2-1b"), layers=2, hidden_size=64, heads=4,
                             kv_heads=2, intermediate_size=128, vocab_size=500, head_dim=16)
TINY = dataclasses.replace(_SHAPE, params_b=llama_parameters(_SHAPE, tied=False) / 1e9)


def test_registry_refuses_a_second_backend_of_the_same_name():
    with pytest.raises(ValueError, match="'hf-random' is already registered"):
        BACKENDS.register("hf-random")(lambda llm: None)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="known: hf-random"):
        make_backend("trt-llm", get_llm("llama-3.1-8b"))


@pytest.mark.parametrize(("name", "tied"), [("llama-3.1-8b", False), ("llama-3.2-1b", True),
                                            ("gemma-2-9b", True), ("qwen2.5-14b", False)])
def test_built_shape_matches_the_catalogued_parameter_count(name, tied):
    llm = get_llm(name)
    assert tied_embeddings(llm) is tied
    assert llama_parameters(llm, tied) / 1e9 == pytest.approx(llm.params_b, rel=0.01)


def test_llama_like_catalog_entries_are_buildable():
    dense = [m for m in llms() if m.active_params_b == m.params_b]
    close = [m.name for m in dense
             if abs(llama_parameters(m, tied_embeddings(m)) / 1e9 / m.params_b - 1) <= 0.05]
    assert {"llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "qwen2.5-14b",
            "phi-3-medium", "mistral-7b"} <= set(close)


def test_mixture_of_experts_and_non_llama_shapes_are_refused():
    with pytest.raises(MeasurementError, match="mixture of experts"):
        hf_config(get_llm("mixtral-8x7b"), 4096)
    with pytest.raises(MeasurementError, match=r"catalogued 7\.22 B"):
        hf_config(get_llm("falcon-7b"), 4096)


def test_config_carries_the_catalogued_shape():
    pytest.importorskip("transformers")
    llm = get_llm("llama-3.1-8b")
    config = hf_config(llm, 4096)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads, config.intermediate_size, config.vocab_size,
            config.head_dim) == (32, 4096, 32, 8, 14336, 128256, 128)
    assert config.tie_word_embeddings is False


def test_hf_random_generates_exactly_the_asked_tokens_with_timings():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    backend = make_backend("hf-random", TINY, device="cpu", dtype="float32")
    backend.load()
    assert backend.parameters_b * 1e9 == llama_parameters(TINY, tied_embeddings(TINY))
    result = backend.generate(12, 6, 3)
    assert result.output_tokens == 6
    assert result.ttft_s > 0
    assert result.itl_s > 0
    assert "transformers" in backend.version()
    with pytest.raises(MeasurementError, match="positions"):
        backend.generate(backend.max_positions, 1, 1)


def test_hf_random_without_cuda_says_so():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(MeterUnavailableError, match="CUDA"):
        make_backend("hf-random", TINY).load()


def test_harness_measures_hf_random_into_schema_rows(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    found, _ = nvml.visible_gpus(FakeNvml([FakeGpu()]), {})
    backend = make_backend("hf-random", TINY, device="cpu", dtype="float32")
    monitor = EnergyMonitor(found, sync=backend.synchronize)
    quick = IdlePolicy(steady_s=0.01, poll_s=0.005, timeout_s=1, idle_window_s=0.01)
    settings = ProfileSettings(TINY.name, "H100-SXM", repetitions=1, warmup=0, idle=quick)
    profile(backend, Grid((8, 16), (4,), (1, 2)), settings, monitor, found,
            tmp_path / "runs.csv")
    measurements = read_table(tmp_path / "runs.csv")
    assert measurements.dropped == []
    table = measurements.table
    assert sorted(zip(table["input_tokens"], table["batch"], strict=True)) == [
        (8, 1), (8, 2), (16, 1), (16, 2)]
    assert set(table["output_tokens"]) == {4}
    assert (table["ttft_s"] > 0).all()
    assert (table["itl_s"] > 0).all()
    assert set(table["engine"]) == {"hf"}
