"""The progress protocol services report through; the command layer plugs a Rich bar into it on a terminal,
or line_progress (plain lines at a bounded rate) when stderr is a file or a pipe."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol, TextIO


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


# -- line progress: for a stderr that is not a terminal (cluster jobs, nohup, CI logs) ----------------------
def line_progress(stream: TextIO | None = None, interval_s: float = 10.0, fraction: float = 0.05,
                  clock: Callable[[], float] = time.monotonic, min_interval_s: float = 1.0) -> ProgressFactory:
    """A progress factory that writes plain lines, for logs: no bar, no carriage returns.

    A counted task writes `Training: 1200/5000 (24%), 310/s, ETA 12 s` whenever another `fraction` of its
    total is done or `interval_s` seconds have passed since its last line, whichever comes first, but never
    two lines within `min_interval_s` (a counted task over within it writes nothing), and a final
    `Training: 5000/5000 (100%) in 16 s` when its context exits normally (nothing on an exception). With an
    unknown total (None) the lines give the count and the rate. A phase (total None or 1) also writes
    `t-SNE ...` when it starts, and its final line is `t-SNE: done in 12 s` when it was never advanced or
    had a total of 1. `stream` None writes to whatever sys.stderr is at the time. advance() costs one clock
    read and no I/O unless a line is due.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")

    def factory(description: str, total: float | None = None) -> AbstractContextManager[Tracker]:
        return _LineTask(description, total, stream, interval_s, fraction, clock, min_interval_s)

    return factory


class _LineTask:
    """One task of line_progress: its own context manager and Tracker."""

    def __init__(self, description: str, total: float | None, stream: TextIO | None, interval_s: float,
                 fraction: float, clock: Callable[[], float], min_interval_s: float):
        self.description, self.total, self.stream = description, total, stream
        self.interval_s, self.fraction, self.clock = interval_s, fraction, clock
        self.min_interval_s = min_interval_s
        self.done: float = 0
        self.phase = total is None or total <= 1
        self._step = total * fraction if total is not None and total > 0 else math.inf
        self._next_count = self._step
        self._started = self._last = self._next_time = 0.0

    def __enter__(self) -> _LineTask:
        self._started = self._last = self.clock()
        self._next_time = self._started + self.interval_s
        if self.phase:
            self._write(f"{self.description} ...")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return None
        elapsed = self.clock() - self._started
        if not self.phase and self._last == self._started and elapsed < self.min_interval_s:
            return None  # a task that was over before a line was due: nothing to report
        if self.phase and (self.done == 0 or self.total is not None):
            self._write(f"{self.description}: done in {format_duration(elapsed)}")
        elif self.total is None:
            rate = f" ({format_rate(self.done / elapsed)})" if elapsed > 0 else ""
            self._write(f"{self.description}: {format_count(self.done)} in {format_duration(elapsed)}{rate}")
        else:
            self._write(f"{self.description}: {format_count(self.done)}/{format_count(self.total)} "
                        f"({_percent(self.done, self.total)}%) in {format_duration(elapsed)}")
        return None

    def advance(self, n: float = 1) -> None:
        self.done += n
        if self.total is not None and self.done >= self.total:
            return  # the final line says it
        if self.done < self._next_count:
            now = self.clock()
            if now < self._next_time:
                return
        else:
            now = self.clock()
        if now - self._last < self.min_interval_s:
            return
        self._last = now
        self._next_time = now + self.interval_s
        if self._step != math.inf:
            self._next_count = (math.floor(self.done / self._step + 1e-9) + 1) * self._step
        self._write(self._line(now - self._started))

    def _line(self, elapsed: float) -> str:
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            return f"{self.description}: {format_count(self.done)}, {format_rate(rate)}"
        text = (f"{self.description}: {format_count(self.done)}/{format_count(self.total)} "
                f"({_percent(self.done, self.total)}%)")
        if rate > 0:
            text += f", {format_rate(rate)}, ETA {format_duration((self.total - self.done) / rate)}"
        return text

    def _write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(line + "\n")
        stream.flush()


def _percent(done: float, total: float) -> int:
    return 100 if total <= 0 else int(math.floor(100 * done / total + 1e-9))


def format_count(value: float) -> str:
    """A count as a plain integer when whole (1200), else with 3 significant digits (12.5)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def format_rate(per_s: float) -> str:
    """Units per second, rounded to what matters: 310/s, 31.2/s, 3.12/s, or '40 s each' below 1/s."""
    if per_s >= 100:
        return f"{per_s:.0f}/s"
    if per_s >= 10:
        return f"{per_s:.1f}/s"
    if per_s >= 1:
        return f"{per_s:.2f}/s"
    if per_s > 0:
        return f"{format_duration(1 / per_s)} each"
    return "0/s"


def format_duration(seconds: float) -> str:
    """0.4 s, 12 s, 1 min 05 s, 2 h 03 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
