"""The progress protocol services report through; the command layer plugs a Rich bar into it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol


class Tracker(Protocol):
    """One running task: advance it as items complete."""

    def advance(self, n: float = 1) -> None: ...


class _NullTracker:
    def advance(self, n: float = 1) -> None:
        return None


# A progress factory: progress("Synthesising", total) -> context manager yielding a Tracker.
ProgressFactory = Callable[[str, "float | None"], AbstractContextManager[Tracker]]


def no_progress(description: str, total: float | None = None) -> AbstractContextManager[Tracker]:
    """A progress factory that shows nothing (the default for services and tests)."""
    return nullcontext(_NullTracker())
