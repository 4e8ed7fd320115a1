"""The shared bases of every SAE architecture: SparseAutoencoder (weights, normalisation, linear encoder and
decoder, the dense training loss, optimiser hooks, dead-latent resampling, the SAELens layout) and
KSparseAutoencoder (the architectures that keep k latents), and TrainStep. The registry of architectures by name
and SAESpec are in sae/architectures.py, which re-exports these names; the architectures are in sae/archs/.

Conventions shared by all of them:

- Inputs are normalised inside the module, x_n = (x - norm_mean) * norm_scale with E||x_n||^2 = d_in on the
  init sample; outputs are mapped back (x_hat = x_hat_n / norm_scale + norm_mean). `fold_normalisation` moves
  both into the weights for export.
- Encoder: pre = (x_n - b_dec) @ W_enc + b_enc (SAELens `apply_b_dec_to_input=True`); decoder:
  x_hat_n = f @ W_dec + b_dec.
- Loss, in the normalised space: SAELens's loss (squared error summed over dimensions, mean over rows, plus
  coef * penalty) divided by d_in. So `sparsity_coef` means what l1/l0 coefficients mean in SAELens and Anthropic's
  write-ups, while terms["mse"] is a per-element MSE (~ the fraction of variance unexplained, since E||x_n||^2 =
  d_in); Adam is invariant to the constant 1/d_in up to its eps. terms["mse_row"] is the per-row sum.
- AuxK (Gao et al. 2024) is their normalised MSE ||e - e_hat||^2 / ||e - mean(e)||^2 of the detached residual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from . import kernels

if TYPE_CHECKING:
    from .architectures import SAESpec

SAELENS_WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")  # every architecture's tensors in sae_weights.safetensors


@dataclass
class TrainStep:
    """What one training_loss call returns."""

    loss: torch.Tensor  # scalar, to backward
    x_hat: torch.Tensor  # (B, d_in) input space, detached
    terms: dict[str, torch.Tensor]  # detached scalars: mse, mse_row, sparsity, auxk (those that apply)
    fired: torch.Tensor  # (d_sae,) bool: latent fired at least once in the batch
    l0: torch.Tensor  # scalar: mean active latents per row


class SparseAutoencoder(torch.nn.Module):
    """One SAE. `SparseAutoencoder(spec)` builds the class registered for `spec.arch`; the base holds the weights,
    the normalisation, the linear encoder and decoder, the dense training loss and the optimiser hooks, and each
    architecture sets the facts below and overrides what it computes differently."""

    arch: str | None = None  # the registered name (register_architecture sets it)
    saelens_architecture: str | None = None  # the "architecture" its SAELens cfg.json declares
    saelens_reads: tuple[str, ...] = ()  # plain SAELens folders of these architectures load as this class
    activation_fn_str = "relu"  # its SAELens activation_fn_str
    extra_weights: tuple[str, ...] = ()  # SAELens tensors saved beside SAELENS_WEIGHTS, each (d_sae,)
    folds_decoder_norm_rescale = False  # SAELens rescale_acts_by_decoder_norm=true folds exactly into its weights
    uses_k = False  # spec.k sets how many latents are kept
    unit_norm_decoder = True  # decoder rows held at norm 1 (before_/after_optimizer_step)
    init_decoder_norm = 1.0  # norm of the random decoder rows `create` starts from
    transposed_encoder = False  # W_enc stored as W_encT (d_sae, d_in): see __init__
    sparsity_coefficient: str | None = None  # the `sae train` setting weighing its sparsity penalty (None: no penalty)
    uses_auxk = False  # its loss has an AuxK term, so training passes the dead-latent mask
    resamples_dead = False  # `sae train`'s resample_dead applies to it
    needs_calibration = False  # `sae train` calls calibrate_threshold after training

    def __new__(cls, spec: SAESpec | None = None, *args, **kwargs):
        if cls is SparseAutoencoder and spec is not None:
            from .architectures import architecture_class  # the registry (its module imports this one)

            cls = architecture_class(spec.arch)
        return super().__new__(cls)

    def __init__(self, spec: SAESpec):
        super().__init__()
        if self.arch is not None and spec.arch != self.arch:
            raise ConfigError(f"{type(self).__name__} is the {self.arch} architecture, not {spec.arch!r}",
                              "build SAEs with SparseAutoencoder(spec), which picks the class of spec.arch")
        self.spec = spec
        d_in, d_sae = spec.d_in, spec.d_sae
        if self.transposed_encoder:
            # Stored (d_sae, d_in), the layout its gradient comes out in (kernels.py), so autograd adopts the
            # gradient instead of transposing d_sae x d_in floats every step and fused Adam sees a contiguous
            # tensor. `W_enc` is its (d_in, d_sae) view, and state dicts hold W_enc as for every architecture.
            self.W_encT = torch.nn.Parameter(torch.zeros(d_sae, d_in))
            self._register_state_dict_hook(_save_W_enc)
            self._register_load_state_dict_pre_hook(_load_W_enc)
        else:
            self.W_enc = torch.nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.W_dec = torch.nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.init_latent_state(spec)
        self.register_buffer("norm_mean", torch.zeros(d_in))
        self.register_buffer("norm_scale", torch.ones(()))
        self.workspace: dict = {}  # the encoder's reused block buffer (kernels.encoder_blocks); never saved

    def init_latent_state(self, spec: SAESpec) -> None:
        """Register the architecture's own per-latent parameters and buffers (a threshold); none here. Called
        between the shared parameters and the normalisation buffers, which fixes the order of state dicts and of
        the optimiser's parameters."""

    def __getattr__(self, name: str):
        if name == "W_enc" and "W_encT" in self._parameters:
            return self._parameters["W_encT"].t()  # (d_in, d_sae) view of the stored (d_sae, d_in) parameter
        return super().__getattr__(name)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, spec: SAESpec, sample: torch.Tensor | None = None, seed: int = 0,
               init_b_dec: str = "geometric_median", normalize: bool = True) -> SparseAutoencoder:
        """A freshly initialised SAE: tied W_enc = W_dec^T, b_enc = 0, normalisation and b_dec from `sample`."""
        if init_b_dec not in ("geometric_median", "mean", "zeros"):
            raise ConfigError(f"unknown init_b_dec {init_b_dec!r}", "use geometric_median, mean or zeros")
        sae = cls(spec)
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(spec.d_sae, spec.d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        if sae.init_decoder_norm != 1.0:
            w_dec *= sae.init_decoder_norm
        with torch.no_grad():
            sae.W_dec.copy_(w_dec)
            sae.W_enc.copy_(w_dec.T)
            if sample is not None:
                sample = sample.reshape(-1, spec.d_in).double()
                if normalize:
                    mean = sample.mean(0)
                    sq = (sample - mean).pow(2).sum(1).mean()
                    sae.norm_mean.copy_(mean.float())
                    sae.norm_scale.fill_(math.sqrt(spec.d_in / max(float(sq), 1e-12)))
                x_n = (sample - sae.norm_mean.double()) * sae.norm_scale.double()
                if init_b_dec == "mean":
                    sae.b_dec.copy_(x_n.mean(0).float())
                elif init_b_dec == "geometric_median":
                    sae.b_dec.copy_(geometric_median(x_n).float())
        return sae

    # ---- inference ----------------------------------------------------------------------------------------
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """x -> x_n (float32, (B, d_in))."""
        return (x.reshape(-1, self.spec.d_in).to(self.W_enc.dtype) - self.norm_mean) * self.norm_scale

    def denormalise(self, x_hat_n: torch.Tensor) -> torch.Tensor:
        return x_hat_n / self.norm_scale + self.norm_mean

    def preacts(self, x_n: torch.Tensor) -> torch.Tensor:
        """Dense pre-activations (B, d_sae) with autograd: one addmm (the bias added in the matmul's epilogue,
        not as a second pass over the (B, d_sae) result)."""
        return torch.addmm(self.b_enc, x_n - self.b_dec, self.W_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents (..., d_sae) with inference semantics (BatchTopK: the learned threshold, per row)."""
        return self.encode_n(self.normalise(x)).reshape(*x.shape[:-1], self.spec.d_sae)

    def encode_n(self, x_n: torch.Tensor) -> torch.Tensor:
        """Dense latents (B, d_sae) of already-normalised inputs (B, d_in)."""
        return self.activate(self.preacts(x_n).float())

    def activate(self, pre: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Inference activation of pre-activations (B, m) of `latents` (all d_sae when None), each latent on its
        own: ReLU, zeroed at or below the threshold where the architecture has one."""
        threshold = self.threshold_value()
        if threshold is None:
            return torch.relu(pre)
        return torch.relu(pre) * (pre > (threshold if latents is None else threshold[latents]))

    def threshold_value(self) -> torch.Tensor | None:
        """The inference threshold (d_sae,) of a thresholded architecture (JumpReLU, BatchTopK); None here."""
        return None

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """TopK only: (values (B, k), indices (B, k)), largest first (values may be 0); None for other archs."""
        return None

    def latent_reader(self, latents: torch.Tensor):
        """A function x (n, d_in) -> the current values (n, m) of `latents` (m indices) with inference semantics,
        for steering edits that read a few latents every generation step. Here each latent depends only on its
        own pre-activation, so only their m encoder columns are used."""

        def read(x: torch.Tensor) -> torch.Tensor:
            pre = (self.normalise(x) - self.b_dec) @ self.W_enc[:, latents] + self.b_enc[latents]  # (n, m)
            return self.activate(pre, latents)

        return read

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Latents (..., d_sae) -> reconstruction (..., d_in) in the input space."""
        lead = f.shape[:-1]
        x_hat_n = f.reshape(-1, self.spec.d_sae).to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return self.denormalise(x_hat_n).reshape(*lead, self.spec.d_in)

    def decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(B, k) values at (B, k) latent indices -> (B, d_in), gathering only those decoder rows."""
        sel = kernels.fixed_selection(indices, self.spec.d_sae)
        x_hat_n = kernels.sparse_decode(values.reshape(-1).to(self.W_dec.dtype), sel, self.W_dec) + self.b_dec
        return self.denormalise(x_hat_n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x (same shape)."""
        return self.decode(self.encode(x))

    # ---- training -----------------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, sparsity_coef: float, dead_mask: torch.Tensor | None = None,
                      auxk_coef: float = 1 / 32, auxk_k: int | None = None) -> TrainStep:
        """Loss on a raw batch x (B, d_in); the terms are defined in the module docstring."""
        x_n = self.normalise(x).detach()  # (B, d_in)
        return self.training_loss_n(x_n, sparsity_coef, dead_mask, auxk_coef, auxk_k)

    def training_loss_n(self, x_n, sparsity_coef, dead_mask, auxk_coef, auxk_k) -> TrainStep:
        """The loss of normalised inputs: reconstruction plus sparsity_coef times the architecture's penalty
        (train_activation), over dense (B, d_sae) latents; the dead-latent arguments do not apply."""
        spec = self.spec
        pre = self.preacts(x_n).float()  # (B, d_sae)
        f, sparsity = self.train_activation(pre)
        x_hat_n = (f @ self.W_dec).float() + self.b_dec  # (B, d_in)
        mse_row = (x_n - x_hat_n).pow(2).sum(1).mean()
        loss = (mse_row + sparsity_coef * sparsity) / spec.d_in
        active = f.detach() > 0  # (B, d_sae)
        terms = {"mse": mse_row.detach() / spec.d_in, "mse_row": mse_row.detach(), "sparsity": sparsity.detach()}
        return TrainStep(loss, self.denormalise(x_hat_n.detach()), terms, active.any(0),
                         active.sum(1).float().mean())

    def train_activation(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents (B, d_sae), sparsity penalty (scalar)) of pre-activations, differentiable, for training."""
        raise NotImplementedError(f"{type(self).__name__} defines no training activation")

    def calibrate_threshold(self, batches) -> float:
        """Set the inference threshold from training batches (BatchTopK); ValueError for other architectures."""
        raise ValueError("calibrate_threshold applies to batchtopk SAEs only")

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Unit-norm architectures: drop the decoder-gradient component parallel to each row (it only rescales)."""
        grad = self.W_dec.grad
        if not self.unit_norm_decoder or grad is None:
            return
        w = self.W_dec
        dots = torch.bmm(grad.unsqueeze(1), w.unsqueeze(2)).view(-1)  # (d_sae,) row dot products, no temporary
        parallel = dots / torch.linalg.vector_norm(w, dim=1).square().clamp_min(1e-12)  # (d_sae,)
        grad.addcmul_(parallel[:, None], w, value=-1.0)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Unit-norm architectures: renormalise decoder rows to norm 1."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def resample_dead(self, dead_idx: torch.Tensor, x: torch.Tensor, optimizer=None) -> None:
        """Re-initialise dead latents toward badly reconstructed inputs (Anthropic 2023); reset their Adam moments.

        Each dead latent gets the direction of an input drawn with probability proportional to its squared
        reconstruction loss; the encoder column is that direction at 0.2x the mean live encoder norm.
        """
        if dead_idx.numel() == 0:
            return
        dead_idx = dead_idx.to(self.W_dec.device).long()
        x_n = self.normalise(x)
        err = (x_n - (self.encode_n(x_n) @ self.W_dec + self.b_dec)).pow(2).sum(1)  # (B,)
        weights = err.pow(2)
        if not bool(weights.sum() > 0):
            weights = torch.ones_like(weights)
        picks = torch.multinomial(weights, dead_idx.numel(), replacement=True)
        directions = x_n[picks] - self.b_dec  # (n_dead, d_in)
        directions /= directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
        alive = torch.ones(self.spec.d_sae, dtype=torch.bool, device=dead_idx.device)
        alive[dead_idx] = False
        if alive.any():
            dec_norm = self.W_dec[alive].norm(dim=1).mean()
            enc_norm = self.W_enc[:, alive].norm(dim=0).mean()
        else:
            dec_norm = torch.tensor(self.init_decoder_norm)
            enc_norm = torch.tensor(1.0)
        if self.unit_norm_decoder:
            dec_norm = torch.tensor(1.0)
        self.W_dec[dead_idx] = directions * dec_norm
        self.W_enc[:, dead_idx] = directions.T * (0.2 * enc_norm)
        self.b_enc[dead_idx] = 0.0
        own = self.reset_latents(dead_idx)
        if optimizer is not None:
            encoder = ((self.W_encT, (dead_idx,)) if "W_encT" in self._parameters
                       else (self.W_enc, (slice(None), dead_idx)))
            for param, where in ((self.W_dec, (dead_idx,)), encoder, (self.b_enc, (dead_idx,)),
                                 *((p, (dead_idx,)) for p in own)):
                state = optimizer.state.get(param, {})
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in state:
                        state[key][where] = 0.0

    def reset_latents(self, dead_idx: torch.Tensor) -> list[torch.nn.Parameter]:
        """Re-initialise the architecture's own per-latent parameters at `dead_idx` (resample_dead); returns
        those parameters (d_sae,), whose Adam moments are reset there too. None here."""
        return []

    @torch.no_grad()
    def fold_normalisation(self) -> None:
        """Move norm_mean / norm_scale into the weights; outputs are unchanged and the buffers become identity."""
        s, m = self.norm_scale.clone(), self.norm_mean.clone()
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.copy_(self.b_dec / s + m)  # encoder input x - b_dec' = (x - m) - b_dec / s
        self.norm_mean.zero_()
        self.norm_scale.fill_(1.0)

    # ---- SAELens layout (io.py) ---------------------------------------------------------------------------
    def saelens_config(self) -> dict:
        """The cfg.json entries of this architecture beyond the shared ones (TopK: its k); none here."""
        return {}

    def saelens_weights(self) -> dict[str, torch.Tensor]:
        """The tensors of sae_weights.safetensors: SAELENS_WEIGHTS, then the threshold of thresholded
        architectures (SAELens's jumprelu layout)."""
        weights = {name: getattr(self, name).detach().contiguous() for name in SAELENS_WEIGHTS}
        threshold = self.threshold_value()
        if threshold is not None:
            weights["threshold"] = threshold.detach().float().contiguous()
        return weights

    @torch.no_grad()
    def load_saelens_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy SAELens tensors (SAELENS_WEIGHTS and extra_weights, shapes already checked) into this SAE."""
        for name in SAELENS_WEIGHTS:
            getattr(self, name).copy_(weights[name])


class KSparseAutoencoder(SparseAutoencoder):
    """Shared by the architectures that keep k latents (TopK: k of each row; BatchTopK: k * B of the batch):
    trained by kernels.select / kernels.sparse_step without a dense (B, d_sae) latent matrix, with AuxK on the
    dead latents (Gao et al. 2024) and no sparsity penalty."""

    uses_k = True
    transposed_encoder = True
    uses_auxk = True
    batch_selection = False  # keep the k * B largest pre-activations of the batch instead of k per row

    def training_loss_n(self, x_n, sparsity_coef, dead_mask, auxk_coef, auxk_k) -> TrainStep:
        spec = self.spec
        n_dead = int(dead_mask.sum()) if dead_mask is not None and auxk_coef else 0
        dead = torch.nonzero(dead_mask.to(x_n.device)).flatten() if n_dead else None
        k_aux = min(auxk_k or spec.d_in // 2, n_dead)
        main, aux = kernels.select(x_n - self.b_dec.detach(), self.W_enc.detach(), self.b_enc.detach(), spec.k,
                                   batch=self.batch_selection, dead=dead, k_aux=k_aux, workspace=self.workspace)
        decoded, e_hat = kernels.sparse_step(x_n, self.b_dec, self.W_enc, self.b_enc, self.W_dec, main, aux, dead)
        x_hat_n = decoded + self.b_dec  # (B, d_in)
        err = x_n - x_hat_n  # (B, d_in)
        mse_row = err.pow(2).sum(1).mean()
        loss = mse_row / spec.d_in
        active = main.pre > 0  # (nnz,)
        fired = torch.zeros(spec.d_sae, dtype=torch.bool, device=x_n.device)
        fired[main.sel.cols[active]] = True
        self.observe_selection(main.pre, active)
        terms = {"mse": mse_row.detach() / spec.d_in, "mse_row": mse_row.detach(),
                 "auxk": torch.zeros((), device=x_n.device)}
        if aux is not None:  # e_hat: the top k_aux dead latents' decoding (no b_dec: it is in x_hat_n already)
            residual = err.detach()  # target: what the live latents missed
            auxk = (residual - e_hat).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
            loss = loss + auxk_coef * auxk
            terms["auxk"] = auxk.detach()
        l0 = active.sum() / x_n.shape[0]
        return TrainStep(loss, self.denormalise(x_hat_n.detach()), terms, fired, l0)

    def observe_selection(self, kept_pre: torch.Tensor, active: torch.Tensor) -> None:
        """Called with the pre-activations (nnz,) a training step kept and which of them are > 0; nothing here."""


def _save_W_enc(module, state_dict, prefix, local_metadata) -> None:
    """State dicts of the sparse architectures hold W_enc (d_in, d_sae), in place of the stored W_encT."""
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        if key == prefix + "W_encT":
            key, value = prefix + "W_enc", value.t()
        state_dict[key] = value


def _load_W_enc(state_dict, prefix, *args) -> None:
    if prefix + "W_enc" in state_dict and prefix + "W_encT" not in state_dict:
        state_dict[prefix + "W_encT"] = state_dict.pop(prefix + "W_enc").t()


def geometric_median(points: torch.Tensor, iters: int = 50, tol: float = 1e-6) -> torch.Tensor:
    """Geometric median of (N, d) points by Weiszfeld iterations from the mean."""
    median = points.mean(0)
    for _ in range(iters):
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(1e-8)  # (N,)
        updated = (weights[:, None] * points).sum(0) / weights.sum()
        if float((updated - median).norm()) <= tol * max(1.0, float(median.norm())):
            return updated
        median = updated
    return median
