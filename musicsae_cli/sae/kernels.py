"""Sparse SAE kernels: TopK-style selections, pre-activations with a sparse backward, and sparse decoding.

A TopK SAE keeps k of d_sae latents per row, so after the (dense, unavoidable) encoder matmul everything else
can touch only the B*k selected entries. A dense autograd implementation instead decodes a (B, d_sae) matrix
that is mostly zeros and pays three more dense matmuls in the backward pass (dW_dec = f^T g, df = g W_dec^T,
dW_enc = x^T df). Here:

    pre      = (x_n - b_dec) @ W_enc + b_enc          dense, under no_grad, in the autocast dtype      (B, d_sae)
    sel      = topk_selection(pre, k)                 which latents each row keeps (CSR)              nnz = B*k
    sel_pre  = selected_preacts(x_n, ..., pre, sel)   the kept pre-activations as fp32                (nnz,)
    x_hat_n  = sparse_decode(relu(sel_pre), sel, W_dec) + b_dec                                        (B, d_in)

and the backward passes touch only the nnz kept entries (G: the (B, d_sae) sparse gradient of the kept
pre-activations, F: the sparse latents, g_out: the (B, d_in) gradient of the reconstruction, x_c = x_n - b_dec):
dW_enc = x_c^T G and dW_dec = F^T g_out as per-latent segment sums (embedding_bag over latent-sorted entries),
db_enc = colsum(G), db_dec = -W_enc colsum(G), dvalues = <g_out, W_dec rows> (a sampled matmul). The one dense
leftover: dW_enc is produced (d_sae, d_in)-major and autograd copies it into W_enc's (d_in, d_sae) layout.
Weights stay fp32 (master weights, no GradScaler needed with bf16): under bf16 autocast the encoder matmul and
the selection run in bf16 (the kept values carry its rounding, as with any autocast matmul); the decode and every
backward product run in fp32 from fp32 weights, so gradients are fp32. (Recomputing the kept values exactly in
fp32 with a sampled matmul cost ~16% of a bf16 step at d_in 1024 / d_sae 16384 on CPU; autocast does not ask for it.)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class Selection:
    """Which latents each row keeps, CSR-style: row b keeps cols[crow[b]:crow[b + 1]] (unique within a row)."""

    crow: torch.Tensor  # (B + 1,) int64 row offsets
    cols: torch.Tensor  # (nnz,) int64 latent indices
    rows: torch.Tensor  # (nnz,) int64 row of each entry
    d_sae: int

    @property
    def n_rows(self) -> int:
        return self.crow.numel() - 1

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The (B, d_sae) sparse CSR matrix holding `values` (nnz,) at the selected entries."""
        with warnings.catch_warnings():  # the "CSR support is in beta" notice; the ops used here are stable
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.cols, values, size=(self.n_rows, self.d_sae),
                                           check_invariants=False)

    @cached_property
    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The transpose, grouped by latent: (order (nnz,), rows[order] (nnz,), latent offsets (d_sae,))."""
        order = torch.argsort(self.cols, stable=True)  # (nnz,)
        offsets = torch.zeros(self.d_sae, dtype=torch.int64, device=self.cols.device)
        offsets[1:] = torch.bincount(self.cols, minlength=self.d_sae).cumsum(0)[:-1]
        return order, self.rows[order], offsets

    def latent_sums(self, weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(d_sae, d) = for each latent j, sum over its entries e of weights[e] * table[rows[e]]: (S^T) @ table.

        A segment sum done by embedding_bag over latent-sorted entries: one pass over nnz rows of `table`,
        no (nnz, d) intermediate, no zero-filled sparse-product output.
        """
        order, rows_by_latent, offsets = self.by_latent
        return torch.nn.functional.embedding_bag(rows_by_latent, table, offsets, mode="sum",
                                                 per_sample_weights=weights[order].to(table.dtype))


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The lower-precision dtype of an active autocast region on `device_type`, else None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def encoder_preacts(x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor) -> torch.Tensor:
    """Dense pre-activations (B, d_sae) without autograd, in the autocast dtype when autocast is on."""
    dtype = autocast_dtype(x_c.device.type)
    with torch.no_grad(), torch.autocast(x_c.device.type, enabled=False):
        if dtype is None:
            return torch.addmm(b_enc, x_c, W_enc)  # (B, d_sae)
        return torch.addmm(b_enc.to(dtype), x_c.to(dtype), W_enc.to(dtype))  # (B, d_sae) bf16


def fixed_selection(indices: torch.Tensor, d_sae: int) -> Selection:
    """The selection of an (B, k) index matrix (k entries in every row)."""
    n_rows, k = indices.shape
    device = indices.device
    crow = torch.arange(0, n_rows * k + 1, k, device=device, dtype=torch.int64)  # (B + 1,)
    rows = torch.arange(n_rows, device=device).repeat_interleave(k)  # (B * k,)
    return Selection(crow, indices.reshape(-1).long(), rows, d_sae)


def topk_selection(pre: torch.Tensor, k: int) -> Selection:
    """The k largest pre-activations of every row (ties broken by torch.topk)."""
    _, idx = pre.topk(k, dim=1, sorted=False)  # (B, k)
    idx, _ = idx.sort(dim=1)  # column order within a row keeps the CSR canonical
    return fixed_selection(idx, pre.shape[1])


def _from_coo(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, d_sae: int) -> Selection:
    order = torch.argsort(rows * d_sae + cols)  # row-major order
    rows, cols = rows[order], cols[order]
    counts = torch.bincount(rows, minlength=n_rows)  # (B,)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = counts.cumsum(0)
    return Selection(crow, cols, rows, d_sae)


def batch_topk_selection(pre: torch.Tensor, k: int, candidates: int = 4) -> Selection:
    """The k * B largest pre-activations of the whole batch (BatchTopK, Bussmann et al. 2024).

    A full topk over B * d_sae entries is slow on CPU, so candidates come from each row's top `candidates * k`;
    when some row gives all its candidates (it might own more) the exact flat topk is used instead.
    """
    n_rows, d_sae = pre.shape
    total = k * n_rows
    width = min(d_sae, candidates * k)
    cand_val, cand_idx = pre.topk(width, dim=1, sorted=False)  # (B, width)
    _, flat = cand_val.reshape(-1).topk(total, sorted=False)  # (k * B,) positions among the candidates
    rows = torch.div(flat, width, rounding_mode="floor")
    if width < d_sae and int(torch.bincount(rows, minlength=n_rows).max()) >= width:
        _, flat = pre.reshape(-1).topk(total, sorted=False)  # exact fallback
        rows, cols = torch.div(flat, d_sae, rounding_mode="floor"), flat % d_sae
    else:
        cols = cand_idx.reshape(-1)[flat]
    return _from_coo(rows, cols, n_rows, d_sae)


def masked_topk_selection(pre: torch.Tensor, latents: torch.Tensor, k: int) -> Selection:
    """Each row's k largest pre-activations among the given latents (AuxK's dead latents), k <= len(latents)."""
    _, local = pre.index_select(1, latents).topk(k, dim=1, sorted=False)  # (B, k) positions within `latents`
    idx, _ = latents[local].sort(dim=1)  # (B, k) latent indices
    return fixed_selection(idx, pre.shape[1])


class _SelectedPreacts(torch.autograd.Function):
    """Kept pre-activations (nnz,) fp32, with gradients computed only over the selection."""

    @staticmethod
    def forward(ctx, x_n, b_dec, W_enc, b_enc, pre, sel):
        out = pre[sel.rows, sel.cols].float()  # (nnz,); under autocast these carry the bf16 matmul's rounding
        ctx.save_for_backward(x_n, b_dec, W_enc)
        ctx.sel = sel
        return out

    @staticmethod
    def backward(ctx, grad):  # grad: (nnz,)
        x_n, b_dec, W_enc = ctx.saved_tensors
        sel, grad = ctx.sel, grad.float()
        d_b_enc = torch.zeros(sel.d_sae, device=grad.device, dtype=grad.dtype).index_add_(0, sel.cols, grad)
        d_x = d_b_dec = d_W_enc = None
        if ctx.needs_input_grad[2]:  # x_c^T G, computed as (G^T x_c)^T: (d_sae, d_in) -> (d_in, d_sae)
            d_W_enc = sel.latent_sums(grad, x_n.float() - b_dec).t()
        if ctx.needs_input_grad[1]:
            d_b_dec = -(W_enc @ d_b_enc)  # sum over rows of -G W_enc^T, without forming (B, d_in)
        if ctx.needs_input_grad[0]:
            d_x = torch.mm(sel.matrix(grad), W_enc.t())  # (B, d_in)
        return d_x, d_b_dec, d_W_enc, d_b_enc if ctx.needs_input_grad[3] else None, None, None


def selected_preacts(x_n, b_dec, W_enc, b_enc, pre: torch.Tensor, sel: Selection) -> torch.Tensor:
    """(nnz,) pre-activations (x_n - b_dec) @ W_enc + b_enc at the selected entries; sparse backward."""
    return _SelectedPreacts.apply(x_n, b_dec, W_enc, b_enc, pre, sel)


class _SparseDecode(torch.autograd.Function):
    """sum over a row's selected latents of value * W_dec[latent] (no bias), with a sparse backward."""

    @staticmethod
    def forward(ctx, values, W_dec, sel):
        with torch.autocast(values.device.type, enabled=False):
            values = values.to(W_dec.dtype)
            out = torch.nn.functional.embedding_bag(sel.cols, W_dec, sel.crow[:-1], mode="sum",
                                                    per_sample_weights=values)  # (B, d_in)
        ctx.save_for_backward(values, W_dec)
        ctx.sel = sel
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out: (B, d_in)
        values, W_dec = ctx.saved_tensors
        sel, grad_out = ctx.sel, grad_out.float().contiguous()
        d_values = d_W_dec = None
        if ctx.needs_input_grad[0]:  # <grad_out[b], W_dec[latent]> at each kept entry (sampled matmul)
            ones = torch.ones_like(values)
            d_values = torch.sparse.sampled_addmm(sel.matrix(ones), grad_out, W_dec.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            d_W_dec = sel.latent_sums(values, grad_out)  # (d_sae, d_in): F^T grad_out
        return d_values, d_W_dec, None


def sparse_decode(values: torch.Tensor, sel: Selection, W_dec: torch.Tensor) -> torch.Tensor:
    """(B, d_in) = sum_j values[b, j] * W_dec[cols[b, j]] over each row's selection (add b_dec yourself)."""
    return _SparseDecode.apply(values, W_dec, sel)


class _JumpReLU(torch.autograd.Function):
    """z * H(z - theta); d/dtheta by the rectangle-kernel straight-through estimator (Rajamanoharan et al. 2024)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        near = ((pre - threshold).abs() < eps / 2).to(grad.dtype)  # rectangle kernel K((z - theta) / eps)
        d_threshold = -(threshold / eps) * (grad * near).sum(0)  # (d_sae,)
        return grad * (pre > threshold), d_threshold, None


class _Step(torch.autograd.Function):
    """H(z - theta) for the L0 penalty: no gradient to z, a straight-through gradient to theta."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        near = ((pre - threshold).abs() < eps / 2).to(grad.dtype)
        return None, -(1.0 / eps) * (grad * near).sum(0), None


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """JumpReLU activations (B, d_sae) with a trainable threshold (d_sae,)."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Heaviside step (B, d_sae) whose threshold gets a straight-through gradient (for L0 penalties)."""
    return _Step.apply(pre, threshold, bandwidth)
