"""vLLM's memory rules against the configurations ML.ENERGY v3 really ran on H100.

    python benchmarks/memory_rules.py [--data ../shared/data]

For every configuration: does `serving_memory` admit it, how many sequences it keeps resident
beside the measured mean batch, and whether the previous rule (every sequence holding its full
context at once) refused it. Per (model, task) it prints the measured lowest-J/token setting,
whether it is admitted and whether the planner's candidate settings (``serving_settings`` over
the fleet's default ``batch_sizes`` at the row's GPU count) hold it, or a setting keeping at
least as many sequences resident. Prompt lengths are not published: the mean context is 256 prompt
tokens plus half the mean output. Skips (exit 0) when the data is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pandas as pd

from energy_models.catalog.specs import LlmSpec, get_device, llms
from energy_models.memory import MAX_NUM_SEQS_OPTIONS, serving_memory, serving_settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
V3_CSV = Path("mlenergy-leaderboard-v3-h100") / "v3_h100_llm_flat.csv"
PROMPT_TOKENS = 256
WEIGHT_DTYPES = {"bfloat16": "bf16", "fp8": "fp8", "mxfp4": "mxfp4"}
# Release suffixes that change neither shape nor size: the family entry gives the shape.
VARIANT = re.compile(r"-(FP8|Instruct|Thinking|Coder|2507|it)(?=-|$)", re.IGNORECASE)
# The previous rule: weights + max_num_seqs full contexts within 0.9 x memory - 1.5 GB.
OLD_UTILIZATION, OLD_OVERHEAD_GB = 0.9, 1.5


def _family_key(model_id: str) -> str:
    return VARIANT.sub("", model_id.split("/")[-1]).replace("Coder-", "").lower()


def row_llm(row: pd.Series) -> LlmSpec | None:
    """The catalog entry of the row's model, served at the row's precision; else one of the
    same family with the row's parameter counts and precision; else None."""
    dtype = WEIGHT_DTYPES[row.weight_precision]
    exact = [m for m in llms() if row.model_id.lower() in
             {m.hf_id.lower(), m.name.lower(), *(a.lower() for a in m.aliases)}]
    if exact:
        spec = exact[0]
        if spec.weight_dtype == dtype or spec.served_weight_gb is not None:
            return spec
        return dataclasses.replace(spec, weight_dtype=dtype)
    key = _family_key(row.model_id)
    family = [m for m in llms() if _family_key(m.hf_id) == key]
    if not family:
        return None
    return dataclasses.replace(family[0], name=row.model_id, hf_id=row.model_id,
                               params_b=float(row.total_params_billions),
                               active_params_b=float(row.activated_params_billions),
                               weight_dtype=dtype, served_weight_gb=None, aliases=())


def mean_context_tokens(row: pd.Series) -> float:
    return PROMPT_TOKENS + row.avg_output_len / 2


def assess(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per configuration whose model resolves: the new rule's verdict and the old."""
    out = []
    for row in rows.itertuples():
        spec = row_llm(pd.Series(row._asdict()))
        if spec is None:
            continue
        device = get_device(row.gpu_model)
        context = mean_context_tokens(pd.Series(row._asdict()))
        memory = serving_memory(spec, device, int(row.num_gpus), int(row.max_num_seqs),
                                context, expert_parallel=row.expert_parallel > 1)
        # The planner keeps one setting per resident concurrency: a max_num_seqs it drops is
        # covered by a smaller one that keeps at least as many sequences resident.
        candidates = serving_settings(spec, device, (int(row.num_gpus),), MAX_NUM_SEQS_OPTIONS,
                                      context)
        full_context = PROMPT_TOKENS + row.avg_output_len
        old_need_gb = (spec.weight_gb + row.max_num_seqs * full_context
                       * spec.kv_bytes_per_token / 1e9) / row.num_gpus
        out.append({
            "model_id": row.model_id, "task": row.task, "gpus": int(row.num_gpus),
            "ep": int(row.expert_parallel), "max_num_seqs": int(row.max_num_seqs),
            "energy_per_token_j": row.energy_per_token_joules,
            "measured_batch": row.avg_batch_size, "seq_capacity": memory.seq_capacity,
            "resident_seqs": memory.resident_seqs, "preempted": memory.preempted,
            "admitted": memory.problem is None, "problem": memory.problem,
            "in_candidates": any(c.max_num_seqs == row.max_num_seqs for c in candidates),
            "covered": any(c.resident_seqs >= memory.resident_seqs for c in candidates),
            "old_admitted": old_need_gb <= device.memory_gb * OLD_UTILIZATION - OLD_OVERHEAD_GB,
        })
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    path = args.data / V3_CSV
    if not path.is_file():
        print(f"skipped: {path} not found")
        return 0
    rows = pd.read_csv(path)
    table = assess(rows)
    unresolved = sorted(set(rows.model_id) - set(table.model_id))
    print(f"{len(table)} of {len(rows)} configurations resolve to an LLM spec; "
          f"{len(unresolved)} model(s) not yet catalogued: {', '.join(unresolved) or 'none'}")
    print(f"admitted: {int(table.admitted.sum())} of {len(table)} (previous rule: "
          f"{int(table.old_admitted.sum())}); preempted (max_num_seqs above capacity): "
          f"{int(table.preempted.sum())}; measured mean batch above the predicted capacity "
          f"by over 5%: {int((table.measured_batch > 1.05 * table.seq_capacity).sum())}")
    for problem in table.problem.dropna():
        print(f"refused: {problem}")
    best = table.loc[table.groupby(["model_id", "task"]).energy_per_token_j.idxmin()]
    print("\nMeasured lowest-J/token setting per (model, task)")
    view = best[["model_id", "task", "gpus", "ep", "max_num_seqs", "energy_per_token_j",
                 "measured_batch", "seq_capacity", "admitted", "old_admitted",
                 "in_candidates", "covered"]]
    print(view.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"lowest-J/token settings admitted: {int(best.admitted.sum())} of {len(best)} "
          f"(previous rule: {int(best.old_admitted.sum())}); in the planner's candidate set: "
          f"{int(best.in_candidates.sum())} of {len(best)}, covered by one keeping as many "
          f"sequences resident: {int(best.covered.sum())} of {len(best)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
