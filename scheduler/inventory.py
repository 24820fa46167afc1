"""Fleet inventory: pools of devices in racks, the LLMs that may be served, default SLOs.

A fleet file is YAML::

    racks:                      # optional; pools default to one rack named "default"
      - {id: rack-a, power_cap_w: 30000}
    pools:
      - id: h100                # unique; letters, digits, '-', '_', '.'
        device: H100-SXM        # a catalogued GPU or CPU (see `wattsched catalog`)
        count: 8                # devices in the pool
        devices_per_node: 8     # optional (default: count); bounds tensor parallelism
        rack: rack-a            # optional
        node: node-1            # optional label for reports
        power_cap_w: 500        # optional per-device power limit
        price_per_hour: 4.0     # optional, per device
    llms: [llama-3.1-8b, llama-3.1-70b]
    defaults:                   # optional, all fields optional
      slo: {ttft_s: 2.0, itl_s: 0.1, e2e_s: null}
      min_quality: 60
      max_utilization: 0.8
      batch_sizes: [1, 8, 32, 128]
      engine: vllm
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from energy_models.catalog.specs import get_device, get_llm
from energy_models.errors import UnknownNameError
from scheduler.errors import InputError

_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = 2.0
    itl_s: float | None = 0.1
    e2e_s: float | None = None


@dataclass(frozen=True)
class Defaults:
    slo: Slo = Slo()
    min_quality: float | None = None
    max_utilization: float = 0.8
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    engine: str = "vllm"


@dataclass(frozen=True)
class RackSpec:
    id: str
    power_cap_w: float | None = None


@dataclass(frozen=True)
class PoolSpec:
    id: str
    device: str
    count: int
    devices_per_node: int
    rack: str
    power_cap_w: float | None = None
    price_per_hour: float | None = None
    node: str | None = None
    """Optional label of the node(s) the pool sits on, for reports."""


@dataclass(frozen=True)
class Fleet:
    name: str
    racks: tuple[RackSpec, ...]
    pools: tuple[PoolSpec, ...]
    llms: tuple[str, ...]
    defaults: Defaults


class _Reader:
    """Typed field access over parsed YAML that reports ``file: field: problem``."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str) -> InputError:
        return InputError(self.where, field, problem)

    def mapping(self, value: Any, field: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected a mapping, got {type(value).__name__}")
        return value

    def known_keys(self, value: dict, field: str, allowed: set[str]) -> None:
        extra = sorted(set(value) - allowed)
        if extra:
            raise self.fail(f"{field}.{extra[0]}", f"unknown field; allowed: {sorted(allowed)}")

    def number(self, value: Any, field: str, *, positive: bool = True, allow_none: bool = False):
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise self.fail(field, f"expected a number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(field, f"must be positive, got {value!r}")
        return float(value)

    def integer(self, value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, f"expected a whole number, got {value!r}")
        if value <= 0:
            raise self.fail(field, f"must be a positive whole number, got {value}")
        return value

    def ident(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not _ID.match(value):
            raise self.fail(field, f"expected an id of letters, digits, '-', '_', '.': {value!r}")
        return value


def _defaults(reader: _Reader, raw: Any) -> Defaults:
    if raw is None:
        return Defaults()
    raw = reader.mapping(raw, "defaults")
    reader.known_keys(raw, "defaults", {"slo", "min_quality", "max_utilization", "batch_sizes",
                                        "engine"})
    slo = Slo()
    if raw.get("slo") is not None:
        slo_raw = reader.mapping(raw["slo"], "defaults.slo")
        reader.known_keys(slo_raw, "defaults.slo", {"ttft_s", "itl_s", "e2e_s"})
        slo = Slo(**{
            key: reader.number(slo_raw[key], f"defaults.slo.{key}", allow_none=True)
            for key in slo_raw
        })
    batch_sizes = Defaults.batch_sizes
    if "batch_sizes" in raw:
        values = raw["batch_sizes"]
        if not isinstance(values, list) or not values:
            raise reader.fail("defaults.batch_sizes", "expected a non-empty list of whole numbers")
        batch_sizes = tuple(sorted({
            reader.integer(v, f"defaults.batch_sizes[{i}]") for i, v in enumerate(values)
        }))
    max_util = reader.number(raw.get("max_utilization", Defaults.max_utilization),
                             "defaults.max_utilization")
    if max_util > 1:
        raise reader.fail("defaults.max_utilization", f"must be at most 1, got {max_util}")
    min_quality = reader.number(raw.get("min_quality"), "defaults.min_quality", positive=False,
                                allow_none=True)
    engine = raw.get("engine", Defaults.engine)
    if engine not in ("vllm", "hf"):
        raise reader.fail("defaults.engine", f"unknown engine {engine!r}; use 'vllm' or 'hf'")
    return Defaults(slo, min_quality, max_util, batch_sizes, engine)


def _pool(reader: _Reader, raw: Any, i: int, racks: set[str]) -> PoolSpec:
    field = f"pools[{i}]"
    raw = reader.mapping(raw, field)
    reader.known_keys(raw, field, {"id", "device", "count", "devices_per_node", "rack",
                                   "power_cap_w", "price_per_hour", "node"})
    for key in ("id", "device", "count"):
        if key not in raw:
            raise reader.fail(f"{field}.{key}", "missing; every pool needs id, device and count")
    pool_id = reader.ident(raw["id"], f"{field}.id")
    try:
        device = get_device(str(raw["device"]))
    except UnknownNameError as exc:
        raise reader.fail(f"{field}.device", str(exc)) from None
    count = reader.integer(raw["count"], f"{field}.count")
    per_node = reader.integer(raw.get("devices_per_node", count), f"{field}.devices_per_node")
    if count % per_node:
        raise reader.fail(f"{field}.devices_per_node",
                          f"count {count} is not a multiple of devices_per_node {per_node}")
    rack = raw.get("rack", "default")
    if rack not in racks:
        raise reader.fail(f"{field}.rack", f"unknown rack {rack!r}; declare it under racks")
    cap = reader.number(raw.get("power_cap_w"), f"{field}.power_cap_w", allow_none=True)
    if cap is not None and cap <= device.idle_w:
        raise reader.fail(f"{field}.power_cap_w",
                          f"{cap:g} W is not above {device.name}'s idle power {device.idle_w:g} W")
    price = reader.number(raw.get("price_per_hour"), f"{field}.price_per_hour", positive=False,
                          allow_none=True)
    node = raw.get("node")
    if node is not None and not isinstance(node, str):
        raise reader.fail(f"{field}.node", f"expected a label, got {node!r}")
    return PoolSpec(pool_id, device.name, count, per_node, rack, cap, price, node)


def parse_fleet(raw: Any, where: str) -> Fleet:
    """Validate parsed YAML into a Fleet; every error names ``where`` and the field."""
    reader = _Reader(where)
    raw = reader.mapping(raw, "(top level)")
    reader.known_keys(raw, "(top level)", {"name", "racks", "pools", "llms", "defaults"})
    racks = [RackSpec("default")]
    if raw.get("racks") is not None:
        if not isinstance(raw["racks"], list):
            raise reader.fail("racks", "expected a list of {id, power_cap_w}")
        racks = []
        for i, item in enumerate(raw["racks"]):
            item = reader.mapping(item, f"racks[{i}]")
            reader.known_keys(item, f"racks[{i}]", {"id", "power_cap_w"})
            racks.append(RackSpec(
                reader.ident(item.get("id"), f"racks[{i}].id"),
                reader.number(item.get("power_cap_w"), f"racks[{i}].power_cap_w",
                              allow_none=True),
            ))
        if "default" not in {r.id for r in racks}:
            racks.append(RackSpec("default"))
    if not isinstance(raw.get("pools"), list) or not raw["pools"]:
        raise reader.fail("pools", "missing or empty; list at least one pool of devices")
    rack_ids = {r.id for r in racks}
    pools = tuple(_pool(reader, item, i, rack_ids) for i, item in enumerate(raw["pools"]))
    for kind, ids in (("racks", [r.id for r in racks]), ("pools", [p.id for p in pools])):
        safe = [re.sub(r"[^A-Za-z0-9_.]", "_", x) for x in ids]
        if len(set(safe)) != len(safe):
            raise reader.fail(kind, "two ids are equal once '-' is read as '_'; rename one")
    if not isinstance(raw.get("llms"), list) or not raw["llms"]:
        raise reader.fail("llms", "missing or empty; list the LLMs the fleet may serve")
    names = []
    for i, name in enumerate(raw["llms"]):
        try:
            names.append(get_llm(str(name)).name)
        except UnknownNameError as exc:
            raise reader.fail(f"llms[{i}]", str(exc)) from None
    return Fleet(
        name=str(raw.get("name", Path(where).stem)),
        racks=tuple(racks),
        pools=pools,
        llms=tuple(dict.fromkeys(names)),
        defaults=_defaults(reader, raw.get("defaults")),
    )


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file, turning I/O and syntax errors into one-line InputErrors."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(str(path), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(syntax)"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(str(path), at, f"{problem}; fix the YAML syntax") from None


def load_fleet(path: str | Path | None = None) -> Fleet:
    """The fleet at ``path``, or the bundled example fleet when ``path`` is None."""
    if path is None:
        text = resources.files("scheduler").joinpath("data", "default_fleet.yaml").read_text()
        return parse_fleet(yaml.safe_load(text), "default_fleet.yaml")
    return parse_fleet(load_yaml(path), str(path))
