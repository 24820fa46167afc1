"""The picture of a batch schedule: replicas on over time, and each job's span by its deadline."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from scheduler.batch import BuiltBatch
from solvers.batch.problem import Schedule


def gantt(built: BuiltBatch, schedule: Schedule, title: str) -> Figure:
    """Top: replicas on per deployment (stacked, per slot). Bottom: one row per job, a bar
    per deployment it ran on from its first to its last slot there, its release and deadline
    marked."""
    problem = built.problem
    deps = built.deployments
    hours = np.arange(problem.n_slots + 1) * problem.slot_s / 3600
    used = np.flatnonzero(schedule.replicas.max(axis=1) > 0)
    jobs = built.jobs.table
    figure = Figure(figsize=(11, 3.2 + 0.35 * len(jobs)), constrained_layout=True)
    top, bottom = figure.subplots(2, 1, sharex=True,
                                  gridspec_kw={"height_ratios": [2, max(len(jobs), 2) * 0.5]})
    colours = {int(d): f"C{k % 10}" for k, d in enumerate(used)}
    label = {int(d): f"{deps.pool[d]} / {deps.llm[d]} / tp{deps.tp[d]} / b{deps.batch[d]}"
             for d in used}
    stacked = np.zeros(problem.n_slots)
    for d in used:
        on = schedule.replicas[d].astype(float)
        top.stairs(stacked + on, hours, baseline=stacked, fill=True, color=colours[int(d)],
                   label=label[int(d)], alpha=0.85)
        stacked += on
    top.set_ylabel("replicas on")
    top.set_title(title)
    top.legend(loc="upper right", fontsize=8)
    for j, job in enumerate(jobs.itertuples()):
        mine = schedule.job == j
        for d in sorted(set(schedule.deployment[mine].tolist())):
            slots = schedule.slot[mine & (schedule.deployment == d)]
            start = slots.min() * problem.slot_s / 3600
            end = (slots.max() + 1) * problem.slot_s / 3600
            bottom.barh(j, end - start, left=start, height=0.6, color=colours.get(d, "grey"),
                        alpha=0.85)
        bottom.plot([job.release_s / 3600] * 2, [j - 0.4, j + 0.4], color="black", lw=1)
        bottom.plot([job.deadline_s / 3600] * 2, [j - 0.4, j + 0.4], color="red", lw=2)
    bottom.set_yticks(range(len(jobs)), list(jobs.job))
    bottom.invert_yaxis()
    bottom.set_xlabel("hours from the start of the schedule (black: release, red: deadline)")
    bottom.set_xlim(0, hours[-1])
    return figure
