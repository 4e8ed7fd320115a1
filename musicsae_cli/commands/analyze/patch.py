"""`musicsae analyze patch`: activation patching and ablation per hookpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import _options as opt
from .._command import command
from .._common import resolve
from ._shared import ANALYSIS, ConfigOpt

PairsArg = Annotated[Path, typer.Argument(help="Pairs: a CSV/JSONL with clean and corrupt audio columns (optional "
                                               "target, pair_id), or a dataset with --perturb.")]


@command(None, "patch", config=f"{ANALYSIS}:PatchConfig", group="analyze",
         keys={"hookpoint": "hookpoints", "max_items": "max_pairs", "perturb": "perturbation", "latent": "latents"},
         examples=[
             "musicsae analyze patch pairs.csv -o patch/ -m crepe-tiny --probe probes/pitch --hookpoint 'block*'",
             "musicsae analyze patch notes/ --perturb pitch=2 -o patch-pitch/ -m crepe-tiny --probe probes/pitch",
             "musicsae analyze patch notes/ --perturb pitch=2 -o patch-out/ -m crepe-tiny --metric outputs"])
def patch(
    pairs: PairsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (effects.csv, per_pair.csv, "
                                                          "heatmap.png).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    *,
    selection: opt.ModelSelection,
    perturb: Annotated[str | None, typer.Option("--perturb", metavar="NAME=SETTING", help="Pairs from a dataset: "
                                                "each item and the item perturbed, e.g. pitch=2, gain=-6.")] = None,
    metric: Annotated[str | None, typer.Option(help="probe, latent, outputs or loss.")] = None,
    subspace: Annotated[str | None, typer.Option(help="What is patched: full, direction or latents.")] = None,
    windows: Annotated[int | None, typer.Option(help="Also patch this many time windows of the input apart.")]
    = None,
    patch_latent: Annotated[list[int] | None, typer.Option("--patch-latent", help="Subspace latents: an SAE latent "
                                                           "to patch (repeatable).")] = None,
    probe: Annotated[str | None, typer.Option(help="Probes folder (metric probe).")] = None,
    target: Annotated[str | None, typer.Option(help="Probe class whose logit is the metric.")] = None,
    sae: Annotated[str | None, typer.Option(help="SAE folder (metric latent).")] = None,
    latent: Annotated[list[int] | None, typer.Option("--latent", help="SAE latent(s) read by metric latent "
                                                                      "(repeatable).")] = None,
    max_items: Annotated[int | None, typer.Option("--max-items", help="Use at most this many pairs.")] = None,
    allow_other_model: opt.AllowOtherModel = False,
    device: opt.Device = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    ui: opt.UI,
) -> None:
    """Activation patching and ablation per hookpoint: how much of a clean/corrupt difference each layer carries."""
    from ...analysis.config import PatchConfig

    flags = {**selection, "device": device, "perturbation": perturb, "metric": metric,
             "probe": probe, "target": target, "sae": sae, "latents": latent or None, "max_pairs": max_items,
             "subspace": subspace, "windows": windows, "patch_latents": patch_latent or None,
             "allow_other_model": allow_other_model or None}
    cfg = resolve(PatchConfig, "analyze", config, set_, flags, dry_run, ui)
    from ...analysis.patch import patch as run

    ui.show(run(pairs, out, cfg, overwrite, ui.progress), out=out)
