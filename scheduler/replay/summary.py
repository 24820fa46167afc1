"""What a replay says about a plan: energy (busy and idle), SLO attainment, latency
percentiles and power over time, beside what the plan promised."""

from __future__ import annotations

from typing import Any

import numpy as np

from scheduler.replay.simulate import ReplayResult, Requests
from solvers.problem import Problem

POWER_RESOLUTION_S = 1.0
"""Width of the bins power over time is averaged in (peak power is the highest bin)."""


def accrued(steps: dict[str, np.ndarray], amounts: np.ndarray,
            times_s: np.ndarray) -> np.ndarray:
    """How much of ``amounts`` (one per step, accruing evenly over the step) has accrued by
    each of ``times_s``. A replica's steps follow one another, so the running total is a
    monotone piecewise-linear function of time: rising during steps, flat between."""
    if not len(amounts):
        return np.zeros(len(times_s))
    total = np.cumsum(amounts)
    times = np.column_stack([steps["start_s"], steps["start_s"] + steps["duration_s"]]).ravel()
    values = np.column_stack([np.concatenate([[0.0], total[:-1]]), total]).ravel()
    return np.interp(times_s, times, values, left=0.0)


def power_over_time(result: ReplayResult,
                    resolution_s: float = POWER_RESOLUTION_S) -> tuple[np.ndarray, np.ndarray]:
    """(bin start times, power per replica (R, bins)) in ``resolution_s`` bins from 0 to the
    window's end: idle power plus each step's energy above idle, spread over its duration."""
    edges = np.arange(0.0, result.end_s + resolution_s, resolution_s)
    power = np.empty((len(result.steps), len(edges) - 1))
    for k, steps in enumerate(result.steps):
        idle_w = result.idle_power_w[k]
        excess_j = accrued(steps, steps["energy_j"] - idle_w * steps["duration_s"], edges)
        power[k] = idle_w + np.diff(excess_j) / resolution_s
    return edges[:-1], power


def weighted_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of ``values`` each repeated ``counts`` times (the lower of
    two neighbours, numpy's "lower"); NaN if there are none."""
    if not counts.sum():
        return float("nan")
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(counts[order])
    rank = int(np.floor(q / 100.0 * (cumulative[-1] - 1)))
    return float(values[order][np.searchsorted(cumulative, rank, side="right")])


def slo_checks(result: ReplayResult, problem: Problem,
               requests: Requests) -> dict[str, np.ndarray]:
    """Per request, whether it was served and whether its TTFT, mean inter-token gap and
    end-to-end latency are within its class's SLOs (the gap against the ITL SLO, as the
    planner prices it; a request with one output token has no gap)."""
    slo = {kind: bound[requests.request_class]
           for kind, bound in problem.class_slos().items()}
    with np.errstate(invalid="ignore"):
        return {
            "served": result.replica >= 0,
            "ttft": result.ttft_s <= slo["ttft_s"],
            "itl": (result.tpot_s <= slo["itl_s"]) | np.isnan(result.tpot_s),
            "e2e": result.e2e_s <= slo["e2e_s"],
        }


def slo_met(result: ReplayResult, problem: Problem, requests: Requests) -> np.ndarray:
    """Per request: served, and every latency within its class's SLOs."""
    return np.logical_and.reduce(list(slo_checks(result, problem, requests).values()))


def replay_summary(result: ReplayResult, problem: Problem, requests: Requests,
                   planned_energy_j: float, class_kinds,
                   unused_idle_w: float = 0.0) -> dict[str, Any]:
    """The replay's numbers for a report or JSON (energies in J, times in s, power in W);
    ``slo_by_kind``: per request kind (``class_kinds`` gives each class's), the share of its
    requests that met every SLO and each SLO on its own. ``unused_idle_w``: devices without
    a replica that stay on, counted as idle energy over the window."""
    _, power = power_over_time(result)
    unused_j = unused_idle_w * result.end_s
    served = result.replica >= 0

    def percentile(values: np.ndarray, q: float) -> float:
        values = values[np.isfinite(values)]
        return float(np.percentile(values, q)) if len(values) else float("nan")

    return {
        "planned_energy_j": float(planned_energy_j),
        "replayed_energy_j": result.energy_j + unused_j,
        "active_energy_j": float(result.busy_energy_j.sum()),
        "idle_energy_j": float(result.idle_energy_j.sum()) + unused_j,
        "slo_attainment": float(slo_met(result, problem, requests).mean()) if len(requests)
        else 1.0,
        "ttft_p50_s": percentile(result.ttft_s, 50),
        "ttft_p99_s": percentile(result.ttft_s, 99),
        "itl_p50_s": weighted_percentile(result.itl_s, result.itl_count, 50),
        "itl_p99_s": weighted_percentile(result.itl_s, result.itl_count, 99),
        "e2e_p99_s": percentile(result.e2e_s, 99),
        "mean_power_w": (result.energy_j + unused_j) / result.end_s if result.end_s > 0
        else 0.0,
        "peak_power_w": float(power.sum(axis=0).max(initial=0.0)) + unused_idle_w,
        "requests": len(requests),
        "unserved": int((~served).sum()),
        "preemptions": int(result.preemptions.sum()),
        "slo_by_kind": _slo_by_kind(slo_checks(result, problem, requests),
                                    np.asarray(class_kinds)[requests.request_class]),
    }


def _slo_by_kind(checks: dict[str, np.ndarray], kinds: np.ndarray) -> dict[str, dict]:
    met = np.logical_and.reduce(list(checks.values()))
    return {str(kind): {"attainment": float(met[kinds == kind].mean()),
                        **{f"{name}_met": float(ok[kinds == kind].mean())
                           for name, ok in checks.items() if name != "served"}}
            for kind in sorted(set(kinds))}
