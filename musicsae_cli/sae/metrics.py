"""Reconstruction metrics accumulated exactly over many batches, and the dead-latent tracker used in training.

Explained variance is 1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2) over the whole evaluated set, from float64
sums (some SAE libraries average per-batch ratios or forget to centre, so predicting the mean
does not score 0 there). Everything is summed in float64 on the inputs' device and reduced only in compute().
"""

from __future__ import annotations

import math

import numpy as np
import torch

DENSITY_BINS = np.linspace(-8.0, 0.0, 33)  # log10 feature density histogram edges (1e-8 .. 1)


class ReconstructionMetrics:
    """Accumulates reconstruction and sparsity statistics of an SAE over batches (float64)."""

    def __init__(self, d_sae: int):
        self.d_sae = d_sae
        self.n_rows = 0
        self.d_in: int | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self.fire_counts = torch.zeros(d_sae, dtype=torch.float64)  # rows in which each latent fired
        self.active_total = 0.0  # sum over rows of active latents

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, latents: torch.Tensor | None = None, *,
               values: torch.Tensor | None = None, indices: torch.Tensor | None = None,
               fire_counts: torch.Tensor | None = None, active_total: float | None = None) -> None:
        """Add a batch: x and x_hat (B, d_in), and the latents as dense (B, d_sae), as TopK (values, indices)
        (B, k) with unique indices per row, or as precomputed per-latent fire counts (d_sae,) + total actives."""
        x = x.detach().reshape(-1, x.shape[-1]).double()
        x_hat = x_hat.detach().reshape(x.shape).double()
        if self.d_in is None:
            self.d_in = x.shape[1]
            self._sums = {k: torch.zeros((), dtype=torch.float64, device=x.device)
                          for k in ("sq", "err", "norm", "norm_hat", "ratio", "ratio_rows")}
            self._sums["x"] = torch.zeros(self.d_in, dtype=torch.float64, device=x.device)
        s = self._sums
        norm, norm_hat = x.norm(dim=1), x_hat.norm(dim=1)  # (B,)
        s["x"] += x.sum(0)
        s["sq"] += x.pow(2).sum()
        s["err"] += (x - x_hat).pow(2).sum()
        s["norm"] += norm.sum()
        s["norm_hat"] += norm_hat.sum()
        nonzero = norm > 0  # a zero row has no defined shrinkage ratio
        s["ratio"] += (norm_hat[nonzero] / norm[nonzero]).sum()
        s["ratio_rows"] += nonzero.sum()
        self.n_rows += x.shape[0]
        if latents is not None:
            active = latents.detach().reshape(-1, self.d_sae) != 0  # (B, d_sae)
            counts, total = active.sum(0), active.sum()
        elif values is not None and indices is not None:
            active = values.detach() != 0  # (B, k)
            counts = torch.bincount(indices[active].reshape(-1), minlength=self.d_sae)
            total = active.sum()
        elif fire_counts is not None and active_total is not None:
            counts, total = fire_counts, active_total
        else:
            raise TypeError("update() needs latents, values + indices, or fire_counts + active_total")
        self.fire_counts += torch.as_tensor(counts).detach().double().cpu()
        self.active_total += float(total)

    def merge(self, other: ReconstructionMetrics) -> ReconstructionMetrics:
        """Add the rows another accumulator saw (e.g. another rank's share of the evaluation rows)."""
        if other.n_rows:
            if self.d_in is None:
                self.d_in = other.d_in
                self._sums = {k: v.clone().cpu() for k, v in other._sums.items()}
            else:
                for k, v in other._sums.items():
                    self._sums[k] = self._sums[k].cpu() + v.cpu()
            self.n_rows += other.n_rows
            self.fire_counts += other.fire_counts.cpu()
            self.active_total += other.active_total
        return self

    def density(self) -> torch.Tensor:
        """Fraction of rows in which each latent fired, (d_sae,) float64."""
        return self.fire_counts / max(self.n_rows, 1)

    def compute(self) -> dict:
        """Scalars, plus `density` (d_sae,) float64 numpy and a log10-density histogram."""
        if self.n_rows == 0:
            raise ValueError("no rows were added")
        n, s = self.n_rows, {k: v.item() for k, v in self._sums.items() if v.dim() == 0}
        mean = self._sums["x"] / n  # (d_in,)
        total_var = s["sq"] / n - float(mean.pow(2).sum())  # E||x||^2 - ||E x||^2
        mse_row = s["err"] / n
        density = self.density()
        log_density = torch.log10(density[density > 0]).numpy()
        counts, _ = np.histogram(np.clip(log_density, DENSITY_BINS[0], DENSITY_BINS[-1]), bins=DENSITY_BINS)
        dead = int((self.fire_counts == 0).sum())
        return {
            "n_rows": n,
            "explained_variance": 1.0 - mse_row / total_var if total_var > 0 else math.nan,
            "mse": mse_row / self.d_in,  # per element, input space
            "mse_per_row": mse_row,
            "l0": self.active_total / n,
            "dead_fraction": dead / self.d_sae,
            "n_dead": dead,
            "shrinkage": s["ratio"] / s["ratio_rows"] if s["ratio_rows"] else math.nan,  # mean ||x_hat|| / ||x||
            "shrinkage_of_means": s["norm_hat"] / s["norm"] if s["norm"] > 0 else math.nan,
            "density": density.numpy(),
            "density_histogram": {"log10_bin_edges": DENSITY_BINS.tolist(), "counts": counts.tolist(),
                                  "never_fired": dead},
        }


class DeadLatentTracker:
    """Tokens (rows) since each latent last fired; a latent is dead after more than `window_tokens`."""

    def __init__(self, d_sae: int, window_tokens: int):
        self.window_tokens = int(window_tokens)
        self.since_fired = torch.zeros(d_sae, dtype=torch.int64)  # (d_sae,), starts alive (Gao et al. 2024)

    def update(self, fired: torch.Tensor, n_tokens: int) -> None:
        """Record a batch of n_tokens rows in which latents `fired` (d_sae,) bool fired at least once."""
        self.since_fired += int(n_tokens)
        self.since_fired[fired.detach().to(self.since_fired.device)] = 0

    def dead_mask(self) -> torch.Tensor:
        """(d_sae,) bool."""
        return self.since_fired > self.window_tokens

    def state_dict(self) -> dict:
        """`since_fired` is a tensor; the rest is JSON-ready."""
        return {"since_fired": self.since_fired.clone(), "window_tokens": self.window_tokens}

    def load_state_dict(self, state: dict) -> None:
        self.since_fired = torch.as_tensor(state["since_fired"], dtype=torch.int64).clone().cpu()
        self.window_tokens = int(state.get("window_tokens", self.window_tokens))
