"""Things chosen by name (baselines, solver backends, profiling backends, catalog entries):
one registry that refuses a name twice, and one error for a name nobody registered."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

LISTED_NAMES = 12
"""Up to this many known names are listed in the error; beyond it only the closest is named."""


class UnknownNameError(KeyError):
    """A name nobody registered or catalogued; names the closest known one (and lists the known
    ones when there are few)."""

    def __init__(self, kind: str, name: str, known: Sequence[str]):
        self.kind = kind
        self.name = name
        self.known = list(known)
        close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0)
        lookup = {k.lower(): k for k in known}
        self.suggestion = lookup[close[0]] if close else None
        message = f"unknown {kind} {name!r}"
        if self.suggestion:
            message += f"; did you mean {self.suggestion!r}?"
        if len(self.known) <= LISTED_NAMES:
            message += f" known: {', '.join(self.known)}"
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(dict[str, T]):
    """Entries by name, in registration order; a name can be registered once."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding its target under ``name``; refuses a name already taken."""

        def add(entry: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = entry
            return entry

        return add

    def lookup(self, name: str) -> T:
        """The entry registered as ``name``; raises UnknownNameError naming the closest."""
        if name not in self:
            raise UnknownNameError(self.kind, name, list(self))
        return self[name]
