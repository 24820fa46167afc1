"""``wattsched predict`` and ``wattsched rank-gpus``: power, ITL and energy per token of an
LLM on any catalogued GPU, measured or not, from the shipped predictor."""

from __future__ import annotations

import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from energy_models.stacks import DEFAULT_STACK
from scheduler.console import err, user_errors, wide_console
from scheduler.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from energy_models.catalog.specs import LlmSpec
    from energy_models.predictor.model import Calibration, Predictor

RANK_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
UNSEEN_TEXT = {"pair": "GPU and LLM both in the training data",
               "gpu": "GPU not in the training data", "llm": "LLM not in the training data"}


class PredictFormat(str, Enum):
    table = "table"
    json = "json"


LlmOption = Annotated[str | None, typer.Option("--llm", help="LLM (catalog name or alias).")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--llm-config", help="A Hugging Face config.json (or its folder) for an LLM outside the "
                         "catalog.")]
InputOption = Annotated[float, typer.Option(help="Prompt tokens per request.")]
OutputOption = Annotated[float, typer.Option(help="Generated tokens per request.")]
EngineOption = Annotated[str, typer.Option(help="Serving-stack family: vllm (0.10 and later), vllm-0.5 or hf; for another stack pick the nearest and --calibrate.")]  # noqa: E501
CalibrateOption = Annotated[Path | None, typer.Option(
    "--calibrate", help="Your own measurements (measurement schema, CSV or Parquet) of this "
                        "stack on any GPU; predictions are rescaled to them.")]
FormatOption = Annotated[PredictFormat, typer.Option("--format", help="What to print on stdout.")]


def _llm(llm: str | None, llm_config: Path | None) -> tuple[LlmSpec, dict[str, LlmSpec]]:
    """The LLM's spec and, for a config.json, the extra name the models must know."""
    from energy_models.catalog.hf_config import llm_from_config
    from energy_models.catalog.specs import get_llm

    if (llm is None) == (llm_config is None):
        raise InputError("command line", "--llm/--llm-config", "give exactly one of them")
    if llm is not None:
        return get_llm(llm), {}
    spec = llm_from_config(llm_config)
    return spec, {spec.name: spec}


def _check_numbers(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise InputError("command line", f"--{name.replace('_', '-')}",
                             f"must be a positive number, got {value:g}")


def _calibration(path: Path | None, predictor: Predictor, engine: str) -> Calibration | None:
    from energy_models.catalog.specs import get_device
    from energy_models.errors import CalibrationError
    from energy_models.measurements.schema import read_table
    from energy_models.predictor.model import Calibration

    if path is None:
        return None
    measured = read_table(path)
    if measured.table.empty:
        raise InputError(str(path), "rows", "no usable calibration row; "
                         + (measured.dropped[0] if measured.dropped else "the table is empty"))
    cpus = sorted(d for d in measured.table["device"].unique() if get_device(d).kind == "cpu")
    if cpus:
        raise InputError(str(path), "device", f"{cpus[0]} is a CPU; the predictor covers GPUs, "
                         f"so calibrate it with runs on GPUs only")
    try:
        return Calibration.fit(predictor, measured.table, engine)
    except CalibrationError as exc:
        raise InputError(str(path), "rows", str(exc)) from None


def _stack(predictor: Predictor, engine: str) -> None:
    if engine not in predictor.stacks:
        known = ", ".join(predictor.stacks)
        raise InputError("command line", "--engine",
                         f"unknown stack {engine!r}; the predictor knows {known} (for another "
                         f"stack, pick the nearest and --calibrate with your runs)")


def _calibration_line(calibration: Calibration) -> str:
    factors = ", ".join(f"{t} x{f:.3f}" for t, f in calibration.factors.items())
    return (f"calibrated to {calibration.points} measured rows on {calibration.device}: "
            f"{factors}")


def _interval(row: pd.Series, target: str) -> list[float] | None:
    low, high = row.get(f"{target}_low"), row.get(f"{target}_high")
    return None if low is None else [float(low), float(high)]


def predict(
    gpu: Annotated[str, typer.Option(help="GPU (catalog name or alias), measured or not.", show_default=False)],  # noqa: E501
    llm: LlmOption = None,
    llm_config: ConfigOption = None,
    batch: Annotated[float, typer.Option(help="Concurrent sequences per replica.")] = 1,
    tp: Annotated[int, typer.Option(help="GPUs per replica (tensor parallel).")] = 1,
    input_tokens: InputOption = 256,
    output_tokens: OutputOption = 256,
    engine: EngineOption = DEFAULT_STACK,
    calibrate: CalibrateOption = None,
    fmt: FormatOption = PredictFormat.table,
) -> None:
    """Mean power per GPU, inter-token latency and energy per output token, with uncertainty
    and WattGPU's baselines beside them."""
    import pandas as pd

    from energy_models.catalog.specs import get_device
    from energy_models.memory import serving_memory
    from energy_models.predictor.model import (
        INTERVAL_QUANTILES,
        PREDICTED_TARGETS,
        shipped_predictor,
        wattgpu_baselines,
    )

    with user_errors():
        spec, extra = _llm(llm, llm_config)
        device = get_device(gpu)
        if device.kind != "gpu":
            raise InputError("command line", "--gpu", f"{device.name} is a CPU; the predictor "
                             "covers GPUs (the analytical model prices CPUs in `plan`)")
        _check_numbers(batch=batch, tp=tp, input_tokens=input_tokens,
                       output_tokens=output_tokens)
        memory = serving_memory(spec, device, tp, math.ceil(batch),
                                input_tokens + output_tokens / 2)
        if memory.problem is not None:
            raise InputError("command line", "--tp", f"{memory.problem}; raise --tp or pick a "
                             "GPU with more memory")
        if memory.preempted:
            err.print(f"note: the KV cache holds {memory.seq_capacity} sequences of "
                      f"{input_tokens + output_tokens / 2:,.0f} tokens; vLLM would run fewer "
                      f"than batch {batch:g} at once and recompute the preempted ones",
                      highlight=False, soft_wrap=True)
        predictor = shipped_predictor()
        _stack(predictor, engine)
        calibration = _calibration(calibrate, predictor, engine)
        work = pd.DataFrame([{"llm": spec.name, "device": device.name,
                              "input_tokens": input_tokens, "output_tokens": output_tokens,
                              "batch": batch, "tp": tp, "engine": engine}])
        predicted = predictor.predict(work, extra)
        if calibration is not None:
            predicted = calibration.apply(predicted)
        row = predicted.iloc[0]
        base = wattgpu_baselines(work, extra).iloc[0]
        low, high = INTERVAL_QUANTILES
        doc = {
            "llm": spec.name, "gpu": device.name, "tp": tp, "batch": batch,
            "input_tokens": input_tokens, "output_tokens": output_tokens, "engine": engine,
            "unseen": row["unseen"], "interval": f"{low:.0%}-{high:.0%} of out-of-fold errors "
                                                 f"({UNSEEN_TEXT[row['unseen']]})",
            **{key: value for target in PREDICTED_TARGETS for key, value in (
                (target, float(row[target])),
                (f"{target}_interval", _interval(row, target)))},
            "baselines": {column: float(value) for column, value in base.items()},
            "calibration": None if calibration is None else {
                "points": calibration.points, "device": calibration.device,
                "factors": calibration.factors},
        }
        if fmt is PredictFormat.json:
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            return
        _print_prediction(doc)
        if calibration is not None:
            err.print(_calibration_line(calibration), highlight=False, soft_wrap=True)


def _print_prediction(doc: dict) -> None:
    from rich import box
    from rich.table import Table

    console = wide_console()
    title = (f"{doc['llm']} on {doc['gpu']} (tp {doc['tp']}, batch {doc['batch']:g}, "
             f"{doc['input_tokens']:g} -> {doc['output_tokens']:g} tokens, {doc['engine']} "
             f"stack; {UNSEEN_TEXT[doc['unseen']]})")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for name in ("", "predicted", "interval", "load-scaled TDP", "roofline", "roofline + KV"):
        table.add_column(name, justify="left" if not name else "right")
    b = doc["baselines"]

    def span(target: str, scale: float, digits: int) -> str:
        interval = doc[f"{target}_interval"]
        return "" if interval is None else "-".join(f"{v * scale:.{digits}f}" for v in interval)

    table.add_row("power per GPU, W", f"{doc['power_w']:.0f}", span("power_w", 1, 0),
                  f"{b['tdp_power_w']:.0f}", "", "")
    table.add_row("inter-token latency, ms", f"{doc['itl_s'] * 1e3:.1f}", span("itl_s", 1e3, 1),
                  "", f"{b['roofline_itl_s'] * 1e3:.1f}", f"{b['roofline_kv_itl_s'] * 1e3:.1f}")
    table.add_row("energy per output token, J", f"{doc['energy_per_token_j']:.3f}",
                  span("energy_per_token_j", 1, 3), "",
                  f"{b['roofline_energy_per_token_j']:.3f}",
                  f"{b['roofline_kv_energy_per_token_j']:.3f}")
    console.print(table)
    console.print(f"interval: {doc['interval']}; baselines: P = rho x TDP, roofline ITL = "
                  f"2 x params_B / (tp x bandwidth_GB/s), energy = P x tp x ITL / batch",
                  highlight=False, soft_wrap=True)


def rank_table(predictor: Predictor, spec: LlmSpec, extra: dict[str, LlmSpec], *,
               max_itl_s: float, input_tokens: float, output_tokens: float, engine: str,
               calibration: Calibration | None) -> tuple[pd.DataFrame, list[dict]]:
    """Per catalogued GPU, the (tp, batch) with the least predicted J/token whose ITL meets the
    bound, best first; and the GPUs with none, each with the reason."""
    import numpy as np
    import pandas as pd

    from energy_models.catalog.specs import devices
    from energy_models.memory import TP_DEGREES, serving_settings
    from energy_models.predictor.model import PREDICTED_TARGETS

    candidates, unranked = [], []
    for device in devices():
        if device.kind != "gpu":
            continue
        # Each setting at the concurrency vLLM keeps resident; preempted sequences recompute
        # their context, priced as extra prompt tokens.
        settings = serving_settings(spec, device, TP_DEGREES, RANK_BATCHES,
                                    input_tokens + output_tokens / 2)
        if not settings:
            unranked.append({"gpu": device.name, "reason": f"does not fit in memory at tp "
                                                           f"<= {max(TP_DEGREES)}"})
            continue
        candidates += [{"llm": spec.name, "device": device.name, "tp": m.tp,
                        "batch": m.resident_seqs,
                        "input_tokens": input_tokens + m.recompute_tokens_per_seq,
                        "output_tokens": output_tokens, "engine": engine} for m in settings]
    if not candidates:
        return pd.DataFrame(columns=["rank", "device", *PREDICTED_TARGETS]), unranked
    work = pd.DataFrame(candidates)
    predicted = predictor.predict(work, extra)
    if calibration is not None:
        predicted = calibration.apply(predicted)
    scored = pd.concat([work, predicted], axis=1)
    best = []
    for device, group in scored.groupby("device", sort=True):
        meets = group[group["itl_s"] <= max_itl_s]
        if meets.empty:
            unranked.append({"gpu": device, "reason": f"ITL above the bound at every setting "
                                                      f"that fits (least "
                                                      f"{group['itl_s'].min() * 1e3:.1f} ms)"})
            continue
        best.append(meets.sort_values(["energy_per_token_j", "tp", "batch"]).iloc[0])
    if not best:
        return pd.DataFrame(columns=["rank", *scored.columns]), sorted(
            unranked, key=lambda entry: entry["gpu"])
    ranked = pd.DataFrame(best).sort_values(["energy_per_token_j", "device"]).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked, sorted(unranked, key=lambda entry: entry["gpu"])


def rank_gpus(
    llm: LlmOption = None,
    llm_config: ConfigOption = None,
    max_itl_ms: Annotated[float, typer.Option(help="Latency bound: mean inter-token latency per request, ms.")] = 100.0,  # noqa: E501
    input_tokens: InputOption = 256,
    output_tokens: OutputOption = 256,
    engine: EngineOption = DEFAULT_STACK,
    calibrate: CalibrateOption = None,
    fmt: FormatOption = PredictFormat.table,
) -> None:
    """Rank every catalogued GPU for an LLM by predicted energy per output token, each at its
    best tensor-parallel degree and batch that meets the latency bound."""
    from rich import box
    from rich.table import Table

    from energy_models.predictor.model import PREDICTED_TARGETS, shipped_predictor

    with user_errors():
        spec, extra = _llm(llm, llm_config)
        _check_numbers(max_itl_ms=max_itl_ms, input_tokens=input_tokens,
                       output_tokens=output_tokens)
        predictor = shipped_predictor()
        _stack(predictor, engine)
        calibration = _calibration(calibrate, predictor, engine)
        ranked, unranked = rank_table(predictor, spec, extra, max_itl_s=max_itl_ms / 1e3,
                                      input_tokens=input_tokens, output_tokens=output_tokens,
                                      engine=engine, calibration=calibration)
        if fmt is PredictFormat.json:
            doc = {"llm": spec.name, "max_itl_ms": max_itl_ms, "engine": engine,
                   "input_tokens": input_tokens, "output_tokens": output_tokens,
                   "ranked": [{
                       "rank": int(r["rank"]), "gpu": r["device"], "tp": int(r["tp"]),
                       "batch": int(r["batch"]), "unseen": r["unseen"],
                       **{t: float(r[t]) for t in PREDICTED_TARGETS},
                       **{f"{t}_interval": [float(r[f"{t}_low"]), float(r[f"{t}_high"])]
                          for t in PREDICTED_TARGETS if f"{t}_low" in r}}
                       for _, r in ranked.iterrows()],
                   "unranked": unranked}
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            return
        console = wide_console()
        table = Table(title=f"GPUs for {spec.name} by predicted energy per output token "
                            f"(ITL <= {max_itl_ms:g} ms, {input_tokens:g} -> {output_tokens:g} "
                            f"tokens, {engine} stack)", box=box.SIMPLE_HEAD)
        for name in ("rank", "GPU", "tp", "batch", "J/token", "interval", "ITL ms",
                     "W per GPU", "in training data"):
            table.add_column(name, justify="left" if name == "GPU" else "right")
        for _, r in ranked.iterrows():
            interval = (f"{r['energy_per_token_j_low']:.3f}-{r['energy_per_token_j_high']:.3f}"
                        if "energy_per_token_j_low" in r else "")
            table.add_row(str(r["rank"]), r["device"], str(r["tp"]), str(r["batch"]),
                          f"{r['energy_per_token_j']:.3f}", interval, f"{r['itl_s'] * 1e3:.1f}",
                          f"{r['power_w']:.0f}", "no" if r["unseen"] == "gpu" else "yes")
        console.print(table)
        for entry in unranked:
            console.print(f"not ranked: {entry['gpu']}: {entry['reason']}", highlight=False)
        if calibration is not None:
            err.print(_calibration_line(calibration), highlight=False, soft_wrap=True)
