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
    unused_devices: off         # optional: off (default) or idle, how the replay counts
                                # devices that hold no replica
    defaults:                   # optional, all fields optional
      slo: {ttft_s: 2.0, itl_s: 0.1, e2e_s: null}
      min_quality: 60
      max_utilization: 0.8
      batch_sizes: [1, 8, 32, 128]  # default: energy_models.memory.MAX_NUM_SEQS_OPTIONS
      engine: vllm

Bounds, checked before anything is built from them: ``count`` at most MAX_POOL_DEVICES,
batch sizes at most MAX_BATCH_SIZE; every number finite. Unknown and repeated keys are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from energy_models.catalog.specs import get_device, get_llm
from energy_models.inputs import StrictModel, field_error, validate
from energy_models.inputs import load_yaml as _load_yaml
from energy_models.inputs import parse_yaml as _parse_yaml
from energy_models.memory import MAX_NUM_SEQS_OPTIONS
from energy_models.registry import UnknownNameError
from energy_models.stacks import DEFAULT_STACK, STACKS
from scheduler.errors import InputError

MAX_POOL_DEVICES = 100_000
"""Devices in one pool: above the largest clusters built; bounds the solver's integers."""
MAX_BATCH_SIZE = 65_536
"""Concurrent requests per replica: far above what any engine schedules."""
_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _ident(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("expected an id of letters, digits, '-', '_', '.'")
    return value


def _catalog_name(lookup: Callable[[str], Any]) -> Callable[[str], str]:
    def resolve(value: str) -> str:
        try:
            return lookup(value).name
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
    return resolve


Ident = Annotated[str, AfterValidator(_ident)]
Seconds = Annotated[float, Field(gt=0)]
Watts = Annotated[float, Field(gt=0)]


class Slo(StrictModel):
    """Per-request latency bounds; None means no bound."""

    ttft_s: Seconds | None = 2.0
    itl_s: Seconds | None = 0.1
    e2e_s: Seconds | None = None


class Defaults(StrictModel):
    slo: Slo = Slo()
    min_quality: float | None = None
    max_utilization: Annotated[float, Field(gt=0, le=1)] = 0.8
    batch_sizes: Annotated[
        tuple[Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)], ...], Field(min_length=1)
    ] = MAX_NUM_SEQS_OPTIONS
    engine: str = DEFAULT_STACK
    """Serving-stack family the GPUs run (``energy_models.stacks``)."""

    @field_validator("slo", mode="before")
    @classmethod
    def _slo_or_default(cls, value: Any) -> Any:
        return Slo() if value is None else value

    @field_validator("batch_sizes")
    @classmethod
    def _sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(value)))

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in STACKS:
            raise ValueError(f"unknown serving stack {value!r}; known: {', '.join(STACKS)}")
        return value


class RackSpec(StrictModel):
    id: Ident
    power_cap_w: Watts | None = None


class PoolSpec(StrictModel):
    id: Ident
    device: Annotated[str, AfterValidator(_catalog_name(get_device))]
    count: Annotated[int, Field(ge=1, le=MAX_POOL_DEVICES)]
    devices_per_node: Annotated[int, Field(ge=1, le=MAX_POOL_DEVICES)]
    rack: str = "default"
    power_cap_w: Watts | None = None
    """Per-device power limit."""
    price_per_hour: Annotated[float, Field(ge=0)] | None = None
    """Per device-hour."""
    node: str | None = None
    """Optional label of the node(s) the pool sits on, for reports."""

    @model_validator(mode="before")
    @classmethod
    def _one_node_by_default(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "devices_per_node" not in raw and "count" in raw:
            return {**raw, "devices_per_node": raw["count"]}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> PoolSpec:
        if self.count % self.devices_per_node:
            raise field_error("devices_per_node", f"count {self.count} is not a multiple of "
                                                  f"devices_per_node {self.devices_per_node}")
        idle_w = get_device(self.device).idle_w
        if self.power_cap_w is not None and self.power_cap_w <= idle_w:
            raise field_error("power_cap_w", f"{self.power_cap_w:g} W is not above "
                                             f"{self.device}'s idle power {idle_w:g} W")
        return self


def _unique_ids(ids: list[str]) -> None:
    """Exact duplicates, then ids the solver would merge (it reads '-' and '_' alike)."""
    seen: dict[str, str] = {}
    for i, item in enumerate(ids):
        safe = re.sub(r"[^A-Za-z0-9_.]", "_", item)
        if safe in seen:
            other = seen[safe]
            problem = (f"duplicate id {item!r}" if other == item else
                       f"ids {other!r} and {item!r} are equal once '-' is read as '_'")
            raise field_error(f"[{i}].id", f"{problem}; rename one")
        seen[safe] = item


class Fleet(StrictModel):
    """Pools of devices in racks, the LLMs they may serve and the default requirements."""

    internal_fields: ClassVar[frozenset[str]] = frozenset({"where"})
    name: str = ""
    racks: tuple[RackSpec, ...] = (RackSpec(id="default"),)
    pools: tuple[PoolSpec, ...]
    llms: tuple[Annotated[str, AfterValidator(_catalog_name(get_llm))], ...]
    defaults: Defaults = Defaults()
    unused_devices: Literal["off", "idle"] = "off"
    """Devices that hold no replica: switched off, or drawing their idle power (the replay
    counts it)."""
    where: str = ""
    """The file the fleet came from, for messages that blame it."""

    @field_validator("unused_devices", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare ``off`` as false.
        return "off" if value is False else value

    @field_validator("racks", "defaults", mode="before")
    @classmethod
    def _absent(cls, value: Any, info: Any) -> Any:
        if value is None:
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("racks")
    @classmethod
    def _default_rack(cls, racks: tuple[RackSpec, ...]) -> tuple[RackSpec, ...]:
        _unique_ids([r.id for r in racks])
        if "default" in {r.id for r in racks}:
            return racks
        return (*racks, RackSpec(id="default"))

    @field_validator("pools", "llms", mode="before")
    @classmethod
    def _not_empty(cls, value: Any, info: Any) -> Any:
        if isinstance(value, list | tuple) and not value:
            what = "pool of devices" if info.field_name == "pools" else "LLM the fleet may serve"
            raise ValueError(f"missing or empty; list at least one {what}")
        return value

    @field_validator("pools")
    @classmethod
    def _unique_pools(cls, pools: tuple[PoolSpec, ...]) -> tuple[PoolSpec, ...]:
        _unique_ids([p.id for p in pools])
        return pools

    @field_validator("llms")
    @classmethod
    def _dedupe(cls, llms: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(llms))

    @model_validator(mode="after")
    def _racks_declared(self) -> Fleet:
        racks = {r.id for r in self.racks}
        for i, pool in enumerate(self.pools):
            if pool.rack not in racks:
                raise field_error(f"pools[{i}].rack",
                                  f"unknown rack {pool.rack!r}; declare it under racks")
        return self


def _error(where: str) -> Callable[[str, str], InputError]:
    return lambda field, problem: InputError(where, field, problem)


def parse_fleet(raw: Any, where: str) -> Fleet:
    """Validate parsed YAML into a Fleet; every error names ``where`` and the field."""
    fleet = validate(Fleet, raw, _error(where))
    return fleet.model_copy(update={"name": fleet.name or Path(where).stem, "where": where})


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file strictly (UTF-8, size cap, no repeated keys), errors as InputErrors."""
    return _load_yaml(path, _error(str(path)))


def load_fleet(path: str | Path | None = None) -> Fleet:
    """The fleet at ``path``, or the bundled example fleet when ``path`` is None."""
    if path is None:
        where = "default_fleet.yaml"
        text = resources.files("scheduler").joinpath("data", where).read_text()
        return parse_fleet(_parse_yaml(text, _error(where)), where)
    return parse_fleet(load_yaml(path), str(path))


class ReplicaSpec(StrictModel):
    """Replicas an operator already runs: ``count`` of one LLM on ``tp`` devices of a pool,
    with vLLM's ``max_num_seqs``."""

    pool: Ident
    llm: Annotated[str, AfterValidator(_catalog_name(get_llm))]
    tp: Annotated[int, Field(ge=1, le=MAX_POOL_DEVICES)] = 1
    max_num_seqs: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)]
    count: Annotated[int, Field(ge=1, le=MAX_POOL_DEVICES)] = 1


class CurrentReplicas(StrictModel):
    """A replicas file for ``plan --replicas``::

        replicas:
          - {pool: h100, llm: llama-3.1-8b, tp: 1, max_num_seqs: 256, count: 2}
    """

    internal_fields: ClassVar[frozenset[str]] = frozenset({"where"})
    replicas: Annotated[tuple[ReplicaSpec, ...], Field(min_length=1)]
    where: str = ""


def load_replicas(path: str | Path, fleet: Fleet) -> CurrentReplicas:
    """The replicas file at ``path``, checked against ``fleet``: every pool is one of its
    pools and every LLM one it may serve; a pool and setting listed twice is refused."""
    current = validate(CurrentReplicas, load_yaml(path), _error(str(path)))
    pools = {pool.id for pool in fleet.pools}
    seen: set[tuple[str, str, int, int]] = set()
    for i, replica in enumerate(current.replicas):
        where = f"replicas[{i}]"
        if replica.pool not in pools:
            raise InputError(str(path), f"{where}.pool",
                             f"unknown pool {replica.pool!r}; the fleet ({fleet.where}) has "
                             f"{', '.join(sorted(pools))}")
        if replica.llm not in fleet.llms:
            raise InputError(str(path), f"{where}.llm",
                             f"{replica.llm} is not among the fleet's llms ({fleet.where}); "
                             f"add it there")
        key = (replica.pool, replica.llm, replica.tp, replica.max_num_seqs)
        if key in seen:
            raise InputError(str(path), where, "the same pool, llm, tp and max_num_seqs are "
                                               "listed twice; add the counts into one entry")
        seen.add(key)
    return current.model_copy(update={"where": str(path)})
