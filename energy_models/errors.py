"""The energy-model layer's exceptions."""

from __future__ import annotations


class EnergyModelError(Exception):
    """Base class of every error the energy-model layer raises."""


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
