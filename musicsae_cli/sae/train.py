"""`sae train`: the run directory, resume and init-from rules, final evaluation and the saved SAEs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

from ..artifacts import read_manifest, staged_directory, write_json
from ..errors import ConfigError, InputError
from ..kinds import expect_kind, is_kind
from ..progress import ProgressFactory, no_progress
from ..results import ABSENT, Result, internal
from .config import SAETrainConfig
from .rundir import RUN_KIND, open_run, trim_logs


def _member_line(m: dict) -> str:
    return f"explained variance {m['explained_variance']:.4f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.3f}"


@dataclasses.dataclass(kw_only=True)
class TrainResult(Result):
    """What `sae train` reports: steps, speed and each SAE's final metrics (members, split and evaluated_on only
    on rank 0, which saves the SAEs)."""

    run: str = internal()  # the run folder (the command's output)
    hookpoint: str
    steps: int
    resumed_from: int
    rows_per_s: float | None
    members: dict = ABSENT
    split: dict = ABSENT
    evaluated_on: str = ABSENT

    def lines(self) -> list[str]:
        lines = [self.run, f"{self.steps} steps on {self.hookpoint} ({self.rows_per_s or 0:,.0f} rows/s); "
                 f"metrics on {self.evaluated_on} ({self.split['val_rows']} rows):"]
        return lines + [f"  {name}: {_member_line(m)}, shrinkage {m['shrinkage']:.3f}  -> {m['path']}"
                        for name, m in self.members.items()]


@dataclasses.dataclass(kw_only=True)
class HookpointRuns(Result):
    """What `sae train --distribute-hookpoints` reports: every hookpoint's run (kept or trained)."""

    out: str = internal()  # the folder of the runs (the command's output)
    runs: dict  # hookpoint -> a run's summary ({run, kept} when a complete run was kept)
    hookpoints: list[str]
    processes: int

    def lines(self) -> list[str]:
        lines = [self.out, f"{len(self.hookpoints)} hookpoint(s) on {self.processes} process(es):"]
        for hp, r in self.runs.items():
            if r.get("kept"):
                lines.append(f"  {hp}: kept (already complete) -> {r['run']}")
                continue
            lines += [f"  {hp} {name}: {_member_line(m)} -> {m['path']}" for name, m in r["members"].items()]
        return lines


def train_sae(store_path: str | Path, out: str | Path, cfg: SAETrainConfig, overwrite: bool = False,
              resume: bool = False, init_from: str | Path | None = None,
              progress: ProgressFactory = no_progress) -> TrainResult:
    """Train the SAE(s) of `cfg` on a store; returns a summary with the final validation metrics.

    On several ranks (torchrun): data-parallel training of the same SAEs on the same global batches, each rank
    reading its share of every batch (see run_training); rank 0 owns the run folder (checkpoints, logs, the saved
    SAEs), the others read its checkpoint when resuming, at this world size or another."""
    from .. import distributed
    from ..runtime import resolve_device
    from ..store import ActivationStore
    from ..store.verify import check_files
    from .data import pick_hookpoint, split_rows
    from .loop import member_specs
    from .rundir import RunDir

    d = distributed.current()

    def setup():
        if d.active and cfg.architecture == "dictionary_learning":
            raise distributed.refusal("sae train with architecture dictionary_learning")
        if d.active and cfg.batch_size % d.world:
            raise ConfigError(f"a batch of {cfg.batch_size} rows does not split evenly over {d.world} processes",
                              f"choose --batch-size as a multiple of {d.world}")
        store = ActivationStore.open(store_path)
        hookpoint = pick_hookpoint(store, cfg.hookpoint)
        d_in = store.widths[hookpoint]
        member_specs(cfg, d_in)  # an impossible shape (k wider than the SAE, ...) fails before anything is written
        start_sae = _check_init_from(init_from, cfg, d_in) if init_from else None
        check_files(store, [hookpoint])  # a truncated or missing shard fails here, naming it
        record = {"store": str(Path(store_path).resolve()), "hookpoint": hookpoint, **cfg.model_dump(mode="json")}
        split = split_rows(store, cfg.where, cfg.val_fraction, cfg.split_column, cfg.seed)
        steps_per_epoch = split.train.size // cfg.batch_size
        if steps_per_epoch == 0:
            raise InputError(f"{split.train.size} training rows are fewer than one batch ({cfg.batch_size})",
                             "lower --batch-size or extract more audio")
        return store, hookpoint, start_sae, record, split, steps_per_epoch, resolve_device(cfg.device)

    store, hookpoint, start_sae, record, split, steps_per_epoch, device = distributed.agreed(setup)
    target = Path(out)
    distributed.agreed(distributed.check_same, "configs or stores",
                       {"record": record, "rows": store.n_rows, "created": store.manifest.get("created")},
                       "launch every rank with the same command line on the same store (a shared filesystem)")
    # only once config and data are known to be usable; rank 0 owns the folder
    run = distributed.agreed(lambda: open_run(target, record, overwrite, resume) if d.main else None)
    if d.active:
        where = distributed.broadcast((str(run.path), str(run.target), run.resumed) if d.main else None)
        run = run or RunDir(Path(where[0]), Path(where[1]), where[2])
    try:
        res = _train(run, store, store_path, hookpoint, split, cfg, start_sae, device, steps_per_epoch, progress)
    except BaseException:
        run.release()  # the run stays resumable: the same command continues it
        raise
    if d.main:
        run.finish()
    return TrainResult(run=str(target), **res)


def train_hookpoints(store_path: str | Path, out: str | Path, cfg: SAETrainConfig, patterns: list[str],
                     overwrite: bool = False, progress: ProgressFactory = no_progress) -> HookpointRuns | None:
    """One training run per hookpoint matching `patterns`, in `out/<hookpoint>`; on several ranks the hookpoints
    are dealt out round-robin and each rank trains its own, alone (as sparsify's --distribute_modules). A run
    that is complete is kept (unless `overwrite`), an interrupted one resumes. Returns every run's summary (on
    rank 0; None on the others)."""
    from .. import distributed
    from ..probes.data import pick_hookpoints
    from ..store import ActivationStore
    from .rundir import run_status

    d = distributed.current()
    hookpoints = distributed.agreed(lambda: pick_hookpoints(ActivationStore.open(store_path), patterns))
    distributed.agreed(distributed.check_same, "configs or stores", {"cfg": cfg.model_dump(mode="json"),
                                                                    "hookpoints": hookpoints},
                       "launch every rank with the same command line on the same store")
    mine = hookpoints[d.rank::d.world] if d.active else hookpoints
    results = {}
    with distributed.alone():
        for hp in mine:
            run = Path(out) / hp
            if not overwrite and run_status(run) == "complete":
                results[hp] = {"run": str(run), "kept": True}
                continue
            res = train_sae(store_path, run, cfg.model_copy(update={"hookpoint": hp}), overwrite=overwrite,
                            progress=progress)
            results[hp] = {**res.to_json(), "run": res.run}
    shares = distributed.gather(results)
    if not d.main:
        return None
    merged = {hp: share[hp] for share in shares for hp in share}
    return HookpointRuns(out=str(out), runs={hp: merged[hp] for hp in hookpoints}, hookpoints=hookpoints,
                         processes=d.world)


def _train(run, store, store_path, hookpoint: str, split, cfg: SAETrainConfig, start_sae, device,
           steps_per_epoch: int, progress) -> dict:
    """Train in `run.path` (resuming from its checkpoint), evaluate, save the SAEs and mark the run complete."""
    import torch

    from .. import distributed
    from ..runtime import seed_everything
    from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
    from .data import check_finite, init_sample
    from .io import save_sae
    from .loop import build_members, calibrate, evaluate_members, run_training, wrap_ddp
    from .report import write_report

    d = distributed.current()
    out, d_in = run.path, store.widths[hookpoint]
    total = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    if cfg.architecture == "dictionary_learning":
        return _train_dictionary(store, store_path, hookpoint, split, cfg, run, total, progress)
    seed_everything(cfg.seed)
    # each rank reads its block of the initialisation rows; together they are the one-process sample
    sample_rows, sample = init_sample(store, hookpoint, split.train, cfg.init_rows, cfg.seed,
                                      share=(d.rank, d.world) if d.active else None)
    sample = distributed.gather_tensor(torch.from_numpy(sample))
    check_finite(sample, sample_rows, store)
    members = build_members(cfg, d_in, sample, device, start_sae)
    start = load_checkpoint(out, members, device)["step"] if run.resumed and has_checkpoint(out) else 0
    if d.active:
        wrap_ddp(members, device)
    if d.main:
        trim_logs(out, start)  # rows logged after the checkpoint are written again, once
    tb = _tensorboard(out) if cfg.tensorboard and d.main else None

    def checkpoint(step: int) -> None:
        if d.main:
            save_checkpoint(out, step, members, {"total": total})

    stats = run_training(members, store, hookpoint, split, cfg, out, device, start, total, steps_per_epoch,
                         progress, checkpoint, tb)
    calibrate(members, store, hookpoint, split.train, cfg.batch_size, device)
    checkpoint(total)
    eval_rows = split.val if split.val.size else split.train
    final = evaluate_members(members, store, hookpoint, eval_rows, device, progress=progress)
    if not d.main:  # rank 0 saves the SAEs (every rank holds the same ones)
        return {"hookpoint": hookpoint, "steps": total, "resumed_from": start, "rows_per_s": stats["rows_per_s"]}
    saved = {}
    single = len(members) == 1  # one SAE is saved in the run folder itself; a sweep's in one folder per SAE
    for m in members:
        metrics = final[m.name]
        with _sae_folder(out, None if single else m.name) as folder:
            save_sae(m.sae, folder, hook_name=hookpoint, model_name=str(store.model.get("id", "")),
                     extra={"store": str(store_path), "model": store.model, "member": m.name,
                            "train_config": m.cfg.model_dump(mode="json"),
                            "steps": total, "split": split_info(split), "final_metrics": _scalars(metrics)},
                     density=torch.as_tensor(metrics["density"]), write_manifest=not single)
        saved[m.name] = {"path": str(run.target if single else run.target / m.name), **_scalars(metrics)}
    write_report(out, final, hookpoint, {m.name: m.sae.spec.arch for m in members}, run.target.name)
    manifest = read_manifest(out)
    manifest.update(status="complete", members=list(saved), final_metrics=saved, steps=total,
                    split=split_info(split))
    write_json(out / "manifest.json", manifest)
    return {"hookpoint": hookpoint, "steps": total, "resumed_from": start,
            "rows_per_s": stats["rows_per_s"], "members": saved,
            "split": manifest["split"], "evaluated_on": "validation" if split.val.size else "training rows"}


def _train_dictionary(store, store_path, hookpoint, split, cfg, run, total: int, progress) -> dict:
    """The scikit-learn baseline: partial_fit on the same shuffled batches, then the same evaluation and save."""
    import itertools
    import time

    from .data import init_sample
    from .dictionary import DictionarySpec, fit_dictionary, save_dictionary
    from .loop import evaluate_members

    out, d_in = run.path, store.widths[hookpoint]
    _, sample = init_sample(store, hookpoint, split.train, cfg.init_rows, cfg.seed)
    spec = DictionarySpec(d_in=d_in, d_sae=cfg.width(d_in), k=cfg.k, alpha=cfg.dl_alpha, transform=cfg.dl_transform)

    def batches():
        for epoch in itertools.count():
            for batch in store.stream([hookpoint], cfg.batch_size, rows=split.train, shuffle=True, seed=cfg.seed,
                                      epoch=epoch, buffer_rows=cfg.buffer_rows, block_rows=cfg.block_rows,
                                      drop_last=True):
                yield batch.acts[hookpoint]

    started = time.perf_counter()
    with progress("Fitting dictionary", total) as bar:
        model = fit_dictionary(spec, itertools.islice(batches(), total), sample.mean(axis=0), cfg.seed, bar)
    elapsed = time.perf_counter() - started

    member = SimpleNamespace(name="sae", sae=model)  # all evaluate_members needs of a member
    metrics = evaluate_members([member], store, hookpoint, split.val if split.val.size else split.train, "cpu",
                               progress=progress)
    final = metrics["sae"]
    with _sae_folder(out, None) as folder:
        save_dictionary(model, folder, hookpoint, str(store.model.get("id", "")),
                        {"store": str(store_path), "model": store.model, "member": "sae",
                         "train_config": cfg.model_dump(mode="json"),
                         "steps": total, "final_metrics": _scalars(final)}, final["density"], write_manifest=False)
    from .report import write_report

    write_report(out, metrics, hookpoint, {"sae": spec.arch}, run.target.name)
    saved = {"sae": {"path": str(run.target), **_scalars(final)}}
    manifest = read_manifest(out)
    manifest.update(status="complete", members=["sae"], final_metrics=saved, steps=total, split=split_info(split))
    write_json(out / "manifest.json", manifest)
    return {"hookpoint": hookpoint, "steps": total, "resumed_from": 0,
            "rows_per_s": total * cfg.batch_size / elapsed if elapsed > 0 else None, "members": saved,
            "split": split_info(split), "evaluated_on": "validation" if split.val.size else "training rows"}


def _sae_folder(run_path: Path, member: str | None):
    """Where an SAE of the run is saved: the run folder itself (one SAE; the run reads as finished only once its
    manifest says so), or `RUN/<member>` built aside and moved into place (a sweep)."""
    from contextlib import nullcontext

    return nullcontext(run_path) if member is None else staged_directory(run_path / member, overwrite=True)


def split_info(split) -> dict:
    """How the rows were split and filtered (the generation stream used included), as recorded in the outputs."""
    return {"column": split.column, "train_rows": int(split.train.size), "val_rows": int(split.val.size),
            "train_groups": split.n_train_groups, "val_groups": split.n_val_groups, "where": list(split.where),
            "stream": split.stream}


def _check_init_from(path, cfg: SAETrainConfig, d_in: int):
    from .io import load_sae

    if cfg.sweep:
        raise ConfigError("--init-from cannot be combined with a sweep", "train one SAE when starting from weights")
    sae, _ = load_sae(sae_dir(path))
    spec = sae.spec
    if spec.d_in != d_in or spec.d_sae != cfg.width(d_in) or spec.arch != cfg.architecture:
        raise InputError(f"--init-from SAE is {spec.arch} {spec.d_in}->{spec.d_sae}, the run wants "
                         f"{cfg.architecture} {d_in}->{cfg.width(d_in)}",
                         "match --set architecture/expansion_factor/d_sae to the starting SAE")
    return sae


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("tensorboard logging needs the tensorboard package", "pip install tensorboard") from exc
    return SummaryWriter(str(out / "tensorboard"))


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def sae_dir(path: str | Path, member: str | None = None) -> Path:
    """The SAE folder inside `path`: an SAE folder itself, or a finished run (its only member, or `member`)."""
    path = Path(path)
    manifest = read_manifest(path) if (path / "manifest.json").is_file() else None
    if not is_kind(manifest, RUN_KIND):
        if (path / "cfg.json").is_file():
            return path
        if manifest is None:
            raise InputError(f"not an SAE: {path} (no cfg.json)",
                             "pass the folder `sae train` wrote or an SAE inside it")
        # another kind of artefact, with no SAE in it: the error names that kind
        expect_kind(path, RUN_KIND, manifest=manifest, error=InputError,
                    message="{path} is a {kind!r} artefact, not an SAE")
    if manifest.get("status") != "complete":
        raise InputError(f"the training run {path} is not finished", "resume it with `sae train ... --resume`")
    members = manifest.get("members", [])
    if member is None and len(members) == 1:
        member = members[0]
    if member not in members:
        raise InputError(f"choose one of the run's SAEs with --member: {', '.join(members)}",
                         "a sweep trains several SAEs")
    if len(members) == 1 and not (path / member / "cfg.json").is_file():
        return path  # one SAE lives in the run folder (older runs kept it in RUN/sae)
    return path / member
