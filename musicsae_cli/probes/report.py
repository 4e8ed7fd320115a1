"""Probe reports: the per-layer table (CSV + JSON) and a plot of the metric against the layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import write_csv_rows, write_json
from .metrics import metric_names, primary

# axis label and bounded range per metric; MAE is in the label's own units
METRICS = {"accuracy": ("accuracy", (0.0, 1.0)), "balanced_accuracy": ("balanced accuracy", (0.0, 1.0)),
           "macro_f1": ("macro F1", (0.0, 1.0)), "r2": ("R²", (None, 1.0)), "mae": ("MAE", (0.0, None))}


def write_report(out: Path, task: str, table: list[dict], summary: dict, run: str | None = None) -> None:
    """metrics.csv, metrics.json and per_layer.png in `out` (run: the output folder's name for the title)."""
    from ..plotting import output_name

    write_csv_rows(out / "metrics.csv", table)
    write_json(out / "metrics.json", {**summary, "layers": table})
    plot_layers(out / "per_layer.png", task, table, title=f"{summary.get('label')} probe ({task}) per layer",
                run=run or output_name(out), n=sample_note(summary), label_unit=summary.get("label"))


def sample_note(summary: dict) -> str | None:
    """'n=40 test samples (12 groups)', '5-fold CV over 200 samples (about 40 test samples per fold)' or
    'n=40 labelled samples', from a train or evaluate summary."""
    split = summary.get("split") or {}
    if split.get("folds"):
        per = split["samples"] / split["folds"]
        return f"{split['folds']}-fold CV over {split['samples']} samples (about {per:.0f} test samples per fold)"
    if split.get("test_samples") is not None:
        groups = f" ({split['test_groups']} groups)" if split.get("test_groups") is not None else ""
        return f"n={split['test_samples']} test samples{groups}"
    if summary.get("labelled_samples") is not None:
        return f"n={summary['labelled_samples']} labelled samples"
    return None


def plot_layers(path: Path, task: str, table: list[dict], title: str = "", run: str | None = None,
                n: str | None = None, label_unit: str | None = None) -> None:
    """PNG: each metric vs layer, with the baseline and the shuffled-label control as dashed lines.

    Bounded metrics sit on fixed axes (accuracy, balanced accuracy, F1: 0-1; R²: up to 1); `n` (the test size)
    goes into the title; MAE is labelled in the units of the label (`label_unit`).
    """
    from ..plotting import figure, figure_legend, hookpoint_ticks, style_axis
    from ..plotting import title as make_title

    names = [primary(task)] + [m for m in metric_names(task) if m != primary(task)]
    x = np.arange(len(table))
    hookpoints = [row["hookpoint"] for row in table]
    with figure(path, ncols=len(names), panel=(4.4, 3.6), title=make_title(title or "probe metrics per layer",
                                                                            run=run, n=n)) as (fig, axes):
        for ax, name in zip(axes, names, strict=True):
            for key, style, label in ((name, "-o", "probe"), (f"control_{name}", "--", "shuffled-label control"),
                                      (f"baseline_{name}", ":", "majority baseline" if task == "classification"
                                       else "mean baseline")):
                if key not in table[0]:
                    continue
                y = np.array([np.nan if row[key] is None else row[key] for row in table], dtype=np.float64)
                line, = ax.plot(x, y, style, label=label, markersize=3)
                if f"{key}_std" in table[0]:  # k-fold: spread across folds
                    std = np.array([np.nan if row[f"{key}_std"] is None else row[f"{key}_std"] for row in table],
                                   dtype=np.float64)
                    ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2,
                                    label="_spread over folds")
            axis_name, bounded = METRICS.get(name, (name.replace("_", " "), None))
            ax.set_title(axis_name)
            hookpoint_ticks(ax, hookpoints)
            style_axis(ax, xlabel="hookpoint", ylabel=axis_name,
                       unit=f"units of {label_unit}" if name == "mae" and label_unit else None, bounded=bounded,
                       legend=False)
        figure_legend(fig, axes[0])
