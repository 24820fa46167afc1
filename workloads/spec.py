"""Workload files: synthetic traffic from presets or parameters, or a recorded trace.

A workload file is YAML::

    horizon_s: 3600            # seconds the plan covers (default: the trace's span)
    seed: 7                    # synthetic traffic only
    traffic:                   # either traffic ...
      - preset: azure-2023-conv
        rate_rps: 8.0          # optional override of any preset field
      - preset: azure-2023-code
    trace: requests.csv        # ... or a trace (ours or the Azure format), relative to the file
    kind: code                 # Azure-format traces only: their requests' kind (default: the
                               # file name's, see workloads.azure.kind_of_file)
    trace:                     # ... or several traces served together, each from its own start
      - {path: AzureLLMInferenceTrace_code.csv, kind: code}   # kind: as above, per file
      - {path: AzureLLMInferenceTrace_conv.csv}
    scale: 2.5                 # optional: times the arrival rate, same horizon (synthetic:
                               # every rate; a trace: shifted copies of it, thinned evenly)
    classes: {input_bins: 4, output_bins: 3}
    slo: {code: {ttft_s: 1.0}} # optional per-kind overrides of the fleet's SLO
    slo_attainment: {code: 0.95}  # share of a kind's requests that must meet every SLO when
                               # a plan is verified in replay (default 0.99)
    min_quality: {code: 65}    # optional per-kind minimum quality

Synthetic traffic must give at least one expected request per kind and at most
MAX_REQUESTS in all (checked before generating). ``slo`` and ``min_quality`` may only name
kinds the requests have, and so may ``slo_attainment``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import Field, field_validator, model_validator

from energy_models.inputs import (
    StrictModel,
    did_you_mean,
    field_error,
    load_yaml,
    message_error,
    parse_yaml,
    short,
    validate,
)
from workloads.errors import WorkloadError
from workloads.requests import check_distinct_kinds, read_request_csv, scale_arrivals
from workloads.synthetic import MAX_REQUESTS, TrafficParams, generate, presets

SLO_FIELDS = ("ttft_s", "itl_s", "e2e_s")
MAX_SCALE = 1000.0
"""Largest arrival-rate multiple a workload may ask for."""
MAX_BINS = 64
"""Token bins per kind and axis; classes grow as kinds x input bins x output bins."""


DEFAULT_SLO_ATTAINMENT = 0.99
"""Share of each kind's requests that must meet every SLO when a plan is verified."""


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
    slo_attainment: dict[str, float] = field(default_factory=dict)
    """Per kind, the share of requests that must meet every SLO in replay, where it differs
    from ``DEFAULT_SLO_ATTAINMENT``."""
    where: str = ""
    """The file the workload came from, for messages that blame it."""

    def attainment_target(self, kind: str) -> float:
        return self.slo_attainment.get(kind, DEFAULT_SLO_ATTAINMENT)


Seconds = Annotated[float, Field(gt=0)]
Bins = Annotated[int, Field(ge=1, le=MAX_BINS)]


class SloOverride(StrictModel):
    """Only the fields given override the fleet's; null means no bound."""

    ttft_s: Seconds | None = None
    itl_s: Seconds | None = None
    e2e_s: Seconds | None = None


class Classes(StrictModel):
    input_bins: Bins = 4
    output_bins: Bins = 3


class TraceFile(StrictModel):
    """One of several traces: its path (relative to the workload file) and, for the Azure
    format, its requests' kind."""

    path: Annotated[str, Field(min_length=1)]
    kind: Annotated[str, Field(min_length=1)] | None = None


class WorkloadFile(StrictModel):
    """The workload YAML as written (see the module docstring)."""

    name: str = ""
    horizon_s: Seconds | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    traffic: Annotated[tuple[TrafficParams, ...], Field(min_length=1)] | None = None
    trace: str | Annotated[tuple[TraceFile, ...], Field(min_length=1)] | None = None
    kind: Annotated[str, Field(min_length=1)] | None = None
    scale: Annotated[float, Field(gt=0, le=MAX_SCALE)] = 1.0
    classes: Classes = Classes()
    slo: dict[str, SloOverride] = Field(default_factory=dict)
    min_quality: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    slo_attainment: dict[str, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            return {k: v for k, v in raw.items()
                    if not (v is None and k in ("classes", "slo", "min_quality",
                                                       "slo_attainment"))}
        return raw

    @field_validator("traffic", mode="before")
    @classmethod
    def _merge_presets(cls, items: Any) -> Any:
        """Each item is a preset, a full parameter set, or a preset with overrides."""
        if not isinstance(items, (list, tuple)):
            return items
        known = presets()
        allowed = {f.name for f in dataclasses.fields(TrafficParams)} | {"preset"}
        merged = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                merged.append(item)
                continue
            for key in item:
                if key not in allowed:
                    raise field_error(f"[{i}].{key}",
                                      f"unknown field; {did_you_mean(key, allowed)}")
            base: dict[str, Any] = {}
            if "preset" in item:
                if not isinstance(item["preset"], str) or item["preset"] not in known:
                    raise field_error(f"[{i}].preset", f"unknown preset {short(item['preset'])}; "
                                                       f"{did_you_mean(item['preset'], known)}")
                base = dataclasses.asdict(known[item["preset"]])
            merged.append({**base, **{k: v for k, v in item.items() if k != "preset"}})
        return tuple(merged)

    @model_validator(mode="after")
    def _one_source(self) -> WorkloadFile:
        if (self.traffic is None) == (self.trace is None):
            raise field_error("traffic", "give exactly one of 'traffic' (synthetic) or 'trace'")
        if self.kind is not None and self.trace is None:
            raise field_error("kind", "only for an Azure-format trace; synthetic traffic "
                                      "names its kind in each traffic item")
        if self.kind is not None and not isinstance(self.trace, str):
            raise field_error("kind", "with several traces, give each item its own kind")
        return self

    def trace_files(self) -> tuple[TraceFile, ...]:
        if isinstance(self.trace, str):
            return (TraceFile(path=self.trace, kind=self.kind),)
        return self.trace or ()


def _known_kinds(spec: WorkloadFile, kinds: set[str], where: str) -> None:
    """Per-kind overrides for a kind with no requests would silently never apply."""
    for key in ("slo", "min_quality", "slo_attainment"):
        for kind in getattr(spec, key):
            if kind not in kinds:
                raise WorkloadError(f"{where}: {key}.{kind}: no request has kind {short(kind)}; "
                                    f"{did_you_mean(kind, kinds)}")


def _read_traces(spec: WorkloadFile, where: str, base_dir: Path | None) -> pd.DataFrame:
    """Every trace file's requests in one table, each file's arrivals from its own start."""
    tables = []
    for i, item in enumerate(spec.trace_files()):
        field_name = "trace" if isinstance(spec.trace, str) else f"trace[{i}].path"
        path = Path(item.path)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise WorkloadError(f"{where}: {field_name}: {short(item.path)} is not a file "
                                f"(looked for {path}); give the CSV's path, relative to the "
                                f"workload file")
        tables.append(read_request_csv(str(path), azure_kind=item.kind))
    if len(tables) == 1:
        return tables[0]
    merged = pd.concat(tables, ignore_index=True)
    check_distinct_kinds(merged["kind"], where)
    return merged.sort_values(["arrival_s", "kind"], kind="stable").reset_index(drop=True)


def parse_workload(raw: Any, where: str, base_dir: Path | None = None) -> Workload:
    """Validate parsed YAML into a Workload (generating or reading its requests)."""
    spec = validate(WorkloadFile, raw, message_error(WorkloadError, where))
    if spec.trace is not None:
        requests = _read_traces(spec, where, base_dir)
        horizon_s = spec.horizon_s or max(float(requests["arrival_s"].max()), 1.0)
        requests = requests[requests["arrival_s"] < horizon_s].reset_index(drop=True)
        if requests.empty:
            raise WorkloadError(f"{where}: horizon_s: no request of the trace arrives before "
                                f"{horizon_s:g} s; raise horizon_s")
        if len(requests) * spec.scale > MAX_REQUESTS:
            raise WorkloadError(f"{where}: scale: {spec.scale:g} x {len(requests):,} requests "
                                f"is over the {MAX_REQUESTS:,} limit; lower scale or horizon_s")
        requests = scale_arrivals(requests, horizon_s, spec.scale)
        if requests.empty:
            raise WorkloadError(f"{where}: scale: {spec.scale:g} keeps no request of the "
                                f"trace; raise scale")
    else:
        horizon_s = spec.horizon_s or 3600.0
        traffic = [dataclasses.replace(t, rate_rps=t.rate_rps * spec.scale)
                   for t in spec.traffic or ()]
        requests = generate(traffic, horizon_s, spec.seed, where)
    _known_kinds(spec, set(requests["kind"].unique()), where)
    return Workload(
        name=spec.name or Path(where).stem,
        horizon_s=horizon_s,
        requests=requests,
        input_bins=spec.classes.input_bins,
        output_bins=spec.classes.output_bins,
        slo={kind: values.model_dump(exclude_unset=True) for kind, values in spec.slo.items()},
        min_quality=dict(spec.min_quality),
        slo_attainment=dict(spec.slo_attainment),
        where=where,
    )


def load_workload(path: str | Path | None = None, seed: int | None = None) -> Workload:
    """The workload at ``path``, or the bundled default (seeded chat and code traffic);
    ``seed`` draws its synthetic traffic afresh instead of with the file's seed."""
    if path is None:
        where = "default_workload.yaml"
        text = resources.files("workloads").joinpath("data", where).read_text()
        raw, base_dir = parse_yaml(text, message_error(WorkloadError, where)), None
    else:
        where, base_dir = str(path), Path(path).parent
        raw = load_yaml(path, message_error(WorkloadError, where))
    if seed is not None:
        if not isinstance(raw, dict) or "trace" in raw:
            raise WorkloadError(f"{where}: seed: a trace's arrivals are fixed; --seed draws "
                                f"synthetic traffic only")
        raw = {**raw, "seed": seed}
    return parse_workload(raw, where, base_dir=base_dir)
