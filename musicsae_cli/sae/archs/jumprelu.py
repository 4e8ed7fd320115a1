"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
Sparse Autoencoders").

Each latent has a learned threshold theta_i = exp(log_threshold_i) (initial value jumprelu_init_threshold):
f_i = pre_i where pre_i > theta_i, else 0. The penalty is the L0 norm (weight: `sae train`'s l0_coefficient);
theta gets gradients from it and from the reconstruction through straight-through estimators with a rectangle
kernel of width jumprelu_bandwidth (kernels.jumprelu, kernels.step). Decoder rows are held at unit norm. Saved
as SAELens's "jumprelu" architecture with threshold = theta; plain SAELens "jumprelu" and "batchtopk" folders (a
BatchTopK SAE exported with its inference threshold) load as this class.
"""

from __future__ import annotations

import math

import torch

from .. import kernels
from ..architectures import SAESpec, SparseAutoencoder, register_architecture


class JumpReLUSAE(SparseAutoencoder):
    """Thresholded ReLU latents with learned per-latent thresholds; L0 penalty."""

    saelens_architecture = "jumprelu"
    saelens_reads = ("jumprelu", "batchtopk")
    extra_weights = ("threshold",)
    sparsity_coefficient = "l0_coefficient"

    def init_latent_state(self, spec: SAESpec) -> None:
        self.log_threshold = torch.nn.Parameter(torch.full((spec.d_sae,), math.log(spec.jumprelu_init_threshold)))

    def threshold_value(self) -> torch.Tensor:
        """exp(log_threshold), (d_sae,)."""
        return self.log_threshold.exp()

    def train_activation(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        threshold = self.log_threshold.exp()
        f = kernels.jumprelu(pre, threshold, self.spec.jumprelu_bandwidth)
        return f, kernels.step(pre, threshold, self.spec.jumprelu_bandwidth).sum(1).mean()  # L0 with an STE

    def reset_latents(self, dead_idx: torch.Tensor) -> list[torch.nn.Parameter]:
        self.log_threshold[dead_idx] = math.log(self.spec.jumprelu_init_threshold)
        return [self.log_threshold]

    @torch.no_grad()
    def load_saelens_weights(self, weights: dict[str, torch.Tensor]) -> None:
        super().load_saelens_weights(weights)
        # a threshold <= 0 acts like 0 after the ReLU; keep log finite
        self.log_threshold.copy_(weights["threshold"].clamp_min(torch.finfo(torch.float32).tiny).log())


register_architecture("jumprelu", JumpReLUSAE)
