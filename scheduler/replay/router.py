"""Which replica each request goes to, decided before any replica runs.

Per class, the plan's shares are apportioned over its deployments in arrival order the way
Sainte-Laguë apportions seats: a deployment's j-th request is due at (j + 1/2) / share,
and the class's k-th request goes to the deployment due k-th (ties to the lower index), so
any window of arrivals follows the shares as closely as whole requests can (for two equal
shares it alternates). A deployment's requests go round-robin over its replicas, as a load
balancer in front of identical vLLM servers does. Nothing depends on what the replicas do,
so each replica then runs on its own (``simulate``), in parallel if asked. Deterministic:
no random numbers.
"""

from __future__ import annotations

import numpy as np


def route(shares: np.ndarray, replica_deployment: np.ndarray,
          request_class: np.ndarray) -> np.ndarray:
    """The replica (index into ``replica_deployment``, each replica's deployment) of every
    request, in arrival order; -1 where its class has no share on a deployment with a
    replica. ``shares`` (C, D): the plan's routing, any scale per class."""
    weights = np.asarray(shares, dtype=float).copy()
    has_replica = np.zeros(weights.shape[1], dtype=bool)
    has_replica[np.unique(replica_deployment)] = True
    # A share on a deployment without replicas cannot be honoured: it is left out.
    weights[:, ~has_replica] = 0.0
    replicas_of = {d: np.flatnonzero(replica_deployment == d)
                   for d in np.flatnonzero(has_replica)}
    request_class = np.asarray(request_class)
    deployment = np.full(len(request_class), -1)
    for c in np.unique(request_class):
        total = weights[c].sum() if 0 <= c < len(weights) else 0.0
        if total <= 0:
            continue
        members = np.flatnonzero(request_class == c)
        share = weights[c] / total
        used = np.flatnonzero(share > 0)
        due_s = [(np.arange(int(np.ceil(len(members) * share[d])) + 1) + 0.5) / share[d]
                 for d in used]
        owner = np.repeat(used, [len(t) for t in due_s])
        order = np.argsort(np.concatenate(due_s), kind="stable")[:len(members)]
        deployment[members] = owner[order]
    replica = np.full(len(request_class), -1)
    for d, replicas in replicas_of.items():
        mine = np.flatnonzero(deployment == d)
        replica[mine] = replicas[np.arange(len(mine)) % len(replicas)]
    return replica
