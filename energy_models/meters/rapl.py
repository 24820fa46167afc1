"""CPU and DRAM energy through the Linux powercap interface to RAPL.

Each zone ``intel-rapl:N`` (a package, or ``psys`` for the platform) and sub-zone
``intel-rapl:N:M`` (``core``, ``uncore``, ``dram``) has an ``energy_uj`` counter that wraps at
``max_energy_range_uj``. We count packages and their ``dram`` sub-zones: ``core`` and ``uncore``
are already inside their package and ``psys`` contains the packages, so adding any of them would
count energy twice. AMD's kernels expose their packages the same way.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from energy_models.errors import MeterError, MeterUnavailableError
from energy_models.meters.periodic import Periodic

DEFAULT_ROOT = Path("/sys/class/powercap")
ASSUMED_MAX_POWER_W = 1000.0
"""A zone's power is taken to stay below this when choosing how often to read for wraps."""
_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_NESTED = {"core": "inside its package", "uncore": "inside its package"}


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone and whether we count it."""

    path: Path
    name: str
    """The kernel's name for it: ``package-0``, ``dram``, ``core``, ``psys``."""
    label: str
    """Unique among zones: ``package-0``, ``package-0/dram``."""
    max_energy_range_uj: int | None
    counted: bool
    why_not: str | None = None
    """Why it is not counted, or cannot be read."""

    @property
    def usable(self) -> bool:
        return self.counted and self.why_not is None


def permission_hint(path: Path, root: Path) -> str:
    return (f"permission denied reading {path}: RAPL counters are readable by root only "
            f"since Linux 5.10; run as root, or `sudo chmod a+r {root}/intel-rapl:*/energy_uj`")


def _read_int(path: Path, root: Path) -> int:
    try:
        text = path.read_text()
    except PermissionError:
        raise MeterUnavailableError(permission_hint(path, root)) from None
    except OSError as exc:
        raise MeterError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return int(text.strip())
    except ValueError:
        raise MeterError(f"{path} holds {text.strip()[:20]!r}, not a counter") from None


def discover(root: Path = DEFAULT_ROOT) -> list[RaplZone]:
    """Every RAPL zone under ``root``, counted or not, each with the reason where not."""
    if not root.is_dir():
        raise MeterUnavailableError(f"no powercap tree at {root}: the kernel exposes no RAPL here "
                                    f"(load the intel_rapl_common module; VMs and containers often "
                                    f"hide it) or point --rapl-root at one")
    found = []
    for entry in root.iterdir():
        match = _ZONE.match(entry.name)
        if match:
            found.append((int(match[1]), int(match[2]) if match[2] else -1, entry))
    if not found:
        raise MeterUnavailableError(f"{root} has no intel-rapl zones: this CPU or kernel "
                                    f"exposes no RAPL energy counters")
    parents = {}
    zones = []
    for package, sub, path in sorted(found):
        try:
            name = (path / "name").read_text().strip()
        except OSError as exc:
            zones.append(RaplZone(path, path.name, path.name, None, False,
                                  f"cannot read its name: {exc.strerror or exc}"))
            continue
        if sub < 0:
            parents[package] = name
            label = name
            counted, why = name != "psys", None
            if not counted:
                why = "psys contains the packages; counting both would count them twice"
        else:
            label = f"{parents.get(package, f'zone-{package}')}/{name}"
            counted = name not in _NESTED
            why = None if counted else f"{name} is {_NESTED[name]}; counting both would " \
                                       f"count it twice"
        try:
            max_range = _read_int(path / "max_energy_range_uj", root)
            if counted:
                _read_int(path / "energy_uj", root)
        except MeterError as exc:
            max_range, why = None, why or str(exc)
        zones.append(RaplZone(path, name, label, max_range, counted, why))
    return zones


class RaplCounter:
    """One zone's energy with wrap-around undone: µJ since the first reading.

    Correct as long as the counter wraps at most once between two readings, which the
    :class:`RaplPoller` ensures by reading often enough.
    """

    def __init__(self, zone: RaplZone, root: Path = DEFAULT_ROOT):
        if not zone.usable or zone.max_energy_range_uj is None:
            raise MeterUnavailableError(f"RAPL zone {zone.label}: {zone.why_not}")
        self.zone = zone
        self._root = root
        self._last: int | None = None
        self._total_uj = 0
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.zone.label

    def read_uj(self) -> int:
        # Read under the lock: a reading counted after a later one would look like a wrap.
        with self._lock:
            raw = _read_int(self.zone.path / "energy_uj", self._root)
            if self._last is not None:
                delta = raw - self._last
                if delta < 0:
                    delta += self.zone.max_energy_range_uj
                self._total_uj += delta
            self._last = raw
            return self._total_uj

    def wrap_period_s(self, max_power_w: float = ASSUMED_MAX_POWER_W) -> float:
        """The shortest time the counter can take to wrap."""
        return self.zone.max_energy_range_uj / 1e6 / max_power_w


def open_counters(root: Path = DEFAULT_ROOT) -> list[RaplCounter]:
    """Counters for every counted zone; unavailable if none can be read, naming the fix."""
    zones = discover(root)
    usable = [RaplCounter(zone, root) for zone in zones if zone.usable]
    if not usable:
        reasons = [f"{zone.label}: {zone.why_not}" for zone in zones if zone.counted]
        raise MeterUnavailableError(reasons[0] if reasons
                                    else f"{root}: no package zone to count")
    return usable


class RaplPoller(Periodic):
    """Reads every counter on a background thread, twice per shortest wrap period."""

    def __init__(self, counters: list[RaplCounter], interval_s: float | None = None):
        self.counters = counters
        shortest = min(c.wrap_period_s() for c in counters)
        super().__init__(self.read_all, interval_s or min(60.0, max(0.05, shortest / 2)),
                         "rapl-poller")

    def read_all(self) -> dict[str, int]:
        return {counter.label: counter.read_uj() for counter in self.counters}

    def start(self) -> None:
        if not self.running:
            self.read_all()
            super().start()
