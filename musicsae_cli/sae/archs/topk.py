"""TopK SAE with the AuxK loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Each row keeps its k largest pre-activations, after a ReLU: f = ReLU(TopK_k(pre)). Sparsity comes from k, not
from a penalty; decoder rows are held at unit norm. Dead latents learn through AuxK: the top k_aux dead latents
reconstruct the residual the live ones missed, weighted by `sae train`'s auxk_coefficient. Neither encoding nor
training builds the dense (B, d_sae) latent matrix (kernels.encode_topk, kernels.select / sparse_step). Saved as
SAELens's "topk" architecture with activation_fn_str "topk" and k.
"""

from __future__ import annotations

import torch

from .. import kernels
from ..architectures import KSparseAutoencoder, register_architecture


class TopKSAE(KSparseAutoencoder):
    """The k largest pre-activations of each row; AuxK on dead latents."""

    saelens_architecture = "topk"
    saelens_reads = ("topk",)
    activation_fn_str = "topk"
    folds_decoder_norm_rescale = True

    def encode_n(self, x_n: torch.Tensor) -> torch.Tensor:
        values, indices = self._topk(x_n)
        f = torch.zeros(x_n.shape[0], self.spec.d_sae, dtype=values.dtype, device=x_n.device)
        return f.scatter_(1, indices, values)  # (B, d_sae)

    def _topk(self, x_n: torch.Tensor, x_c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(relu(values), indices), each (B, k), of the k largest pre-activations; x_c = x_n - b_dec if given."""
        if torch.is_grad_enabled() and self.W_enc.requires_grad:  # a caller differentiating through encode
            values, indices = self.preacts(x_n).topk(self.spec.k, dim=1)  # (B, k), largest first
        else:  # in row blocks, never the whole (B, d_sae) pre-activation matrix
            values, indices = kernels.encode_topk(x_n - self.b_dec if x_c is None else x_c, self.W_enc, self.b_enc,
                                                  self.spec.k, self.workspace)
        return torch.relu(values).float(), indices

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (B, k), indices (B, k)), largest first (values may be 0)."""
        if torch.is_grad_enabled() and self.W_enc.requires_grad:
            return self._topk(self.normalise(x))
        x = x.reshape(-1, self.spec.d_in).to(self.W_enc.dtype)
        shift = -(self.norm_mean * self.norm_scale + self.b_dec)  # (d_in,)
        return self._topk(None, torch.addcmul(shift, x, self.norm_scale))  # x_n - b_dec in one pass over x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = self.encode_sparse(x)
        return self.decode_sparse(values, indices).reshape(x.shape)

    def latent_reader(self, latents: torch.Tensor):
        """Membership in the top k needs every pre-activation, but no dense latent matrix is built: F.linear on a
        (d_sae, d_in) copy of the encoder, made once here, streams it about 1.5x faster than x @ W_enc for the
        few rows of a generation step."""
        enc_t = self.W_enc.detach().float().T.contiguous()

        def read(x: torch.Tensor) -> torch.Tensor:
            pre = torch.nn.functional.linear(self.normalise(x) - self.b_dec, enc_t, self.b_enc)  # (n, d_sae)
            kth = pre.topk(self.spec.k, dim=1).values[:, -1:]  # (n, 1) smallest kept pre-activation
            mine = pre[:, latents]
            return torch.relu(mine) * (mine >= kth)

        return read

    def saelens_config(self) -> dict:
        return {"k": self.spec.k, "activation_fn_kwargs": {"k": self.spec.k}}


register_architecture("topk", TopKSAE)
