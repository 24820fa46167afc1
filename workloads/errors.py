"""The workload layer's exceptions."""

from __future__ import annotations


class WorkloadError(ValueError):
    """A trace, request table or workload file is malformed; the message names field and fix."""
