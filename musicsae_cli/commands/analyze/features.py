"""`musicsae analyze features`: what each SAE latent responds to, as a static HTML dashboard or an item view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import _options as opt
from .._command import command
from .._common import resolve, split_csv
from ._shared import ANALYSIS, ConfigOpt

SourceOpts = opt.feature_source("SAE folder or training run (optional for a latent store; needed for --probe).")


@command(None, "features", config=f"{ANALYSIS}:FeaturesConfig", group="analyze",
         keys={"latent": "latents", "top": "n", "by": "by_label", "frames": "top_k", "duration_s": "clip_s",
               "label": "labels", "probe": "probes"},
         aliases={"--latents": "--latent", "--by-label": "--by", "--top-k": "--frames", "--clip-s": "--duration-s",
                  "--labels": "--label", "--probes": "--probe", "--top-density": ("--select", "density", "--top"),
                  "--random": ("--select", "random", "--top")}, examples=[
             "musicsae analyze features store/ --sae runs/topk -o dash/",
             "musicsae analyze features latents/ --sae runs/topk --by pitch_class --top 2 --probe probes/ -o dash/",
             "musicsae analyze features store/ --sae runs/topk --latent 3,17,42 --frames 8 --duration-s 2 -o dash/",
             "musicsae analyze features store/ --sae runs/topk --item notes-C4-piano-000@0 -o item-view/"])
def features(
    store: Annotated[Path, typer.Argument(help="Activation store (latents encoded on the fly with --sae), or a latent "
                                               "store from `sae encode`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: index.html, latents/*.html, audio/, plots/, "
                                                          "features.json (or, with --item, items/ITEM.png/.csv).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    *,
    source: SourceOpts,
    select: Annotated[str | None, typer.Option(help="Which latents: density (most often active), random, label "
                                                    "(with --by) or latents (with --latent).")] = None,
    latent: Annotated[list[str] | None, typer.Option("--latent", help="Show these latents, e.g. 3,17,42 "
                                                                      "(repeatable).")] = None,
    top: Annotated[int | None, typer.Option(help="How many latents (per value of --by).")] = None,
    by: Annotated[str | None, typer.Option("--by", metavar="COL", help="Per value of COL, the --top latents with the "
                                                                       "largest mean-activation difference (its "
                                                                       "frames minus all others).")] = None,
    frames: Annotated[int | None, typer.Option(help="Top activating frames (with clips) per latent.")] = None,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Seconds of audio per clip, centred on "
                                                                          "the frame.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", metavar="COL", help="Label columns for "
                                                    "co-occurrence (repeatable or comma list; default: the "
                                                    "categorical ones).")] = None,
    probe: Annotated[list[str] | None, typer.Option("--probe", metavar="DIR",
                                                    help="Probes folder: nearest probe directions of each "
                                                         "latent's decoder row (repeatable).")] = None,
    item: Annotated[str | None, typer.Option(metavar="ITEM_ID", help="Item view instead of the dashboard: the "
                                                                     "latents of each frame of this item (printed, "
                                                                     "items/ITEM.png heatmap, items/ITEM.csv).")]
    = None,
    device: opt.Device = None,
    seed: Annotated[int | None, typer.Option(help="Seed of --select random.")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    ui: opt.UI,
) -> None:
    """Static HTML dashboard of SAE latents: density, histogram, top frames with audio, label lift, nearest probes.

    Opens from disk (OUT/index.html), no server. Default selection: the 16 most frequently active latents.
    With --item ITEM_ID only the item view is written (a lighter mode): which latents fire on each frame.
    """
    from ...analysis.config import FeaturesConfig

    flags = {**source, "latents": split_csv(latent), "select": latent_selection(select, latent, by),
             "n": top, "by_label": by, "top_k": frames, "clip_s": duration_s, "labels": split_csv(label),
             "probes": probe, "item": item, "device": device, "seed": seed}
    cfg = resolve(FeaturesConfig, "analyze", config, set_, flags, dry_run, ui)
    from ...analysis.features import analyze_features

    ui.show(analyze_features(store, out, cfg, overwrite, ui.progress), out=out)


def latent_selection(select: str | None, latent: list[str] | None, by: str | None) -> str | None:
    """`analyze features`: the --select mode, implied by --latent (latents) or --by (label); refuses two."""
    implied = [(name, kind) for name, kind, v in (("--latent", "latents", latent), ("--by", "label", by)) if v]
    if len(implied) > 1 or (implied and select not in (None, implied[0][1])):
        from ...errors import UsageError

        given = [f"{n}" for n, _ in implied] + ([f"--select {select}"] if select else [])
        raise UsageError(f"choose one latent selection, not {' and '.join(given)}",
                         "--select density|random [--top N], --latent 3,17,42, or --by COL [--top N]")
    return implied[0][1] if implied else select
