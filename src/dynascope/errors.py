"""Exceptions with messages a user can act on: what was expected, what was found, and where."""

from __future__ import annotations

from pathlib import Path


class DynascopeError(Exception):
    """Base class for every error dynascope raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(DynascopeError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DataError(DynascopeError, ValueError):
    """Input data is missing or malformed; the message names file, line and field where known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            if field is not None:
                where += f" (field {field!r})"
            where += ": "
        elif field is not None:
            where = f"field {field!r}: "
        super().__init__(where + message)


class RunExistsError(DynascopeError, FileExistsError):
    """The output directory already holds a finished run."""


class NotFittedError(ConfigError):
    """An estimator was used before ``fit`` (as scikit-learn's NotFittedError)."""


class TrainingError(DynascopeError, RuntimeError):
    """Training broke (a non-finite loss or parameter); the last good checkpoint is kept."""
