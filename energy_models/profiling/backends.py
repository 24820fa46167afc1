"""Inference backends the profiling harness can drive, chosen by name.

``hf-random`` runs a Hugging Face ``transformers`` causal LM built from a catalogued shape with
random weights: nothing is downloaded, and time and energy depend on the shapes, not on the
weight values. Each catalogued dense model becomes a Llama-architecture graph with its layers,
widths, heads, KV heads and vocabulary; the real model's extras (biases, tied embeddings, soft
caps) change little of the work and are left out; the output layer shares the embedding
table where that matches the catalogued parameter count. Generation is greedy, with the KV cache on,
and always produces exactly the asked number of tokens.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from energy_models.catalog.specs import LlmSpec
from energy_models.errors import MeasurementError, MeterUnavailableError
from energy_models.profiling.harness import Backend, Generation
from energy_models.registry import Registry

SHAPE_TOLERANCE = 0.05
"""How far the built graph's parameter count may stray from the catalogued model's."""
BackendFactory = Callable[..., Backend]
BACKENDS: Registry[BackendFactory] = Registry("profiling backend")


def make_backend(name: str, llm: LlmSpec, **options: Any) -> Backend:
    return BACKENDS.lookup(name)(llm, **options)


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MeterUnavailableError(f"the hf-random backend needs {module}: "
                                    f"`pip install 'wattsched[hf]'`") from None


def llama_parameters(llm: LlmSpec, tied: bool) -> int:
    """Parameters of a Llama-architecture graph with ``llm``'s shape."""
    h, hd = llm.hidden_size, llm.head_dim_
    attention = h * hd * (2 * llm.heads + 2 * llm.kv_heads)
    layer = attention + 3 * h * llm.intermediate_size + 2 * h
    embeddings = llm.vocab_size * h * (1 if tied else 2)
    return llm.layers * layer + embeddings + h


def tied_embeddings(llm: LlmSpec) -> bool:
    """Whether the output layer shares the embedding table: whichever count is nearer the
    catalogued parameters (small models tie them)."""
    params = llm.params_b * 1e9
    return abs(llama_parameters(llm, True) - params) < abs(llama_parameters(llm, False) - params)


def hf_config(llm: LlmSpec, max_positions: int) -> Any:
    """A ``transformers`` Llama config with the catalogued shape of ``llm``."""
    if llm.active_params_b < llm.params_b:
        raise MeasurementError(f"--llm: {llm.name} is a mixture of experts; the hf-random "
                               f"backend builds dense models only")
    tied = tied_embeddings(llm)
    built = llama_parameters(llm, tied) / 1e9
    if abs(built / llm.params_b - 1) > SHAPE_TOLERANCE:
        raise MeasurementError(
            f"--llm: a Llama-architecture graph with {llm.name}'s shape has {built:.2f} B "
            f"parameters, not the catalogued {llm.params_b:g} B (its MLP or attention differs); "
            f"choose a Llama-like model (Llama, Mistral, Qwen, Gemma, Phi-3)")
    transformers = _import("transformers")
    return transformers.LlamaConfig(
        vocab_size=llm.vocab_size, hidden_size=llm.hidden_size,
        intermediate_size=llm.intermediate_size, num_hidden_layers=llm.layers,
        num_attention_heads=llm.heads, num_key_value_heads=llm.kv_heads,
        head_dim=llm.head_dim_, max_position_embeddings=max_positions,
        tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
        pad_token_id=0)


class _TokenClock:
    """A generation streamer that notes when each new token is ready on the device."""

    def __init__(self, sync: Callable[[], None]):
        self.sync = sync
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True  # The first call carries the prompt.
            return
        self.sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@BACKENDS.register("hf-random")
class HfRandomBackend:
    """A catalogued shape with random weights, run by ``transformers``' ``generate``."""

    name = "hf-random"
    engine = "hf"

    def __init__(self, llm: LlmSpec, device: str = "cuda", dtype: str = "bfloat16",
                 seed: int = 0, max_positions: int = 8192):
        self.llm = llm
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.max_positions = max_positions
        self._torch: Any = None
        self._model: Any = None
        self._generator: Any = None

    def load(self) -> None:
        torch = _import("torch")
        transformers = _import("transformers")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise MeterUnavailableError("the hf-random backend needs CUDA, which torch cannot see "
                                        "here; install a CUDA build of torch")
        config = hf_config(self.llm, self.max_positions)
        dtype = getattr(torch, self.dtype)
        torch.manual_seed(self.seed)
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        with torch.device(self.device):
            model = transformers.AutoModelForCausalLM.from_config(config, **{key: dtype})
        self._model = model.eval()
        self._torch = torch
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    @property
    def parameters_b(self) -> float:
        return sum(p.numel() for p in self._model.parameters()) / 1e9

    def version(self) -> str:
        transformers = _import("transformers")
        torch = _import("torch")
        cuda = torch.version.cuda or "none"
        return f"transformers {transformers.__version__}, torch {torch.__version__}, CUDA {cuda}"

    def synchronize(self) -> None:
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.synchronize(self.device)

    def generate(self, input_tokens: int, output_tokens: int, batch: int) -> Generation:
        if self._model is None:
            self.load()
        if input_tokens + output_tokens > self.max_positions:
            raise MeasurementError(f"grid: {input_tokens} + {output_tokens} tokens exceed the "
                                   f"{self.max_positions} positions built")
        torch = self._torch
        ids = torch.randint(3, self.llm.vocab_size, (batch, input_tokens),
                            generator=self._generator, device=self.device)
        clock = _TokenClock(self.synchronize)
        self.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                use_cache=True, max_new_tokens=output_tokens, min_new_tokens=output_tokens,
                pad_token_id=0, streamer=clock)
        generated = out.shape[1] - input_tokens
        times = clock.times
        itl = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
        return Generation(generated, times[0] - start if times else None, itl)
