"""`musicsae analyze separation`: how well raw activations or SAE latents separate labelled concepts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import _options as opt
from .._command import command
from .._common import resolve
from ._shared import ANALYSIS, ConfigOpt

SourceOpts = opt.feature_source("SAE folder or run: analyse its latents (encoded on the fly from an activation "
                                "store).")


@command(None, "separation", config=f"{ANALYSIS}:SeparationConfig", group="analyze", keys={"label": "labels"},
         examples=[
             "musicsae analyze separation latents/ -l pitch_class -l bpm -o sep/",
             "musicsae analyze separation store/ --sae runs/topk -l genre --pooling mean -o sep/",
             "musicsae analyze separation store/ --hookpoint layers.12 -l genre -c tiny -o sep/"])
def separation(
    store: Annotated[Path, typer.Argument(help="Activation store, or a latent store from `sae encode`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (JSON report, CSV/NPZ tables, PNGs).")],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", metavar="COL",
                                                    help="Label column (repeatable or comma-separated).")] = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    *,
    source: SourceOpts,
    pooling: Annotated[str | None, typer.Option(help="frame, or mean/max over each item's frames.")] = None,
    task: Annotated[str | None, typer.Option(help="auto, classification or regression.")] = None,
    folds: Annotated[int | None, typer.Option(help="Cross-validation folds (grouped, stratified).")] = None,
    max_rows: Annotated[int | None, typer.Option(help="Analyse a stratified sample of at most this many.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of samples, splits, forests and projections.")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    ui: opt.UI,
) -> None:
    """Top latents per class (mean difference, AUROC), MI, silhouettes, grouped CV forests, t-SNE and UMAP."""
    from ...analysis.config import SeparationConfig

    flags = {"labels": label, **source, "pooling": pooling, "task": task, "folds": folds, "max_rows": max_rows,
             "seed": seed}
    cfg = resolve(SeparationConfig, "analyze", config, set_, flags, dry_run, ui)
    from ...analysis.separation import separation as run

    ui.show(run(store, out, cfg, overwrite, ui.progress), out=out)
