"""Loaders for the ML.ENERGY leaderboard data (Chung et al., NeurIPS D&B 2025).

v1: HF/FastChat at batch 1 on V100, A40, A100 (J and seconds per response); stack ``hf``.
v2: vLLM 0.5.4 with batch-size and tensor-parallel sweeps on A100-40GB and H100; ``vllm-0.5``.
v3: vLLM 0.11.1 on H100, 18 models (dense, MoE, hybrid; BF16, FP8, MXFP4), ``max_num_seqs``
sweeps; ``vllm``.
All report averages over a prompt set, not input lengths; the prompt lengths assumed here are
written down in ``ASSUMED_INPUT_TOKENS``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from energy_models.catalog.specs import devices, llms
from energy_models.measurements.schema import Measurements, validate
from energy_models.stacks import MLENERGY_V1_VERSION, MLENERGY_V2_VERSION, MLENERGY_V3_VERSION

# Mean prompt tokens of the prompt sets (not in the data): ShareGPT first turns with the
# FastChat/vLLM chat template, and HumanEval+ problems.
ASSUMED_INPUT_TOKENS = {"chat": 256, "code": 160, "lm-arena-chat": 256, "gpqa": 320,
                       "sourcegraph-fim": 1024}
"""Mean prompt tokens per task, chat template included. v1/v2: ShareGPT first turns and
HumanEval+ problems. v3: LMArena prompts (like ShareGPT's), a GPQA-diamond question with its
four options and instructions, and a Sourcegraph fill-in-the-middle file prefix and suffix
(its median ITL sits furthest below the mean time per token: long prefills interleave)."""
V3_FILE = "v3_h100_llm_flat.csv"

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


def _dropped_unknown(table: pd.DataFrame, kept: pd.DataFrame, origin: str) -> list[str]:
    """Rows whose model or GPU no catalog knows, one line each."""
    missing = table.index.difference(kept.index)
    return [f"{origin} row {i + 1}: model {table.at[i, 'model']!r} is not in the LLM catalog"
            for i in missing]


def _v2(root: str | Path) -> tuple[Measurements, list[str]]:
    path = Path(root) / "v2_llm_flat.csv"
    flat = pd.read_csv(path)
    origin = f"mlenergy-v2:{path.name}"
    known, skipped = _known(flat)
    kept = known[known["pp"] == 1]
    dropped = _dropped_unknown(flat, known, origin) + [
        f"{origin} row {i + 1}: pipeline parallelism (pp {pp}) is not modelled"
        for i, pp in known.loc[known["pp"] != 1, "pp"].items()
    ]
    table = pd.DataFrame({
        "llm": kept["llm"], "device": kept["device"], "tp": kept["tp"],
        "batch": kept["avg_batch_size"],
        "input_tokens": kept["task"].map(ASSUMED_INPUT_TOKENS).astype(float),
        "output_tokens": kept["avg_output_tokens"],
        "energy_j": kept["energy_per_req_J"],
        "runtime_s": kept["avg_output_tokens"] * kept["avg_tpot_s"],
        "itl_s": kept["avg_tpot_s"],
        "mean_power_w": kept["energy_per_req_J"] * kept["token_tput_tok_s"]
        / kept["avg_output_tokens"],
        "energy_kind": "gross", "engine": "vllm-0.5", "engine_version": MLENERGY_V2_VERSION,
        "config": kept["task"] + ".bs" + kept["max_batch_size"].astype(str),
        "source": "mlenergy-v2:" + kept["source_file"],
    })
    result = validate(table, origin, kept.index.to_series() + 1)
    return Measurements(result.table, dropped + result.dropped), skipped


def _v3(root: str | Path) -> tuple[Measurements, list[str]]:
    """ML.ENERGY v3 (``v3_h100_llm_flat.csv`` under ``root``) as measurement-schema rows.

    ``tp`` counts every GPU of the replica (tensor- or expert-parallel; ``config`` marks
    expert parallelism), ``batch`` is the realised mean of running sequences, ``itl_s`` the
    median inter-token latency, ``runtime_s`` a request's decode time (output tokens x mean
    time per token, batch / throughput) and ``mean_power_w`` the power of all its GPUs.
    """
    path = Path(root) / V3_FILE
    flat = pd.read_csv(path).rename(columns={"model_id": "model", "gpu_model": "gpu"})
    origin = f"mlenergy-v3:{path.name}"
    kept, skipped = _known(flat)
    dropped = _dropped_unknown(flat, kept, origin)
    expert = kept["expert_parallel"] > 1
    table = pd.DataFrame({
        "llm": kept["llm"], "device": kept["device"], "tp": kept["num_gpus"],
        "batch": kept["avg_batch_size"],
        "input_tokens": kept["task"].map(ASSUMED_INPUT_TOKENS).astype(float),
        "output_tokens": kept["avg_output_len"],
        "energy_j": kept["energy_per_token_joules"] * kept["avg_output_len"],
        "runtime_s": kept["avg_output_len"] * kept["avg_batch_size"]
        / kept["output_throughput_tokens_per_sec"],
        "itl_s": kept["median_itl_ms"] / 1e3,
        "mean_power_w": kept["avg_power_watts"],
        "energy_kind": "gross", "engine": "vllm", "engine_version": MLENERGY_V3_VERSION,
        "config": kept["task"] + ".seqs" + kept["max_num_seqs"].astype(str)
        + expert.map({True: ".ep", False: ""}),
        "source": origin,
    })
    result = validate(table, origin, kept.index.to_series() + 1)
    return Measurements(result.table, dropped + result.dropped), skipped


def _v1_file(path: Path) -> tuple[Measurements, list[str]]:
    gpu, task = path.name.removesuffix("_benchmark.csv").split("_", 1)
    table = pd.read_csv(path).assign(gpu=gpu)
    origin = f"mlenergy-v1:{path.name}"
    kept, skipped = _known(table)
    rows = pd.DataFrame({
        "llm": kept["llm"], "device": kept["device"], "tp": 1, "batch": 1.0,
        "input_tokens": float(ASSUMED_INPUT_TOKENS["chat"]),
        "output_tokens": kept["response_length"], "energy_j": kept["energy"],
        "runtime_s": kept["latency"], "energy_kind": "gross", "engine": "hf",
        "engine_version": MLENERGY_V1_VERSION, "config": task, "source": origin,
    })
    part = validate(rows, origin, kept.index.to_series() + 1)
    return Measurements(part.table, _dropped_unknown(table, kept, origin) + part.dropped), skipped


def _v1(root: str | Path) -> tuple[Measurements, list[str]]:
    parts = [_v1_file(path) for path in sorted((Path(root) / "v1").glob("*_benchmark.csv"))]
    measured = sum((part for part, _ in parts[1:]), parts[0][0])
    return measured, sorted({name for _, missed in parts for name in missed})


def measurements_v2(root: str | Path) -> Measurements:
    """v2 as measurement-schema rows: vLLM 0.5.4, steady-state averages per configuration.

    ``batch`` is the realised average batch; ``runtime_s`` is output tokens x TPOT (v2 gives
    no time to first token) and ``itl_s`` is TPOT, which includes other requests' prefills.
    ``mean_power_w`` (all ``tp`` GPUs) is energy per request x requests per second, from the
    token throughput: the reported average batch exceeds throughput x TPOT by up to 2.5x, so
    energy x batch / runtime would overstate power past the GPUs' TDP.
    """
    return _v2(root)[0]


def measurements_v3(root: str | Path) -> Measurements:
    """v3 as measurement-schema rows (see ``_v3``)."""
    return _v3(root)[0]


def measurements_v1_file(path: str | Path) -> Measurements:
    """One v1 ``{GPU}_{task}_benchmark.csv`` as measurement-schema rows (HF/FastChat, batch 1,
    averages over the prompt set)."""
    return _v1_file(Path(path))[0]


def measurements_v1(root: str | Path) -> Measurements:
    """Every v1 file under ``root/v1``."""
    return _v1(root)[0]


def _fit_rows(measured: Measurements, time_per_token_s: pd.Series) -> pd.DataFrame:
    """Measurement rows in the analytical fit's columns (FIT_COLUMNS)."""
    t = measured.table
    return pd.DataFrame({
        "engine": t["engine"], "llm": t["llm"], "device": t["device"],
        "input_tokens": t["input_tokens"], "output_tokens": t["output_tokens"],
        "batch": t["batch"], "tp": t["tp"], "energy_j": t["energy_j"],
        "time_per_token_s": time_per_token_s, "task": t["config"].str.split(".").str[0],
        "source": t["source"],
    })


def load_v2(root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """v2 rows for the analytical fit (time per token is TPOT) and the model names skipped."""
    measured, skipped = _v2(root)
    return _fit_rows(measured, measured.table["itl_s"]), skipped


def load_v1(root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """v1 rows for the analytical fit (batch 1; chat and instruct prompt sets) and the model
    names skipped."""
    measured, skipped = _v1(root)
    t = measured.table
    return _fit_rows(measured, t["runtime_s"] / t["output_tokens"]), skipped


def load_v3(root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """v3 rows for the analytical fit (time per token is the mean, batch / throughput) and the
    model names skipped."""
    measured, skipped = _v3(root)
    t = measured.table
    return _fit_rows(measured, t["runtime_s"] / t["output_tokens"]), skipped
