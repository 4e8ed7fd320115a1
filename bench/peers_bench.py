"""TopK SAE training step and encoding: musicsae against SAELens and a dense PyTorch reference, in one process.

    make bench-peers                                        # builds .venv-peers (with SAELens) once, then this
    .venv-peers/bin/python bench/peers_bench.py --rounds 3  # quicker
    .venv-peers/bin/python bench/peers_bench.py --d-in 256 --expansion 8 --batch 1024 --rounds 2 --encode-rows 8192

SAELens lives only in the separate environment .venv-peers (pinned by bench/peers.lock); it is never a
dependency of musicsae. Defaults: d_in 1024, 16x (16384 latents), k 32, batch 4096, fp32, 5 rounds. The default
run took 9 minutes on a 2-core CPU (a SAELens step there takes 4-13 s): each further round adds 30-50 s (so 10
rounds come close to 15 minutes), --no-memory saves about 2 minutes, --dtypes fp32,bf16 roughly doubles it.

Four implementations of the same TopK SAE training step, on the same in-memory batch:
  musicsae        SparseAutoencoder.training_loss (sparse kernels, AuxK) + backward + decoder-gradient projection
                  + clip_grad_norm_(1.0) + Adam + zero_grad + decoder renormalisation + the dead-latent tracker
                  update, as musicsae's trainer does it
  SAELens         TopKTrainingSAE (SAELens defaults: dense activations, rescale_acts_by_decoder_norm=True), the
                  step of SAELens's SAETrainer._train_step: training_forward_pass, its firing statistics,
                  backward, clip_grad_norm_(1.0), Adam, zero_grad
  SAELens sparse  the same with use_sparse_activations=True (COO activations, torch.sparse.mm decode). Where
                  SAELens's default rescale_acts_by_decoder_norm=True fails in backward (CPU: sparse tensors have
                  no `view`), it runs with rescale_acts_by_decoder_norm=False and says so
  dense           plain autograd: dense pre-activations, torch.topk, scatter into (B, d_sae), dense decode; AuxK
                  densely (top-k_aux of the dead latents' pre-activations, relu, dense decode without b_dec,
                  musicsae's normalised formula); otherwise musicsae's step
in two regimes: plain (no dead latents) and auxk (a fixed random --dead-fraction of the latents marked dead at
every step, for all four; k_aux = d_in // 2 everywhere, SAELens's heuristic and musicsae's default). Every
implementation uses the same optimiser (Adam, fused where torch supports it, bench/sae_bench.py make_optimizer),
so the comparison is of the SAE code, not of Adam's implementation. Under --dtypes bf16 all four run under bf16
autocast with fp32 master weights.

Before any timing, all four start from the same weights (musicsae's init with identity normalisation, b_dec the
batch mean, b_enc 2.0 so every selected pre-activation is positive: SAELens's aux loss has no relu) and the
script checks, on the benchmark batch in fp32, that they compute the same losses: the per-row squared error
(musicsae terms["mse_row"], SAELens losses["mse_loss"], dense) and, with dead latents, the unnormalised AuxK
error mean_b ||e - e_hat||^2 (musicsae auxk * ||e - mean e||^2 / B; SAELens aux loss / (coef * scale)), plus
the gradients (musicsae against dense for the whole loss; SAELens's mse-only gradients / d_in against musicsae's,
the decoder's perpendicular to its rows: SAELens's rescale_acts_by_decoder_norm adds a component along the rows,
which musicsae projects out before its step). It exits 1 when they disagree. Timing: one warm-up step each,
then --rounds interleaved rounds of one step per implementation; medians (best in brackets). Peak memory: each
implementation's step in a fresh subprocess (CPU: the growth of the resident-set high-water mark over the RSS
after setup, which holds weights, batch and Adam state; CUDA: max_memory_allocated over memory_allocated after
setup). Encoding: --encode-rows rows in batches of --batch, interleaved batch by batch: musicsae encode_sparse,
the plain addmm + topk + relu, and SAELens's TopKSAE.encode (dense output), all under inference_mode, after
checking that they select the same latents with the same values.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import math
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.sae_bench import DenseTopKReference, _sync, cpu_name, make_optimizer  # noqa: E402
from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder, TrainStep  # noqa: E402
from musicsae_cli.sae.metrics import DeadLatentTracker  # noqa: E402

# SAELens's sparse activations are COO tensors built without invariant checks; torch warns at each one
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
IMPLS = ("musicsae", "saelens", "saelens-sparse", "dense")
LABELS = {"musicsae": "musicsae", "saelens": "SAELens", "saelens-sparse": "SAELens sparse", "dense": "dense"}
REGIMES = ("plain", "auxk")
AUXK_COEF = 1 / 32  # musicsae's default auxk_coefficient (SAELens's aux_loss_coefficient stays at its 1.0)
B_ENC_INIT = 2.0  # every selected pre-activation positive, so SAELens's relu-less aux loss matches the others
TOL = 1e-4  # relative, fp32
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


class DenseAuxKReference(DenseTopKReference):
    """bench/sae_bench.py's dense reference with AuxK added, also dense: plain autograd does every backward."""

    def training_loss(self, x, sparsity_coef=0.0, dead_mask=None, auxk_coef=AUXK_COEF, auxk_k=None) -> TrainStep:
        d_in = self.spec.d_in
        x_n = self.normalise(x)  # (B, d_in)
        pre = (x_n - self.b_dec) @ self.W_enc + self.b_enc  # (B, d_sae)
        top = pre.topk(self.spec.k, dim=1)
        f = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))  # (B, d_sae), k nonzeros a row
        x_hat_n = (f @ self.W_dec).float() + self.b_dec  # (B, d_in)
        err = x_n - x_hat_n  # (B, d_in)
        mse_row = err.pow(2).sum(1).mean()
        loss = mse_row / d_in
        terms = {"mse": mse_row.detach() / d_in, "mse_row": mse_row.detach(), "auxk": torch.zeros((), device=x.device)}
        n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
        if n_dead and auxk_coef:
            k_aux = min(auxk_k or d_in // 2, n_dead)
            aux = pre.masked_fill(~dead_mask, float("-inf")).topk(k_aux, dim=1)  # (B, k_aux) among the dead
            f_aux = torch.zeros_like(pre).scatter(1, aux.indices, torch.relu(aux.values))  # (B, d_sae)
            residual = err.detach()  # (B, d_in)
            residual_hat = (f_aux @ self.W_dec).float()  # (B, d_in), no b_dec
            auxk = (residual - residual_hat).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
            loss = loss + auxk_coef * auxk
            terms["auxk"] = auxk.detach()
        fired = (f > 0).any(0)
        return TrainStep(loss, self.denormalise(x_hat_n.detach()), terms, fired, (f > 0).sum(1).float().mean())


# ------------------------------------------------------------------------------------------------------------
# Data and the shared initial weights
# ------------------------------------------------------------------------------------------------------------
def make_data(args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The benchmark batch (B, d_in) and the fixed dead mask (d_sae,) bool."""
    d_sae = args.d_in * args.expansion
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, args.d_in, generator=gen) * 2.0 + 1.0  # (B, d_in)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[torch.randperm(d_sae, generator=gen)[:round(args.dead_fraction * d_sae)]] = True
    return x.to(device), dead.to(device)


def make_init(spec: SAESpec, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """musicsae's init (unit-norm decoder rows, W_enc = W_dec^T) without normalisation (sample=None keeps
    norm_mean 0, norm_scale 1), b_dec the batch mean, b_enc B_ENC_INIT."""
    sae = SparseAutoencoder.create(spec, sample=None, seed=seed)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0).cpu())
        sae.b_enc.fill_(B_ENC_INIT)
    return {name: getattr(sae, name).detach().clone() for name in PARAMS}


@torch.no_grad()
def load(module: torch.nn.Module, init: dict[str, torch.Tensor]) -> None:
    for name in PARAMS:
        getattr(module, name).copy_(init[name])


def amp(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=DTYPES[dtype]) if DTYPES[dtype] else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------------------
# The four implementations: a module, its optimiser and one full training step
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Impl:
    name: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[torch.Tensor, torch.Tensor], None]  # (x (B, d_in), dead mask (d_sae,) bool)
    note: str = ""


def build(name: str, spec: SAESpec, init: dict[str, torch.Tensor], device: torch.device, dtype: str) -> Impl:
    if name in ("musicsae", "dense"):
        return _build_musicsae_like(name, spec, init, device, dtype)
    return _build_saelens(name, spec, init, device, dtype)


def _build_musicsae_like(name, spec, init, device, dtype) -> Impl:
    cls = SparseAutoencoder if name == "musicsae" else DenseAuxKReference
    sae = cls.create(spec, sample=None).to(device)
    load(sae, init)
    optimizer = make_optimizer(sae)
    tracker = DeadLatentTracker(spec.d_sae, window_tokens=10**12)  # the trainer's bookkeeping; never declares dead
    params = list(sae.parameters())

    def step(x: torch.Tensor, dead: torch.Tensor) -> None:
        with amp(device, dtype):
            out = sae.training_loss(x, 0.0, dead_mask=dead, auxk_coef=AUXK_COEF, auxk_k=None)
        out.loss.backward()
        sae.before_optimizer_step()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sae.after_optimizer_step()
        tracker.update(out.fired, x.shape[0])

    return Impl(name, sae, optimizer, step)


_SPARSE_RESCALE: dict[str, tuple[bool, str]] = {}


def _saelens_sparse_rescale(device: torch.device) -> tuple[bool, str]:
    """(rescale_acts_by_decoder_norm for the sparse SAELens row, note): SAELens's default True where its backward
    works on this device (tried once on a tiny SAE), else False with the error."""
    if device.type not in _SPARSE_RESCALE:
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput

        cfg = TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4, use_sparse_activations=True, device=str(device))
        sae = TopKTrainingSAE(cfg)
        try:
            out = sae.training_forward_pass(TrainStepInput(sae_in=torch.randn(8, 16, device=device),
                                                           dead_neuron_mask=None, coefficients={},
                                                           n_training_steps=0, is_logging_step=False))
            out.loss.backward()
            _SPARSE_RESCALE[device.type] = (True, "")
        except (RuntimeError, NotImplementedError) as e:
            reason = str(e).splitlines()[0].split(". ")[0][:110]
            _SPARSE_RESCALE[device.type] = (False, "rescale_acts_by_decoder_norm=False: SAELens's default (True) "
                                                   f"fails in backward on {device.type}: {reason}")
    return _SPARSE_RESCALE[device.type]


def saelens_module(name: str, spec: SAESpec, init: dict[str, torch.Tensor], device: torch.device):
    """(TopKTrainingSAE with the shared weights, note)."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    sparse = name == "saelens-sparse"
    extra, note = {}, ""
    if sparse:
        rescale, note = _saelens_sparse_rescale(device)
        if not rescale:
            extra["rescale_acts_by_decoder_norm"] = False
    cfg = TopKTrainingSAEConfig(d_in=spec.d_in, d_sae=spec.d_sae, k=spec.k, use_sparse_activations=sparse,
                                apply_b_dec_to_input=True, normalize_activations="none", dtype="float32",
                                device=str(device), **extra)
    sae = TopKTrainingSAE(cfg)
    load(sae, {k: v.to(device) for k, v in init.items()})
    return sae, note


def step_input(x: torch.Tensor, dead: torch.Tensor | None, n_steps: int = 0):
    from sae_lens.saes.sae import TrainStepInput

    return TrainStepInput(sae_in=x, dead_neuron_mask=dead, coefficients={}, n_training_steps=n_steps,
                          is_logging_step=False)


def _build_saelens(name, spec, init, device, dtype) -> Impl:
    sae, note = saelens_module(name, spec, init, device)
    optimizer = make_optimizer(sae)
    # SAETrainer's running statistics
    since_fired = torch.zeros(spec.d_sae, device=device)  # n_forward_passes_since_fired
    act_freq = torch.zeros(spec.d_sae, device=device)  # act_freq_scores
    counters = {"n_steps": 0, "n_frac_active_samples": 0}

    def step(x: torch.Tensor, dead: torch.Tensor) -> None:  # SAETrainer._train_step (no lr schedule, no wandb)
        nonlocal since_fired, act_freq
        sae.train()
        with amp(device, dtype):
            out = sae.training_forward_pass(step_input=step_input(x, dead, counters["n_steps"]))
            with torch.no_grad():
                firing_feats = out.feature_acts.bool().float()
                did_fire = firing_feats.sum(-2).bool()
                if did_fire.is_sparse:
                    did_fire = did_fire.to_dense()
                since_fired += 1
                since_fired[did_fire] = 0
                act_freq += firing_feats.sum(0)
                counters["n_frac_active_samples"] += x.shape[0]
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        counters["n_steps"] += 1

    return Impl(name, sae, optimizer, step, note)


# ------------------------------------------------------------------------------------------------------------
# Equivalence checks (fp32, before any timing)
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Checks:
    failures: list[str] = field(default_factory=list)

    def value(self, what: str, values: dict[str, float]) -> None:
        ref = next(iter(values.values()))
        worst = max(abs(v - ref) for v in values.values()) / max(abs(ref), 1e-12)
        ok = worst <= TOL
        print(f"# check {what}: " + ", ".join(f"{k} {v:.6g}" for k, v in values.items())
              + f"; max relative difference {worst:.1e} {'ok' if ok else 'MISMATCH'}")
        if not ok:
            self.failures.append(what)

    def grads(self, what: str, diffs: dict[str, float], tol: float = 1e-3) -> None:
        worst = max(diffs.values())
        ok = worst <= tol
        print(f"# check {what}: max relative gradient difference "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + f" {'ok' if ok else 'MISMATCH'}")
        if not ok:
            self.failures.append(what)


def _perp(grad: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The decoder gradient without its component along each decoder row (d_sae, d_in)."""
    return grad - (grad * W).sum(1, keepdim=True) / W.pow(2).sum(1, keepdim=True).clamp_min(1e-12) * W


def _grad(module: torch.nn.Module, name: str) -> torch.Tensor:
    """The gradient of a parameter by its SAELens name (musicsae stores its TopK encoder as W_encT)."""
    if name == "W_enc" and isinstance(getattr(module, "W_encT", None), torch.nn.Parameter):
        return module.W_encT.grad.t()
    return getattr(module, name).grad


def _grad_diffs(a: torch.nn.Module, b: torch.nn.Module, scale_b: float = 1.0, names=PARAMS,
                perp_dec: bool = False) -> dict[str, float]:
    """{param: max |grad_a - scale_b * grad_b| / max |scale_b * grad_b|}."""
    out = {}
    for name in names:
        ga, gb = _grad(a, name), _grad(b, name) * scale_b
        if perp_dec and name == "W_dec":
            ga, gb = _perp(ga, a.W_dec.detach()), _perp(gb, b.W_dec.detach())
        out[name] = float((ga - gb).abs().max() / gb.abs().max().clamp_min(1e-30))
    return out


def check_equivalence(spec: SAESpec, init: dict[str, torch.Tensor], x: torch.Tensor, dead: torch.Tensor,
                      device: torch.device) -> list[str]:
    """Losses and gradients of all four from the same weights on the benchmark batch, fp32; the failures."""
    checks = Checks()
    ms = SparseAutoencoder.create(spec, sample=None).to(device)
    dense = DenseAuxKReference.create(spec, sample=None).to(device)
    load(ms, init)
    load(dense, init)
    peers = {name: saelens_module(name, spec, init, device)[0] for name in ("saelens", "saelens-sparse")}
    d_in, n_rows = spec.d_in, x.shape[0]
    for regime in REGIMES:
        mask = dead if regime == "auxk" else torch.zeros_like(dead)
        a = ms.training_loss(x, 0.0, dead_mask=mask, auxk_coef=AUXK_COEF)
        b = dense.training_loss(x, 0.0, dead_mask=mask, auxk_coef=AUXK_COEF)
        a.loss.backward()
        b.loss.backward()
        outs = {}
        for name, sae in peers.items():
            if regime == "plain":  # SAELens's loss is its mse alone here: compare its gradients too
                outs[name] = sae.training_forward_pass(step_input(x, mask))
                outs[name].loss.backward()
            else:
                with torch.no_grad():
                    outs[name] = sae.training_forward_pass(step_input(x, mask))
        peer_mse = {LABELS[n]: float(o.losses["mse_loss"].detach()) for n, o in outs.items()}
        checks.value(f"{regime} mse per row", {"musicsae": float(a.terms["mse_row"]), **peer_mse,
                                               "dense": float(b.terms["mse_row"])})
        if regime == "auxk":
            n_dead = int(mask.sum())
            k_aux = min(d_in // 2, n_dead)
            with torch.no_grad():  # SAELens has no relu on the aux values: they must all be positive to compare
                pre = dense.preacts(x)
                smallest = float(pre.masked_fill(~mask, float("-inf")).topk(k_aux, dim=1).values.min())
            print(f"# check auxk: {n_dead} dead latents, k_aux {k_aux}, smallest selected dead pre-activation "
                  f"{smallest:.3f} ({'all positive' if smallest > 0 else 'NOT all positive: raise B_ENC_INIT'})")

            def unnormalised(step: TrainStep) -> float:  # mean_b ||e - e_hat||^2 from the normalised auxk
                residual = x - step.x_hat  # identity normalisation: x_hat is in x's space
                return float(step.terms["auxk"]) * float((residual - residual.mean(0)).pow(2).sum()) / n_rows

            values = {"musicsae": unnormalised(a)}
            for name, o in outs.items():
                cfg = peers[name].cfg
                scale = min(n_dead / (d_in // 2), 1.0)
                values[LABELS[name]] = float(o.losses["auxiliary_reconstruction_loss"].detach()) / (
                    cfg.aux_loss_coefficient * scale)
            values["dense"] = unnormalised(b)
            checks.value("auxk mean_b ||e - e_hat||^2", values)
        checks.grads(f"{regime} gradients musicsae vs dense (loss incl. auxk_coef {AUXK_COEF:.4g} * auxk)"
                     if regime == "auxk" else f"{regime} gradients musicsae vs dense", _grad_diffs(ms, dense))
        if regime == "plain":
            for name, sae in peers.items():
                checks.grads(f"plain gradients musicsae vs {LABELS[name]} mse / d_in (W_dec perpendicular to rows)",
                             _grad_diffs(ms, sae, 1 / d_in, perp_dec=True))
        for module in (ms, dense, *peers.values()):
            module.zero_grad(set_to_none=True)
        del a, b, outs
    return checks.failures


# ------------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------------
def interleaved_steps(paths: dict[str, Callable[[], object]], rounds: int, device: torch.device
                      ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """bench/timing.py's `interleaved`, tolerating a path that fails: one warm-up each (a failure drops the path,
    with its error), then `rounds` rounds running every path in turn. ({path: seconds per round}, {path: error})."""
    failed = {}
    for name, fn in paths.items():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    live = {k: v for k, v in paths.items() if k not in failed}
    times: dict[str, list[float]] = {k: [] for k in live}
    for _ in range(rounds):
        for name, fn in live.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times, failed


def time_training(args, spec, init, x, dead, device, dtype) -> dict[str, dict]:
    """{regime: {impl: {"median", "best"} or {"error"}}} for one dtype; the notes of the impls printed."""
    impls = {name: build(name, spec, init, device, dtype) for name in IMPLS}
    for impl in impls.values():
        if impl.note:
            print(f"# note {LABELS[impl.name]}: {impl.note}")
    results = {}
    for regime in REGIMES:
        mask = dead if regime == "auxk" else torch.zeros_like(dead)
        paths = {name: (lambda impl=impl, mask=mask: impl.step(x, mask)) for name, impl in impls.items()}
        times, failed = interleaved_steps(paths, args.rounds, device)
        results[regime] = {name: {"median": statistics.median(t), "best": min(t)} for name, t in times.items()}
        results[regime].update({name: {"error": err} for name, err in failed.items()})
        _print_training(regime, dtype, results[regime], args.batch)
    del impls
    gc.collect()
    return results


def _print_training(regime: str, dtype: str, res: dict[str, dict], batch: int) -> None:
    ours = res["musicsae"].get("median")
    print(f"\n{regime + ' ' + dtype:<22}{'step s':>18}{'samples/s':>12}{'musicsae speedup':>19}")
    for name in IMPLS:
        r = res[name]
        if "error" in r:
            print(f"{LABELS[name]:<22}failed: {r['error']}")
            continue
        speedup = f"{r['median'] / ours:>18.2f}x" if ours else f"{'-':>19}"
        print(f"{LABELS[name]:<22}{r['median']:>11.3f} [{r['best']:.3f}]{batch / r['median']:>12.0f}{speedup}")


# ------------------------------------------------------------------------------------------------------------
# Peak memory: one implementation's step in a fresh process
# ------------------------------------------------------------------------------------------------------------
def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_only(args, impl_name: str, regime: str, dtype: str) -> None:
    """Child process: set up one implementation, then two steps; prints one JSON line with the peaks in MB."""
    device = torch.device(args.device)
    spec = SAESpec("topk", args.d_in, args.d_in * args.expansion, k=args.k)
    x, dead = make_data(args, device)
    mask = dead if regime == "auxk" else torch.zeros_like(dead)
    impl = build(impl_name, spec, make_init(spec, x.cpu(), args.seed), device, dtype)
    for p in impl.module.parameters():  # create Adam's state now (a zero-gradient step leaves the weights as they are)
        p.grad = torch.zeros_like(p)
    impl.optimizer.step()
    impl.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    out = {"impl": impl_name, "regime": regime, "dtype": dtype}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _proc_status_mb("VmRSS")
        try:  # reset the high-water mark to the current RSS (Linux >= 4.0), so setup's transients do not count
            Path("/proc/self/clear_refs").write_text("5")
            out["hwm_reset"] = True
        except OSError:
            out["hwm_reset"] = False
    try:
        for _ in range(2):
            impl.step(x, mask)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        print(json.dumps(out))
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        out.update(step_peak_mb=(peak - base) / 2**20, total_mb=peak / 2**20)
    else:
        # VmHWM, not ru_maxrss: getrusage also reports the high-water mark the parent had when it forked this
        # process (it carries over exec), which hides this process's own peak
        peak = _proc_status_mb("VmHWM")
        if peak is None:  # no /proc: ru_maxrss (KiB on Linux), an upper bound
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.update(step_peak_mb=max(peak - base, 0.0) if base is not None else math.nan, total_mb=peak)
    print(json.dumps(out))


def measure_memory(args, dtypes: list[str]) -> dict[tuple[str, str, str], dict]:
    results = {}
    for dtype in dtypes:
        for regime in REGIMES:
            for name in IMPLS:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--peak-only", name, regime, dtype,
                       "--d-in", str(args.d_in), "--expansion", str(args.expansion), "--k", str(args.k),
                       "--batch", str(args.batch), "--device", args.device, "--seed", str(args.seed),
                       "--dead-fraction", str(args.dead_fraction)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode or not lines:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
                    results[name, regime, dtype] = {"error": f"exit {proc.returncode}: {tail}"}
                else:
                    results[name, regime, dtype] = json.loads(lines[-1])
    kind = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "resident set"
    print(f"\n# peak memory of one step, each in a fresh process ({kind}; step = peak over what setup holds: "
          f"weights, batch, Adam state)")
    print(f"{'impl':<22}{'regime':<8}{'dtype':<7}{'step peak MB':>14}{'process peak MB':>17}")
    for (name, regime, dtype), r in results.items():
        if "error" in r:
            print(f"{LABELS[name]:<22}{regime:<8}{dtype:<7}failed: {r['error']}")
        else:
            bound = "" if r.get("hwm_reset", True) else "  (upper bound: the high-water mark could not be reset)"
            print(f"{LABELS[name]:<22}{regime:<8}{dtype:<7}{r['step_peak_mb']:>14.0f}{r['total_mb']:>17.0f}{bound}")
    return results


# ------------------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------------------
def time_encoding(args, spec, init, device, dtypes: list[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """({dtype: {impl: rows/s}}, failures): encode --encode-rows rows with each, interleaved batch by batch."""
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = SparseAutoencoder.create(spec, sample=None).to(device)
    load(sae, init)
    peer = TopKSAE(TopKSAEConfig(d_in=spec.d_in, d_sae=spec.d_sae, k=spec.k, apply_b_dec_to_input=True,
                                 normalize_activations="none", dtype="float32", device=str(device)))
    load(peer, {k: v.to(device) for k, v in init.items()})
    W_enc, b_enc, b_dec, k = sae.W_enc.detach(), sae.b_enc.detach(), sae.b_dec.detach(), spec.k

    def reference(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = torch.addmm(b_enc, xb - b_dec, W_enc).topk(k, dim=1)  # (B, k)
        return torch.relu(top.values), top.indices

    paths = {"musicsae": sae.encode_sparse, "dense": reference, "saelens": peer.encode}
    gen = torch.Generator().manual_seed(args.seed + 1)
    chunks = [(torch.randn(min(args.batch, args.encode_rows - s), spec.d_in, generator=gen) * 2.0 + 1.0).to(device)
              for s in range(0, args.encode_rows, args.batch)]  # (<= B, d_in) each
    failures = []
    with torch.inference_mode():  # the same latents, before timing (fp32)
        (mv, mi), (rv, ri), dense_out = sae.encode_sparse(chunks[0]), reference(chunks[0]), peer.encode(chunks[0])
        same_rows = float((mi.sort(1).values == ri.sort(1).values).all(1).float().mean())
        value_diff = float((mv.sort(1).values - rv.sort(1).values).abs().max() / rv.abs().max().clamp_min(1e-30))
        peer_diff = float((dense_out.gather(1, ri) - rv).abs().max() / rv.abs().max().clamp_min(1e-30))
        peer_nnz = int((dense_out != 0).sum(1).max())
    ok = same_rows >= 0.999 and value_diff <= TOL and peer_diff <= TOL and peer_nnz <= k
    print(f"\n# check encode: rows with the same top-k set musicsae vs reference {same_rows:.4%}, values max relative "
          f"difference {value_diff:.1e}; SAELens values at those latents {peer_diff:.1e}, at most {peer_nnz} nonzeros "
          f"a row {'ok' if ok else 'MISMATCH'}")
    if not ok:
        failures.append("encode")
    rates = {}
    for dtype in dtypes:
        total = dict.fromkeys(paths, 0.0)
        with torch.inference_mode(), amp(device, dtype):
            for fn in paths.values():
                fn(chunks[0])  # warm-up
            for xb in chunks:
                for name, fn in paths.items():
                    _sync(device)
                    t0 = time.perf_counter()
                    fn(xb)
                    _sync(device)
                    total[name] += time.perf_counter() - t0
        rates[dtype] = {name: args.encode_rows / t for name, t in total.items()}
        print(f"\n{'encode ' + dtype + f' ({args.encode_rows} rows)':<44}{'rows/s':>10}{'musicsae speedup':>19}")
        for name, label in (("musicsae", "musicsae encode_sparse"), ("dense", "addmm + topk + relu"),
                            ("saelens", "SAELens TopKSAE.encode (dense output)")):
            r = rates[dtype][name]
            print(f"{label:<44}{r:>10.0f}{rates[dtype]['musicsae'] / r:>18.2f}x")
    return rates, failures


# ------------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-in", type=int, default=1024)
    ap.add_argument("--expansion", type=int, default=16, help="d_sae = d_in * expansion")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5, help="timed interleaved rounds (after one warm-up step each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32", help="comma list of fp32, bf16 (bf16: autocast, fp32 weights)")
    ap.add_argument("--dead-fraction", type=float, default=0.25, help="latents marked dead in the auxk regime")
    ap.add_argument("--encode-rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-implementation peak-memory processes")
    ap.add_argument("--peak-only", nargs=3, metavar=("IMPL", "REGIME", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_only:
        peak_only(args, *args.peak_only)
        return
    dtypes = args.dtypes.split(",")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        ap.error(f"unknown dtype(s) {', '.join(unknown)}: use fp32 and/or bf16")
    try:
        saelens_version = importlib.metadata.version("sae-lens")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("error: SAELens is not installed here: run `make bench-peers` (it lives only in .venv-peers)")
    device = torch.device(args.device)
    spec = SAESpec("topk", args.d_in, args.d_in * args.expansion, k=args.k)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# TopK SAE d_in={spec.d_in} d_sae={spec.d_sae} k={spec.k} batch={args.batch}, dead fraction "
          f"{args.dead_fraction} (auxk), k_aux {spec.d_in // 2}; {name}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, sae-lens {saelens_version}")
    started = time.perf_counter()
    x, dead = make_data(args, device)
    init = make_init(spec, x.cpu(), args.seed)

    phases = {}
    failures = check_equivalence(spec, init, x, dead, device)
    phases["checks"] = time.perf_counter() - started
    if failures:
        sys.exit(f"error: the implementations disagree ({'; '.join(failures)}): timings would compare different "
                 "computations")
    gc.collect()

    t0 = time.perf_counter()
    training = {dtype: time_training(args, spec, init, x, dead, device, dtype) for dtype in dtypes}
    phases["training"], t0 = time.perf_counter() - t0, time.perf_counter()
    rates, failures = time_encoding(args, spec, init, device, dtypes)
    if failures:
        sys.exit("error: the encoders disagree: see the check above")
    phases["encoding"], t0 = time.perf_counter() - t0, time.perf_counter()
    if not args.no_memory:
        measure_memory(args, dtypes)
        phases["memory"] = time.perf_counter() - t0

    def speedups(res: dict[str, dict]) -> str:
        ours = res["musicsae"]["median"]
        return ", ".join(f"{res[n]['median'] / ours:.2f}x vs {LABELS[n]}" if "median" in res[n]
                         else f"{LABELS[n]} failed" for n in IMPLS[1:])

    parts = []
    for dtype in dtypes:
        for regime in REGIMES:
            res = training[dtype][regime]
            parts.append(f"{regime} {dtype}: musicsae {args.batch / res['musicsae']['median']:.0f} samples/s, "
                         f"{speedups(res)}")
        r = rates[dtype]
        parts.append(f"encode {dtype}: musicsae {r['musicsae']:.0f} rows/s, {r['musicsae'] / r['saelens']:.2f}x vs "
                     f"SAELens, {r['musicsae'] / r['dense']:.2f}x vs addmm+topk")
    print(f"\n# total {time.perf_counter() - started:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
    print(f"SUMMARY peers TopK d_in={spec.d_in} d_sae={spec.d_sae} k={spec.k} batch={args.batch} ({device.type}): "
          + "; ".join(parts))


if __name__ == "__main__":
    main()
