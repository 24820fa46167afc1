"""RAPL through a fake powercap tree: which zones are counted, wrap-around, unreadable counters
and the background poller."""

from __future__ import annotations

import os
import pathlib
import sys
import threading
import time
from pathlib import Path

import pytest

from energy_models.errors import MeterError, MeterUnavailableError
from energy_models.meters import survey
from energy_models.meters.rapl import RaplCounter, RaplPoller, discover, open_counters
from tests.fakes import NVML_ERROR_LIBRARY_NOT_FOUND, FakeNvml, FakePowercap

DRAM_RANGE_UJ = 65_712_999_613


@pytest.fixture
def unreadable_powercap(monkeypatch):
    """Honour ``FakePowercap.deny`` even as root, where a mode of 000 does not stop reads."""
    denied: set[Path] = set()
    real = pathlib.Path.read_text

    def read_text(self, *args, **kwargs):
        if self in denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    return denied


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))


def server(tmp_path: Path, denied: set[Path] | None = None) -> FakePowercap:
    tree = FakePowercap.server(tmp_path / "powercap")
    if denied is not None:
        tree.denied = denied
    return tree


def set_atomically(tree: FakePowercap, zone: str, energy_uj: int) -> None:
    """Replace a counter file in one step, so a poller thread never reads it half-written."""
    target = tree.root / zone / "energy_uj"
    spare = target.with_name("energy_uj.new")
    spare.write_text(f"{energy_uj}\n")
    os.replace(spare, target)


def wait_until(condition, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


# Discovery.


def test_server_tree_counts_packages_and_dram_only(tmp_path):
    tree = server(tmp_path)
    zones = discover(tree.root)
    assert [(z.label, z.name, z.counted) for z in zones] == [
        ("package-0", "package-0", True),
        ("package-0/core", "core", False),
        ("package-0/dram", "dram", True),
        ("package-1", "package-1", True),
        ("package-1/core", "core", False),
        ("package-1/dram", "dram", True),
        ("psys", "psys", False),
    ]
    assert [z.label for z in zones if z.usable] == ["package-0", "package-0/dram", "package-1",
                                                   "package-1/dram"]
    by_label = {z.label: z for z in zones}
    assert by_label["package-0"].max_energy_range_uj == FakePowercap.MAX_RANGE_UJ
    assert by_label["package-1/dram"].max_energy_range_uj == DRAM_RANGE_UJ
    assert by_label["package-0"].why_not is None
    core = by_label["package-0/core"].why_not
    assert "inside its package" in core
    assert "twice" in core
    psys = by_label["psys"].why_not
    assert "psys contains the packages" in psys
    assert "twice" in psys


def test_uncore_is_not_counted_and_other_entries_are_ignored(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0")
    tree.add("intel-rapl:0:0", "uncore")
    tree.add("intel-rapl-mmio:0", "package-0")  # The same package again, through MMIO.
    (tree.root / "intel-rapl").mkdir()  # The control type itself.
    (tree.root / "dtpm").mkdir()
    zones = discover(tree.root)
    assert [(z.label, z.usable) for z in zones] == [("package-0", True),
                                                   ("package-0/uncore", False)]
    assert "inside its package" in zones[1].why_not


def test_zones_are_ordered_numerically(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    for p in (10, 2, 1):
        tree.add(f"intel-rapl:{p}", f"package-{p}")
    assert [z.label for z in discover(tree.root)] == ["package-1", "package-2", "package-10"]


def test_zone_without_a_readable_name(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0")
    (tree.root / "intel-rapl:1").mkdir()
    zones = discover(tree.root)
    assert zones[0].usable
    assert (zones[1].label, zones[1].counted) == ("intel-rapl:1", False)
    assert "cannot read its name" in zones[1].why_not


def test_sub_zone_without_its_package_is_labelled_by_number(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:3:1", "dram")
    (zone,) = discover(tree.root)
    assert zone.label == "zone-3/dram"
    assert zone.usable


def test_missing_root(tmp_path):
    with pytest.raises(MeterUnavailableError, match=r"no powercap tree at .*absent.*"
                                                    r"intel_rapl_common.*--rapl-root"):
        discover(tmp_path / "absent")


def test_root_without_rapl_zones(tmp_path):
    (tmp_path / "powercap" / "intel-rapl").mkdir(parents=True)
    with pytest.raises(MeterUnavailableError, match="has no intel-rapl zones"):
        discover(tmp_path / "powercap")


def test_non_integer_counter_is_not_usable(tmp_path):
    tree = server(tmp_path)
    tree.set("intel-rapl:1", "n/a")  # type: ignore[arg-type]
    zones = {z.label: z for z in discover(tree.root)}
    assert not zones["package-1"].usable
    assert "holds 'n/a', not a counter" in zones["package-1"].why_not
    assert zones["package-0"].usable


def test_missing_counter_file_is_not_usable(tmp_path):
    tree = server(tmp_path)
    (tree.root / "intel-rapl:0:1" / "energy_uj").unlink()
    zones = {z.label: z for z in discover(tree.root)}
    assert "cannot read" in zones["package-0/dram"].why_not
    assert "No such file" in zones["package-0/dram"].why_not


# Unreadable counters.


def test_unreadable_counter_names_the_fix(tmp_path, unreadable_powercap):
    tree = FakePowercap(tmp_path / "powercap")
    tree.denied = unreadable_powercap
    tree.add("intel-rapl:0", "package-0")
    tree.deny("intel-rapl:0")
    (zone,) = discover(tree.root)
    assert zone.counted
    assert not zone.usable
    assert "permission denied reading" in zone.why_not
    assert "run as root" in zone.why_not
    assert f"sudo chmod a+r {tree.root}/intel-rapl:*/energy_uj" in zone.why_not
    with pytest.raises(MeterUnavailableError, match="sudo chmod a\\+r"):
        open_counters(tree.root)
    with pytest.raises(MeterUnavailableError, match="RAPL zone package-0: permission denied"):
        RaplCounter(zone, tree.root)


def test_partly_unreadable_server_opens_the_rest(tmp_path, unreadable_powercap):
    tree = server(tmp_path, unreadable_powercap)
    tree.deny("intel-rapl:0")
    assert [c.label for c in open_counters(tree.root)] == ["package-0/dram", "package-1",
                                                           "package-1/dram"]


def test_counter_becoming_unreadable_while_measuring(tmp_path, unreadable_powercap):
    tree = server(tmp_path, unreadable_powercap)
    counter = open_counters(tree.root)[0]
    counter.read_uj()
    tree.deny("intel-rapl:0")
    with pytest.raises(MeterUnavailableError, match="chmod a\\+r"):
        counter.read_uj()


def test_survey_explains_unreadable_rapl(tmp_path, unreadable_powercap, no_nvml):
    tree = FakePowercap(tmp_path / "powercap")
    tree.denied = unreadable_powercap
    tree.add("intel-rapl:0", "package-0")
    tree.add("intel-rapl:0:0", "dram")
    tree.deny("intel-rapl:0")
    tree.deny("intel-rapl:0:0")
    report = survey(tree.root, {})
    assert report.cpu_problem is None
    assert [z.label for z in report.zones] == ["package-0", "package-0/dram"]
    assert report.counted_zones == []
    assert report.rapl_counters() == []
    assert "libnvidia-ml.so" in report.gpu_problem
    assert "CPU: package-0: permission denied" in report.nothing
    assert "sudo chmod a+r" in report.nothing


def test_survey_counts_a_readable_server(tmp_path, no_nvml):
    tree = server(tmp_path)
    report = survey(tree.root, {})
    assert report.nothing is None
    assert [c.label for c in report.rapl_counters()] == ["package-0", "package-0/dram",
                                                        "package-1", "package-1/dram"]


def test_open_counters_with_only_uncounted_zones(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "psys")
    with pytest.raises(MeterUnavailableError, match="no package zone to count"):
        open_counters(tree.root)


def test_counter_refuses_an_uncounted_zone(tmp_path):
    tree = server(tmp_path)
    psys = next(z for z in discover(tree.root) if z.name == "psys")
    with pytest.raises(MeterUnavailableError, match="RAPL zone psys: psys contains"):
        RaplCounter(psys, tree.root)


# Counting through wrap-around.


def test_counter_undoes_wrap_around(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0", energy_uj=900_000, max_range_uj=1_000_000)
    (counter,) = open_counters(tree.root)
    assert counter.read_uj() == 0
    tree.set("intel-rapl:0", 990_000)
    assert counter.read_uj() == 90_000
    tree.set("intel-rapl:0", 10_000)  # Wrapped: 10 000 to the top, 10 000 past zero.
    assert counter.read_uj() == 110_000
    tree.set("intel-rapl:0", 10_000)
    assert counter.read_uj() == 110_000
    tree.set("intel-rapl:0", 950_000)
    assert counter.read_uj() == 1_050_000


def test_counter_reads_real_sized_ranges_exactly(tmp_path):
    tree = server(tmp_path)
    dram = next(c for c in open_counters(tree.root) if c.label == "package-1/dram")
    dram.read_uj()
    tree.set("intel-rapl:1:1", DRAM_RANGE_UJ - 1_000)
    near_top = dram.read_uj()
    assert near_top == DRAM_RANGE_UJ - 1_000 - 200_000
    tree.set("intel-rapl:1:1", 4_000)
    assert dram.read_uj() - near_top == 5_000


def test_wrap_period_from_the_range(tmp_path):
    tree = server(tmp_path)
    counters = {c.label: c for c in open_counters(tree.root)}
    assert counters["package-0"].wrap_period_s() == pytest.approx(262.14332885)
    assert counters["package-0/dram"].wrap_period_s() == pytest.approx(65.712999613)
    assert counters["package-0/dram"].wrap_period_s(max_power_w=100.0) == pytest.approx(
        657.12999613)


def test_concurrent_reads_never_look_like_a_wrap(tmp_path, monkeypatch):
    """A reading taken before another thread's must not be counted after it: that would look
    like the counter going backwards, that is, like a wrap of a whole range."""
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0", energy_uj=50)
    (counter,) = open_counters(tree.root)
    assert counter.read_uj() == 0
    values = iter(["100\n", "200\n"])
    first_read = threading.Event()
    second_done = threading.Event()

    def read_text(self, *args, **kwargs):
        value = next(values)
        if value == "100\n":
            first_read.set()
            # Hold this reading back until the other thread has counted its later one (or,
            # where reads are serialised, until the wait gives up).
            second_done.wait(0.3)
        return value

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    background = threading.Thread(target=counter.read_uj)
    background.start()
    assert first_read.wait(2.0)
    counter.read_uj()
    second_done.set()
    background.join(2.0)
    assert not background.is_alive()
    monkeypatch.undo()
    tree.set("intel-rapl:0", 200)
    assert counter.read_uj() == 150


# The poller.


def test_poller_interval_follows_the_shortest_wrap(tmp_path):
    tree = server(tmp_path)
    counters = open_counters(tree.root)
    assert RaplPoller(counters).interval_s == pytest.approx(DRAM_RANGE_UJ / 1e6 / 1000 / 2)
    packages = [c for c in counters if "dram" not in c.label]
    assert RaplPoller(packages).interval_s == 60.0  # 131 s would be too rare to notice errors.
    assert RaplPoller(counters, interval_s=0.5).interval_s == 0.5


def test_poller_interval_has_a_floor(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0", max_range_uj=1_000)
    assert RaplPoller(open_counters(tree.root)).interval_s == 0.05


def test_poller_reads_in_the_background_until_stopped(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0", energy_uj=900_000, max_range_uj=1_000_000)
    tree.add("intel-rapl:0:0", "dram", energy_uj=0)
    counters = open_counters(tree.root)
    package = counters[0]
    poller = RaplPoller(counters, interval_s=0.005)
    poller.start()
    try:
        assert poller.read_all() == {"package-0": 0, "package-0/dram": 0}
        set_atomically(tree, "intel-rapl:0", 990_000)
        assert wait_until(lambda: package._total_uj == 90_000)
        set_atomically(tree, "intel-rapl:0", 30_000)  # A wrap.
        assert wait_until(lambda: package._total_uj == 130_000)
        set_atomically(tree, "intel-rapl:0", 950_000)
        set_atomically(tree, "intel-rapl:0:0", 7_000)
        assert wait_until(lambda: package._total_uj == 1_050_000)
        set_atomically(tree, "intel-rapl:0", 20_000)  # A second wrap.
        assert wait_until(lambda: package._total_uj == 1_120_000)
        assert wait_until(lambda: counters[1]._total_uj == 7_000)
    finally:
        poller.stop()
    assert poller.error is None
    set_atomically(tree, "intel-rapl:0", 40_000)
    time.sleep(0.05)
    assert package._total_uj == 1_120_000  # Stopped: nothing reads any more.
    # Reading only now would have seen 900 000 → 40 000, one wrap: both were caught.
    assert poller.read_all() == {"package-0": 1_140_000, "package-0/dram": 7_000}


def test_poller_keeps_the_error_that_stopped_it(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0")
    poller = RaplPoller(open_counters(tree.root), interval_s=0.005)
    poller.start()
    try:
        set_atomically(tree, "intel-rapl:0", "garbage")  # type: ignore[arg-type]
        assert wait_until(lambda: poller.error is not None)
    finally:
        poller.stop()
    assert isinstance(poller.error, MeterError)
    assert "not a counter" in str(poller.error)


def test_poller_can_restart(tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    tree.add("intel-rapl:0", "package-0")
    poller = RaplPoller(open_counters(tree.root), interval_s=0.005)
    for expected in (1_000, 3_000):
        poller.start()
        try:
            set_atomically(tree, "intel-rapl:0", expected)
            assert wait_until(lambda e=expected: poller.counters[0]._total_uj == e)
        finally:
            poller.stop()

