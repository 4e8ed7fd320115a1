"""BatchTopK SAE (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders").

Training keeps the k * B largest pre-activations of the whole batch (after a ReLU), so k latents per row on
average, with AuxK on dead latents as in TopK and decoder rows held at unit norm. Inference cannot depend on the
rest of the batch: a latent fires where its pre-activation exceeds one threshold shared by all latents, an EMA of
each training batch's smallest kept activation, which `sae train` then sets from training batches
(`calibrate_threshold`). Saved as SAELens's "jumprelu" architecture with that threshold, which is exactly how it
encodes at inference.
"""

from __future__ import annotations

import torch

from .. import kernels
from ..architectures import KSparseAutoencoder, SAESpec, register_architecture

THRESHOLD_EMA = 0.99  # BatchTopK inference threshold: EMA of each batch's smallest kept activation


class BatchTopKSAE(KSparseAutoencoder):
    """The k * B largest pre-activations of a batch in training; a threshold at inference."""

    saelens_architecture = "jumprelu"
    extra_weights = ("threshold",)
    batch_selection = True
    needs_calibration = True

    def init_latent_state(self, spec: SAESpec) -> None:
        self.register_buffer("threshold", torch.full((spec.d_sae,), -1.0))  # < 0: not estimated yet (plain ReLU)

    def threshold_value(self) -> torch.Tensor:
        """The estimated inference threshold, (d_sae,)."""
        return self.threshold

    def observe_selection(self, kept_pre: torch.Tensor, active: torch.Tensor) -> None:
        if active.any():
            self._update_threshold(kept_pre[active].min())

    @torch.no_grad()
    def _update_threshold(self, smallest_kept: torch.Tensor) -> None:
        if bool(self.threshold[0] < 0):
            self.threshold.fill_(float(smallest_kept))
        else:
            self.threshold.mul_(THRESHOLD_EMA).add_((1 - THRESHOLD_EMA) * smallest_kept)

    @torch.no_grad()
    def calibrate_threshold(self, batches) -> float:
        """Set the inference threshold to the mean over `batches` (raw (B, d_in) tensors) of the smallest
        activation the batch-level top-k keeps (Bussmann et al. 2024); better than the training EMA, which lags in
        short runs. Returns the threshold."""
        mins = []
        for x in [batches] if isinstance(batches, torch.Tensor) else batches:
            pre = self.preacts(self.normalise(x.to(self.W_enc.device))).float()  # (B, d_sae)
            kept = kernels.batch_topk_selection(pre, self.spec.k).pre
            if bool((kept > 0).any()):
                mins.append(kept[kept > 0].min())
        if mins:
            self.threshold.fill_(float(torch.stack(mins).mean()))
        return float(self.threshold[0])

    @torch.no_grad()
    def load_saelens_weights(self, weights: dict[str, torch.Tensor]) -> None:
        super().load_saelens_weights(weights)
        self.threshold.copy_(weights["threshold"])


register_architecture("batchtopk", BatchTopKSAE)
