"""What every command shares: the error console, one-line errors and exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from energy_models.errors import DomainWarning, EnergyModelError
from energy_models.registry import UnknownNameError
from scheduler.errors import InputError
from solvers.errors import InfeasibleError, PlanRejected, SolverError
from workloads.errors import WorkloadError

err = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input and infeasible fleets: one line on stderr, exit code 2."""
    try:
        yield
    except PlanRejected as exc:
        err.print(f"[red]internal error[/red]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except InfeasibleError as exc:
        err.print(f"[red]error[/red]: infeasible: {escape(exc.reasons[0])}"
                  + (f" (and {len(exc.reasons) - 1} more)" if len(exc.reasons) > 1 else ""),
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (InputError, WorkloadError, EnergyModelError, SolverError, UnknownNameError) as exc:
        err.print(f"[red]error[/red]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """A fitted model asked outside its domain says so once, on one line.

    Other warnings are re-emitted once recording has stopped: re-emitting one while
    ``catch_warnings(record=True)`` still records appends it to the list being walked.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DomainWarning)
            yield
    finally:
        for warning in caught:
            if issubclass(warning.category, DomainWarning):
                err.print(f"warning: {warning.message}", markup=False, highlight=False,
                          soft_wrap=True)
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno)


def results_only_on_stdout() -> None:
    """Keep file descriptor 1 for results: whatever else writes to it goes to stderr.

    Native libraries (HiGHS prints a banner from C on every solve) write to fd 1 directly,
    below Python's ``sys.stdout``; so results get a private duplicate of fd 1 and fd 1 itself
    is pointed at stderr for the rest of the process.
    """
    sys.stdout.flush()
    results_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(results_fd, "w", encoding=sys.stdout.encoding or "utf-8",  # noqa: SIM115
                      errors=sys.stdout.errors or "strict", closefd=True)


def wide_console() -> Console:
    """Piped output has no terminal width; 120 columns keep tables unwrapped."""
    return Console(width=None if sys.stdout.isatty() else 120)
