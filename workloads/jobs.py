"""Offline batch jobs: many requests each, a release time and a deadline.

A job file is YAML::

    name: nightly                 # optional (default: the file name)
    horizon_s: 86400              # optional: the schedule's span (default: the last deadline)
    jobs:
      - {id: eval-suite, llm: llama-3.1-8b, requests: 40000, input_tokens: 700,
         output_tokens: 180, release_s: 0, deadline_s: 14400}
      - {id: synth-data, min_quality: 75, requests: 6000, input_tokens: 300,
         output_tokens: 900, release_s: 0, deadline_s: 25200}
      - {id: embed, request_file: embed.csv, deadline_s: 7200}   # tokens from a request CSV

or a CSV with one row per job and the same column names (``id``, ``deadline_s`` and the token
statistics required; ``llm``, ``min_quality``, ``release_s``, ``lateness_penalty_j_per_s``
optional). Times are seconds from the start of the schedule. A job names an ``llm`` or a
``min_quality`` (any LLM that meets it), or neither (the fleet's default quality floor).
``lateness_penalty_j_per_s`` makes the deadline soft: each request finished after it costs
that many joules per second late, and the job may run until the horizon.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import AfterValidator, Field, model_validator

from energy_models.catalog.specs import UnknownNameError, get_llm
from energy_models.inputs import (
    MAX_TABLE_BYTES,
    StrictModel,
    load_yaml,
    message_error,
    parse_yaml,
    read_bytes,
    validate,
)
from workloads.errors import WorkloadError
from workloads.requests import read_request_csv

MAX_JOBS = 10_000
MAX_JOB_REQUESTS = 10**9
JOB_COLUMNS = ("id", "llm", "min_quality", "requests", "input_tokens", "output_tokens",
               "input_p90", "output_p90", "release_s", "deadline_s", "lateness_penalty_j_per_s")


def _llm_name(value: str) -> str:
    try:
        return get_llm(value).name
    except UnknownNameError as exc:
        raise ValueError(str(exc)) from None


def _job_id(value: str) -> str:
    if not value or not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError("expected an id of letters, digits, '-', '_', '.'")
    return value


Tokens = Annotated[float, Field(gt=0, le=10_000_000)]
Seconds = Annotated[float, Field(ge=0, le=10 * 365 * 86400)]


class JobSpec(StrictModel):
    """One job as written in the file."""

    id: Annotated[str, AfterValidator(_job_id)]
    llm: Annotated[str, AfterValidator(_llm_name)] | None = None
    min_quality: Annotated[float, Field(ge=0, le=100)] | None = None
    requests: Annotated[int, Field(ge=1, le=MAX_JOB_REQUESTS)] | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    input_p90: Tokens | None = None
    output_p90: Tokens | None = None
    request_file: str | None = None
    release_s: Seconds = 0.0
    deadline_s: Seconds
    lateness_penalty_j_per_s: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.llm is not None and self.min_quality is not None:
            raise ValueError("give llm or min_quality, not both")
        if self.deadline_s <= self.release_s:
            raise ValueError(f"deadline_s ({self.deadline_s:g}) must be after release_s "
                             f"({self.release_s:g})")
        stats = (self.requests, self.input_tokens, self.output_tokens)
        if self.request_file is None and any(value is None for value in stats):
            raise ValueError("give requests, input_tokens and output_tokens, or a request_file")
        if self.request_file is not None and any(value is not None for value in stats):
            raise ValueError("a request_file gives the requests and their tokens; drop "
                             "requests, input_tokens and output_tokens")
        return self


class JobFile(StrictModel):
    name: str | None = None
    horizon_s: Annotated[float, Field(gt=0)] | None = None
    jobs: Annotated[tuple[JobSpec, ...], Field(min_length=1, max_length=MAX_JOBS)]


@dataclass(frozen=True)
class Jobs:
    """Validated jobs, one row each in ``table``: ``job``, ``llm`` (or None),
    ``min_quality`` (NaN: the fleet's default), ``requests``, ``input_tokens``,
    ``output_tokens``, ``input_p90``, ``output_p90``, ``context_max``, ``release_s``,
    ``deadline_s``, ``lateness_penalty_j_per_s`` (NaN: a hard deadline)."""

    name: str
    where: str
    horizon_s: float
    table: pd.DataFrame = field(repr=False, compare=False)


def _from_file(job: JobSpec, base_dir: Path | None) -> dict[str, float]:
    path = Path(job.request_file or "")
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    requests = read_request_csv(str(path))
    inputs, outputs = requests.input_tokens.to_numpy(float), requests.output_tokens.to_numpy(float)
    return {"requests": len(requests), "input_tokens": float(inputs.mean()),
            "output_tokens": float(outputs.mean()),
            "input_p90": float(np.quantile(inputs, 0.9)),
            "output_p90": float(np.quantile(outputs, 0.9)),
            "context_max": float((inputs + outputs).max())}


def parse_jobs(raw: Any, where: str, base_dir: Path | None = None) -> Jobs:
    """Validate parsed YAML (or CSV rows as a ``{jobs: [...]}`` mapping) into Jobs."""
    spec = validate(JobFile, raw, message_error(WorkloadError, where))
    rows = []
    seen: set[str] = set()
    for i, job in enumerate(spec.jobs):
        if job.id in seen:
            raise WorkloadError(f"{where}: jobs[{i}].id: {job.id!r} is used twice; give each "
                                f"job its own id")
        seen.add(job.id)
        if job.request_file is not None:
            if not (base_dir or Path()).joinpath(job.request_file).is_file():
                raise WorkloadError(f"{where}: jobs[{i}].request_file: {job.request_file!r} is "
                                    f"not a file; give a request CSV's path, relative to the "
                                    f"job file")
            stats = _from_file(job, base_dir)
        else:
            assert job.input_tokens is not None
            assert job.output_tokens is not None
            input_p90 = job.input_p90 or job.input_tokens
            output_p90 = job.output_p90 or job.output_tokens
            stats = {"requests": job.requests, "input_tokens": job.input_tokens,
                     "output_tokens": job.output_tokens, "input_p90": input_p90,
                     "output_p90": output_p90, "context_max": input_p90 + output_p90}
        rows.append({"job": job.id, "llm": job.llm,
                     "min_quality": math.nan if job.min_quality is None else job.min_quality,
                     **stats, "release_s": job.release_s, "deadline_s": job.deadline_s,
                     "lateness_penalty_j_per_s": (math.nan if job.lateness_penalty_j_per_s
                                                  is None else job.lateness_penalty_j_per_s)})
    table = pd.DataFrame(rows)
    table["llm"] = table.llm.astype(object).where(table.llm.notna(), None)
    last_deadline = float(table.deadline_s.max())
    horizon_s = spec.horizon_s or last_deadline
    if horizon_s < last_deadline:
        raise WorkloadError(f"{where}: horizon_s: {horizon_s:g} s ends before the last "
                            f"deadline ({last_deadline:g} s); raise it or leave it out")
    return Jobs(name=spec.name or Path(where).stem, where=where, horizon_s=horizon_s,
                table=table)


def _csv_rows(path: Path) -> dict[str, Any]:
    data = read_bytes(path, message_error(WorkloadError, str(path)), MAX_TABLE_BYTES)
    try:
        table = pd.read_csv(io.BytesIO(data), encoding="utf-8", dtype=str,
                            keep_default_na=False)
    except (pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise WorkloadError(f"{path}: (file): cannot read CSV ({str(exc).splitlines()[0]}); "
                            f"give a header ({','.join(JOB_COLUMNS)}) and one row per "
                            f"job") from None
    unknown = [c for c in table.columns if c not in JOB_COLUMNS]
    if unknown:
        raise WorkloadError(f"{path}: {unknown[0]}: unknown column; the columns are "
                            f"{', '.join(JOB_COLUMNS)}")
    jobs = []
    for i, row in enumerate(table.to_dict("records")):
        job: dict[str, Any] = {}
        for column, text in row.items():
            text = text.strip()
            if not text:
                continue
            if column in ("id", "llm"):
                job[column] = text
                continue
            try:
                number = float(text)
            except ValueError:
                raise WorkloadError(f"{path}: jobs[{i}].{column}: got {text!r}; must be a "
                                    f"number") from None
            job[column] = int(number) if column == "requests" and number.is_integer() else number
        jobs.append(job)
    return {"jobs": jobs}


def load_jobs(path: str | Path | None = None) -> Jobs:
    """The jobs in a YAML or CSV file (by its suffix: ``.csv`` is CSV, anything else YAML),
    or the bundled example (a night of evaluation, synthesis and summarisation jobs)."""
    if path is None:
        where = "nightly_jobs.yaml"
        text = resources.files("workloads").joinpath("data", where).read_text()
        return parse_jobs(parse_yaml(text, message_error(WorkloadError, where)), where)
    path = Path(path)
    if path.suffix.lower() == ".csv":
        raw = _csv_rows(path)
    else:
        raw = load_yaml(path, message_error(WorkloadError, str(path)))
    return parse_jobs(raw, str(path), base_dir=path.parent)
