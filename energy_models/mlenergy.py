"""Loaders for the ML.ENERGY leaderboard data (Chung et al., NeurIPS D&B 2025; Apache-2.0).

v1: HF/FastChat at batch 1 on V100, A40, A100 (J and seconds per response).
v2: vLLM 0.5.4 with batch-size and tensor-parallel sweeps on A100-40GB and H100.
Both report averages over a prompt set, not input lengths; the prompt lengths assumed here are
written down in ``ASSUMED_INPUT_TOKENS``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from energy_models.catalog import devices, llms

# Mean prompt tokens of the prompt sets (not in the data): ShareGPT first turns with the
# FastChat/vLLM chat template, and HumanEval+ problems.
ASSUMED_INPUT_TOKENS = {"chat": 256, "code": 160}

FIT_COLUMNS = (
    "engine", "llm", "device", "input_tokens", "output_tokens", "batch", "tp",
    "energy_j", "time_per_token_s", "task", "source",
)


def _known(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows whose model and GPU the catalogs know, mapped to catalog names; and the rest."""
    llm_catalog, device_catalog = llms(), devices()
    known = table["model"].map(lambda m: m in llm_catalog) & table["gpu"].map(
        lambda g: g in device_catalog
    )
    skipped = sorted(set(table.loc[~known, "model"]) | set())
    kept = table.loc[known].copy()
    kept["llm"] = kept["model"].map(lambda m: llm_catalog.get(m).name)
    kept["device"] = kept["gpu"].map(lambda g: device_catalog.get(g).name)
    return kept, skipped


def load_v2(root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """v2 rows (one per model, GPU, TP and max batch size) and the model names skipped."""
    flat = pd.read_csv(Path(root) / "v2_llm_flat.csv")
    kept, skipped = _known(flat)
    kept = kept[kept["pp"] == 1]
    out = pd.DataFrame(
        {
            "engine": "vllm",
            "llm": kept["llm"],
            "device": kept["device"],
            "input_tokens": kept["task"].map(ASSUMED_INPUT_TOKENS).astype(float),
            "output_tokens": kept["avg_output_tokens"],
            "batch": kept["avg_batch_size"],
            "tp": kept["tp"],
            "energy_j": kept["energy_per_req_J"],
            "time_per_token_s": kept["avg_tpot_s"],
            "task": kept["task"],
            "source": "mlenergy-v2:" + kept["source_file"],
        }
    )
    return out.reset_index(drop=True), skipped


def load_v1(root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """v1 rows (batch 1; chat and instruct prompt sets) and the model names skipped."""
    frames, skipped = [], set()
    for path in sorted((Path(root) / "v1").glob("*_benchmark.csv")):
        gpu, task = path.name.removesuffix("_benchmark.csv").split("_", 1)
        table = pd.read_csv(path).assign(gpu=gpu)
        kept, missed = _known(table)
        skipped.update(missed)
        frames.append(
            pd.DataFrame(
                {
                    "engine": "hf",
                    "llm": kept["llm"],
                    "device": kept["device"],
                    "input_tokens": float(ASSUMED_INPUT_TOKENS["chat"]),
                    "output_tokens": kept["response_length"],
                    "batch": 1.0,
                    "tp": 1,
                    "energy_j": kept["energy"],
                    "time_per_token_s": kept["latency"] / kept["response_length"],
                    "task": task,
                    "source": f"mlenergy-v1:{path.name}",
                }
            )
        )
    return pd.concat(frames, ignore_index=True), sorted(skipped)
