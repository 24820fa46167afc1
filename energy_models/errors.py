"""The energy-model layer's exceptions."""

from __future__ import annotations

import difflib


class EnergyModelError(Exception):
    """Base class of every error the energy-model layer raises."""


class UnknownNameError(EnergyModelError, KeyError):
    """A GPU, CPU or LLM name that no catalog knows; suggests the closest known name."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind = kind
        self.name = name
        close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0)
        lookup = {k.lower(): k for k in known}
        self.suggestion = lookup[close[0]] if close else None
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        super().__init__(f"unknown {kind} {name!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


class CatalogError(EnergyModelError, ValueError):
    """A catalog file is malformed."""


class ConfigError(EnergyModelError, ValueError):
    """A Hugging Face config.json cannot be read as an LLM's shape."""


class CalibrationError(EnergyModelError, ValueError):
    """Measurements cannot be used to fit a model."""


class MeasurementError(EnergyModelError, ValueError):
    """A measurement file or table cannot be read as measurements."""


class ModelFileError(EnergyModelError, ValueError):
    """A saved models file cannot be read."""


class DomainWarning(UserWarning):
    """A fitted model was asked to predict outside the range it was measured on."""


class MeterError(EnergyModelError, RuntimeError):
    """A meter failed while measuring (a counter vanished, a window was misused)."""


class MeterUnavailableError(MeterError):
    """Nothing of this kind can be measured here; the message says why and what would fix it."""
