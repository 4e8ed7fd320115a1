"""`musicsae info PATH`: describe a store, dataset or manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    from ..describe import describe

    if not verify:
        summary = describe(path)
    else:
        from ..errors import MusicSAEError
        from ..verify import verify as check

        try:
            summary = describe(path)
        except MusicSAEError as exc:  # a damaged artefact: say what could not be read, then what is broken
            summary = {"path": str(path), "unreadable": exc.message}
        found = check(path)
        summary["verify"] = {"ok": not found["problems"], **found}
    ui.result(summary, list(_lines(summary)))
    if verify and found["problems"]:
        raise typer.Exit(1)


def _lines(data: dict[str, Any], indent: int = 0):
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield f"{pad}{key}:"
            yield from _lines(value, indent + 1)
        elif isinstance(value, list):
            yield f"{pad}{key}: {', '.join(map(str, value)) if value else '-'}"
        else:
            yield f"{pad}{key}: {'-' if value is None or value == {} else value}"
