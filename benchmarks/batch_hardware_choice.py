"""Hardware choice alone: the same batch jobs, scheduled by the same optimiser, on the whole
mixed fleet against each single device type of it.

    python benchmarks/batch_hardware_choice.py [--jobs JOBS.yaml] [--scale 0.1] [--slot 300]
                                               [--time-limit 60] [--gap 0.005]

Watt Counts reports up to 20 % energy saved in batch scenarios by choosing the hardware
alone. Here every schedule is optimal for its own devices (the MILP, within ``--gap``), so
the difference between "all pools" and "one pool" is what choosing the hardware is worth;
a pool that cannot meet every deadline alone is reported as such. The default scenario is
the bundled nightly jobs at a tenth of their requests (``--scale``), light enough that most
single device types can meet every deadline, so that each choice has a number.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import pandas as pd


def main(argv: list[str] | None = None) -> int:
    from energy_models.cost import default_chain
    from scheduler.batch import build_batch
    from scheduler.inventory import load_fleet
    from solvers.batch.baselines import cheapest, run_batch_baselines
    from solvers.batch.checker import assert_valid_schedule
    from solvers.batch.milp import solve_batch_milp
    from solvers.errors import InfeasibleError, NoSolutionError
    from workloads.jobs import load_jobs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=None)
    parser.add_argument("--scale", type=float, default=0.1,
                        help="multiply every job's requests by this")
    parser.add_argument("--slot", type=float, default=300.0)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--gap", type=float, default=0.005)
    args = parser.parse_args(argv)
    fleet = load_fleet(None)
    jobs = load_jobs(args.jobs)
    table = jobs.table.assign(requests=np.maximum(np.round(jobs.table.requests * args.scale),
                                                  1).astype(int))
    jobs = dataclasses.replace(jobs, table=table)
    built = build_batch(fleet, jobs, default_chain(fleet.defaults.engine, None), args.slot)
    problem = built.problem
    pool_of = built.deployments.pool.to_numpy()
    choices = {"all pools": np.ones(len(pool_of), dtype=bool)}
    choices.update({f"only {pool}": pool_of == pool for pool in dict.fromkeys(pool_of)})
    rows = []
    for name, allowed in choices.items():
        print(name, file=sys.stderr, flush=True)
        base = dataclasses.replace(problem.base,
                                   servable=problem.base.servable & allowed[None, :])
        restricted = dataclasses.replace(problem, base=base)
        start = cheapest(run_batch_baselines(restricted))
        try:
            schedule = solve_batch_milp(restricted, time_limit_s=args.time_limit,
                                        gap_rel=args.gap, start=start)
        except (InfeasibleError, NoSolutionError) as exc:
            rows.append({"devices": name, "energy kWh": None, "gap": None,
                         "note": str(exc).split(";")[0].removeprefix("infeasible: ")[:70]})
            continue
        assert_valid_schedule(restricted, schedule, schedule.solver)
        rows.append({"devices": name, "energy kWh": schedule.objective_j / 3.6e6,
                     "gap": schedule.gap, "note": ""})
    table = pd.DataFrame(rows)
    mixed = table.loc[0, "energy kWh"]
    table["saving of choice"] = [None if e is None or e != e else 1 - mixed / e
                                 for e in table["energy kWh"]]
    print(f"jobs: {jobs.name} x {args.scale:g} requests ({len(jobs.table)} jobs) on "
          f"{fleet.name}, slots of {args.slot:g} s")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    feasible = table.iloc[1:].dropna(subset=["energy kWh"])
    if not feasible.empty:
        best = feasible.loc[feasible["energy kWh"].idxmin()]
        print(f"choosing the hardware saves {1 - mixed / best['energy kWh']:.1%} against the best "
              f"single device type that meets every deadline ({best['devices']}); Watt Counts "
              f"reports up to 20 %")
    else:
        print("no single device type meets every deadline alone: only the mixed fleet can")
    return 0


if __name__ == "__main__":
    sys.exit(main())
