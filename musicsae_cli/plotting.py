"""One style for every figure musicsae writes: a titled figure, labelled axes with units, fixed ranges.

    with figure(path, ncols=2, title=title("probe accuracy per layer", run=..., hookpoint=..., n=...)) as (fig, axes):
        axes[0].plot(...); style_axis(axes[0], xlabel="hookpoint", ylabel="accuracy", bounded=(0, 1))

Rules every figure follows (tests/test_plotting.py checks them on the real report figures):

- a title naming what it is about: the output (run) folder, the hookpoint and the SAE architecture where known
  (`title`; `output_name` recovers the output folder's name from a staging folder);
- axis labels with their unit where there is one (`label`), a legend wherever more than one series is drawn;
- bounded metrics on fixed axes (`bounded=(0, 1)` for accuracy, F1, AUROC, probabilities; `(None, 1)` for
  explained variance or R²);
- no auto-zoom on a constant series: when max - min is tiny relative to the values (or below `noise`), the axis
  gets a fixed range around them, and tick labels never use an offset or a scientific multiplier, so float noise
  cannot read as a large effect.

matplotlib (Agg backend) is imported on the first figure, never when this module is imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DPI = 110
RTOL = 1e-4  # a series whose max - min is below this share of its magnitude is constant (float noise)
STYLE = {
    "figure.facecolor": "white", "axes.facecolor": "white", "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10, "axes.labelsize": 9,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8, "legend.framealpha": 0.85,
    "figure.titlesize": 11, "lines.markersize": 4, "lines.linewidth": 1.5,
    "axes.formatter.useoffset": False, "image.cmap": "magma",
}
PALETTE = ("#3b6ea8", "#d9822b", "#4f9a4f", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")

_captures: list[dict] = []


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here, on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rc() -> dict:
    from cycler import cycler

    return {**STYLE, "axes.prop_cycle": cycler(color=list(PALETTE))}


def output_name(folder: str | Path) -> str:
    """The name of an output folder, also when given its staging folder: `.probes.partial-1a2b3c4d` -> `probes`
    (artifacts.staged_directory), `.run.overwrite` -> `run` (sae.rundir)."""
    folder = Path(folder)
    name = folder.name
    if name.startswith(".") and ".partial-" in name:  # artifacts.staged_directory
        name = name[1:name.rindex(".partial-")]
    elif name.startswith(".") and name.endswith(".overwrite"):  # sae.rundir.overwrite_stage
        name = name[1:-len(".overwrite")]
    return name


def title(what: str, *, run: str | None = None, hookpoint: str | None = None,
          architecture: str | None = None, n: str | None = None) -> str:
    """'what' over a second line 'run · hookpoint · architecture SAE · n' (the parts that are known)."""
    parts = [run, hookpoint,
             f"{architecture} SAE" if architecture else None, n]
    parts = [str(p) for p in parts if p]
    return what + ("\n" + " · ".join(parts) if parts else "")


def label(name: str, unit: str | None = None) -> str:
    """An axis label with its unit: label('duration', 's') -> 'duration (s)'."""
    return f"{name} ({unit})" if unit else name


@contextmanager
def figure(path: str | Path, ncols: int = 1, nrows: int = 1, *, panel: tuple[float, float] = (4.6, 3.3),
           size: tuple[float, float] | None = None, title: str | None = None, dpi: int = DPI,
           layout: str | None = "constrained") -> Iterator:
    """(fig, [axes...]) laid out by `layout` (None: the caller places the axes, e.g. small thumbnails); saved to
    `path` (and closed) when the block ends cleanly."""
    plt = pyplot()
    extra = 0.3 * (title.count("\n") + 1) if title else 0.0
    with plt.rc_context(_rc()):
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout=layout,
                                 figsize=size or (panel[0] * ncols, panel[1] * nrows + extra))
        try:
            yield fig, list(axes.flat)
        except BaseException:
            plt.close(fig)
            raise
        if title:
            fig.suptitle(wrap(title, fig.get_figwidth()))
        save(fig, path, dpi)


def wrap(text: str, width_in: float, chars_per_inch: float = 11.0) -> str:
    """Each line of `text` wrapped to fit a figure `width_in` inches wide (at the suptitle's font size)."""
    import textwrap

    width = max(20, int(width_in * chars_per_inch))
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def save(fig, path: str | Path, dpi: int = DPI):
    """Write `fig` as PNG to `path` and close it; returns the figure (still readable after closing)."""
    plt = pyplot()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    for got in _captures:
        got[Path(path)] = fig
    return fig


@contextmanager
def capture() -> Iterator[dict]:
    """{path: Figure} of every figure saved inside the block (for tests and checks)."""
    got: dict[Path, object] = {}
    _captures.append(got)
    try:
        yield got
    finally:
        _captures.remove(got)


def style_axis(ax, *, xlabel: str | None = None, ylabel: str | None = None, xunit: str | None = None,
               unit: str | None = None, bounded: tuple[float | None, float | None] | None = None,
               noise: float = 0.0, min_span: float = 0.0, legend: bool | None = None, integer: bool = False) -> None:
    """Label the axes (with units), fix the y range and add a legend; call after drawing.

    bounded: (low, high) of a bounded metric; the axis is exactly that range when both are given, else the
    given end is fixed and the other follows the data. A constant y series (max - min below RTOL of its
    magnitude, or below `noise`) gets a fixed range around its value at least `min_span` wide instead of an
    auto-zoom on float noise. legend: None adds one when more than one labelled series is drawn. integer: whole
    numbers only on the y ticks (counts).
    """
    if xlabel is not None:
        ax.set_xlabel(label(xlabel, xunit))
    if ylabel is not None:
        ax.set_ylabel(label(ylabel, unit))
    _plain_ticks(ax)
    if integer:
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = bounded if bounded is not None else (None, None)
    values = y_values(ax)
    fixed = constant_range(values, noise=noise, min_span=min_span, low=lo, high=hi)
    if lo is not None and hi is not None:
        ax.set_ylim(lo, hi)
    elif fixed is not None:
        ax.set_ylim(*fixed)
    elif lo is not None or hi is not None:
        cur_lo, cur_hi = ax.get_ylim()
        ax.set_ylim(cur_lo if lo is None else lo, cur_hi if hi is None else hi)
    if legend or (legend is None and len(series_labels(ax)) > 1):
        ax.legend(loc="best")


def figure_legend(fig, ax) -> None:
    """One legend for the whole figure, below the panels, from the series of `ax` (panels drawing the same
    series); nothing when `ax` has fewer than two."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels, strict=True) if lab and not lab.startswith("_")]
    if len(keep) > 1:
        fig.legend([h for h, _ in keep], [lab for _, lab in keep], loc="outside lower center",
                   ncols=min(len(keep), 4))


def constant_range(values, *, noise: float = 0.0, min_span: float = 0.0, low: float | None = None,
                   high: float | None = None) -> tuple[float, float] | None:
    """A fixed (low, high) range around `values` when they are constant, else None (see style_axis)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    vmin, vmax = float(v.min()), float(v.max())
    scale = max(abs(vmin), abs(vmax))
    if vmax - vmin > max(RTOL * scale, noise):
        return None
    centre = (vmin + vmax) / 2
    half = max(0.1 * abs(centre), min_span / 2, 10 * noise)
    if half == 0.0:
        half = 1.0
    a, b = centre - half, centre + half
    if low is not None and a < low:
        a, b = low, low + 2 * half
    if high is not None and b > high:
        a, b = high - 2 * half, high
    if low is not None:
        a = max(a, low)
    return a, b


def y_values(ax) -> np.ndarray:
    """Every y value drawn on `ax`: lines, filled bands, scatter points and bars (NaNs dropped)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Rectangle

    parts = [np.asarray(line.get_ydata(), dtype=np.float64).ravel() for line in ax.get_lines()]
    for coll in ax.collections:
        if isinstance(coll, PolyCollection):
            parts += [np.asarray(p.vertices[:, 1], dtype=np.float64) for p in coll.get_paths()]
        elif hasattr(coll, "get_offsets") and len(coll.get_offsets()):
            parts.append(np.asarray(coll.get_offsets(), dtype=np.float64)[:, 1])
    for patch in ax.patches:
        if isinstance(patch, Rectangle):
            parts.append(np.array([patch.get_y(), patch.get_y() + patch.get_height()], dtype=np.float64))
    if not parts:
        return np.zeros(0)
    out = np.concatenate(parts)
    return out[np.isfinite(out)]


def series_labels(ax) -> list[str]:
    """Labels of the legend-worthy series on `ax` (matplotlib's '_'-prefixed internal labels left out)."""
    handles, labels = ax.get_legend_handles_labels()
    return [lab for lab in labels if lab and not lab.startswith("_")]


def _plain_ticks(ax) -> None:
    """No offset text and no '1e-5' multiplier on linear axes: tick labels show the values themselves."""
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        fmt = axis.get_major_formatter()
        if type(fmt) is ScalarFormatter:
            fmt.set_useOffset(False)
            fmt.set_scientific(False)


def hookpoint_ticks(ax, names: list[str], max_ticks: int = 16) -> None:
    """Hookpoint names on the x axis at 0..n-1 (every k-th when there are many), rotated when crowded."""
    x = np.arange(len(names))
    step = max(1, math.ceil(len(names) / max_ticks))
    ax.set_xticks(x[::step], names[::step], rotation=90 if len(names) > 8 else 0,
                  fontsize=7 if len(names) > 8 else 8)
    ax.set_xlim(-0.5, len(names) - 0.5)


__all__ = ["DPI", "capture", "constant_range", "figure", "figure_legend", "hookpoint_ticks", "label",
           "output_name", "pyplot", "save", "style_axis", "title", "y_values"]
