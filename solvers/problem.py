"""A self-contained placement-and-routing problem: plain arrays, no YAML, no cost models.

Rows of every (C, D) matrix follow ``Problem.classes``; columns follow ``Problem.deployments``.
Energies are joules, times seconds, powers watts, counts requests over ``horizon_s``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from solvers.errors import ProblemError

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass(frozen=True)
class Rack:
    """A rack; ``power_cap_w`` bounds the summed peak power of the replicas placed in it."""

    id: str
    power_cap_w: float | None = None


@dataclass(frozen=True)
class Pool:
    """A homogeneous set of ``count`` devices of one type in one rack."""

    id: str
    device: str
    count: int
    rack: str
    price_per_hour: float | None = None
    """Price of one device for an hour, if known (plans report their cost from it)."""


@dataclass(frozen=True)
class Deployment:
    """A candidate replica: one LLM on ``tp`` devices of one pool, serving up to ``max_batch``."""

    id: str
    pool: str
    llm: str
    tp: int
    max_batch: int
    quality: float
    idle_power_w: float
    """Power of the whole replica (all ``tp`` devices) when on and idle."""
    peak_power_w: float
    """Power of the whole replica at full load; used for rack power caps."""
    memory_need_gb: float
    """Memory each device needs (weights and KV cache shares)."""
    memory_gb: float
    """Memory each device has."""
    base_power_w: float | None = None
    """Power the whole replica draws whenever it is on, whatever its load; None: its idle
    power. Serving online it is higher: continuous batching keeps a lightly loaded replica
    stepping at a small batch (``scheduler.build.base_power_w``)."""

    def __post_init__(self) -> None:
        if self.base_power_w is None:
            object.__setattr__(self, "base_power_w", self.idle_power_w)


@dataclass(frozen=True)
class DemandClass:
    """Requests alike in size and requirements; ``count`` of them arrive over the horizon."""

    id: str
    count: float
    min_quality: float = -math.inf
    slo_ttft_s: float = math.inf
    slo_e2e_s: float = math.inf
    slo_itl_s: float = math.inf
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Where each requirement came from, by attribute (``min_quality``, ``slo_ttft_s``, ...),
    e.g. ``min_quality.code = 75 from workload.yaml``; messages about it quote this."""


@dataclass(frozen=True)
class Problem:
    """Everything the optimiser, the baselines and the checker need, and nothing else."""

    horizon_s: float
    racks: tuple[Rack, ...]
    pools: tuple[Pool, ...]
    deployments: tuple[Deployment, ...]
    classes: tuple[DemandClass, ...]
    energy_j: np.ndarray
    """(C, D) active energy per request above the replica's base power."""
    occupancy_s: np.ndarray
    """(C, D) replica-seconds one request takes (its share of a batched replica)."""
    ttft_s: np.ndarray
    """(C, D) time to first token."""
    itl_s: np.ndarray
    """(C, D) inter-token latency."""
    e2e_s: np.ndarray
    """(C, D) end-to-end latency."""
    servable: np.ndarray
    """(C, D) False where the deployment cannot run the class at all (e.g. context too long)."""
    max_utilization: float = 1.0
    """Fraction of each replica's time that may be planned busy (headroom for bursts)."""
    min_mean_quality: float | None = None
    """Optional request-weighted mean quality target over all routed requests."""
    _index: dict[str, dict[str, int]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = (len(self.classes), len(self.deployments))
        for name in ("energy_j", "occupancy_s", "ttft_s", "itl_s", "e2e_s", "servable"):
            value = np.asarray(getattr(self, name))
            if value.shape != shape:
                raise ProblemError(f"{name} has shape {value.shape}, expected {shape}")
            object.__setattr__(self, name, value)
        if not self.horizon_s > 0:
            raise ProblemError(f"horizon_s must be positive, got {self.horizon_s}")
        if not 0 < self.max_utilization <= 1:
            raise ProblemError(f"max_utilization must be in (0, 1], got {self.max_utilization}")
        for kind in ("racks", "pools", "deployments", "classes"):
            ids = [item.id for item in getattr(self, kind)]
            if len(set(ids)) != len(ids):
                raise ProblemError(f"duplicate ids in {kind}")
            bad = [i for i in ids if not _SAFE_ID.match(i)]
            if bad:
                raise ProblemError(
                    f"{kind} ids must match [A-Za-z0-9_.]+ (solver-safe): {bad[0]!r}"
                )
            self._index[kind] = {i: k for k, i in enumerate(ids)}
        rack_ids, pool_ids = self._index["racks"], self._index["pools"]
        for pool in self.pools:
            if pool.rack not in rack_ids:
                raise ProblemError(f"pool {pool.id!r} names unknown rack {pool.rack!r}")
            if pool.count < 0:
                raise ProblemError(f"pool {pool.id!r} has negative count {pool.count}")
        for dep in self.deployments:
            if dep.pool not in pool_ids:
                raise ProblemError(f"deployment {dep.id!r} names unknown pool {dep.pool!r}")
            if dep.tp < 1 or dep.max_batch < 1:
                raise ProblemError(f"deployment {dep.id!r} needs tp >= 1 and max_batch >= 1")
        for demand in self.classes:
            if not (demand.count >= 0 and math.isfinite(demand.count)):
                raise ProblemError(f"class {demand.id!r} has invalid count {demand.count}")
        active = self.servable
        for name in ("energy_j", "occupancy_s", "ttft_s", "itl_s", "e2e_s"):
            values = getattr(self, name)[active]
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ProblemError(f"{name} must be finite and >= 0 where servable")

    def index(self, kind: str, item_id: str) -> int:
        """Position of ``item_id`` among ``racks``, ``pools``, ``deployments`` or ``classes``."""
        return self._index[kind][item_id]

    def pool_of(self, dep: Deployment) -> Pool:
        return self.pools[self.index("pools", dep.pool)]

    @property
    def demand(self) -> np.ndarray:
        """(C,) requests per class over the horizon."""
        return np.array([c.count for c in self.classes], dtype=float)

    def class_slos(self) -> dict[str, np.ndarray]:
        """(C,) each class's SLO in seconds, keyed ``ttft_s``, ``itl_s`` and ``e2e_s``."""
        return {kind: np.array([getattr(c, f"slo_{kind}") for c in self.classes])
                for kind in ("ttft_s", "itl_s", "e2e_s")}

    def eligible(self) -> np.ndarray:
        """(C, D) True where a class may be routed to a deployment: servable, SLOs and quality."""
        quality = np.array([d.quality for d in self.deployments])
        min_quality = np.array([c.min_quality for c in self.classes])[:, None]
        ok = self.servable & (quality[None, :] >= min_quality)
        for kind, bound in self.class_slos().items():
            latency = getattr(self, kind)
            ok &= np.where(self.servable, latency, np.inf) <= bound[:, None]
        return ok

    def effective_energy_j(self) -> np.ndarray:
        """(C, D) what a request really costs on a deployment: its energy plus the base draw
        of the replica time it takes, at full planned use."""
        base_w = np.array([d.base_power_w for d in self.deployments])
        return self.energy_j + self.occupancy_s * base_w[None, :] / self.max_utilization

    def plan_energy_j(self, replicas: np.ndarray, routing: np.ndarray) -> tuple[float, float]:
        """(active, base) energy of a plan: routed work plus the base draw of the replicas on."""
        active = float(np.sum(np.where(routing > 0, self.energy_j * routing, 0.0)))
        base_w = np.array([d.base_power_w for d in self.deployments])
        return active, float(np.dot(replicas, base_w) * self.horizon_s)


@dataclass(frozen=True)
class Solution:
    """A plan in problem order: ``replicas`` is (D,) integers, ``routing`` is (C, D) requests."""

    replicas: np.ndarray
    routing: np.ndarray
    solver: str
    status: str
    """One of ``optimal``, ``feasible`` (time limit hit, best plan kept), ``heuristic``."""
    objective_j: float
    bound_j: float | None = None
    gap: float | None = None
    solve_time_s: float = 0.0
