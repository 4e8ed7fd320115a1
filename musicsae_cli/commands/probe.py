"""`musicsae probe train | evaluate`: linear probes per hookpoint on activation stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import command
from ._common import distributed_start, resolve, split_csv
from ._help import MusicsaeGroup

ConfigOpt = opt.preset("probe")
app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Linear probes: train one per hookpoint on a store, evaluate them on another.")
StoreArg = Annotated[Path, typer.Argument(help="Activation store (raw activations or SAE latents).")]


def one_label(labels: list[str] | None) -> str | None:
    """The one -l of `probe train` (a second -l must not silently replace the first)."""
    if labels and len(labels) > 1:
        from ..errors import UsageError

        raise UsageError(f"probe train takes one label, got {len(labels)}: {', '.join(labels)}",
                         "run probe train once per label")
    return labels[0] if labels else None


@command(app, "train", config="musicsae_cli.probes.config:ProbeConfig", group="probe", keys={"hookpoint": "hookpoints"},
         aliases={"--hookpoints": "--hookpoint", "--layers": "--hookpoint"}, examples=[
             "musicsae probe train store/ -o probes/genre -l genre",
             "musicsae probe train store/ -o probes/tempo -l bpm -c regression",
             "musicsae probe train latents/ -o probes/sae -l concept -c cv5"])
def train(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Probes folder to write.")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Metadata column to predict (e.g. "
                                                                          "genre, bpm); one per run.")] = None,
    hookpoint: opt.Hookpoints = None,
    pooling: Annotated[str | None, typer.Option(help="mean, max, last (per item) or frame (per row).")] = None,
    task: Annotated[str | None, typer.Option(help="classification or regression.")] = None,
    where: opt.Where = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the split and the shuffled-label control.")] = None,
    folds: Annotated[int | None, typer.Option(help="k-fold cross-validation by group.")] = None,
    overwrite: opt.Overwrite = False,
    nproc: opt.Nproc = 1,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Train a linear probe per hookpoint for a label; split by group, with baseline and shuffled control."""
    from ..probes.config import ProbeConfig

    flags = {"label": one_label(label), "hookpoints": split_csv(hookpoint), "pooling": pooling, "task": task,
             "where": where, "seed": seed, "folds": folds}
    cfg = resolve(ProbeConfig, "probe", config, set_, flags, dry_run, ui)
    distributed_start(nproc, cfg.device)
    from ..probes.train import train_probes

    res = train_probes(store, out, cfg, overwrite=overwrite, progress=ui.progress)
    if res is not None:  # None: a rank other than 0 of a distributed run (rank 0 reports)
        ui.show(res, out=out)


@command(app, "evaluate", examples=[
    "musicsae probe evaluate probes/genre generated/ -o probes/genre-on-generated",
    "musicsae probe evaluate probes/genre generated/ -o probes/genre-uncond --where stream=uncond"])
def evaluate(
    probes: Annotated[Path, typer.Argument(help="Probes folder written by `probe train`.")],
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for predictions and metrics.")],
    label: Annotated[str | None, typer.Option("--label", "-l", help="Store column holding the true label (default: "
                                                                    "the probe's).")] = None,
    where: opt.Where = None,
    max_rows: Annotated[int | None, typer.Option(help="Frame probes: predict a seeded sample of rows.")] = None,
    allow_other_model: opt.AllowOtherModel = False,
    overwrite: opt.Overwrite = False,
    *,
    ui: opt.UI,
) -> None:
    """Apply saved probes to a store: per-sample predictions, mean class probabilities, metrics if labelled."""
    from ..probes.evaluate import evaluate_probes

    ui.show(evaluate_probes(probes, store, out, where=where, label=label, allow_other_model=allow_other_model,
                            max_rows=max_rows, overwrite=overwrite, progress=ui.progress), out=out)
