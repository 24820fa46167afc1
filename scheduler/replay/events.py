"""The simulation's clock: a heap of events ordered by (time, priority, sequence number), so
that events at the same instant run in a fixed order (a replica's step ends before the
arrivals of that instant are routed) and equal keys keep their insertion order."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

STEP_END = 0
"""Priority of a replica's step ending: its freed room is there for arrivals at the same
instant."""
ARRIVAL = 1


@dataclass
class EventQueue:
    _heap: list[tuple[float, int, int, Any]] = field(default_factory=list)
    _seq: int = 0

    def push(self, time_s: float, priority: int, payload: Any) -> None:
        heapq.heappush(self._heap, (time_s, priority, self._seq, payload))
        self._seq += 1

    def pop(self) -> tuple[float, int, Any]:
        time_s, priority, _, payload = heapq.heappop(self._heap)
        return time_s, priority, payload

    def __len__(self) -> int:
        return len(self._heap)
