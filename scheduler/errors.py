"""The application's input errors: each names the file, the field and the fix."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input; the CLI prints it on one line and exits with code 2."""

    def __init__(self, where: str, field: str, problem: str):
        self.where = where
        self.field = field
        super().__init__(f"{where}: {field}: {problem}")
