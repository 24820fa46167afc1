"""The optimised plan and every baseline replayed on the same arrivals, and the saving at
the replayed numbers."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from scheduler.inventory import Fleet
from scheduler.plan import Plan
from scheduler.replay.from_plan import plan_requests, replay_solution, unused_idle_power_w
from scheduler.replay.simulate import ReplayResult
from scheduler.replay.summary import replay_summary


def replay_plans(outcome, requests: pd.DataFrame, fleet: Fleet,
                 progress: Callable[[str], None] = lambda message: None,
                 ) -> tuple[dict, dict[str, tuple[Plan, ReplayResult]]]:
    """The document: ``plans``, per plan (``optimised``, then each baseline that can serve
    the workload), its replay summary; ``saving_pct``, the optimised plan's replayed energy
    saving against each baseline, in percent of the baseline's. And each plan with its
    replay, for the report."""
    plans: dict[str, Plan] = {"optimised": outcome.plan}
    plans.update({name: plan for name, plan in outcome.baselines.items()
                  if isinstance(plan, Plan)})
    arrivals = plan_requests(outcome.built, requests)
    summaries, replays = {}, {}
    for number, (name, plan) in enumerate(plans.items(), start=1):
        progress(f"replaying {number}/{len(plans)}: {name}")
        result = replay_solution(outcome.built, plan.solution, requests)
        replays[name] = (plan, result)
        summaries[name] = replay_summary(
            result, outcome.built.problem, arrivals, plan.energy_j, outcome.built.classes.kind,
            unused_idle_power_w(outcome.built, plan.solution, fleet))
    optimised_j = summaries["optimised"]["replayed_energy_j"]
    saving = {name: 100.0 * (1.0 - optimised_j / summary["replayed_energy_j"])
              for name, summary in summaries.items() if name != "optimised"}
    return {"plans": summaries, "saving_pct": saving}, replays
