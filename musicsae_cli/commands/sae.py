"""`musicsae sae train | encode | evaluate`: sparse autoencoders on activation stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import MusicsaeGroup, command
from ._common import distributed_start, resolve, split_csv

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
            ui.result(many, [str(out), *_hookpoint_run_lines(many)], out=out)
        return
    res = train_sae(store, out, cfg, overwrite=overwrite, resume=resume, init_from=init_from, progress=ui.progress)
    if current().main:  # rank 0 reports
        run_path = res.pop("run")
        ui.result(res, [run_path, *_train_lines(res)], out=run_path)


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


def _member_line(m: dict) -> str:
    return f"explained variance {m['explained_variance']:.4f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.3f}"


def _hookpoint_run_lines(many: dict) -> list[str]:
    lines = [f"{len(many['hookpoints'])} hookpoint(s) on {many['processes']} process(es):"]
    for hp, r in many["runs"].items():
        if r.get("kept"):
            lines.append(f"  {hp}: kept (already complete) -> {r['run']}")
            continue
        lines += [f"  {hp} {name}: {_member_line(m)} -> {m['path']}" for name, m in r["members"].items()]
    return lines


def _train_lines(res: dict) -> list[str]:
    lines = [f"{res['steps']} steps on {res['hookpoint']} ({res['rows_per_s'] or 0:,.0f} rows/s); "
             f"metrics on {res['evaluated_on']} ({res['split']['val_rows']} rows):"]
    return lines + [f"  {name}: {_member_line(m)}, shrinkage {m['shrinkage']:.3f}  -> {m['path']}"
                    for name, m in res["members"].items()]


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
    res.pop("seconds", None)
    ui.result(res, [str(out), ", ".join(f"{k}: {v}" for k, v in res.items() if not isinstance(v, dict | list))],
             out=out)


def _downstream_lines(d: dict) -> list[str]:
    """The downstream result as lines: loss-based (token models) or output-based (models with outputs)."""
    if "ce" in d:
        lines = [f"downstream over {d['tokens']} tokens of {d['items']} items:"]
        lines += [f"  CE {name}: {ce:.5f}" + (f"  KL to clean {d['kl_to_clean'][name]:.3g}" if name != "clean" else "")
                  for name, ce in d["ce"].items()]
        recovered, what = d["fraction_loss_recovered"], "loss"
    else:
        lines = [f"downstream over {d['items']} items: {d['metric'].replace('_', ' ')} of the model's output to the "
                 "clean output"]
        lines += [f"  {name}: {value:.5g}" for name, value in d["distance_to_clean"].items()]
        recovered, what = d["fraction_recovered"], "output"
    return lines + [f"  fraction of {what} recovered vs {k.replace('_', '-')}: {v:.4f}" if v is not None else
                    f"  fraction of {what} recovered vs {k}: undefined (ablation does not change it)"
                    for k, v in recovered.items()]


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
    from ..artifacts import check_output
    from ..sae.evaluate import evaluate_downstream, evaluate_reconstruction, write_evaluation

    if out is not None:
        check_output(out, overwrite, "evaluation")  # before the work, not after it
    if downstream:
        from ..sae.downstream import check_items

        check_items(max_items)  # before the reconstruction pass, not after it
    res = evaluate_reconstruction(sae, store, member=member, hookpoint=hookpoint, where=where, max_rows=max_rows,
                                  device=device or "auto", progress=ui.progress)
    lines = [f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}" for k, v in res.items()]
    if downstream:
        res["downstream"] = d = evaluate_downstream(res["sae"], store, res["hookpoint"], model=model,
                                                    n_items=max_items, device=device or "auto", progress=ui.progress)
        lines += _downstream_lines(d)
    if out is not None:
        write_evaluation(out, res, overwrite)
        lines.insert(0, str(out))
    ui.result(res, lines, out=out)
