"""`musicsae info PATH`: describe a store, dataset or manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import command


@command(None, "info", examples=["musicsae info store/", "musicsae info runs/topk --json",
                                 "musicsae info songs/",
                                 "musicsae info store/ --verify"])
def info(
    path: Annotated[Path, typer.Argument(help="An activation store, SAE or run, probes, dataset folder, manifest "
                                              "file or a folder of audio.")],
    verify: Annotated[bool, typer.Option("--verify", help="Read every file (shards, metadata, weights) and report "
                                                          "what is broken; exit 1 if anything is.")] = False,
    *,
    ui: opt.UI,
) -> None:
    """Summarise any musicsae artefact."""
    from ..describe import info as run

    res = run(path, verify=verify)
    ui.show(res)
    if res.broken:
        raise typer.Exit(1)
