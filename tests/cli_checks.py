"""Checks shared by the command-line tests."""

from __future__ import annotations


def one_line_error(result) -> str:
    """The single ``error: ...`` line a refused command prints to stderr, exit code 2."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
