"""A plan saved by ``wattsched plan --out``, read back to be replayed on a workload.

Only what the replay needs is read: the replicas per deployment, each class's routing
shares and the planned energy; the rest of the document is left alone. The shares carry
over to a workload with other arrivals (``replay --seed``); a class the plan does not route
is an error, since the replay could only drop its requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from energy_models.inputs import load_json, validate
from scheduler.build import Built
from scheduler.errors import InputError
from scheduler.inventory import load_yaml
from solvers.problem import Solution


class _Read(BaseModel):
    """Strict types, no NaN; the document's other fields are left alone."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False, strict=True)


class _Replicas(_Read):
    deployment: str
    replicas: Annotated[int, Field(ge=1)]


class _Route(_Read):
    class_id: str
    deployment: str
    requests: Annotated[float, Field(gt=0)]


class _PlanFile(_Read):
    energy_j: Annotated[float, Field(ge=0)]
    replicas: Annotated[list[_Replicas], Field(min_length=1)]
    routing: Annotated[list[_Route], Field(min_length=1)]


@dataclass(frozen=True)
class SavedPlan:
    """A saved plan on ``built``'s deployments and classes (what ``replay_plan`` needs)."""

    solution: Solution
    energy_j: float
    """The energy the plan was planned at (on the workload it was planned for)."""


def load_saved_plan(path: str | Path, built: Built) -> SavedPlan:
    """The plan at ``path`` (JSON, or YAML for .yaml/.yml) on ``built``: its replicas, and
    each class's requests split over its deployments in the saved shares."""
    where = str(path)

    def error(field: str, problem: str) -> InputError:
        return InputError(where, field, problem)

    raw = (load_yaml(path) if Path(path).suffix in (".yaml", ".yml")
           else load_json(path, error))
    saved = validate(_PlanFile, raw, error)
    deployment_index = {name: d for d, name in enumerate(built.deployments.deployment)}
    class_index = {name: c for c, name in enumerate(built.classes.class_id)}
    replicas = np.zeros(len(deployment_index), dtype=np.int64)
    for i, row in enumerate(saved.replicas):
        if row.deployment not in deployment_index:
            raise InputError(where, f"replicas[{i}].deployment",
                             f"{row.deployment!r} is not a deployment this fleet can run; "
                             f"replay the plan with the fleet it was planned on")
        replicas[deployment_index[row.deployment]] += row.replicas
    shares = np.zeros((len(class_index), len(deployment_index)))
    for i, route in enumerate(saved.routing):
        d = deployment_index.get(route.deployment)
        if d is None or replicas[d] == 0:
            raise InputError(where, f"routing[{i}].deployment",
                             f"{route.deployment!r} has no replica in the plan's replicas")
        if route.class_id in class_index:
            shares[class_index[route.class_id], d] += route.requests
    counts = built.classes["count"].to_numpy(float)
    unrouted = [name for name, c in class_index.items()
                if counts[c] > 0 and shares[c].sum() == 0]
    if unrouted:
        raise InputError(where, "routing",
                         f"the workload's class(es) {', '.join(unrouted[:3])} have no route "
                         f"in the plan; plan this workload with `wattsched plan --out`")
    with np.errstate(invalid="ignore"):
        routing = np.nan_to_num(shares / shares.sum(axis=1, keepdims=True)) * counts[:, None]
    return SavedPlan(Solution(replicas, routing, "saved", "saved", saved.energy_j),
                     saved.energy_j)
