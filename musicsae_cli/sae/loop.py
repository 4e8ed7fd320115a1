"""The SAE training loop behind `sae train` (sae/train.py): one pass over shuffled store batches feeds every SAE
of a sweep; resumable at any checkpoint. What applies to which architecture (sparsity coefficient, AuxK's dead
mask, resampling, threshold calibration) comes from the architecture classes (sae/architectures.py)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MusicSAEError
from ..progress import ProgressFactory, no_progress
from .config import SAETrainConfig

log = logging.getLogger("musicsae")


@dataclass
class Member:
    """One SAE being trained, with its optimiser, dead-latent tracker and config."""

    name: str
    cfg: SAETrainConfig
    sae: object
    optimizer: object
    tracker: object
    ddp: object = None  # on several ranks: the SAE's training loss wrapped in DistributedDataParallel


def lr_at(cfg: SAETrainConfig, step: int, total: int) -> float:
    """Linear warmup, then constant, then (optionally) decay to 0 over the last part of training."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else cfg.lr
    start = int(cfg.lr_decay_start * total)
    if cfg.lr_decay == "none" or step < start or total <= start:
        return lr
    frac = (step - start) / (total - start)
    return lr * (1 - frac) if cfg.lr_decay == "linear" else lr * 0.5 * (1 + math.cos(math.pi * frac))


def sparsity_at(cfg: SAETrainConfig, step: int) -> float:
    """The sparsity coefficient of the architecture (0 for those without a penalty), warmed up linearly."""
    from .architectures import architecture_class

    name = architecture_class(cfg.architecture).sparsity_coefficient
    coef = getattr(cfg, name) if name else 0.0
    return coef * min(1.0, (step + 1) / cfg.sparsity_warmup_steps) if cfg.sparsity_warmup_steps else coef


def member_specs(cfg: SAETrainConfig, d_in: int) -> list[tuple[str, SAETrainConfig, object]]:
    """(name, config, SAESpec) of every sweep member; ConfigError for an impossible shape, before any work."""
    from .architectures import SAESpec, architecture_class

    if cfg.architecture == "dictionary_learning":
        return []
    specs = []
    for name, mcfg in cfg.members():
        try:
            spec = SAESpec(arch=mcfg.architecture, d_in=d_in, d_sae=mcfg.width(d_in),
                           k=mcfg.k if architecture_class(mcfg.architecture).uses_k else None,
                           jumprelu_bandwidth=mcfg.jumprelu_bandwidth,
                           jumprelu_init_threshold=mcfg.jumprelu_init_threshold)
        except ConfigError as exc:
            where = f" (sweep member {name})" if len(cfg.members()) > 1 else ""
            raise ConfigError(exc.message + where, exc.hint) from None
        specs.append((name, mcfg, spec))
    return specs


def build_members(cfg: SAETrainConfig, d_in: int, sample, device, init_from=None) -> list[Member]:
    """One SAE (with Adam and a dead-latent tracker) per sweep member, initialised from `sample`."""

    from .architectures import SparseAutoencoder
    from .metrics import DeadLatentTracker

    members = []
    for name, mcfg, spec in member_specs(cfg, d_in):
        sae = SparseAutoencoder.create(spec, sample=sample, seed=mcfg.seed, init_b_dec=mcfg.init_b_dec,
                                       normalize=mcfg.normalize)
        if init_from is not None:
            sae.load_state_dict(init_from.state_dict())
        sae.to(device)
        opt = adam(sae.parameters(), mcfg.lr, tuple(mcfg.adam_betas))
        members.append(Member(name, mcfg, sae, opt, DeadLatentTracker(spec.d_sae, mcfg.dead_window_tokens)))
    return members


def adam(params, lr: float, betas: tuple[float, float]):
    """Adam with the fused kernel where torch has one for the device (CPU and CUDA): one pass over each
    parameter instead of a dozen elementwise ops (on the CPU 12 ms against 67 ms per 16M-weight matrix)."""
    import torch

    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device without a fused kernel
        return torch.optim.Adam(params, lr=lr, betas=betas)


def wrap_ddp(members: list[Member], device) -> None:
    """On several ranks: wrap each member's training loss in DistributedDataParallel, which starts every rank
    from rank 0's parameters and buffers and averages the gradients over the ranks in backward()."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class Objective(torch.nn.Module):
        def __init__(self, sae):
            super().__init__()
            self.sae = sae

        def forward(self, x, coef, dead, auxk_coef, auxk_k):
            out = self.sae.training_loss(x, coef, dead_mask=dead, auxk_coef=auxk_coef, auxk_k=auxk_k)
            return out.loss, out.fired, out.l0, out.terms

    for m in members:
        m.ddp = DistributedDataParallel(Objective(m.sae), device_ids=[device.index] if device.type == "cuda" else None)


def train_step(m: Member, x, step: int, total: int) -> dict:
    """One optimiser step of one member on batch x (this rank's share of the batch on several ranks); returns
    its detached log terms (tensors: read them only when logging)."""
    import torch

    from .. import distributed

    cfg = m.cfg
    lr = lr_at(cfg, step, total)
    for group in m.optimizer.param_groups:
        group["lr"] = lr
    dead = m.tracker.dead_mask().to(x.device) if m.sae.uses_auxk else None
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=cfg.autocast == "bf16"):
        if m.ddp is not None:
            loss, fired, l0, terms = m.ddp(x, sparsity_at(cfg, step), dead, cfg.auxk_coefficient, cfg.auxk_k)
        else:
            out = m.sae.training_loss(x, sparsity_at(cfg, step), dead_mask=dead, auxk_coef=cfg.auxk_coefficient,
                                      auxk_k=cfg.auxk_k)
            loss, fired, l0, terms = out.loss, out.fired, out.l0, out.terms
    if not torch.isfinite(loss):
        raise MusicSAEError(f"training diverged at step {step} ({m.name}): the loss is {float(loss)}",
                            "lower the learning rate (--set lr=...) or keep gradient clipping on")
    loss.backward()  # on several ranks, DDP averages the gradients here
    m.sae.before_optimizer_step()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(m.sae.parameters(), cfg.grad_clip)
    m.optimizer.step()
    m.optimizer.zero_grad(set_to_none=True)
    m.sae.after_optimizer_step()
    world = distributed.current().world
    if world > 1:  # a latent fired in the batch if it fired on any rank
        fired = distributed.reduce_(fired.to(torch.int32), "max").bool()
    m.tracker.update(fired, x.shape[0] * world)
    if cfg.resample_dead and m.sae.resamples_dead and (step + 1) % cfg.resample_every == 0:
        dead_idx = torch.nonzero(m.tracker.dead_mask()).flatten()
        if dead_idx.numel():  # every rank resamples from the whole batch, so they stay equal
            m.sae.resample_dead(dead_idx.to(x.device), distributed.gather_tensor(x), m.optimizer)
    return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}, "l0": l0.detach(), "lr": lr,
            "dead_fraction": m.tracker.dead_mask().float().mean()}


def log_values(terms: dict) -> dict:
    """The logged numbers of train_step's terms, averaged over the ranks (every rank calls it together)."""
    import torch

    from .. import distributed

    names = [k for k, v in terms.items() if isinstance(v, torch.Tensor)]
    if not names:
        return dict(terms)
    stacked = torch.stack([terms[k].float().reshape(()).cpu() for k in names])  # terms live on the device and CPU
    values = distributed.reduce_(stacked, "mean").tolist()
    return {**{k: v for k, v in terms.items() if k not in names}, **dict(zip(names, values, strict=True))}


def evaluate_members(members: list[Member], store, hookpoint: str, rows: np.ndarray, device,
                     batch_size: int = 4096, progress: ProgressFactory = no_progress) -> dict[str, dict]:
    """Reconstruction metrics of every member on `rows` (float64 accumulation); on several ranks each reads a
    block of the rows and the accumulators are summed over the ranks."""
    import functools

    import torch

    from .. import distributed
    from .metrics import ReconstructionMetrics

    d = distributed.current()
    mine = rows[np.asarray(distributed.block(rows.size, d), dtype=np.int64)] if d.active else rows
    acc = {m.name: ReconstructionMetrics(m.sae.spec.d_sae) for m in members}
    with torch.no_grad(), progress("Final evaluation", -(-mine.size // batch_size)) as bar:
        for start in range(0, mine.size, batch_size):
            x = torch.from_numpy(store.read_rows(hookpoint, mine[start:start + batch_size])).to(device)
            for m in members:
                update_metrics(acc[m.name], m.sae, x)
            bar.advance(1)
    if d.active:
        shares = distributed.gather({name: ReconstructionMetrics(a.d_sae).merge(a) for name, a in acc.items()})
        acc = {name: functools.reduce(lambda a, b: a.merge(b), [s[name] for s in shares],
                                      ReconstructionMetrics(acc[name].d_sae)) for name in acc}
    return {name: a.compute() for name, a in acc.items()}


def update_metrics(acc, sae, x) -> None:
    """Add a batch to `acc`, decoding TopK sparsely (no dense (B, d_sae) latent matrix)."""
    sparse = sae.encode_sparse(x)
    if sparse is not None:
        values, indices = sparse
        acc.update(x, sae.decode_sparse(values, indices), values=values, indices=indices)
    else:
        f = sae.encode(x)
        acc.update(x, sae.decode(f), f)


def calibrate(members: list[Member], store, hookpoint: str, rows: np.ndarray, batch_size: int, device,
              n_batches: int = 8) -> None:
    """BatchTopK: set the inference threshold from training batches so inference L0 matches k."""
    import torch

    todo = [m for m in members if m.sae.needs_calibration]
    if not todo:
        return
    pick = _even_sample(rows, n_batches * batch_size)
    batches = [torch.from_numpy(store.read_rows(hookpoint, pick[i:i + batch_size])).to(device)
               for i in range(0, pick.size, batch_size)]
    for m in todo:
        m.sae.calibrate_threshold(batches)


class JsonlLog:
    """Append-only JSON-lines log (flushed per line, so a killed run keeps what it logged)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=float) + "\n")


def run_training(members: list[Member], store, hookpoint: str, split, cfg: SAETrainConfig, out: Path, device,
                 start_step: int, total: int, steps_per_epoch: int, progress: ProgressFactory = no_progress,
                 on_checkpoint=None, tb=None) -> dict:
    """The training loop from `start_step` to `total`; logs, evaluates and checkpoints as configured."""
    import torch

    from .. import distributed
    from .data import check_finite

    d = distributed.current()  # on several ranks, each trains on its share of every batch; rank 0 writes
    train_log, eval_log = JsonlLog(out / "train_log.jsonl"), JsonlLog(out / "eval_log.jsonl")
    eval_rows = _even_sample(split.val if split.val.size else split.train, cfg.eval_rows)
    step, started, seen = start_step, time.perf_counter(), 0
    with progress("Training", total - start_step) as bar:
        while step < total:
            epoch, first = divmod(step, steps_per_epoch)
            stream = store.stream([hookpoint], cfg.batch_size, rows=split.train, shuffle=True, seed=cfg.seed,
                                  epoch=epoch, buffer_rows=cfg.buffer_rows, block_rows=cfg.block_rows,
                                  start_batch=first, drop_last=True, part=(d.rank, d.world) if d.active else None)
            for batch in stream:
                x = torch.from_numpy(batch.acts[hookpoint]).to(device, non_blocking=True)
                check_finite(x, batch.rows, store)
                for m in members:
                    terms = train_step(m, x, step, total)
                    if step % cfg.log_every == 0 or step == total - 1:
                        terms = log_values(terms)
                        if d.main:
                            train_log.write({"step": step, "tokens": (step + 1) * cfg.batch_size, "member": m.name,
                                             **terms})
                        if tb is not None:
                            for k, v in terms.items():
                                tb.add_scalar(f"{m.name}/{k}", v, step)
                step += 1
                seen += x.shape[0] * d.world
                bar.advance()
                if step % cfg.eval_every == 0 and step < total:
                    for name, metrics in evaluate_members(members, store, hookpoint, eval_rows, device).items():
                        if d.main:
                            eval_log.write({"step": step, "member": name, **_scalars(metrics)})
                if step % cfg.checkpoint_every == 0 and step < total and on_checkpoint is not None:
                    on_checkpoint(step)
                if step >= total:
                    break
    elapsed = time.perf_counter() - started
    return {"steps": step, "rows_per_s": seen / elapsed if elapsed > 0 else None, "elapsed_s": elapsed}


def _even_sample(rows: np.ndarray, n: int) -> np.ndarray:
    if rows.size <= n:
        return rows
    return rows[np.linspace(0, rows.size - 1, n).astype(np.int64)]


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}
