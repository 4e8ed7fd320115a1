"""Training curves and final metrics of an SAE run, as CSV/JSON tables and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifacts import write_csv_rows, write_json


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def write_report(out: Path, final: dict[str, dict]) -> None:
    """eval.csv, final_metrics.json, curves.png and density.png in the run directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = _read_jsonl(out / "train_log.jsonl"), _read_jsonl(out / "eval_log.jsonl")
    scalars = {name: {k: v for k, v in m.items() if isinstance(v, int | float)} for name, m in final.items()}
    write_json(out / "final_metrics.json", scalars)
    if evals:
        write_csv_rows(out / "eval.csv", evals)
    panels = [("mse", "training MSE (normalised)"), ("l0", "L0"), ("dead_fraction", "dead fraction")]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.2))
    for ax, (key, title) in zip(axes, panels, strict=False):
        for name in final:
            rows = [r for r in train if r["member"] == name and key in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    for name in final:
        rows = [r for r in evals if r["member"] == name]
        axes[-1].plot([r["step"] for r in rows], [r.get("explained_variance") for r in rows], marker="o", label=name)
    axes[-1].set_title("validation explained variance")
    axes[-1].set_xlabel("step")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, metrics in final.items():
        density = np.asarray(metrics.get("density", []), dtype=np.float64)
        if density.size:
            ax.hist(np.log10(np.clip(density, 1e-8, 1.0)), bins=50, histtype="step", label=name)
    ax.set_xlabel("log10 feature density (dead latents at -8)")
    ax.set_ylabel("latents")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "density.png", dpi=110)
    plt.close(fig)
