"""Atomic writes survive a writer killed with SIGKILL inside the write window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from energy_models.io import remove_stale_temps, write_atomic

# A writer that stops inside the window: its temporary is written and flushed, and os.fsync
# announces it through the ready file, then sleeps until it is killed.
_WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from energy_models import io

    target, ready = Path(sys.argv[1]), Path(sys.argv[2])

    def stuck_fsync(fd):
        ready.write_text(str(os.getpid()))
        time.sleep(600)

    io.os.fsync = stuck_fsync
    io.write_atomic(target, "x" * 1_000_000)
""")


def _temps(folder: Path, name: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{name}.")
                  and p.name.endswith(".tmp"))


def _start_stuck_writer(target: Path, ready: Path) -> subprocess.Popen:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(ready)], env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"writer exited with {proc.returncode} before the write window")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("writer never reached the write window")
        time.sleep(0.02)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_next_write_removes_the_temp_of_a_writer_killed_in_the_window(tmp_path):
    target = tmp_path / "plan.json"
    target.write_text('{"old": true}\n')
    writer = _start_stuck_writer(target, tmp_path / "ready")
    _kill(writer)
    stale = _temps(tmp_path, "plan.json")
    assert len(stale) == 1, "the killed writer should have left its temporary"
    assert stale[0].stat().st_size == 1_000_000
    assert target.read_text() == '{"old": true}\n'  # The output itself stays whole.

    write_atomic(target, '{"new": true}\n')

    assert target.read_text() == '{"new": true}\n'
    assert _temps(tmp_path, "plan.json") == []


def test_a_live_writers_temp_is_left_alone(tmp_path):
    target = tmp_path / "plan.json"
    writer = _start_stuck_writer(target, tmp_path / "ready")
    try:
        live = _temps(tmp_path, "plan.json")
        assert len(live) == 1
        write_atomic(target, "mine\n")
        assert target.read_text() == "mine\n"
        assert _temps(tmp_path, "plan.json") == live
    finally:
        _kill(writer)
    assert remove_stale_temps(target) == live
    assert _temps(tmp_path, "plan.json") == []


def test_only_temps_of_the_same_target_are_removed(tmp_path):
    from energy_models.io import _host_tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    target = tmp_path / "plan.json"
    stale = tmp_path / f".plan.json.{_host_tag()}.{dead}.abc_123.tmp"
    others = [
        tmp_path / f".plan.json.5.{_host_tag()}.{dead}.abc_123.tmp",  # Target "plan.json.5".
        tmp_path / f".plan.json.00000000.{dead}.abc_123.tmp",  # Another host's writer.
        tmp_path / ".plan.json.notes.tmp",  # The user's own file.
    ]
    for path in (stale, *others):
        path.write_text("stale")
    write_atomic(target, "b\n")
    assert not stale.exists()
    assert all(path.exists() for path in others)
    assert target.read_text() == "b\n"
