"""The Progress callback of the stages, defined once (the live table of a run's trials is tasks/tune/progress.py)."""

from __future__ import annotations

from typing import Callable

# Where a stage reports what it is doing, one line at a time (a logger's info, print, or nothing).
Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    """A Progress that says nothing (the default of stages called without one)."""
