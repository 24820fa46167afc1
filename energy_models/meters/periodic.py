"""A background thread that calls one function at a fixed rate: the power sampler's and the
RAPL poller's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from energy_models.errors import MeterError


class Periodic:
    """Calls ``tick`` every ``interval_s`` seconds on a daemon thread between ``start`` and
    ``stop``. The first :class:`MeterError` it raises ends the thread and stays in ``error``
    for the caller to raise where it reads the results."""

    def __init__(self, tick: Callable[[], object], interval_s: float, name: str):
        self._tick = tick
        self.interval_s = interval_s
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: MeterError | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._stop.clear()

    def _run(self) -> None:
        deadline = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            try:
                self._tick()
            except MeterError as exc:
                self.error = exc
                return
            # Fixed deadlines keep the rate from drifting; a stall skips missed ticks.
            deadline = max(deadline + self.interval_s, time.monotonic())
