"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, "Circuits Updates - April 2024").

f = ReLU((x_n - b_dec) @ W_enc + b_enc), trained with the penalty sum_i f_i * ||W_dec,i|| (weight: `sae train`'s
l1_coefficient). Since the penalty weighs the decoder norms, the decoder rows are free (not held at unit norm);
they start as random directions of norm 0.1. Dead latents can be resampled (Anthropic, "Towards
Monosemanticity", 2023; `sae train`'s resample_dead). Saved as SAELens's "standard" architecture.
"""

from __future__ import annotations

import torch

from ..architectures import SparseAutoencoder, register_architecture

INIT_DECODER_NORM = 0.1  # Anthropic April-2024 update: random directions with norm 0.1 (0.05-1 work)


class ReLUSAE(SparseAutoencoder):
    """ReLU latents; L1 penalty weighted by the decoder row norms."""

    saelens_architecture = "standard"
    saelens_reads = ("standard",)
    folds_decoder_norm_rescale = True
    unit_norm_decoder = False
    init_decoder_norm = INIT_DECODER_NORM
    sparsity_coefficient = "l1_coefficient"
    resamples_dead = True

    def train_activation(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(pre)
        return f, (f * self.W_dec.norm(dim=1)).sum(1).mean()  # decoder-norm-weighted L1 (April 2024)


register_architecture("relu", ReLUSAE)
