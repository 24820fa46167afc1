"""Atomic output: a reader sees the old file or the whole new one, never half of it.

The new content goes to a temporary file beside the target, ``.{name}.{host}.{pid}.{random}.tmp``,
and is renamed over the target once it is on disk. A writer killed inside that window (kill -9,
power loss) leaves its temporary behind; the next write of the same target removes such
leftovers, but only those written on this host by a process that no longer exists, so a
concurrent writer's live temporary is never touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path


def _host_tag() -> str:
    """Eight hex digits naming this host, so a pid is only ever judged on its own machine."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # Not a pid we wrote; leave the file alone.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Another user's live process.
    return True


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{_host_tag()}.{os.getpid()}."


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove temporaries of ``path`` left by dead writers on this host; return what went."""
    target = Path(path)
    pattern = re.compile(re.escape(f".{target.name}.{_host_tag()}.") + r"(\d+)\.[A-Za-z0-9_]+\.tmp")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        stale = Path(entry.path)
        try:
            stale.unlink()
        except FileNotFoundError:
            continue  # Another writer cleaned it first.
        except OSError:
            continue  # Not ours to remove after all (permissions); the write goes on.
        removed.append(stale)
    return removed


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` to a temporary file beside ``path``, flush it to disk, then rename.

    Temporaries of ``path`` left behind by killed writers are removed first."""
    target = Path(path)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide outputs from other users.
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
