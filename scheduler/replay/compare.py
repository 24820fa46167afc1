"""The optimised plan and every baseline replayed on the same arrivals, and the saving at
the replayed numbers."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from scheduler.build import Built
from scheduler.inventory import Fleet
from scheduler.plan import Plan
from scheduler.replay.from_plan import plan_requests, replay_solution, unused_idle_power_w
from scheduler.replay.simulate import ReplayResult
from scheduler.replay.summary import replay_summary
from scheduler.saved_plan import SavedPlan


def replay_plan(built: Built, plan: Plan | SavedPlan, requests: pd.DataFrame,
                fleet: Fleet) -> tuple[ReplayResult, dict]:
    """``plan`` replayed on ``requests``, and the replay's summary."""
    result = replay_solution(built, plan.solution, requests)
    return result, replay_summary(result, built.problem, plan_requests(built, requests),
                                  plan.energy_j, built.classes.kind,
                                  unused_idle_power_w(built, plan.solution, fleet))


def replay_plans(outcome, requests: pd.DataFrame, fleet: Fleet,
                 progress: Callable[[str], None] = lambda message: None,
                 optimised: SavedPlan | None = None) -> tuple[dict, dict[str, ReplayResult]]:
    """The document: ``plans``, per plan (``optimised``: ``outcome``'s, or the saved plan
    ``optimised``; then each baseline that can serve the workload), its replay summary;
    ``saving_pct``, the optimised plan's replayed energy saving against each baseline, in
    percent of the baseline's. And each plan's replay, for the report."""
    plans: dict[str, Plan | SavedPlan] = {"optimised": optimised or outcome.plan}
    plans.update({name: plan for name, plan in outcome.baselines.items()
                  if isinstance(plan, Plan)})
    summaries, replays = {}, {}
    for number, (name, plan) in enumerate(plans.items(), start=1):
        progress(f"replaying {number}/{len(plans)}: {name}")
        replays[name], summaries[name] = replay_plan(outcome.built, plan, requests, fleet)
    optimised_j = summaries["optimised"]["replayed_energy_j"]
    saving = {name: 100.0 * (1.0 - optimised_j / summary["replayed_energy_j"])
              for name, summary in summaries.items() if name != "optimised"}
    return {"plans": summaries, "saving_pct": saving}, replays
