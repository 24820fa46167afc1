"""Workload files: synthetic traffic from presets or parameters, or a recorded trace.

A workload file is YAML::

    horizon_s: 3600            # seconds the plan covers (default: the trace's span)
    seed: 7                    # synthetic traffic only
    traffic:                   # either traffic ...
      - preset: azure-2023-conv
        rate_rps: 8.0          # optional override of any preset field
      - preset: azure-2023-code
    trace: requests.csv        # ... or a trace (ours or the Azure format), relative to the file
    classes: {input_bins: 4, output_bins: 3}
    slo: {code: {ttft_s: 1.0}} # optional per-kind overrides of the fleet's SLO
    min_quality: {code: 65}    # optional per-kind minimum quality
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from workloads.errors import WorkloadError
from workloads.requests import read_request_csv
from workloads.synthetic import TrafficParams, generate, presets

SLO_FIELDS = ("ttft_s", "itl_s", "e2e_s")


@dataclass(frozen=True)
class Workload:
    """Requests over a horizon, plus per-kind SLO and quality overrides."""

    name: str
    horizon_s: float
    requests: pd.DataFrame = field(repr=False, compare=False)
    input_bins: int = 4
    output_bins: int = 3
    slo: dict[str, dict[str, float | None]] = field(default_factory=dict)
    min_quality: dict[str, float] = field(default_factory=dict)


def _fail(where: str, field_name: str, problem: str) -> WorkloadError:
    return WorkloadError(f"{where}: {field_name}: {problem}")


def _number(where: str, field_name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, field_name, f"expected a finite number, got {value!r}")
    if value <= 0:
        raise _fail(where, field_name, f"must be positive, got {value!r}")
    return float(value)


def _traffic(where: str, items: Any) -> list[TrafficParams]:
    if not isinstance(items, list) or not items:
        raise _fail(where, "traffic", "expected a non-empty list of presets or parameter sets")
    known = presets()
    params = []
    for i, item in enumerate(items):
        name = f"traffic[{i}]"
        if not isinstance(item, dict):
            raise _fail(where, name, "expected a mapping")
        base: dict[str, Any] = {}
        if "preset" in item:
            if item["preset"] not in known:
                raise _fail(where, f"{name}.preset",
                            f"unknown preset {item['preset']!r}; known: {sorted(known)}")
            base = dataclasses.asdict(known[item["preset"]])
        fields = {k: v for k, v in item.items() if k != "preset"}
        allowed = {f.name for f in dataclasses.fields(TrafficParams)}
        extra = sorted(set(fields) - allowed)
        if extra:
            raise _fail(where, f"{name}.{extra[0]}", f"unknown field; allowed: {sorted(allowed)}")
        merged = {**base, **fields}
        missing = sorted(allowed - set(merged))
        if missing:
            raise _fail(where, f"{name}.{missing[0]}", "missing; give it or name a preset")
        if "rate_rps" in fields:
            _number(where, f"{name}.rate_rps", fields["rate_rps"])
        try:
            params.append(TrafficParams(**merged))
        except (TypeError, ValueError) as exc:
            raise _fail(where, name, str(exc)) from None
    return params


def parse_workload(raw: Any, where: str, base_dir: Path | None = None) -> Workload:
    """Validate parsed YAML into a Workload (generating or reading its requests)."""
    if not isinstance(raw, dict):
        raise _fail(where, "(top level)", "expected a mapping")
    allowed = {"name", "horizon_s", "seed", "traffic", "trace", "classes", "slo", "min_quality"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise _fail(where, extra[0], f"unknown field; allowed: {sorted(allowed)}")
    if ("traffic" in raw) == ("trace" in raw):
        raise _fail(where, "traffic", "give exactly one of 'traffic' (synthetic) or 'trace'")
    if "trace" in raw:
        path = Path(str(raw["trace"]))
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        requests = read_request_csv(str(path))
        span = float(requests["arrival_s"].max())
        horizon_s = _number(where, "horizon_s", raw.get("horizon_s", max(span, 1.0)))
        requests = requests[requests["arrival_s"] < horizon_s].reset_index(drop=True)
    else:
        horizon_s = _number(where, "horizon_s", raw.get("horizon_s", 3600))
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _fail(where, "seed", f"expected a non-negative whole number, got {seed!r}")
        requests = generate(_traffic(where, raw["traffic"]), horizon_s, seed)
    classes = raw.get("classes") or {}
    if not isinstance(classes, dict) or set(classes) - {"input_bins", "output_bins"}:
        raise _fail(where, "classes", "expected {input_bins: N, output_bins: N}")
    bins = {}
    for key in ("input_bins", "output_bins"):
        value = classes.get(key, 4 if key == "input_bins" else 3)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(where, f"classes.{key}", f"expected a whole number >= 1, got {value!r}")
        bins[key] = value
    slo = raw.get("slo") or {}
    if not isinstance(slo, dict):
        raise _fail(where, "slo", "expected a mapping from request kind to SLO fields")
    for kind, values in slo.items():
        if not isinstance(values, dict) or set(values) - set(SLO_FIELDS):
            raise _fail(where, f"slo.{kind}", f"expected a mapping with fields among {SLO_FIELDS}")
        for key, value in values.items():
            if value is not None:
                _number(where, f"slo.{kind}.{key}", value)
    min_quality = raw.get("min_quality") or {}
    if not isinstance(min_quality, dict):
        raise _fail(where, "min_quality", "expected a mapping from request kind to a score")
    for kind, value in min_quality.items():
        _number(where, f"min_quality.{kind}", value)
    return Workload(
        name=str(raw.get("name", Path(where).stem)),
        horizon_s=horizon_s,
        requests=requests,
        slo=slo,
        min_quality={k: float(v) for k, v in min_quality.items()},
        **bins,
    )


def load_workload(path: str | Path | None = None) -> Workload:
    """The workload at ``path``, or the bundled default (seeded chat and code traffic)."""
    if path is None:
        text = resources.files("workloads").joinpath("data", "default_workload.yaml").read_text()
        return parse_workload(yaml.safe_load(text), "default_workload.yaml")
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise _fail(str(path), "(file)", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise _fail(str(path), "(syntax)", f"invalid YAML ({exc.__class__.__name__})") from None
    return parse_workload(raw, str(path), base_dir=path.parent)
