"""Probe reports: the per-layer table (CSV + JSON) and a plot of the metric against the layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import write_csv_rows, write_json
from .metrics import metric_names, primary


def write_report(out: Path, task: str, table: list[dict], summary: dict) -> None:
    """metrics.csv, metrics.json and per_layer.png in `out`."""
    write_csv_rows(out / "metrics.csv", table)
    write_json(out / "metrics.json", {**summary, "layers": table})
    plot_layers(out / "per_layer.png", task, table, title=f"{summary.get('label')} probe ({task})")


def plot_layers(path: Path, task: str, table: list[dict], title: str = "") -> None:
    """PNG: each metric vs layer, with the baseline and the shuffled-label control as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [primary(task)] + [m for m in metric_names(task) if m != primary(task)]
    x = np.arange(len(table))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for key, style, label in ((name, "-o", "probe"), (f"control_{name}", "--", "shuffled-label control"),
                                  (f"baseline_{name}", ":", "majority baseline" if task == "classification"
                                   else "mean baseline")):
            if key not in table[0]:
                continue
            y = np.array([row[key] for row in table], dtype=np.float64)
            ax.plot(x, y, style, label=label, markersize=3)
            if f"{key}_std" in table[0]:  # k-fold: spread across folds
                std = np.array([row[f"{key}_std"] for row in table], dtype=np.float64)
                ax.fill_between(x, y - std, y + std, alpha=0.2)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("hookpoint")
        step = max(1, len(table) // 12)
        ax.set_xticks(x[::step], [row["hookpoint"] for row in table][::step], rotation=45, ha="right",
                      fontsize="small")
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
