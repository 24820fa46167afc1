"""The rules operators use today, as plug-ins chosen by name.

Every baseline respects what an operator would never break: eligibility (SLOs, per-class
quality, servability), replica capacity, pool inventory, memory and rack power caps. They
differ in which replicas they turn on and how they route. Each returns a ``Solution`` with
``solver="baseline:{name}"``, status ``heuristic`` and the recomputed energy, or raises
``InfeasibleError`` when its rule cannot serve the demand (or misses the mean-quality target).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from energy_models.registry import Registry
from solvers.errors import InfeasibleError, ProblemError
from solvers.problem import Problem, Solution

Baseline = Callable[[Problem], Solution]

BASELINES: Registry[Baseline] = Registry("baseline")
"""Registered baselines by name."""

DONE_REL = 1e-9
"""A class counts as fully routed once what is left is below this fraction of its count."""


def run_baseline(name: str, problem: Problem) -> Solution:
    """The plan of the baseline registered as ``name``."""
    return BASELINES.lookup(name)(problem)


class _Fleet:
    """A plan being built: replicas turned on, requests routed and the room that is left."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.replicas = np.zeros(len(problem.deployments), dtype=np.int64)
        self.routing = np.zeros((len(problem.classes), len(problem.deployments)))
        self.load_s = np.zeros(len(problem.deployments))
        self.free_devices = {pool.id: pool.count for pool in problem.pools}
        self.headroom_w = {
            rack.id: math.inf if rack.power_cap_w is None else rack.power_cap_w
            for rack in problem.racks
        }
        self.replica_s = problem.horizon_s * problem.max_utilization

    def addable(self, k: int) -> int:
        """How many more replicas of deployment ``k`` memory, inventory and rack power allow."""
        dep = self.problem.deployments[k]
        if dep.memory_need_gb > dep.memory_gb:
            return 0
        by_pool = self.free_devices[dep.pool] // dep.tp
        headroom_w = self.headroom_w[self.problem.pool_of(dep).rack]
        if dep.peak_power_w <= 0 or math.isinf(headroom_w):
            return by_pool
        return min(by_pool, max(math.floor(headroom_w / dep.peak_power_w), 0))

    def add(self, k: int, count: int) -> None:
        dep = self.problem.deployments[k]
        self.replicas[k] += count
        self.free_devices[dep.pool] -= dep.tp * count
        self.headroom_w[self.problem.pool_of(dep).rack] -= dep.peak_power_w * count

    def room(self, i: int, k: int) -> float:
        """Requests of class ``i`` the replicas of ``k`` that are on can still take."""
        if self.replicas[k] == 0:
            return 0.0
        occupancy_s = self.problem.occupancy_s[i, k]
        if occupancy_s == 0:
            return math.inf
        return max(self.replicas[k] * self.replica_s - self.load_s[k], 0.0) / occupancy_s

    def route(self, i: int, k: int, requests: float) -> float:
        """Route up to ``requests`` of class ``i`` to ``k`` without adding replicas; the amount."""
        taken = min(requests, self.room(i, k))
        self.routing[i, k] += taken
        self.load_s[k] += taken * self.problem.occupancy_s[i, k]
        return taken

    def grow_and_route(self, i: int, k: int, requests: float) -> float:
        """Add the replicas of ``k`` that ``requests`` of class ``i`` need (as many as allowed)
        and route what then fits; returns the amount routed."""
        need_s = requests * self.problem.occupancy_s[i, k]
        spare_s = self.replicas[k] * self.replica_s - self.load_s[k]
        # The tolerance keeps float noise from costing a whole extra replica.
        wanted = max(math.ceil((need_s - spare_s) / self.replica_s - DONE_REL), 0)
        if self.replicas[k] == 0:
            wanted = max(wanted, 1)  # even work that takes no time needs a replica that is on
        self.add(k, min(wanted, self.addable(k)))
        return self.route(i, k, requests)


def _greedy_fill(problem: Problem, name: str, preferences: Sequence[Sequence[int]]) -> _Fleet:
    """Route each class, in problem order, down its preference list of deployments.

    Each preferred deployment takes as much as fits, adding replicas (up to inventory, memory
    and rack power) as needed, and what it cannot take spills to the next preference.
    """
    fleet = _Fleet(problem)
    for i, demand in enumerate(problem.classes):
        left = demand.count
        for k in preferences[i]:
            if left <= DONE_REL * demand.count:
                break
            left -= fleet.grow_and_route(i, k, left)
        if left > DONE_REL * demand.count:
            raise InfeasibleError([_unserved(problem, name, i, left, preferences[i])])
    return fleet


def _unserved(problem: Problem, name: str, i: int, left: float, tried: Sequence[int]) -> str:
    demand = problem.classes[i]
    if not tried:
        return f"baseline {name}: class {demand.id} has no eligible deployment"
    ids = [problem.deployments[k].id for k in tried]
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return (
        f"baseline {name}: class {demand.id}: {left:.6g} of {demand.count:g} requests do not "
        f"fit on {shown} (capacity, inventory, memory, rack power)"
    )


def _finish(problem: Problem, name: str, fleet: _Fleet, started_s: float) -> Solution:
    """The fleet's plan as a Solution, refused if it misses the mean-quality target."""
    if problem.min_mean_quality is not None:
        quality = np.array([dep.quality for dep in problem.deployments])
        total = float(problem.demand.sum())
        reached = float((fleet.routing * quality).sum())
        if reached < problem.min_mean_quality * total * (1 - DONE_REL):
            raise InfeasibleError(
                [
                    f"baseline {name}: mean quality {reached / total:.4g} below the target "
                    f"{problem.min_mean_quality:g}"
                ]
            )
    active_j, base_j = problem.plan_energy_j(fleet.replicas, fleet.routing)
    return Solution(
        replicas=fleet.replicas,
        routing=fleet.routing,
        solver=f"baseline:{name}",
        status="heuristic",
        objective_j=active_j + base_j,
        solve_time_s=time.perf_counter() - started_s,
    )


def _ranked(eligible_row: np.ndarray, key: Callable[[int], tuple]) -> list[int]:
    """Eligible deployment indices sorted by ``key``, problem order breaking ties."""
    return sorted(np.flatnonzero(eligible_row).tolist(), key=lambda k: (*key(k), k))


def _greedy_baseline(problem: Problem, name: str, key: Callable[[int, int], tuple]) -> Solution:
    """A greedy baseline whose preferences sort each class's eligible deployments by
    ``key(i, k)``."""
    started_s = time.perf_counter()
    eligible = problem.eligible()
    preferences = [
        _ranked(eligible[i], lambda k, i=i: key(i, k)) for i in range(len(problem.classes))
    ]
    return _finish(problem, name, _greedy_fill(problem, name, preferences), started_s)


@BASELINES.register("performance_first")
def performance_first(problem: Problem) -> Solution:
    """Fastest device first: each class prefers the pool where it finishes soonest, and in
    that pool the configuration serving the most requests per device (as an operator sizes
    replicas on the fast hardware), spilling to slower pools when the fast one is full."""
    pool_of = [problem.index("pools", dep.pool) for dep in problem.deployments]
    best_e2e_s = _best_per_pool(problem, problem.e2e_s)
    per_device_s = _device_seconds(problem)
    return _greedy_baseline(
        problem, "performance_first",
        lambda i, k: (best_e2e_s[i, pool_of[k]], per_device_s[i, k]),
    )


@BASELINES.register("accuracy_first")
def accuracy_first(problem: Problem) -> Solution:
    """Largest model first: highest quality, then the most requests per device."""
    quality = [dep.quality for dep in problem.deployments]
    per_device_s = _device_seconds(problem)
    return _greedy_baseline(
        problem, "accuracy_first", lambda i, k: (-quality[k], per_device_s[i, k])
    )


def _device_seconds(problem: Problem) -> np.ndarray:
    """(C, D) device-seconds one request takes: replica occupancy times devices per replica."""
    return problem.occupancy_s * np.array([dep.tp for dep in problem.deployments])[None, :]


def _best_per_pool(problem: Problem, latency_s: np.ndarray) -> np.ndarray:
    """(C, P) each class's lowest eligible latency in each pool (inf where none)."""
    eligible = problem.eligible()
    best = np.full((len(problem.classes), len(problem.pools)), np.inf)
    for k, dep in enumerate(problem.deployments):
        p = problem.index("pools", dep.pool)
        best[:, p] = np.minimum(best[:, p], np.where(eligible[:, k], latency_s[:, k], np.inf))
    return best


@BASELINES.register("consolidation")
def consolidation(problem: Problem) -> Solution:
    """Fewest GPUs: lowest device-seconds per request (occupancy × tp) first."""
    per_device_s = _device_seconds(problem)
    return _greedy_baseline(problem, "consolidation", lambda i, k: (per_device_s[i, k],))


@BASELINES.register("round_robin")
def round_robin(problem: Problem) -> Solution:
    """Everything on, requests spread evenly.

    Each pool is filled (up to inventory and rack power) with replicas of one deployment: the
    one eligible for the most classes (one model serving all traffic, as operators run it),
    then the one that could carry the most of that demand, the highest quality, the smallest
    tp and the largest max_batch. Each class is then split
    equally per replica over every replica it is eligible on, as a round-robin load balancer
    would; a replica's overflow is spread the same way over the replicas with room left.
    """
    started_s = time.perf_counter()
    eligible = problem.eligible()
    fleet = _Fleet(problem)
    for pool in problem.pools:
        chosen = _round_robin_deployment(problem, pool.id, eligible)
        if chosen is not None:
            fleet.add(chosen, fleet.addable(chosen))
    for i, demand in enumerate(problem.classes):
        candidates = [k for k in np.flatnonzero(eligible[i]) if fleet.replicas[k] > 0]
        left = _split_evenly(fleet, i, candidates)
        if left > DONE_REL * demand.count:
            raise InfeasibleError([_unserved(problem, "round_robin", i, left, candidates)])
    return _finish(problem, "round_robin", fleet, started_s)


def _round_robin_deployment(problem: Problem, pool_id: str, eligible: np.ndarray) -> int | None:
    """The one deployment round-robin fills ``pool_id`` with, or None if nothing fits."""
    pool = problem.pools[problem.index("pools", pool_id)]
    fitting = [
        k
        for k, dep in enumerate(problem.deployments)
        if dep.pool == pool_id and dep.memory_need_gb <= dep.memory_gb and dep.tp <= pool.count
    ]
    if not fitting:
        return None

    def rank(k: int) -> tuple[int, float, float, int, int]:
        dep = problem.deployments[k]
        mask = eligible[:, k]
        demand = problem.demand[mask]
        if demand.sum() <= 0:
            return 0, 0.0, dep.quality, -dep.tp, dep.max_batch
        # Requests the pool could carry if filled with this deployment, at most its demand.
        mean_occupancy_s = float(np.average(problem.occupancy_s[mask, k], weights=demand))
        capacity = (pool.count // dep.tp) * problem.horizon_s * problem.max_utilization
        carried = min(float(demand.sum()), capacity / max(mean_occupancy_s, 1e-12))
        return int(mask.sum()), carried, dep.quality, -dep.tp, dep.max_batch

    return max(fitting, key=rank)  # first in problem order among equals


def _split_evenly(fleet: _Fleet, i: int, candidates: list[int]) -> float:
    """Route class ``i`` equally per replica over ``candidates``; returns what is left over.

    Replicas that cannot take their share take what fits; the overflow is shared the same
    way by the candidates still with room, until nothing is left or every one is full.
    """
    left = fleet.problem.classes[i].count
    open_ = list(candidates)
    while open_ and left > DONE_REL * fleet.problem.classes[i].count:
        per_replica = left / fleet.replicas[open_].sum()
        still_open = []
        for k in open_:
            share = per_replica * fleet.replicas[k]
            taken = fleet.route(i, k, share)
            left -= taken
            if taken >= share:
                still_open.append(k)
        if len(still_open) == len(open_):
            break
        open_ = still_open
    return left


def wilkins_threshold(
    problem: Problem,
    *,
    class_tokens: Sequence[float] | None = None,
    threshold: float | None = None,
) -> Solution:
    """The threshold rule of Wilkins et al. (2024): short requests to the low-power system,
    long ones to the big system.

    The low-power system is the pool with the lowest peak power per device (a deployment's
    ``peak_power_w / tp``, the highest of the pool's deployments) among pools with any eligible
    deployment that fits memory; the big system is the pool with the highest. A class whose
    ``class_tokens`` are below ``threshold`` goes to the low-power pool, else to the big one.
    Within its pool a class prefers its lowest-energy eligible deployment (energy with its
    share of the replica's base draw, ``Problem.effective_energy_j``); it spills to the other
    pool, then to any other eligible deployment, by increasing energy.

    Problem has no token counts, so ``class_tokens`` defaults to a proxy: each class's rank
    by its best e2e latency on the big pool (longer requests take longer). ``threshold``
    defaults to the request-weighted median of ``class_tokens`` (midway between the lower
    and upper weighted medians, so with two equal classes the shorter goes low-power, and a
    class holding most of the requests is the median itself and goes big).
    """
    started_s = time.perf_counter()
    eligible = problem.eligible()
    fits = np.array(
        [dep.memory_need_gb <= dep.memory_gb for dep in problem.deployments], dtype=bool
    )
    in_pool = {
        pool.id: np.array([dep.pool == pool.id for dep in problem.deployments], dtype=bool)
        for pool in problem.pools
    }
    usable = eligible & fits[None, :]
    pools = [pool.id for pool in problem.pools if usable[:, in_pool[pool.id]].any()]
    # Without any usable pool both systems are empty and every class fails to be placed.
    on_low = on_big = np.zeros(len(problem.deployments), dtype=bool)
    if pools:
        power_per_device_w = {
            pool_id: max(
                dep.peak_power_w / dep.tp for dep in problem.deployments if dep.pool == pool_id
            )
            for pool_id in pools
        }
        on_low = in_pool[min(pools, key=lambda p: power_per_device_w[p])]
        on_big = in_pool[max(pools, key=lambda p: power_per_device_w[p])]
    tokens = (
        _e2e_rank(problem, on_big)
        if class_tokens is None
        else np.asarray(class_tokens, dtype=float)
    )
    if tokens.shape != (len(problem.classes),):
        raise ProblemError(
            f"class_tokens has shape {tokens.shape}, expected {(len(problem.classes),)}"
        )
    cut = _weighted_median(tokens, problem.demand) if threshold is None else threshold
    effective_j = problem.effective_energy_j()
    preferences = []
    for i in range(len(problem.classes)):
        home, away = (on_low, on_big) if tokens[i] < cut else (on_big, on_low)
        order = [home, away & ~home, ~(home | away)]
        preferences.append(
            [
                k
                for mask in order
                for k in _ranked(eligible[i] & mask, lambda k, i=i: (effective_j[i, k],))
            ]
        )
    fleet = _greedy_fill(problem, "wilkins_threshold", preferences)
    return _finish(problem, "wilkins_threshold", fleet, started_s)


def _e2e_rank(problem: Problem, on_big: np.ndarray) -> np.ndarray:
    """(C,) each class's rank by its best e2e latency on the big pool (unservable: last)."""
    best_s = np.where(problem.servable & on_big[None, :], problem.e2e_s, np.inf).min(
        axis=1, initial=np.inf
    )
    ranks = np.empty(len(best_s))
    ranks[np.argsort(best_s, kind="stable")] = np.arange(len(best_s))
    return ranks


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Midway between the lower and upper ``weights``-weighted medians of ``values``."""
    if values.size == 0:
        return math.inf
    if weights.sum() <= 0:
        weights = np.ones_like(values)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    half = cumulative[-1] / 2
    lower = values[order][np.searchsorted(cumulative, half, side="left")]
    upper = values[order][np.searchsorted(cumulative, half, side="right")]
    return float((lower + upper) / 2)


@BASELINES.register("wilkins_threshold")
def _wilkins_threshold_default(problem: Problem) -> Solution:
    """``wilkins_threshold`` with its default token proxy and threshold."""
    return wilkins_threshold(problem)
