"""`musicsae analyze sensitivity`: how much each layer's activations change under musical perturbations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import _options as opt
from .._command import command
from .._common import EXAMPLES, resolve
from ._shared import ANALYSIS, ConfigOpt


@command(None, "sensitivity", config=f"{ANALYSIS}:SensitivityConfig", group="analyze",
         keys={"hookpoint": "hookpoints", "max_items": "max_clips"},
         aliases={"--layers": "--hookpoint", "--hookpoints": "--hookpoint", "--max-clips": "--max-items"}, examples=[
             f"musicsae analyze sensitivity concepts/ -o sens/ -c pitch-tempo -m {EXAMPLES['local']} --hookpoint all",
             "musicsae analyze sensitivity songs.csv -o sens/ --by genre --max-items 200",
             "musicsae analyze sensitivity notes/ -o sens-crepe/ -c crepe -m crepe-tiny",
             "musicsae analyze sensitivity concepts/ -o sens-tiny/ -c tiny"])
def sensitivity(
    source: Annotated[Path, typer.Argument(help="Audio: a manifest, a dataset folder or a folder of audio.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (CSV, JSON and one PNG per "
                                                          "perturbation).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    *,
    selection: opt.ModelSelection,
    by: Annotated[str | None, typer.Option("--by", metavar="COL",
                                           help="Also aggregate per value of this label column.")] = None,
    max_items: Annotated[int | None, typer.Option("--max-items", help="Use at most this many clips.")] = None,
    device: opt.Device = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    ui: opt.UI,
) -> None:
    """Per-layer relative change and 1 - cosine under pitch shift, time stretch, gain, noise (with CIs)."""
    from ...analysis.config import SensitivityConfig

    flags = {**selection, "device": device, "by": by, "max_clips": max_items}
    cfg = resolve(SensitivityConfig, "analyze", config, set_, flags, dry_run, ui)
    from ...analysis.sensitivity import sensitivity as run

    ui.show(run(source, out, cfg, overwrite, ui.progress), out=out)
