"""Which replica an arriving request goes to.

Per class, smooth weighted round-robin over the deployments the plan routes it to, weighted
by the plan's shares (nginx's SWRR: each pick adds every weight to its running credit, takes
the largest credit and subtracts the total from it), so that any window of arrivals follows
the shares as closely as whole requests can; then, among that deployment's replicas, the one
with the fewest requests waiting and running (join-shortest-queue, lowest index on a tie).
Deterministic: no random numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scheduler.replay.engine import Replica


class Router:
    def __init__(self, shares: np.ndarray, replicas: Sequence[Replica]):
        """``shares`` (C, D): the plan's routing, any scale per class (requests or shares)."""
        self._weights = np.asarray(shares, dtype=float)
        self._credit = np.zeros_like(self._weights)
        self._by_deployment: dict[int, list[Replica]] = {}
        for replica in replicas:
            self._by_deployment.setdefault(replica.spec.deployment, []).append(replica)
        served = np.zeros(self._weights.shape[1], dtype=bool)
        served[list(self._by_deployment)] = True
        # A share on a deployment without replicas cannot be honoured: it is left out.
        self._weights[:, ~served] = 0.0

    def routable(self, request_class: int) -> bool:
        return bool(self._weights[request_class].sum() > 0)

    def pick(self, request_class: int) -> Replica:
        weights = self._weights[request_class]
        credit = self._credit[request_class]
        credit += weights
        deployment = int(np.argmax(np.where(weights > 0, credit, -np.inf)))
        credit[deployment] -= weights.sum()
        return min(self._by_deployment[deployment], key=lambda replica: replica.load)
