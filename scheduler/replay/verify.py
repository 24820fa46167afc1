"""``plan --verify``: the plan replayed, tightened and solved again until every request kind
meets its SLO attainment target in replay, or the reason it cannot is known.

Each round replays the plan. A kind below its target for the first time is tightened twice:

- its classes may no longer use deployments where alone (the planner's latency at the
  class's p90 tokens, no queueing) they take more than ``LONE_SLACK`` of their SLOs: no
  headroom makes room to queue for a prompt whose prefill alone nearly fills the TTFT bound;
- its requests queue or stall behind others (bursts: the Azure code trace brings ten times
  its mean rate for ten seconds at a time), so the kind gets headroom, each of its
  requests counting for ``headroom`` times its replica time on every deployment, and the
  solver buys it where it costs least: more replicas, or faster ones. The first headroom is
  the kind's burst factor (its busiest ``BURST_WINDOW_S`` windows' rate over its mean, at
  least ``HEADROOM_FACTOR``); each later miss multiplies it by ``HEADROOM_FACTOR``.

Once every kind meets its target, each kind's headroom is bisected (geometrically) between
the last value that missed and the one that met, for ``refine_rounds`` rounds, keeping the
plan with the least replayed energy that meets every target. Kinds share replicas, so a
refining round that misses is blamed on the kinds whose headroom it lowered, whichever kind
missed. Headroom is a capacity setting
only: the replay prices every step as before, so the plan's energy stays the cost chain's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from scheduler.build import Built
from scheduler.inventory import Fleet
from scheduler.latency import price_latency
from scheduler.pipeline import Outcome, routed_deployments
from scheduler.plan import Plan, make_plan
from scheduler.replay.compare import replay_plan
from solvers.baselines import run_baseline
from solvers.errors import InfeasibleError
from solvers.problem import Problem
from workloads.spec import Workload

MAX_ROUNDS = 10
REFINE_ROUNDS = 3
LONE_SLACK = 0.75
"""A request that alone takes more than this share of its SLO has no room to queue."""
HEADROOM_FACTOR = 2.0
BURST_WINDOW_S = 10.0
"""A queue that lasts this long already breaks a TTFT bound of seconds."""
BURST_PERCENTILE = 99.0
BISECTED = 1.1
"""Bisection stops once a kind's headroom that met is within this factor of one that missed."""


@dataclass(frozen=True)
class Verification:
    """The last plan, its replay and what each round did."""

    plan: Plan
    replayed: dict[str, Any]
    """The last plan's replay summary (``replay_summary``)."""
    rounds: list[dict[str, Any]]
    """Per round: planned and replayed energy, attainment and headroom per kind, pairs
    excluded, and whether every target was met."""
    solves: int
    """Re-solves it took, including any the fleet could not give."""
    met: bool
    reason: str
    """Why the targets are not met ('' when they are)."""


def verify_plan(outcome: Outcome, workload: Workload, fleet: Fleet, *,
                name: str = "optimised", max_rounds: int = MAX_ROUNDS,
                refine_rounds: int = REFINE_ROUNDS,
                progress: Callable[[str], None] = lambda message: None) -> Verification:
    """Replay ``outcome``'s plan ``name`` (``optimised`` or a baseline that can serve the
    workload) and tighten until every kind meets ``workload.attainment_target`` (see the
    module docstring); at most ``max_rounds`` re-solves in all. A baseline is solved again
    by its own rule, so it gets the same headroom search as the optimised plan."""
    plan = outcome.plan if name == "optimised" else outcome.baselines[name]
    if not isinstance(plan, Plan):
        raise ValueError(f"baseline {name} has no plan to verify: {plan}")
    solve = outcome.solve if name == "optimised" else partial(run_baseline, name)
    built = outcome.built
    problem = built.problem
    requests = workload.requests
    class_kind = built.classes.kind.to_numpy()
    targets = {kind: workload.attainment_target(kind) for kind in sorted(set(class_kind))}
    headroom = dict.fromkeys(targets, 1.0)
    burst = {kind: burst_factor(requests.arrival_s[requests.kind == kind].to_numpy(float),
                                workload.horizon_s) for kind in targets}
    missed_at = dict.fromkeys(targets, 1.0)
    """Per kind, the largest headroom a replay missed its target at."""
    too_much = dict.fromkeys(targets, math.inf)
    """Per kind, the smallest headroom the fleet could not give."""
    allowed = problem.servable.copy()
    room_to_queue = _room_to_queue(problem)
    rounds: list[dict[str, Any]] = []
    best: tuple[Plan, dict[str, Any]] | None = None
    solves = refined = 0
    while True:
        progress(f"verifying {name}: replay {len(rounds) + 1}")
        _, summary = replay_plan(built, plan, requests, fleet)
        attained = {kind: summary["slo_by_kind"][kind]["attainment"] for kind in targets}
        missing = [kind for kind in targets if attained[kind] < targets[kind]]
        rounds.append({
            "round": len(rounds) + 1,
            "planned_energy_j": plan.energy_j,
            "replayed_energy_j": summary["replayed_energy_j"],
            "attainment": attained,
            "headroom": dict(headroom),
            "pairs_excluded": int((problem.servable & ~allowed).sum()),
            "met": not missing,
        })
        if not missing and (best is None
                            or summary["replayed_energy_j"] < best[1]["replayed_energy_j"]):
            best = plan, summary
        if missing:
            # A refining round lowers some kinds' headroom; a miss there is theirs, whichever
            # kind it shows in (kinds share replicas).
            lowered = [k for k in targets if best is not None
                       and headroom[k] < _last_met(rounds)[k]]
            for kind in lowered or missing:
                missed_at[kind] = max(missed_at[kind], headroom[kind])
        if best is not None and (refined >= refine_rounds or solves >= max_rounds or all(
                _last_met(rounds)[k] <= missed_at[k] * BISECTED for k in targets)):
            return Verification(*best, rounds, solves, True, "")
        if best is None:
            before = dict(headroom)
            for kind in missing:
                if headroom[kind] == 1.0:
                    headroom[kind] = max(HEADROOM_FACTOR, burst[kind])
                    mine = class_kind == kind
                    allowed[mine] &= room_to_queue[mine]
                else:
                    headroom[kind] *= HEADROOM_FACTOR
                headroom[kind] = min(headroom[kind], _between(before[kind], too_much[kind]))
        else:
            refined += 1
            passed = _last_met(rounds)
            before = passed
            headroom = {k: (passed[k] if passed[k] <= missed_at[k] * BISECTED
                            else _between(missed_at[k], passed[k])) for k in targets}
        while True:
            if solves >= max_rounds:
                if best is not None:
                    return Verification(*best, rounds, solves, True, "")
                return Verification(plan, summary, rounds, solves, False, _short_of(
                    attained, targets, f"after {max_rounds} re-solves"))
            tightened = _tightened(built, headroom, allowed)
            progress(f"verifying {name}: solving again, headroom "
                     + ", ".join(f"{k} x{v:.3g}" for k, v in headroom.items()))
            solves += 1
            try:
                solution = solve(tightened.problem)
                break
            except InfeasibleError as exc:
                if best is not None:
                    return Verification(*best, rounds, solves, True, "")
                raised = [k for k in targets if headroom[k] > before[k]]
                for kind in raised:
                    too_much[kind] = headroom[kind]
                    headroom[kind] = _between(before[kind], too_much[kind])
                if all(too_much[k] <= before[k] * BISECTED for k in raised):
                    return Verification(plan, summary, rounds, solves, False, _short_of(
                        attained, targets, "and the fleet cannot give the headroom they need ("
                        + "; ".join(exc.reasons) + ")"))
        latency = price_latency(outcome.chain, built.deployments,
                                routed_deployments(built, [solution]), requests)
        plan = make_plan(name, tightened, solution, requests, latency)


def _between(low: float, high: float) -> float:
    """The geometric midpoint; ``high`` may be infinite (no bound yet): then ``high``."""
    return float(np.sqrt(low * high)) if math.isfinite(high) else high


def burst_factor(arrival_s: np.ndarray, horizon_s: float) -> float:
    """The ``BURST_PERCENTILE`` of arrivals per ``BURST_WINDOW_S`` window over the mean."""
    windows = max(math.ceil(horizon_s / BURST_WINDOW_S), 1)
    counts = np.histogram(arrival_s, bins=windows, range=(0.0, windows * BURST_WINDOW_S))[0]
    mean = counts.mean()
    return float(np.percentile(counts, BURST_PERCENTILE, method="higher") / mean
                 ) if mean > 0 else 1.0


def _last_met(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The headroom of the last round that met every target."""
    return next(r["headroom"] for r in reversed(rounds) if r["met"])


def _room_to_queue(problem: Problem) -> np.ndarray:
    """(C, D) True where a class's latencies alone (at its p90 tokens) are within
    ``LONE_SLACK`` of its SLOs; a class with no such deployment keeps the ones where it
    comes closest, so that the exclusion alone never leaves it unservable."""
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.max([getattr(problem, kind) / bound[:, None]
                        for kind, bound in problem.class_slos().items()], axis=0)
    share = np.where(problem.servable, share, np.inf)
    fits = share <= LONE_SLACK
    closest = share <= share.min(axis=1, keepdims=True) * (1 + 1e-9)
    return fits | (closest & ~fits.any(axis=1, keepdims=True))


def _tightened(built: Built, headroom: dict[str, float], allowed: np.ndarray) -> Built:
    factor = built.classes.kind.map(headroom).to_numpy(float)
    problem = dataclasses.replace(built.problem,
                                  occupancy_s=built.problem.occupancy_s * factor[:, None],
                                  servable=allowed.copy())
    return dataclasses.replace(built, problem=problem)


def _short_of(attained: dict[str, float], targets: dict[str, float], why: str) -> str:
    short = ", ".join(f"{kind} {attained[kind]:.1%} < {targets[kind]:.0%}"
                      for kind in targets if attained[kind] < targets[kind])
    return f"SLO attainment in replay short of target ({short}) {why}"
