"""`musicsae model ...`: the built-in tiny model and what a model offers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._command import MusicsaeGroup
from ._common import JsonOpt, Output, OverwriteOpt, QuietOpt, VerboseOpt, command, legacy_output

app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Models: write the built-in tiny MusicGen or a tiny Demucs, list hookpoints.")
LegacyOut = Annotated[Path | None, typer.Argument(hidden=True, help="Deprecated: use -o.")]


@command(app, "save-tiny", examples=["musicsae model save-tiny -o tiny-musicgen/ && musicsae model hookpoints "
                                     "tiny-musicgen/"])
def save_tiny(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory to write (loadable with --model DIR).")]
    = None,
    legacy_out: LegacyOut = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write the tiny random-weight MusicGen with save_pretrained (for tests, demos and offline trials)."""
    o = Output(json_out, quiet, verbose)
    from ..models.tiny import save_tiny_musicgen

    out = legacy_output(out, legacy_out)
    res = save_tiny_musicgen(out, seed=seed, overwrite=overwrite)
    o.result(res, [res["path"], f"tiny MusicGen: {res['n_layers']} layers, width {res['hidden_size']}, "
                                f"{res['parameters']:,} parameters"], out=res.pop("path"))


@command(app, "save-tiny-demucs", examples=[
    "musicsae model save-tiny-demucs -o demucs-models/ && "
    "musicsae data split songs/ -o stems/ -c tiny --repo demucs-models/"])
def save_tiny_demucs(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Model repository folder to write into (created if "
                                                                "missing; use it as `data split --repo DIR`).")]
    = None,
    legacy_out: LegacyOut = None,
    name: Annotated[str, typer.Option(help="Model name (the bag name with --bag-size > 1).")] = "tiny-htdemucs",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    bag_size: Annotated[int, typer.Option(help="Write a bag of this many models instead of one.")] = 1,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a tiny random-weight HTDemucs in Demucs's local-repository layout (for tests, demos, offline trials)."""
    o = Output(json_out, quiet, verbose)
    from ..audio.tiny_demucs import save_tiny_demucs as save

    repo = legacy_output(out, legacy_out)
    res = save(repo, name=name, seed=seed, bag_size=bag_size, overwrite=overwrite)
    kind = f"bag of {res['bag_size']}" if res["bag_size"] > 1 else "single model"
    o.result(res, [f"{res['repo']}: {res['name']} ({kind}, {res['parameters_per_model']:,} parameters per model, "
                   f"stems {', '.join(res['sources'])}, {res['sample_rate']} Hz)", *res["files"]], out=repo)


@command(app, "hookpoints", examples=["musicsae model hookpoints tiny-musicgen",
                                      "musicsae model hookpoints facebook/musicgen-small --json"])
def hookpoints(
    model: Annotated[str, typer.Argument(help="Hub id, local directory or tiny-musicgen.")],
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List a model's hookpoints and their widths."""
    o = Output(json_out, quiet, verbose)
    from ..models import load_adapter

    adapter = load_adapter(model, revision=revision, device="cpu")
    widths = adapter.hookpoint_widths
    o.result({"model": adapter.describe(), "hookpoints": widths}, [f"{h}\t{w}" for h, w in widths.items()])
