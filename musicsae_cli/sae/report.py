"""Training curves and final metrics of an SAE run, as CSV/JSON tables and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifacts import write_csv_rows, write_json

# (train_log key, axis label, unit, bounded range)
PANELS = (("mse", "training MSE (normalised)", None, (0.0, None)),
          ("l0", "L0", "active latents per row", (0.0, None)),
          ("dead_fraction", "dead fraction", "share of latents", (0.0, 1.0)))


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def write_report(out: Path, final: dict[str, dict], hookpoint: str | None = None,
                 architectures: dict[str, str] | None = None, run: str | None = None) -> None:
    """eval.csv, final_metrics.json, curves.png and density.png in the run directory.

    hookpoint, architectures (member -> SAE architecture) and run (the run folder's name, default out's) go into
    the plot titles.
    """
    from ..plotting import figure, figure_legend, output_name, style_axis, title

    train, evals = _read_jsonl(out / "train_log.jsonl"), _read_jsonl(out / "eval_log.jsonl")
    scalars = {name: {k: v for k, v in m.items() if isinstance(v, int | float)} for name, m in final.items()}
    write_json(out / "final_metrics.json", scalars)
    if evals:
        write_csv_rows(out / "eval.csv", evals)
    archs = sorted(set((architectures or {}).values()))
    where = {"run": run or output_name(out), "hookpoint": hookpoint, "architecture": "/".join(archs) or None}
    members = f"{len(final)} SAEs" if len(final) > 1 else None
    with figure(out / "curves.png", ncols=len(PANELS) + 1, panel=(4.0, 3.2),
                title=title("SAE training curves" + (f" ({members})" if members else ""), **where)) as (fig, axes):
        for ax, (key, name, unit, bounded) in zip(axes, PANELS, strict=False):
            for member in final:
                rows = [r for r in train if r["member"] == member and r.get(key) is not None]
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=member)
            ax.set_title(name)
            style_axis(ax, xlabel="training step", ylabel=name, unit=unit, bounded=bounded, legend=False)
        ax = axes[-1]
        for member in final:
            rows = [r for r in evals if r["member"] == member and r.get("explained_variance") is not None]
            ax.plot([r["step"] for r in rows], [r["explained_variance"] for r in rows], marker="o", label=member)
        ax.set_title("validation explained variance")
        style_axis(ax, xlabel="training step", ylabel="explained variance", bounded=(None, 1.0), legend=False)
        figure_legend(fig, axes[0])
    with figure(out / "density.png", panel=(5.2, 3.4),
                title=title("SAE latent density", **where)) as (_, (ax,)):
        for member, metrics in final.items():
            density = np.asarray(metrics.get("density", []), dtype=np.float64)
            if density.size:
                ax.hist(np.log10(np.clip(density, 1e-8, 1.0)), bins=50, range=(-8.0, 0.0), histtype="step",
                        label=member)
        style_axis(ax, xlabel="log10 feature density (share of rows active; dead latents at -8)",
                   ylabel="latents", unit="count", bounded=(0.0, None), integer=True)
