"""Serving-stack families: the engine and its generation move the numbers as much as the GPU.

A family names the stacks whose costs one set of constants and corrections describes. The
measured data behind each family is listed with the engine versions it ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from energy_models.registry import Registry


@dataclass(frozen=True)
class Stack:
    name: str
    description: str
    measured_versions: tuple[str, ...]
    """Engine versions of the training rows of this family."""
    itl_definition: str
    """What the family's measured ITL is."""
    itl_is_step: bool
    """The measured ITL is one decode step (streamed gap; chunked prefill spreads other
    requests' prefills over steps), not the time per output token with prefill stalls."""


MLENERGY_V1_VERSION = "transformers generate via FastChat (ML.ENERGY v1, 2023)"
MLENERGY_V2_VERSION = "vLLM 0.5.4, CUDA 12.4 (ML.ENERGY v2, 2024)"
MLENERGY_V3_VERSION = "vLLM 0.11.1 (ML.ENERGY v3, 2025-26)"
"""The engine version each ML.ENERGY leaderboard row records."""

STACKS: Registry[Stack] = Registry("serving stack")
for _stack in (
    Stack("vllm", "vLLM 0.10 and later (V1 engine: chunked prefill, CUDA graphs, paged KV "
                  "cache), today's default",
          (MLENERGY_V3_VERSION, "vLLM 0.10.1.1 (PowerTrace runs, 2026)"),
          "median gap between consecutive streamed tokens (chunked prefill spreads other "
          "requests' prefills over steps)", itl_is_step=True),
    Stack("vllm-0.5", "vLLM 0.5 (2024: V0 engine, no chunked prefill by default)",
          (MLENERGY_V2_VERSION,),
          "mean time per output token of a request (TPOT), other requests' prefill stalls "
          "included (continuous batching)", itl_is_step=False),
    Stack("hf", "Hugging Face transformers generate, one request at a time",
          (MLENERGY_V1_VERSION,),
          "request latency / generated tokens: mean time per output token, the request's own "
          "prefill included (batch 1)", itl_is_step=False),
):
    STACKS.register(_stack.name)(_stack)

DEFAULT_STACK = "vllm"
CPU_ENGINE = "cpu"
"""The constants CPU pools are priced with (llama.cpp-style decoding; assumed, not fitted)."""


def stack(name: str) -> Stack:
    """The family called ``name``; UnknownNameError lists the known ones."""
    return STACKS.lookup(name)


def describe(engine: str) -> str:
    """What the constants called ``engine`` price, in words: a stack family with the engine
    versions it was measured on, or the CPU constants."""
    if engine == CPU_ENGINE:
        return "CPU decoding (llama.cpp-style), assumed constants"
    found = stack(engine)
    return f"{found.description}; measured on {', '.join(found.measured_versions)}"


def itl_is_step(engine: str) -> bool:
    """Whether ``engine``'s ITL is one decode step (``Stack.itl_is_step``); the CPU constants
    price the time per output token."""
    return engine != CPU_ENGINE and stack(engine).itl_is_step
