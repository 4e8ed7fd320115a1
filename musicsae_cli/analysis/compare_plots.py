"""The figure of `analyze compare` (analysis/compare.py): cross- vs within-set cosines per layer, and the
separation with its p-values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .compare_data import Sets


def plot_compare(path: Path, layers: list[dict], sets: Sets) -> None:
    """Cross- vs within-set cosine (mean, +-1 std band) per layer, raw and centred, and the separation."""
    from ..plotting import figure, figure_legend, hookpoint_ticks, output_name, style_axis, title

    x = np.arange(len(layers))
    names = [r["hookpoint"] for r in layers]
    n = f"n_a={layers[0]['n_a']}, n_b={layers[0]['n_b']} samples" if layers else None
    head = title(f"{sets.label}: {sets.a} (a) vs {sets.b} (b), per layer", run=output_name(path.parent), n=n)
    with figure(path, ncols=3, panel=(5.0, 3.8), title=head) as (fig, axes):
        series = (("ab", "cross a x b", "C3"), ("aa", f"within a ({sets.a})", "C0"),
                  ("bb", f"within b ({sets.b})", "C2"))
        panels = ((axes[0], "", "raw cosine"), (axes[1], "centred_", "centred cosine (shared mean removed)"))
        for ax, prefix, name in panels:
            for pair, label, color in series:
                mean = np.array([r[f"{prefix}cos_{pair}_mean"] for r in layers], dtype=float)
                std = np.array([r[f"{prefix}cos_{pair}_std"] for r in layers], dtype=float)
                ax.plot(x, mean, marker="o", ms=3, color=color, label=label)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, label=f"_{label} std")
            ax.set_title(name)
            hookpoint_ticks(ax, names)
            style_axis(ax, xlabel="hookpoint", ylabel="cosine (mean ± std over pairs)", bounded=(None, 1.0),
                       legend=False)
        sep = np.array([np.nan if r["separation"] is None else r["separation"] for r in layers], dtype=float)
        axes[2].plot(x, sep, marker="o", ms=3, color="C1", label="separation")
        for xi, r in zip(x, layers, strict=True):
            if r["p_value"] is not None and np.isfinite(sep[xi]):
                axes[2].annotate(f"p={r['p_value']:.2g}", (xi, sep[xi]), fontsize=6, textcoords="offset points",
                                 xytext=(0, 4), ha="center")
        axes[2].set_title("separation: ||mean_a - mean_b|| / within-set RMS")
        hookpoint_ticks(axes[2], names)
        style_axis(axes[2], xlabel="hookpoint", ylabel="separation", unit="within-set RMS distances",
                   bounded=(0.0, max(1.0, float(np.nanmax(sep)) * 1.15) if np.isfinite(sep).any() else 1.0))
        figure_legend(fig, axes[0])
