"""`musicsae probe train | evaluate`: linear probes per hookpoint on activation stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._command import MusicsaeGroup
from ._common import (
    AllowOtherModelOpt,
    DryRunOpt,
    HookpointsOpt,
    JsonOpt,
    NprocOpt,
    Output,
    OverwriteOpt,
    QuietOpt,
    SetOpt,
    VerboseOpt,
    WhereOpt,
    command,
    config_option,
    distributed_start,
    resolve,
    split_csv,
)

app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Linear probes: train one per hookpoint on a store, evaluate them on another.")
StoreArg = Annotated[Path, typer.Argument(help="Activation store (raw activations or SAE latents).")]


def _num(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _table_lines(res: dict) -> list[str]:
    key = res["best"]["metric"]
    lines = []
    for row in res["layers"]:
        extra = "".join(f"  {name} {_num(row[f'{name}_{key}'])}" for name in ("baseline", "control")
                        if f"{name}_{key}" in row)
        spread = f" ± {_num(row[f'{key}_std'])}" if row.get(f"{key}_std") is not None else ""
        lines.append(f"  {row['hookpoint']}: {key} {_num(row[key])}{spread}{extra}")
    best = res["best"]
    lines.append(f"best: {best['hookpoint']} ({key} {_num(best['value'])})"
                 + (f"; {best['undefined']}" if best.get("undefined") else ""))
    return lines


@command(app, "train", config="musicsae_cli.probes.config:ProbeConfig", group="probe", keys={"hookpoint": "hookpoints"},
         aliases={"--hookpoints": "--hookpoint", "--layers": "--hookpoint"}, examples=[
             "musicsae probe train store/ -o probes/genre -l genre",
             "musicsae probe train store/ -o probes/tempo -l bpm -c regression",
             "musicsae probe train latents/ -o probes/sae -l concept -c cv5"])
def train(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Probes folder to write.")],
    config: Annotated[str | None, config_option("probe")] = None,
    set_: SetOpt = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Metadata column to predict (e.g. "
                                                                          "genre, bpm); one per run.")] = None,
    hookpoint: HookpointsOpt = None,
    pooling: Annotated[str | None, typer.Option(help="mean, max, last (per item) or frame (per row).")] = None,
    task: Annotated[str | None, typer.Option(help="classification or regression.")] = None,
    where: WhereOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the split and the shuffled-label control.")] = None,
    folds: Annotated[int | None, typer.Option(help="k-fold cross-validation by group.")] = None,
    overwrite: OverwriteOpt = False,
    nproc: NprocOpt = 1,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a linear probe per hookpoint for a label; split by group, with baseline and shuffled control."""
    o = Output(json_out, quiet, verbose)
    from ..errors import UsageError
    from ..probes.config import ProbeConfig

    if label and len(label) > 1:  # one probe set per label: a second -l must not silently replace the first
        raise UsageError(f"probe train takes one label, got {len(label)}: {', '.join(label)}",
                         "run probe train once per label")
    flags = {"label": label[0] if label else None, "hookpoints": split_csv(hookpoint), "pooling": pooling,
             "task": task, "where": where, "seed": seed, "folds": folds}
    cfg = resolve(ProbeConfig, "probe", config, set_, flags, dry_run, o)
    distributed_start(nproc, cfg.device)
    from ..probes.train import train_probes

    res = train_probes(store, out, cfg, overwrite=overwrite, progress=o.progress)
    if res is None:
        return  # a rank other than 0 of a distributed run: rank 0 reports
    res.pop("probes", None)
    res["phase_elapsed_s"] = res.pop("timing_s", None)
    s = res["split"]
    head = [str(out), f"{res['task']} probes for '{res['label']}' on {len(res['hookpoints'])} hookpoint(s) "
            f"({res['pooling']} pooling, {s['samples']} samples, {s['groups']} groups; "
            + (f"{s['folds']}-fold by {s['column']})" if s["folds"] else
               f"test {s['test_samples']} samples of {s['test_groups']} {s['column']}s)")]
    o.result(res, head + _table_lines(res), out=out)


@command(app, "evaluate", examples=[
    "musicsae probe evaluate probes/genre generated/ -o probes/genre-on-generated",
    "musicsae probe evaluate probes/genre generated/ -o probes/genre-uncond --where stream=uncond"])
def evaluate(
    probes: Annotated[Path, typer.Argument(help="Probes folder written by `probe train`.")],
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for predictions and metrics.")],
    label: Annotated[str | None, typer.Option("--label", "-l", help="Store column holding the true label (default: "
                                                                    "the probe's).")] = None,
    where: WhereOpt = None,
    max_rows: Annotated[int | None, typer.Option(help="Frame probes: predict a seeded sample of rows.")] = None,
    allow_other_model: AllowOtherModelOpt = False,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Apply saved probes to a store: per-sample predictions, mean class probabilities, metrics if labelled."""
    o = Output(json_out, quiet, verbose)
    from ..probes.evaluate import evaluate_probes

    res = evaluate_probes(probes, store, out, where=where, label=label, allow_other_model=allow_other_model,
                          max_rows=max_rows, overwrite=overwrite, progress=o.progress)
    res.pop("evaluation", None)
    lines = [str(out), f"{res['samples']} samples predicted ({res['pooling']} pooling)"]
    for hp, probs in (res.get("mean_probabilities") or {}).items():
        lines.append(f"  {hp}: " + ", ".join(f"{c} {p:.3f}" for c, p in probs.items()))
    for hp, value in (res.get("mean_prediction") or {}).items():
        lines.append(f"  {hp}: mean prediction {value:.4g}")
    if res.get("layers"):
        lines += [f"metrics on {res['labelled_samples']} labelled samples:"] + _table_lines(res)
    o.result(res, lines, out=out)
