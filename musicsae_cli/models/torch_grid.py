"""A `torch`-family hookpoint's rows: its dry-run facts, its hop and length rule, and the grid hookpoints share.

Hookpoint holds what the dry run found about one module path; measure_hop pins a hop and offset down from (samples,
rows) points; Grid is the row grid of a set of hookpoints (the coarsest hop, finer ones pooled onto it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UsageError

HOP_TOLERANCE = 0.01  # from one length alone, a hop within 1% of a whole number of samples is that number
PROBE_BUDGET = 48  # extra dry runs at most to pin one hookpoint's hop and offset down


@dataclass
class Hookpoint:
    """What the dry run found about one module path."""

    name: str
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # output shapes, one per dry-run length
    time_axis: int | None = None  # None: one row per item
    layout: str = "item"
    width: int = 0
    hop: int | None = None  # samples per row (frame-aligned, whole number), None otherwise
    offset: int = 0  # rows(n) = (n + offset) // hop
    error: UsageError | None = None  # why it cannot be used

    def rows(self, n_samples: int) -> int:
        """Rows of its own for `n_samples` of input (frame-aligned: the model's length rule; item: 1)."""
        if self.time_axis is None:
            return 1 if n_samples > 0 else 0
        return max(0, (int(n_samples) + self.offset) // self.hop)


def feasible_hops(points: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """{hop: (lo, hi)}: every whole hop with the offsets lo <= offset < hi for which rows = (n + offset) // hop holds
    at every (samples, rows) point. A chain of strided layers always follows such a rule."""
    points = sorted(set(points))
    (n_a, t_a), (n_b, t_b) = points[0], points[-1]
    if t_b <= t_a:
        return {}
    span, grown = n_b - n_a, t_b - t_a  # grown is floor or ceil of span / hop
    fits = {}
    for hop in range(max(1, span // (grown + 1)), (span // (grown - 1) + 1 if grown > 1 else n_b) + 1):
        lo = max(hop * t - n for n, t in points)
        hi = min(hop * (t + 1) - n for n, t in points)
        if lo < hi:
            fits[hop] = (lo, hi)
    return fits


def measure_hop(points: list[tuple[int, int]], rows_at: Callable[[int], int | None] | None = None,
                budget: int = PROBE_BUDGET) -> tuple[int | None, int]:
    """(hop, offset) with rows(n) = (n + offset) // hop for every (samples, rows) point, or (None, 0).

    Lengths a whole second apart pin hops that divide the sample rate, but not others (2048 at 48 kHz) nor the
    offset. With `rows_at(n)` (the rows for n samples; None when the model refuses that length), lengths at the
    step edges are tried, by bisection, until one hop and one offset remain: the first length after the shortest
    point that adds a row gives the offset, the next such length the hop. From a single point (a program with a
    static input length), the hop is n / rows when within 1% of a whole number."""
    points = sorted(set(points))
    if len(points) == 1:
        (n, t), = points
        hop = round(n / t) if t > 0 else 0
        return (hop, hop * t - n) if hop >= 1 and abs(hop - n / t) <= HOP_TOLERANCE * n / t else (None, 0)
    spent = 0

    def rows(n: int) -> int | None:
        nonlocal spent
        spent += 1
        t = rows_at(n) if spent <= budget else None
        if t is not None:
            points.append((n, t))
        return t

    def first_growth(lo: int, hi: int, t: int) -> int | None:
        """The shortest length in (lo, hi] with more than t rows (lo has at most t)."""
        top = rows(hi)
        if top is None or top <= t:
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            got = rows(mid)
            if got is None:
                return None
            lo, hi = (lo, mid) if got > t else (mid, hi)
        return hi

    fits = feasible_hops(points)
    if rows_at is not None and fits and not _settled(fits):
        n0, t0 = points[0]
        first = first_growth(max(n0, min(h * (t0 + 1) - hi for h, (_, hi) in fits.items())),
                             max(h * (t0 + 1) - lo for h, (lo, _) in fits.items()), t0)
        fits = feasible_hops(points)
        if first is not None and len(fits) > 1:
            first_growth(first + min(fits) - 1, first + max(fits), t0 + 1)
            fits = feasible_hops(points)
    if not fits:
        return None, 0
    n_long, t_long = max(points)
    hop = min(fits, key=lambda h: abs(h - n_long / t_long))  # one left, unless the model refused a length
    return hop, fits[hop][0]


def _settled(fits: dict[int, tuple[int, int]]) -> bool:
    return len(fits) == 1 and next(iter(fits.values()))[1] - next(iter(fits.values()))[0] == 1


@dataclass(frozen=True)
class Grid:
    """The shared row grid of a set of hookpoints."""

    kind: str  # "frame" or "item"
    hop: int  # samples per row (1 for item)
    factors: dict[str, int]  # rows of a hookpoint averaged into one row

    def rate(self, sample_rate: int) -> float:
        return float(sample_rate) if self.kind == "item" else sample_rate / self.hop
