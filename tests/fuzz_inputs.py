"""Fuzz cases for the CLI and the harness that judges them; shared by the suite and the benchmark.

A case is the files a user would hand to ``wattsched`` (fleet and workload YAML, a trace CSV, a
measurement table, a models file) as raw bytes, plus the command line. Hypothesis draws them
valid most of the time and otherwise edge-valued or malformed: 0, 1, huge, tiny, negative,
``.nan``/``.inf``, unicode, empty lists, wrong types, unknown keys, duplicate keys written as raw
YAML, non-UTF-8 bytes, anchors and aliases.

The property (``run_case`` then ``Outcome.ok``): the command exits 0 with output that passes an
independent check (a plan's routed requests add up to its request count, energies are finite and
add up, devices stay within their pools; fitted models load back; predictions are finite), or it
exits 2 with exactly one error line that names the offending file (progress, warnings and the
documented list of left-out rows may come before it) — never a traceback, never a hang. A case
the generator knows to be invalid (``expect_reject``) must not exit 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

# Catalog names the valid cases use: GPUs with room for the small LLMs, one CPU.
GPUS = {"L4": 16, "A10G": 20, "A100-40GB": 55, "A100-80GB": 60, "L40S": 35, "H100-SXM": 70,
        "H200": 75}
"""GPU -> idle power (W); a power cap must lie above it."""
CPUS = {"Xeon-Platinum-8480+": 85}
SMALL_LLMS = ("llama-3.2-1b", "llama-3.1-8b", "qwen2.5-7b", "qwen3-8b", "gemma-2-9b")
PRESETS = ("azure-2023-conv", "azure-2023-code")
KINDS = ("chat", "code")

EDGE_VALUES: tuple[Any, ...] = (
    0, 1, -1, 2, 10**30, 2**63, 1e-300, 1e308, -1e-9, 0.5, float("nan"), float("inf"),
    float("-inf"), "", " ", "ünïcödé-✓", "\u202e", "1e3", "8", True, False, None, [], {}, [1],
    {"x": 1},
)
NUMERIC_FIELDS = {
    "count", "devices_per_node", "power_cap_w", "price_per_hour", "min_quality",
    "max_utilization", "ttft_s", "itl_s", "e2e_s", "horizon_s", "seed", "rate_rps",
    "interarrival_cv", "input_bins", "output_bins", "spearman_rho", "batch_sizes",
}
POSITIVE_FIELDS = NUMERIC_FIELDS - {"price_per_hour", "min_quality", "spearman_rho", "seed"}
"""Fields where zero or a negative number is meaningless, so a file with one must be refused."""


@dataclass(frozen=True)
class Case:
    """One command line and the files it reads. ``@name`` in ``args`` is the file's path."""

    command: str
    args: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...]
    intent: str
    """What the generator aimed for: ``valid``, ``edge`` (a changed value) or ``malformed``."""
    expect_reject: bool = False
    """The generator knows the input is invalid: exit 0 would be a failure."""
    expected_requests: int | None = None
    """A plan's request count, where the generator knows it (trace workloads)."""
    pool_counts: tuple[tuple[str, int], ...] | None = None
    """Devices per pool id, where the fleet is the generator's valid one."""
    notes: tuple[str, ...] = ()

    def size(self) -> int:
        return sum(len(content) for _, content in self.files) + sum(map(len, self.args))


@dataclass
class Outcome:
    """What one case did and how it is judged."""

    category: str
    """``ok`` (exit 0, output checked), ``error`` (exit 2, one line naming the file),
    ``infeasible`` (exit 2, one line naming the unmet demand), or a failure: ``traceback``,
    ``hang``, ``multi_line`` (exit 2 without exactly one clean error line), ``unnamed``
    (the error line names no input file), ``bad_output`` (exit 0, output fails the check),
    ``accepted_invalid`` (exit 0 on input known to be invalid), ``exit_code`` (anything else)."""
    exit_code: int | None
    detail: str = ""
    stdout: str = ""
    stderr: str = ""
    trace: str = ""
    seconds: float = 0.0
    signature: str = field(default="")

    @property
    def ok(self) -> bool:
        return self.category in PASSING


PASSING = ("ok", "error", "infeasible")
CATEGORIES = (*PASSING, "traceback", "hang", "multi_line", "unnamed", "bad_output",
              "accepted_invalid", "exit_code")


# ---------------------------------------------------------------------------------------------
# YAML text: block mappings at the top, flow values below, so raw tweaks stay easy.


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def yaml_text(doc: Any, duplicate: tuple[str, Any] | None = None) -> str:
    """``doc`` as YAML; ``duplicate`` (key, value) appends a second entry for an existing key."""
    if not isinstance(doc, dict):
        return _flow(doc) + "\n"
    lines = [f"{_flow(key)}: {_flow(value)}" for key, value in doc.items()]
    if duplicate is not None:
        lines.append(f"{_flow(duplicate[0])}: {_flow(duplicate[1])}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Valid documents.


@st.composite
def fleet_docs(draw) -> dict:
    """A fleet that loads and, for the small workloads below, usually has room for the demand."""
    racks = draw(st.sampled_from([None, [], [{"id": "r1"}],
                                  [{"id": "r1", "power_cap_w": 20000}, {"id": "r2"}]]))
    rack_ids = [r["id"] for r in racks or []]
    n_pools = draw(st.integers(1, 3))
    pools = []
    for i in range(n_pools):
        device = draw(st.sampled_from(sorted(GPUS) if i == 0 or draw(st.booleans())
                                      else sorted({**GPUS, **CPUS})))
        count = draw(st.sampled_from([1, 2, 4, 8]))
        pool: dict[str, Any] = {"id": f"p{i}", "device": device, "count": count}
        if draw(st.booleans()):
            pool["devices_per_node"] = draw(st.sampled_from([d for d in (1, 2, 4, 8)
                                                             if count % d == 0]))
        if rack_ids and draw(st.booleans()):
            pool["rack"] = draw(st.sampled_from(rack_ids))
        if device in GPUS and draw(st.integers(0, 3)) == 0:
            pool["power_cap_w"] = GPUS[device] + draw(st.integers(50, 600))
        if draw(st.booleans()):
            pool["price_per_hour"] = draw(st.sampled_from([0, 0.5, 1.8, 4.0]))
        if draw(st.integers(0, 3)) == 0:
            pool["node"] = draw(st.sampled_from(["n1", "node-1..2", "ünï"]))
        pools.append(pool)
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["name"] = draw(st.sampled_from(["fleet", "edge-fleet", "ünïcödé ✓"]))
    if racks is not None:
        doc["racks"] = racks
    doc["pools"] = pools
    doc["llms"] = draw(st.lists(st.sampled_from(SMALL_LLMS), min_size=1, max_size=2,
                                unique=True))
    if draw(st.booleans()):
        defaults: dict[str, Any] = {}
        if draw(st.booleans()):
            defaults["slo"] = {"ttft_s": draw(st.sampled_from([1.0, 2.0, 10.0])),
                               "itl_s": draw(st.sampled_from([0.1, 0.2, None])),
                               "e2e_s": draw(st.sampled_from([None, 120.0]))}
        if draw(st.booleans()):
            defaults["min_quality"] = draw(st.sampled_from([0, 40, 60]))
        if draw(st.booleans()):
            defaults["max_utilization"] = draw(st.sampled_from([0.5, 0.8, 1]))
        if draw(st.booleans()):
            defaults["batch_sizes"] = draw(st.lists(st.sampled_from([1, 4, 8, 32, 128]),
                                                    min_size=1, max_size=3))
        if draw(st.booleans()):
            defaults["engine"] = draw(st.sampled_from(["vllm", "vllm-0.5", "hf"]))
        doc["defaults"] = defaults
    return doc


@st.composite
def trace_rows(draw) -> list[tuple[float, int, int, str]]:
    n = draw(st.integers(0, 12))
    return [(draw(st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 3))),
             draw(st.integers(1, 4000)), draw(st.integers(1, 1000)),
             draw(st.sampled_from(KINDS))) for _ in range(n)]


def trace_csv(rows: list[tuple[float, int, int, str]]) -> str:
    return "arrival_s,input_tokens,output_tokens,kind\n" + "".join(
        f"{a},{m},{n},{k}\n" for a, m, n, k in rows)


@st.composite
def workload_docs(draw) -> tuple[dict, list[tuple[float, int, int, str]] | None]:
    """A small workload (at most a few dozen requests) and, for a trace, its rows."""
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["name"] = draw(st.sampled_from(["w", "ünïcödé ✓"]))
    rows = None
    if draw(st.integers(0, 2)) == 0:
        rows = draw(trace_rows().filter(bool))
        doc["trace"] = "trace.csv"
        if draw(st.booleans()):
            doc["horizon_s"] = draw(st.sampled_from([1, 10, 31]))
    else:
        doc["horizon_s"] = draw(st.sampled_from([1, 5, 20, 30]))
        doc["seed"] = draw(st.integers(0, 1000))
        traffic = []
        for preset in draw(st.lists(st.sampled_from(PRESETS), min_size=1, max_size=2,
                                    unique=True)):
            item: dict[str, Any] = {"preset": preset}
            if draw(st.integers(0, 3)):
                item["rate_rps"] = draw(st.sampled_from([0.05, 0.2, 0.5, 1.0]))
            traffic.append(item)
        doc["traffic"] = traffic
    if draw(st.booleans()):
        doc["classes"] = {"input_bins": draw(st.integers(1, 4)),
                          "output_bins": draw(st.integers(1, 3))}
    if draw(st.integers(0, 2)) == 0:
        doc["slo"] = {draw(st.sampled_from(KINDS)): {"ttft_s": draw(st.sampled_from([2.0, 5.0])),
                                                     "itl_s": None}}
    if draw(st.integers(0, 3)) == 0:
        doc["min_quality"] = {draw(st.sampled_from(KINDS)): draw(st.sampled_from([10, 40]))}
    return doc, rows


# ---------------------------------------------------------------------------------------------
# Mutations of a document: one changed value, an unknown key, a removed key.


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


def _set(doc: Any, path: tuple, value: Any, *, delete: bool = False) -> Any:
    doc = json.loads(json.dumps(doc))  # A deep copy (documents hold JSON types only).
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def _field_name(path: tuple) -> str:
    names = [p for p in path if isinstance(p, str)]
    return names[-1] if names else ""


def _must_refuse(path: tuple, value: Any) -> bool:
    """Would any sane reader refuse ``value`` at ``path``? Only the clear cases."""
    name = _field_name(path)
    if path == ("min_quality",):  # the workload's per-kind floors: a mapping, {} for none
        return not isinstance(value, dict)
    if isinstance(value, float) and math.isnan(value):
        return name in NUMERIC_FIELDS
    if name in NUMERIC_FIELDS and (isinstance(value, (str, list, dict, bool))
                                   and not (name == "batch_sizes" and value == [1])):
        return True
    if name in POSITIVE_FIELDS and isinstance(value, (int, float)) and not isinstance(
            value, bool) and value <= 0:
        return True
    if name in {"count", "devices_per_node", "input_bins", "output_bins", "seed"} and isinstance(
            value, float):
        return True
    return name in {"pools", "llms", "traffic"} and value in ([], {}, "", None)


@st.composite
def mutated(draw, doc: dict) -> tuple[Any, str, bool, str]:
    """(document, intent, expect_reject, note) after at most one mutation."""
    kind = draw(st.sampled_from(["value", "value", "value", "unknown_key", "delete", "root"]))
    paths = list(_paths(doc))
    if kind == "root":
        value = draw(st.sampled_from([[], "text", 3, None, [doc]]))
        return value, "malformed", True, f"top level replaced by {value!r:.40}"
    path = draw(st.sampled_from(paths))
    if kind == "unknown_key":
        parent = path[:-1]
        node = doc
        for key in parent:
            node = node[key]
        if isinstance(node, dict):
            key = draw(st.sampled_from(["colour", "Count", "pool", "ünknown", "seed ", "1"]))
            if key in node:
                return doc, "valid", False, ""
            return _set(doc, (*parent, key), 1), "malformed", True, f"unknown key {key!r}"
        kind = "value"
    if kind == "delete":
        return _set(doc, path, None, delete=True), "edge", False, f"deleted {path}"
    value = draw(st.sampled_from(EDGE_VALUES))
    return (_set(doc, path, value), "edge", _must_refuse(path, value),
            f"{'.'.join(map(str, path))} = {value!r:.40}")


@st.composite
def yaml_file(draw, doc: dict, valid_share: float = 0.6) -> tuple[bytes, str, bool, str]:
    """(bytes, intent, expect_reject, note): the document as YAML, perhaps broken."""
    roll = draw(st.integers(0, 99))
    if roll < valid_share * 100:
        style = draw(st.sampled_from(["ours", "block", "flow"]))
        if style == "ours":
            text = yaml_text(doc)
        else:
            text = yaml.safe_dump(doc, default_flow_style=style == "flow", allow_unicode=True,
                                  sort_keys=False)
        return text.encode(), "valid", False, ""
    if roll < 85:
        changed, intent, reject, note = draw(mutated(doc))
        return yaml_text(changed).encode(), intent, reject, note
    raw = draw(st.sampled_from(["duplicate_top", "duplicate_nested", "latin1", "bad_bytes",
                                "merge_alias", "alias_bomb", "empty", "bom", "tabs",
                                "truncated", "utf16"]))
    text = yaml_text(doc)
    keys = list(doc)
    if raw == "duplicate_top":
        key = draw(st.sampled_from(keys))
        return (yaml_text(doc, (key, doc[key])).encode(), "malformed", True,
                f"duplicate key {key!r}")
    if raw == "duplicate_nested":
        for key, value in doc.items():
            if isinstance(value, list) and value and isinstance(value[0], dict) and value[0]:
                inner = next(iter(value[0]))
                items = ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value[0].items())
                first = f"{{{items}, {_flow(inner)}: {_flow(value[0][inner])}}}"
                rest = [_flow(v) for v in value[1:]]
                line = f"{_flow(key)}: [{', '.join([first, *rest])}]"
                lines = [line if t.startswith(f"{_flow(key)}:") else t
                         for t in text.splitlines()]
                return ("\n".join(lines) + "\n").encode(), "malformed", True, (
                    f"duplicate key {inner!r} in {key}[0]")
        return yaml_text(doc, (keys[0], doc[keys[0]])).encode(), "malformed", True, "duplicate"
    if raw == "latin1":
        return (("name: café\n" if "name" not in doc else "")
                + text).replace("name: ", "name: café-", 1).encode("latin-1", "replace"), \
            "malformed", True, "latin-1 byte"
    if raw == "bad_bytes":
        where = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from([b"\xff\xfe", b"\x80", b"\xc3(", b"\x00", b"# \xe9\n"]))
        data = text.encode()
        return data[:where] + junk + data[where:], "malformed", True, f"bytes {junk!r} at {where}"
    if raw == "merge_alias":
        # The first list of mappings becomes an anchor; a second item merges it, renamed.
        for key, value in doc.items():
            if isinstance(value, list) and value and isinstance(value[0], dict) \
                    and "id" in value[0]:
                first = "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value[0].items()) \
                    + "}"
                extra = "{<<: *base, id: merged}"
                line = f"{key}: [&base {first}, {extra}" + "".join(
                    f", {_flow(v)}" for v in value[1:]) + "]"
                lines = [line if t.startswith(f"{key}:") else t for t in text.splitlines()]
                return ("\n".join(lines) + "\n").encode(), "edge", False, "merge key alias"
        return text.encode(), "valid", False, ""
    if raw == "alias_bomb":
        levels = ["a0: &a0 [x, x, x, x, x, x, x, x]"]
        for i in range(1, 5):
            levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 8) + "]")
        key = draw(st.sampled_from(keys))
        bomb = "{" + ", ".join(levels) + "}"
        lines = [f"{_flow(key)}: {bomb}" if t.startswith(f"{_flow(key)}:") else t
                 for t in text.splitlines()]
        return ("\n".join(lines) + "\n").encode(), "malformed", True, f"alias bomb at {key}"
    if raw == "empty":
        return draw(st.sampled_from([b"", b"\n", b"# nothing\n", b"---\n", b"~\n"])), \
            "malformed", True, "empty"
    if raw == "bom":
        return "\ufeff".encode() + text.encode(), "valid", False, "UTF-8 BOM"
    if raw == "tabs":
        return b"\t" + text.encode(), "malformed", True, "tab indentation"
    if raw == "truncated":
        data = text.encode()
        cut = draw(st.integers(1, max(1, len(data) - 1)))
        return data[:cut], "malformed", False, f"truncated at {cut}"
    return text.encode("utf-16"), "edge", False, "UTF-16 with BOM"


# ---------------------------------------------------------------------------------------------
# Measurement tables.


def analytical_rows(llm: str, device: str, batches: tuple[int, ...], noise: float,
                    seed: int) -> list[dict]:
    """Schema rows priced by the analytical model on a token grid (a smooth, fittable table)."""
    import numpy as np
    import pandas as pd

    from energy_models.analytical.model import analytical_costs, shipped_constants

    m, n, b = np.meshgrid([64, 256, 1024, 2048], [16, 64, 256, 512], list(batches))
    work = pd.DataFrame({"llm": llm, "device": device, "input_tokens": m.ravel(),
                         "output_tokens": n.ravel(), "batch": b.ravel(), "tp": 1})
    # vllm-0.5's constants: on this grid its runtime is near-linear in tokens and batch, so
    # the smooth forms pass the gate (today's vllm adds curvature the linear forms miss).
    costs = analytical_costs(work, shipped_constants()["vllm-0.5"])
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, noise, size=(2, len(work))) if noise else np.ones((2, len(work)))
    rows = work.assign(energy_j=costs.energy_j * scale[0], runtime_s=costs.runtime_s * scale[1],
                       energy_kind="gross", engine="vllm", source="fuzz")
    return rows.to_dict("records")


CELL_EDGES: tuple[Any, ...] = ("", "nan", "NaN", "inf", "-inf", "-1", "0", "1e308", "1e-300",
                               "abc", "ünï", " 5 ", "1,5", "True", "99999999999999999999")


def _csv(columns: list[str], rows: list[dict]) -> str:
    def cell(value: Any) -> str:
        text = f"{value:.10g}" if isinstance(value, float) else str(value)
        return f'"{text}"' if ("," in text or '"' in text) else text
    return ",".join(columns) + "\n" + "".join(
        ",".join(cell(row.get(c, "")) for c in columns) + "\n" for row in rows)


@st.composite
def measurement_tables(draw, *, for_calibration: bool = False) -> tuple[bytes, str, bool, str]:
    """(CSV bytes, intent, expect_reject, note) of a measurement table."""
    llm = draw(st.sampled_from(SMALL_LLMS))
    device = draw(st.sampled_from(["H100-SXM", "A100-80GB", "L4", "L40S"]))
    batches = draw(st.sampled_from([(1,), (1, 8)]))
    rows = analytical_rows(llm, device, batches, draw(st.sampled_from([0.0, 0.02, 0.3])),
                           draw(st.integers(0, 100)))
    if for_calibration:
        rows = rows[:draw(st.integers(1, 6))]
    columns = ["llm", "device", "tp", "batch", "input_tokens", "output_tokens", "energy_j",
               "runtime_s", "energy_kind", "engine", "source"]
    if draw(st.booleans()):
        for row in rows:
            row["itl_s"] = row["runtime_s"] / row["output_tokens"]
            row["mean_power_w"] = row["energy_j"] * row["batch"] / row["runtime_s"]
        columns += ["itl_s", "mean_power_w"]
    roll = draw(st.integers(0, 99))
    if roll < 55:
        return _csv(columns, rows).encode(), "valid", False, ""
    if roll < 80:
        # A few cells changed: rows are dropped (and reported) or the table refused.
        notes = []
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(rows) - 1))
            column = draw(st.sampled_from(columns))
            value = draw(st.sampled_from(CELL_EDGES))
            rows[i] = {**rows[i], column: value}
            notes.append(f"row {i + 1} {column}={value!r}")
        return _csv(columns, rows).encode(), "edge", False, "; ".join(notes)
    kind = draw(st.sampled_from(["drop_column", "unknown_llm", "empty", "header_only",
                                 "bad_bytes", "semicolons", "duplicate_column", "mixed_kinds",
                                 "extra_column", "all_bad", "ragged"]))
    if kind == "drop_column":
        gone = draw(st.sampled_from(["llm", "device", "batch", "energy_j", "runtime_s",
                                     "energy_kind", "source", "input_tokens"]))
        return (_csv([c for c in columns if c != gone], rows).encode(), "malformed", True,
                f"no {gone} column")
    if kind == "unknown_llm":
        name = draw(st.sampled_from(["llama-9", "ünïcödé", "H100-SXM", "42"]))
        rows[0] = {**rows[0], "llm": name}
        return _csv(columns, rows).encode(), "malformed", True, f"llm {name!r}"
    if kind == "empty":
        return b"", "malformed", True, "empty file"
    if kind == "header_only":
        return _csv(columns, []).encode(), "malformed", True, "header only"
    if kind == "bad_bytes":
        data = _csv(columns, rows).encode()
        where = draw(st.integers(0, len(data)))
        return data[:where] + b"\xff\xfe\x80" + data[where:], "malformed", False, \
            f"bytes at {where}"
    if kind == "semicolons":
        return _csv(columns, rows).replace(",", ";").encode(), "malformed", True, "semicolons"
    if kind == "duplicate_column":
        text = _csv(columns, rows)
        head, body = text.split("\n", 1)
        return (head + ",energy_j\n" + "".join(line + ",-5\n" for line in body.splitlines())
                ).encode(), "malformed", False, "energy_j twice"
    if kind == "mixed_kinds":
        rows = [*rows, {**rows[0], "energy_kind": "idle_subtracted"}]
        rows[0] = {**rows[0], "energy_kind": "gross"}
        return _csv(columns, rows).encode(), "malformed", True, "gross and idle_subtracted"
    if kind == "extra_column":
        for row in rows:
            row["colour"] = "blue"
        return _csv([*columns, "colour"], rows).encode(), "edge", False, "extra column"
    if kind == "all_bad":
        value = draw(st.sampled_from(["nan", "-1", "0", "abc"]))
        for i, row in enumerate(rows):
            rows[i] = {**row, "energy_j": value}
        return _csv(columns, rows).encode(), "malformed", True, f"every energy_j {value}"
    text = _csv(columns, rows)
    lines = text.splitlines()
    lines[1] = lines[1] + ",1,2,3"
    return ("\n".join(lines) + "\n").encode(), "malformed", False, "ragged row"


# ---------------------------------------------------------------------------------------------
# Cases.


@st.composite
def plan_cases(draw) -> Case:
    fleet = draw(fleet_docs())
    fleet_bytes, f_intent, f_reject, f_note = draw(yaml_file(fleet, valid_share=0.7))
    work, rows = draw(workload_docs())
    work_bytes, w_intent, w_reject, w_note = draw(yaml_file(work, valid_share=0.75))
    files = [("fleet.yaml", fleet_bytes), ("workload.yaml", work_bytes)]
    expected = None
    notes = [n for n in (f_note, w_note) if n]
    t_intent, t_reject = "valid", False
    if rows is not None:
        csv_text = trace_csv(rows)
        roll = draw(st.integers(0, 9))
        if roll == 0:
            i = draw(st.integers(0, len(rows) - 1))
            column = draw(st.integers(0, 2))
            value = draw(st.sampled_from(["nan", "-1", "", "abc", "inf", "1e20"]))
            lines = csv_text.splitlines()
            cells = lines[i + 1].split(",")
            cells[column] = value
            lines[i + 1] = ",".join(cells)
            csv_text = "\n".join(lines) + "\n"
            t_intent, t_reject = "edge", value in ("nan", "-1", "", "abc", "inf")
            notes.append(f"trace row {i} column {column} = {value!r}")
        elif roll == 1:
            csv_text = draw(st.sampled_from(["", "arrival_s,input_tokens,output_tokens,kind\n",
                                             "a,b\n1,2\n"]))
            t_intent, t_reject = "malformed", True
            notes.append(f"trace {csv_text!r}")
        files.append(("trace.csv", csv_text.encode()))
        if w_intent == "valid" and t_intent == "valid":
            horizon = work.get("horizon_s", max(max(r[0] for r in rows), 1.0))
            expected = sum(1 for r in rows if r[0] < horizon)
    args = ["plan", "--fleet", "@fleet.yaml", "--workload", "@workload.yaml", "--no-baselines",
            "--format", "json", "--time-limit", "10"]
    m_intent, m_reject = "valid", False
    if draw(st.integers(0, 9)) == 0:
        models = draw(st.sampled_from([b"", b"{}", b"[]", b'{"format": "x"}', b"\xff",
                                       b'{"format": "wattsched-fits/1", "models": [{}]}',
                                       b'{"format": "wattsched-fits/1", "models": 5}']))
        files.append(("models.json", models))
        args += ["--models", "@models.json"]
        m_intent, m_reject = "malformed", True
        notes.append(f"models {models!r}")
    if draw(st.integers(0, 4)) == 0:
        args += ["--out", "@out/plan.json" if draw(st.booleans()) else "@plan.yaml"]
    intents = (f_intent, w_intent, t_intent, m_intent)
    intent = "valid" if all(i == "valid" for i in intents) else (
        "malformed" if "malformed" in intents else "edge")
    pool_counts = None
    if f_intent == "valid":
        pool_counts = tuple((p["id"], p["count"]) for p in fleet["pools"])
    return Case("plan", tuple(args), tuple(files), intent,
                expect_reject=f_reject or w_reject or t_reject or m_reject,
                expected_requests=expected, pool_counts=pool_counts, notes=tuple(notes))


@st.composite
def fit_cases(draw) -> Case:
    table, intent, reject, note = draw(measurement_tables())
    args = ["fit", "@runs.csv", "--format", "json", "--out", "@models.json"]
    if draw(st.integers(0, 4)) == 0:
        args += ["--folds", str(draw(st.sampled_from([2, 3])))]
    return Case("fit", tuple(args), (("runs.csv", table),), intent, expect_reject=reject,
                notes=(note,) if note else ())


@st.composite
def predict_cases(draw) -> Case:
    table, intent, reject, note = draw(measurement_tables(for_calibration=True))
    gpu = draw(st.sampled_from(["H100-SXM", "L4", "A100-80GB", "B200"]))
    llm = draw(st.sampled_from(SMALL_LLMS))
    batch = draw(st.sampled_from(["1", "8", "32"]))
    args = ["predict", "--gpu", gpu, "--llm", llm, "--batch", batch, "--calibrate", "@runs.csv",
            "--format", "json"]
    return Case("predict", tuple(args), (("runs.csv", table),), intent, expect_reject=reject,
                notes=(note,) if note else ())


def cases() -> st.SearchStrategy[Case]:
    """Plans most often (the largest input surface), then fits and calibrated predictions."""
    return st.one_of(plan_cases(), plan_cases(), plan_cases(), fit_cases(), predict_cases())


# ---------------------------------------------------------------------------------------------
# Running and judging one case.


class CaseTimeout(BaseException):
    """Raised by SIGALRM in the main thread when a case runs past its limit.

    A BaseException, so neither the CLI's handlers nor CliRunner swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread, POSIX); a no-op elsewhere."""
    import threading

    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_DROPPED = re.compile(r"^(left out \d+ row\(s\):|  .*|  \.\.\. and \d+ more .*)$")


def _error_line(stderr: str) -> tuple[str | None, list[str]]:
    """The one error line (or None) and the lines that are neither progress nor warnings."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    informative = ("warning:", "models written to")
    stray = [line for line in lines if not (_DROPPED.match(line)
                                            or line.startswith(informative))]
    errors = [line for line in stray if line.startswith("error:")]
    if len(errors) == 1 and stray == errors and lines[-1] == errors[0]:
        return errors[0], []
    return None, stray


def _close(a: float, b: float, rel: float = 1e-4, absolute: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b)) + absolute


def _finite(doc: dict, key: str, *, minimum: float = 0.0) -> str | None:
    value = doc.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
            value) or value < minimum:
        return f"{key} is {value!r}, not a finite number >= {minimum:g}"
    return None


def check_plan_doc(doc: Any, case: Case) -> list[str]:
    """Independent checks of ``plan --format json`` output."""
    if not isinstance(doc, dict):
        return [f"plan is a {type(doc).__name__}"]
    problems = [p for key in ("energy_j", "active_energy_j", "base_energy_j", "mean_power_w",
                              "peak_power_w", "horizon_s") if (p := _finite(doc, key))]
    requests = doc.get("requests")
    if not isinstance(requests, int) or requests < 0:
        return [*problems, f"requests is {requests!r}"]
    if problems:
        return problems
    if case.expected_requests is not None and requests != case.expected_requests:
        problems.append(f"requests {requests}, the trace has {case.expected_requests} "
                        f"in the horizon")
    routing = doc.get("routing") or []
    routed = sum(r["requests"] for r in routing if r.get("requests") is not None)
    if any(r.get("requests") is None or not r["requests"] > 0 for r in routing):
        problems.append("a route carries no finite positive number of requests")
    if not _close(routed, requests, 1e-5, 1e-6 * (len(routing) + 1)):
        problems.append(f"routed {routed:g} of {requests} requests")
    if not _close(doc["energy_j"], doc["active_energy_j"] + doc["base_energy_j"], 1e-5):
        problems.append("energy_j is not active_energy_j + base_energy_j")
    if not _close(doc["mean_power_w"], doc["energy_j"] / doc["horizon_s"], 1e-4):
        problems.append("mean_power_w is not energy_j / horizon_s")
    if requests:
        if (p := _finite(doc, "j_per_request")) or not _close(
                doc["j_per_request"], doc["energy_j"] / requests, 1e-4):
            problems.append(p or "j_per_request is not energy_j / requests")
        slo = doc.get("slo_attainment")
        if not isinstance(slo, (int, float)) or not 0 <= slo <= 1 + 1e-9:
            problems.append(f"slo_attainment {slo!r} is not in [0, 1]")
    replicas = doc.get("replicas") or []
    on = {r["deployment"] for r in replicas}
    if any(r["deployment"] not in on for r in routing):
        problems.append("a route goes to a deployment with no replicas")
    devices = sum(r.get("devices", 0) for r in replicas)
    if devices != doc.get("devices_on"):
        problems.append(f"devices_on {doc.get('devices_on')} but replicas use {devices}")
    if requests and not replicas:
        problems.append("requests but no replicas")
    if case.pool_counts is not None:
        counts = dict(case.pool_counts)
        used: dict[str, int] = {}
        for r in replicas:
            used[r["pool"]] = used.get(r["pool"], 0) + r["devices"]
            if r["pool"] not in counts:
                problems.append(f"replicas on unknown pool {r['pool']!r}")
        problems += [f"pool {p} uses {n} of {counts[p]} devices" for p, n in used.items()
                     if p in counts and n > counts[p]]
    if doc.get("status") not in ("optimal", "feasible"):
        problems.append(f"status {doc.get('status')!r}")
    return problems


def check_fit_output(stdout: str, workdir: Path) -> list[str]:
    from energy_models.regression.fitting import FittedModels

    rows = json.loads(stdout)
    problems = []
    if not isinstance(rows, list) or not rows:
        return ["fit printed no models"]
    for row in rows:
        if not row["refused"] and (row["cv_r2"] is None or row["form"] is None):
            problems.append(f"an accepted fit without a form or CV R²: {row}")
        if row["rows"] is None or row["rows"] < 1:
            problems.append(f"a fit of {row['rows']!r} rows")
    loaded = FittedModels.load(workdir / "models.json")
    if len(loaded.models) != len(rows):
        problems.append(f"models.json holds {len(loaded.models)} fits, stdout lists {len(rows)}")
    return problems


def check_predict_output(stdout: str) -> list[str]:
    doc = json.loads(stdout)
    problems = [p for key in ("power_w", "itl_s", "energy_per_token_j")
                if (p := _finite(doc, key, minimum=1e-300))]
    calibration = doc.get("calibration") or {}
    for target, factor in (calibration.get("factors") or {}).items():
        if not (isinstance(factor, float) and math.isfinite(factor) and factor > 0):
            problems.append(f"calibration factor of {target} is {factor!r}")
    return problems


def _json_strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in JSON output")
    return json.loads(text, parse_constant=refuse)


def _innermost_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename
            and "fuzz_inputs" not in f.filename] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    parts = Path(frame.filename).parts
    short = "/".join(parts[-2:])
    return f"{short}:{frame.lineno} {frame.name}"


def _normalise(text: str) -> str:
    text = re.sub(r"/\S*/", "", text)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    return re.sub(r"'[^']*'", "'…'", text)[:90]


def judge(case: Case, workdir: Path, exit_code: int | None, stdout: str, stderr: str,
          exception: BaseException | None) -> Outcome:
    """Classify one run (see ``Outcome.category``)."""
    if isinstance(exception, CaseTimeout):
        return Outcome("hang", None, str(exception), stdout, stderr, signature="hang "
                       + case.command)
    if exception is not None and not isinstance(exception, SystemExit):
        trace = "".join(traceback.format_exception(exception))
        return Outcome("traceback", exit_code, f"{type(exception).__name__}: {exception}"[:300],
                       stdout, stderr, trace, signature=(
                           f"traceback {type(exception).__name__} at "
                           f"{_innermost_frame(exception)}"))
    if exit_code == 0:
        if case.expect_reject:
            return Outcome("accepted_invalid", 0, "; ".join(case.notes), stdout, stderr,
                           signature=f"accepted_invalid {case.command}: "
                           + _normalise("; ".join(case.notes)))
        try:
            doc_stdout = stdout
            if case.command == "plan":
                problems = check_plan_doc(_json_strict(doc_stdout), case)
            elif case.command == "fit":
                _json_strict(doc_stdout)
                problems = check_fit_output(doc_stdout, workdir)
            else:
                _json_strict(doc_stdout)
                problems = check_predict_output(doc_stdout)
        except (ValueError, KeyError, TypeError) as exc:
            problems = [f"unreadable output: {type(exc).__name__}: {exc}"[:200]]
        except Exception as exc:  # E.g. a models.json that does not load back.
            problems = [f"output does not load back: {type(exc).__name__}: {exc}"[:200]]
        if problems:
            return Outcome("bad_output", 0, "; ".join(problems)[:400], stdout, stderr,
                           signature=f"bad_output {case.command}: {_normalise(problems[0])}")
        return Outcome("ok", 0, stdout=stdout, stderr=stderr)
    if exit_code == 2:
        line, stray = _error_line(stderr)
        if line is None:
            return Outcome("multi_line", 2, " | ".join(stray)[:400], stdout, stderr,
                           signature=f"multi_line {case.command}: "
                           + _normalise(" | ".join(stray[:2])))
        if line.startswith("error: infeasible:"):
            return Outcome("infeasible", 2, line, stdout, stderr)
        names = [str(workdir / name) for name, _ in case.files]
        # A bad option is blamed on the command line, which names the option instead.
        if not (any(name in line for name in names) or line.startswith("error: command line: ")):
            return Outcome("unnamed", 2, line, stdout, stderr,
                           signature=f"unnamed {case.command}: {_normalise(line)}")
        return Outcome("error", 2, line, stdout, stderr)
    return Outcome("exit_code", exit_code, stderr[-300:], stdout, stderr,
                   signature=f"exit_code {exit_code} {case.command}: "
                   + _normalise(stderr.strip().splitlines()[-1] if stderr.strip() else ""))


def run_case(case: Case, workdir: Path, *, limit_s: float = 60.0) -> Outcome:
    """Write the case's files into the empty folder ``workdir`` and run the CLI in-process."""
    import time

    from typer.testing import CliRunner

    from scheduler.cli import app

    workdir.mkdir(parents=True, exist_ok=True)
    for name, content in case.files:
        (workdir / name).write_bytes(content)
    (workdir / "out").mkdir(exist_ok=True)
    args = [str(workdir / a[1:]) if a.startswith("@") else a for a in case.args]
    runner = CliRunner()
    start = time.perf_counter()
    try:
        with time_limit(limit_s), _quiet_fd1():
            result = runner.invoke(app, args)
        outcome = judge(case, workdir, result.exit_code, result.stdout, result.stderr,
                        result.exception)
    except CaseTimeout as exc:
        outcome = judge(case, workdir, None, "", "", exc)
    outcome.seconds = time.perf_counter() - start
    return outcome


@contextlib.contextmanager
def _quiet_fd1() -> Iterator[None]:
    """Solver banners printed from C straight to file descriptor 1 go to /dev/null."""
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def save_case(case: Case, outcome: Outcome, folder: Path) -> None:
    """Everything needed to reproduce ``case``: its files, the command and what it printed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in case.files:
        (folder / name).write_bytes(content)
    command = " ".join(("wattsched", *(a[1:] if a.startswith("@") else a for a in case.args[0:])))
    (folder / "README.txt").write_text(
        f"cd {folder} && {command}\n\ncategory: {outcome.category}\nsignature: "
        f"{outcome.signature}\ndetail: {outcome.detail}\nnotes: {list(case.notes)}\n"
        f"intent: {case.intent}, expect_reject: {case.expect_reject}\n\n--- stderr\n"
        f"{outcome.stderr}\n--- stdout (head)\n{outcome.stdout[:2000]}\n--- traceback\n"
        f"{outcome.trace}")


def fresh_dir(root: Path, index: int) -> Path:
    path = root / f"case{index}"
    if path.exists():
        shutil.rmtree(path)
    return path


def text_of(content: bytes) -> str:
    """A file's bytes for a report: text where it decodes, escapes where not."""
    return io.BytesIO(content).read().decode("utf-8", "backslashreplace")
