"""Timing shared by the model benches: each path warmed up once, then timed in interleaved rounds."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def interleaved(paths: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, list[float]],
                                                                                dict[str, float]]:
    """({path: seconds of every round}, {path: median}): one untimed warm-up each, then `repeats` rounds that
    run every path in turn, so drift in the machine's speed falls on all of them alike."""
    for fn in paths.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times, {k: float(np.median(v)) for k, v in times.items()}
