"""Exceptions raised when input is refused at the edge of the system.

Every error names *where* the problem is (a file, a line, a config key) and *what
was expected*, so a user can fix the input without reading a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class MotopsError(Exception):
    """Base class of every error motops raises on purpose."""


class ConfigError(MotopsError):
    """``params.yaml`` (or an override) is malformed, misspelt or out of range."""


class DataFormatError(MotopsError):
    """A data file does not follow the format it claims to be in.

    Args:
        path: The offending file (or folder).
        message: What is wrong and what was expected.
        line: 1-based line number inside ``path`` when the problem is on one line.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {message}")


class ValidationFailed(MotopsError):
    """The data validation suite found rows that break an expectation.

    Args:
        summary: Human readable summary naming the first offending rows.
        report_dir: Folder holding the HTML data docs and the JSON summary.
    """

    def __init__(self, summary: str, report_dir: Path | None = None) -> None:
        self.summary = summary
        self.report_dir = report_dir
        tail = f"\nFull report: {report_dir}" if report_dir is not None else ""
        super().__init__(f"{summary}{tail}")


def did_you_mean(word: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
