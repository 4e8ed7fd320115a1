"""The `musicsae analyze` group and what its commands share."""

from __future__ import annotations

import typer

from .. import _options as opt
from .._help import MusicsaeGroup

ConfigOpt = opt.preset("analyze")
app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Analyse what layers and latents encode: sensitivity, separation, features, comparisons.")
ANALYSIS = "musicsae_cli.analysis.config"
