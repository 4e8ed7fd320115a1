"""Cutting long audio into frame-aligned windows; every window keeps its start so frame times stay absolute."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One window of a source file, in samples at the model's rate."""

    index: int
    start: int  # first sample
    length: int  # a whole number of frames


def plan_windows(n_samples: int, sample_rate: int, hop_length: int, window_s: float, hop_s: float,
                 min_window_s: float = 0.0) -> list[Window]:
    """Windows of whole frames; the last one is dropped below `min_window_s`, nothing below one frame."""
    win = max(1, round(window_s * sample_rate / hop_length)) * hop_length
    step = max(1, round(hop_s * sample_rate / hop_length)) * hop_length
    out: list[Window] = []
    start = 0
    while start < n_samples:
        length = (min(win, n_samples - start) // hop_length) * hop_length
        if length == 0 or (out and length < min_window_s * sample_rate):
            break
        out.append(Window(len(out), start, length))
        if start + win >= n_samples:  # this window reached the end; later ones would be inside it
            break
        start += step
    return out


def window_id(item_id: str, window: Window, n_windows: int) -> str:
    """The store item id of a window: the source id itself when one window covers the file."""
    return item_id if n_windows == 1 else f"{item_id}@{window.index}"
