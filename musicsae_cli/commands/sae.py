"""`musicsae sae train | encode | evaluate`: sparse autoencoders on activation stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import command
from ._common import distributed_start, resolve, split_csv
from ._help import MusicsaeGroup

ConfigOpt = opt.preset("sae")
app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Sparse autoencoders: train on a store, encode stores into latents, evaluate.")
StoreArg = Annotated[Path, typer.Argument(help="Activation store.")]
HookpointOpt = Annotated[str | None, typer.Option("--hookpoint", help="Store hookpoint (default: the SAE's).")]
TRAIN_CONFIG = "musicsae_cli.sae.config:SAETrainConfig"


@command(app, "train", config=TRAIN_CONFIG, group="sae", keys={"steps": "max_steps"}, examples=[
    "musicsae sae train store/ -o runs/topk --hookpoint layers.12 -c topk",
    "musicsae sae train store/ -o runs/sweep --hookpoint layers.12 -c topk-sweep-k",
    "musicsae sae train runs/topk --resume"])
def train(
    store: Annotated[Path, typer.Argument(help="Activation store; with --resume and no -o, the run to continue.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder: the SAE (a sweep: one folder per "
                                                                "SAE), logs, curves, checkpoint.")] = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    hookpoint: Annotated[str | None, typer.Option(help="Store hookpoint (default: the only one).")] = None,
    where: opt.Where = None,
    architecture: Annotated[str | None, typer.Option(help="relu, topk, batchtopk or jumprelu.")] = None,
    k: Annotated[int | None, typer.Option(help="Active latents (topk, batchtopk).")] = None,
    expansion_factor: Annotated[float | None, typer.Option(help="Latents per input dimension.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (default: epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per step.")] = None,
    device: opt.Device = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run with its saved settings "
                                                          "(`sae train RUN --resume`).")] = False,
    init_from: Annotated[Path | None, typer.Option(help="Start from this SAE's weights.")] = None,
    overwrite: opt.Overwrite = False,
    nproc: opt.Nproc = 1,
    distribute_hookpoints: Annotated[bool, typer.Option(
        "--distribute-hookpoints", help="One run per hookpoint matching --hookpoint (names or globs, comma "
        "separated; default all) in OUT/HOOKPOINT; under torchrun each process trains its own hookpoints.")]
    = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Train SAE(s) on a store (a sweep trains several from one pass over the data)."""
    from ..sae.config import SAETrainConfig

    store, out, base = _run_folders(store, out, resume)
    flags = {"hookpoint": None if distribute_hookpoints else hookpoint, "where": where,
             "architecture": architecture, "k": k,
             "expansion_factor": expansion_factor, "max_steps": steps, "batch_size": batch_size,
             "device": device, "seed": seed}
    cfg = resolve(SAETrainConfig, "sae", config, set_, flags, dry_run, ui, base=base)
    distributed_start(nproc, cfg.device)
    from ..distributed import current
    from ..sae.train import train_hookpoints, train_sae

    if distribute_hookpoints:
        if resume:
            from ..errors import UsageError

            raise UsageError("--resume with --distribute-hookpoints", "rerun the same command: finished runs are "
                                                                      "kept and interrupted ones resume")
        many = train_hookpoints(store, out, cfg, split_csv(hookpoint) or [], overwrite=overwrite,
                                progress=ui.progress)
        if many is not None:  # None: not rank 0 (rank 0 reports)
            ui.show(many, out=out)
        return
    res = train_sae(store, out, cfg, overwrite=overwrite, resume=resume, init_from=init_from, progress=ui.progress)
    if current().main:  # rank 0 reports
        ui.show(res, out=res.run)


def _run_folders(store: Path, out: Path | None, resume: bool) -> tuple[Path, Path, dict | None]:
    """`sae train`: (store, run folder, saved settings) -- with --resume and no -o, those of the run STORE names."""
    from ..errors import InputError, UsageError
    from ..sae.rundir import resume_settings

    base = None
    if resume:
        run = out if out is not None else store
        saved = resume_settings(run)
        if saved is not None:
            store_path, base = saved
            if out is None:
                store, out = Path(store_path), run
        elif out is None:
            raise InputError(f"nothing to resume in {run}: it is not an unfinished training run",
                             "start one with `musicsae sae train STORE -o RUN`")
    if out is None:
        raise UsageError("missing option '-o' / '--out'", "name the run folder, e.g. -o runs/topk (or continue a "
                                                         "run with `sae train RUN --resume`)")
    return store, out, base


@command(app, "encode", examples=[
    "musicsae sae encode store/ --sae runs/topk -o latents/",
    "musicsae sae encode store/ --sae runs/sweep --member k32 -o latents-k32/ --where stream=cond",
    "musicsae sae encode store/ --sae runs/topk -o latents-bf16/ --precision bf16 --device cuda"])
def encode(
    store: StoreArg,
    sae: Annotated[Path, typer.Option("--sae", help="SAE folder or training run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Latent store to write.")],
    member: opt.Member = None,
    hookpoint: HookpointOpt = None,
    where: opt.Where = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 4096,
    precision: Annotated[str, typer.Option(help="Encoder matmul precision: fp32, or bf16 (bf16 autocast over fp32 "
                                                "weights: faster where the device has bf16 units).")] = "fp32",
    device: opt.Device = None,
    allow_other_model: opt.AllowOtherModel = False,
    overwrite: opt.Overwrite = False,
    nproc: opt.Nproc = 1,
    *,
    ui: opt.UI,
) -> None:
    """Encode a store into a latent store (sparse: indices + values per row, same metadata)."""
    distributed_start(nproc, device)
    from ..models.identity import check_same_model
    from ..runtime import resolve_device
    from ..sae.encode import encode_store
    from ..sae.io import load_sae, model_record
    from ..sae.train import sae_dir
    from ..store import ActivationStore

    path = sae_dir(sae, member)
    model, cfg = load_sae(path)
    check_same_model(f"the SAE {path}", model_record(cfg), ActivationStore.open(store).model, allow_other_model,
                     against="the store's model")
    hp = hookpoint or cfg.get("hook_name") or None
    res = encode_store(model, store, out, hookpoint=hp, where=where, batch_size=batch_size, overwrite=overwrite,
                       device=str(resolve_device(device or "auto")), progress=ui.progress, precision=precision,
                       sae_info={"path": str(path), "architecture": model.spec.arch, "d_sae": model.spec.d_sae})
    ui.show(res, out=out)


@command(app, "evaluate", aliases={"--items": "--max-items"}, examples=[
    "musicsae sae evaluate runs/topk store/ -o eval/",
    "musicsae sae evaluate runs/topk store/ --downstream --max-items 32 -o eval-downstream/"])
def evaluate(
    sae: Annotated[Path, typer.Argument(help="SAE folder or training run.")],
    store: StoreArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for evaluation.json (and its manifest); "
                                                                "without it the metrics are only printed.")] = None,
    member: opt.Member = None,
    hookpoint: HookpointOpt = None,
    where: opt.Where = None,
    max_rows: Annotated[int | None, typer.Option(help="Evaluate at most this many rows (evenly spaced).")] = None,
    downstream: Annotated[bool, typer.Option(help="Also splice the SAE into the model and report CE, KL and the "
                                                  "fraction of loss recovered.")] = False,
    max_items: Annotated[int, typer.Option("--max-items", help="Store items re-run through the model for "
                                                               "--downstream.")] = 16,
    model: opt.Model = None,
    device: opt.Device = None,
    overwrite: opt.Overwrite = False,
    *,
    ui: opt.UI,
) -> None:
    """Reconstruction metrics of an SAE on any store; with --downstream, the model's loss with the SAE spliced in."""
    from ..sae.evaluate import evaluate_sae

    res = evaluate_sae(sae, store, out, overwrite, member=member, hookpoint=hookpoint, where=where,
                       max_rows=max_rows, downstream=downstream, max_items=max_items, model=model,
                       device=device or "auto", progress=ui.progress)
    ui.show(res, out=out)
