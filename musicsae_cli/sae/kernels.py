"""Sparse SAE kernels: the encoder in row blocks with TopK-style selection, and a training step whose backward
touches only the kept entries.

A TopK SAE keeps k of d_sae latents per row, so after the (dense, unavoidable) encoder matmul everything else
can touch only the B*k kept entries. A dense autograd implementation instead decodes a (B, d_sae) matrix that
is mostly zeros and pays three more dense matmuls in the backward pass (dW_dec = f^T g, df = g W_dec^T,
dW_enc = x^T df). Here:

    main, aux = select(x_c, W_enc, b_enc, k, dead=..., k_aux=...)   x_c = x_n - b_dec; no autograd
        the encoder runs in row blocks (on the CPU ~64 MB of pre-activations each, reused, so the (B, d_sae)
        matrix is never allocated); each block is reduced at once to its kept entries: the row's top k
        (BatchTopK: its top candidates, then the batch's top k*B) and, for AuxK, the top k_aux among the dead
        latents. Kept = a CSR Selection and each entry's pre-activation.
    x_hat_n, e_hat = sparse_step(x_n, b_dec, W_enc, b_enc, W_dec, main, aux, dead)
        x_hat_n - b_dec = sum over a row's kept latents of relu(pre) * W_dec[latent]       (B, d_in)
        e_hat = the same over the row's AuxK entries (dead latents, positive pre-activations only: relu
        zeroes the rest and their gradient), without b_dec                              (B, d_in)

and the backward (G: gradient of the kept pre-activations, F: kept activations, g: gradient of the
reconstruction) produces every parameter gradient once: dW_dec = F^T g and dW_enc = x_c^T G as per-latent
segment sums (embedding_bag over latent-sorted entries), db_enc = colsum(G), db_dec = -W_enc colsum(G),
dvalues = <g, W_dec rows> (a sampled matmul). The AuxK entries (k_aux = d_in/2 per row: far more than k) add to
the rows of the dead latents only. On the CPU these gathers are bound by cache bandwidth, so large ones run
in column tiles of the table that stay in L2 (`bag_sums`), and the AuxK sampled matmul, dense enough, is a
blocked dense matmul against the dead latents' decoder rows.

W_enc of the sparse architectures is stored as W_encT (d_sae, d_in), the layout its gradient comes out in, so
autograd adopts the gradient instead of transposing d_sae x d_in floats every step (W_enc is the view).
Weights stay fp32 (master weights, no GradScaler needed with bf16): under bf16 autocast the encoder matmul and
the selection run in bf16 (the kept values carry its rounding, as with any autocast matmul); the decode and every
backward product run in fp32 from fp32 weights, so gradients are fp32.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

BLOCK_BYTES = 64 * 2**20  # CPU: pre-activations per encoder row block (reused; fits the last-level cache)
TILE = 64  # CPU: table columns per tile in large gathered sums (a tile of 4096 rows is 1 MB: it stays in L2)
TILE_MIN_REUSE = 64  # tile a gathered sum only when bags and table rows average this many entries each
DENSE_SAMPLED_DENSITY = 0.05  # a sampled matmul this dense runs faster as a blocked dense matmul plus a gather


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
        keys = self.cols.to(torch.int32) if self.d_sae < 2**31 else self.cols  # int32 sorts faster
        order = torch.argsort(keys, stable=True)  # (nnz,)
        offsets = torch.zeros(self.d_sae, dtype=torch.int64, device=self.cols.device)
        offsets[1:] = torch.bincount(self.cols, minlength=self.d_sae).cumsum(0)[:-1]
        return order, self.rows[order], offsets

    def latent_sums(self, weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(d_sae, d) = for each latent j, sum over its entries e of weights[e] * table[rows[e]]: (S^T) @ table.

        A segment sum over latent-sorted entries: one pass over nnz rows of `table`, no (nnz, d) intermediate,
        no zero-filled sparse-product output.
        """
        order, rows_by_latent, offsets = self.by_latent
        return bag_sums(rows_by_latent, table, offsets, weights[order].to(table.dtype))

    def row_sums(self, weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, d) = for each row b, sum over its entries e of weights[e] * table[cols[e]]: S @ table."""
        return bag_sums(self.cols, table, self.crow[:-1], weights.to(table.dtype))


@dataclass(frozen=True)
class Kept:
    """A selection and the pre-activation of each kept entry ((nnz,) fp32; bf16-rounded under autocast)."""

    sel: Selection
    pre: torch.Tensor


def bag_sums(indices: torch.Tensor, table: torch.Tensor, offsets: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
    """(n_bags, d): bag i sums weights[e] * table[indices[e]] over e in offsets[i]:offsets[i + 1].

    embedding_bag; on the CPU, when bags are long and the table's rows each gathered many times (AuxK's sums),
    in column tiles of TILE so the gathered rows come from L2 rather than the last-level cache (about 3x
    faster there; TopK's short bags run faster untiled).
    """
    d = table.shape[1]
    if (table.device.type != "cpu" or d <= TILE
            or indices.numel() < TILE_MIN_REUSE * max(table.shape[0], offsets.numel())):
        return F.embedding_bag(indices, table, offsets, mode="sum", per_sample_weights=weights)
    tiles = [F.embedding_bag(indices, table[:, a:a + TILE].contiguous(), offsets, mode="sum",
                             per_sample_weights=weights) for a in range(0, d, TILE)]  # each (n_bags, TILE)
    return torch.cat(tiles, dim=1)


def sampled_dots(sel: Selection, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(nnz,) = <left[rows[e]], right[cols[e]]> for every entry e: the sampled product left @ right^T."""
    n_rows, n_cols = left.shape[0], right.shape[0]
    nnz = sel.cols.numel()
    if nnz < DENSE_SAMPLED_DENSITY * n_rows * n_cols:
        ones = torch.ones(nnz, dtype=left.dtype, device=left.device)
        return torch.sparse.sampled_addmm(sel.matrix(ones), left, right.t(), beta=0.0).values()
    out = torch.empty(nnz, dtype=left.dtype, device=left.device)
    buf = None
    for r0, r1 in row_blocks(n_rows, n_cols, left.element_size(), left.device):
        e0, e1 = int(sel.crow[r0]), int(sel.crow[r1])
        buf = torch.mm(left[r0:r1], right.t(), out=None if buf is None else buf[:r1 - r0])  # (rows, n_cols)
        flat = (sel.rows[e0:e1] - r0) * n_cols + sel.cols[e0:e1]
        out[e0:e1] = buf.reshape(-1)[flat]
    return out


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The lower-precision dtype of an active autocast region on `device_type`, else None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def row_blocks(n_rows: int, width: int, itemsize: int, device: torch.device) -> list[tuple[int, int]]:
    """Row ranges of a (n_rows, width) product: one on an accelerator, ~BLOCK_BYTES each on the CPU."""
    if device.type != "cpu":
        return [(0, n_rows)]
    step = max(64, BLOCK_BYTES // max(1, width * itemsize))
    return [(r0, min(r0 + step, n_rows)) for r0 in range(0, n_rows, step)]


def encoder_blocks(x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                   workspace: dict | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(r0, r1, pre) for row blocks of the pre-activations x_c @ W_enc + b_enc, without autograd, in the
    autocast dtype when autocast is on. `pre` is a reused buffer: use it before asking for the next block.
    On the CPU a `workspace` dict kept by the caller keeps that buffer from call to call: fresh pages of a new
    64 MB allocation cost a few percent of an encoder matmul each time."""
    dtype = autocast_dtype(x_c.device.type) or W_enc.dtype
    with torch.no_grad(), torch.autocast(x_c.device.type, enabled=False):
        x_c, W, b = x_c.to(dtype), W_enc.to(dtype), b_enc.to(dtype)
        blocks = row_blocks(x_c.shape[0], W.shape[1], W.element_size(), x_c.device)
        buf = None
        if workspace is not None and x_c.device.type == "cpu" and blocks:
            rows = blocks[0][1] - blocks[0][0]
            buf = workspace.get("pre")
            if buf is None or buf.dtype != dtype or buf.shape[1] != W.shape[1] or buf.shape[0] < rows:
                buf = workspace["pre"] = torch.empty(rows, W.shape[1], dtype=dtype)
        for r0, r1 in blocks:
            buf = torch.addmm(b, x_c[r0:r1], W, out=None if buf is None else buf[:r1 - r0])  # (rows, d_sae)
            yield r0, r1, buf


def encode_topk(x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int,
                workspace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest pre-activations, largest first: (values (B, k) in the matmul's dtype, indices (B, k)).
    Inference: no autograd; the (B, d_sae) pre-activations never exist at once."""
    n = x_c.shape[0]
    values = indices = None
    for r0, r1, pre in encoder_blocks(x_c, W_enc, b_enc, workspace):
        if values is None:
            values = torch.empty(n, k, dtype=pre.dtype, device=pre.device)
            indices = torch.empty(n, k, dtype=torch.int64, device=pre.device)
        torch.topk(pre, k, dim=1, out=(values[r0:r1], indices[r0:r1]))
    if values is None:  # no rows
        return x_c.new_empty(0, k), torch.empty(0, k, dtype=torch.int64, device=x_c.device)
    return values, indices


def select(x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int, batch: bool = False,
           dead: torch.Tensor | None = None, k_aux: int = 0, candidates: int = 4,
           workspace: dict | None = None) -> tuple[Kept, Kept | None]:
    """The kept entries of a training batch: (main, aux).

    main: each row's top k pre-activations (TopK), or with `batch` the k * B largest of the whole batch
    (BatchTopK, Bussmann et al. 2024; candidates come from each row's top `candidates * k`, with an exact
    fallback when a row gives all of its candidates). aux, when `dead` (latent indices) and k_aux are given:
    each row's top k_aux pre-activations among the dead latents (AuxK, Gao et al. 2024), keeping only the
    positive ones (relu zeroes the others), with columns numbered within `dead`.
    """
    n, d_sae = x_c.shape[0], W_enc.shape[1]
    width = min(d_sae, candidates * k) if batch else k
    use_aux = dead is not None and k_aux > 0
    top_v = top_i = aux_v = aux_i = None
    for r0, r1, pre in encoder_blocks(x_c, W_enc, b_enc, workspace):
        if top_v is None:
            top_v = torch.empty(n, width, dtype=pre.dtype, device=pre.device)
            top_i = torch.empty(n, width, dtype=torch.int64, device=pre.device)
            if use_aux:
                aux_v = torch.empty(n, k_aux, dtype=pre.dtype, device=pre.device)
                aux_i = torch.empty(n, k_aux, dtype=torch.int64, device=pre.device)
        torch.topk(pre, width, dim=1, sorted=False, out=(top_v[r0:r1], top_i[r0:r1]))
        if use_aux:
            dead_pre = torch.gather(pre, 1, dead.expand(r1 - r0, -1))  # (rows, n_dead); 3x faster than pre[:, dead]
            torch.topk(dead_pre, k_aux, dim=1, sorted=False, out=(aux_v[r0:r1], aux_i[r0:r1]))
    if batch:
        main = _batch_top(top_v, top_i, k, d_sae, lambda: torch.cat([p.clone() for _, _, p in
                                                                     encoder_blocks(x_c, W_enc, b_enc)]))
    else:
        top_i, order = top_i.sort(dim=1)  # column order within a row keeps the CSR canonical
        main = Kept(fixed_selection(top_i, d_sae), top_v.gather(1, order).reshape(-1).float())
    aux = None
    if use_aux:
        positive = aux_v > 0  # (B, k_aux)
        counts = positive.sum(1)
        crow = _row_offsets(counts)
        rows = torch.arange(n, device=x_c.device).repeat_interleave(counts)
        aux = Kept(Selection(crow, aux_i[positive], rows, dead.numel()), aux_v[positive].float())
    return main, aux


def _batch_top(cand_v: torch.Tensor, cand_i: torch.Tensor, k: int, d_sae: int, full_pre) -> Kept:
    """The k * B largest of the batch from each row's candidates; `full_pre()` gives (B, d_sae) for the exact
    fallback when some row gives all of its candidates (it might own more)."""
    n, width = cand_v.shape
    total = k * n
    top, flat = cand_v.reshape(-1).topk(total, sorted=False)  # (k * B,) positions among the candidates
    rows = torch.div(flat, width, rounding_mode="floor")
    if width < d_sae and int(torch.bincount(rows, minlength=n).max()) >= width:
        top, flat = full_pre().reshape(-1).topk(total, sorted=False)  # exact fallback
        rows, cols = torch.div(flat, d_sae, rounding_mode="floor"), flat % d_sae
    else:
        cols = cand_i.reshape(-1)[flat]
    order = torch.argsort(rows * d_sae + cols)  # row-major order
    rows, cols = rows[order], cols[order]
    crow = _row_offsets(torch.bincount(rows, minlength=n))
    return Kept(Selection(crow, cols, rows, d_sae), top[order].float())


def _row_offsets(counts: torch.Tensor) -> torch.Tensor:
    """CSR row offsets (B + 1,) of per-row entry counts (B,)."""
    crow = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    crow[1:] = counts.cumsum(0)
    return crow


def batch_topk_selection(pre: torch.Tensor, k: int, candidates: int = 4) -> Kept:
    """The k * B largest of a (B, d_sae) pre-activation matrix (BatchTopK), as `select(batch=True)` keeps them."""
    width = min(pre.shape[1], candidates * k)
    cand_v, cand_i = pre.topk(width, dim=1, sorted=False)
    return _batch_top(cand_v, cand_i, k, pre.shape[1], lambda: pre)


def fixed_selection(indices: torch.Tensor, d_sae: int) -> Selection:
    """The selection of an (B, k) index matrix (k entries in every row)."""
    n_rows, k = indices.shape
    device = indices.device
    crow = torch.arange(0, n_rows * k + 1, k, device=device, dtype=torch.int64)  # (B + 1,)
    rows = torch.arange(n_rows, device=device).repeat_interleave(k)  # (B * k,)
    return Selection(crow, indices.reshape(-1).long(), rows, d_sae)


class _SparseStep(torch.autograd.Function):
    """(x_hat_n - b_dec, e_hat) of the kept entries; every parameter gradient computed once, over them only."""

    @staticmethod
    def forward(ctx, x_n, b_dec, W_enc, b_enc, W_dec, main: Kept, aux: Kept | None, dead):
        ctx.set_materialize_grads(False)
        with torch.autocast(x_n.device.type, enabled=False):
            x_c = x_n.float() - b_dec
            values = torch.relu(main.pre)  # (nnz,)
            out = main.sel.row_sums(values, W_dec)  # (B, d_in)
            D = e_hat = None
            if aux is not None:
                D = W_dec.index_select(0, dead)  # (n_dead, d_in) the dead latents' decoder rows
                e_hat = aux.sel.row_sums(aux.pre, D)  # (B, d_in); aux.pre > 0, so relu is the identity
        ctx.save_for_backward(x_c, W_enc, W_dec, values, D)
        ctx.main, ctx.aux, ctx.dead = main, aux, dead
        return out, e_hat if e_hat is not None else x_n.new_zeros(0)

    @staticmethod
    def backward(ctx, g_out, g_aux):  # (B, d_in) each, or None when that output is unused
        x_c, W_enc, W_dec, values, D = ctx.saved_tensors
        main, aux, dead = ctx.main, ctx.aux, ctx.dead
        d_sae, d_in = W_dec.shape
        d_b_enc = torch.zeros(d_sae, device=W_dec.device)
        if g_out is None:
            d_W_dec = torch.zeros(d_sae, d_in, device=W_dec.device)
            d_W_encT = torch.zeros(d_sae, d_in, device=W_dec.device)  # dW_enc, (d_sae, d_in)-major
        else:
            g_out = g_out.float().contiguous()
            grad = sampled_dots(main.sel, g_out, W_dec) * (main.pre > 0)  # (nnz,) d loss / d kept pre-activation
            d_W_dec = main.sel.latent_sums(values, g_out)  # F^T g
            d_W_encT = main.sel.latent_sums(grad, x_c)  # (x_c^T G)^T
            d_b_enc.index_add_(0, main.sel.cols, grad)
        if aux is not None and g_aux is not None and aux.sel.cols.numel():
            g_aux = g_aux.float().contiguous()
            grad = sampled_dots(aux.sel, g_aux, D)  # (nnz_aux,)
            d_W_dec.index_add_(0, dead, aux.sel.latent_sums(aux.pre, g_aux))  # (n_dead, d_in) into dead rows
            d_W_encT.index_add_(0, dead, aux.sel.latent_sums(grad, x_c))
            d_b_enc.index_add_(0, dead, torch.zeros(dead.numel(), device=grad.device).index_add_(0, aux.sel.cols,
                                                                                                  grad))
        d_b_dec = -(W_enc @ d_b_enc)  # sum over rows of -G W_enc^T, without forming (B, d_in)
        return None, d_b_dec, d_W_encT.t(), d_b_enc, d_W_dec, None, None, None


def sparse_step(x_n, b_dec, W_enc, b_enc, W_dec, main: Kept, aux: Kept | None = None,
                dead: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat_n - b_dec (B, d_in), e_hat (B, d_in), or an empty tensor without aux) of `select`'s entries, with
    gradients to b_dec, W_enc, b_enc and W_dec (x_n is data: it gets none). See the module docstring."""
    return _SparseStep.apply(x_n, b_dec, W_enc, b_enc, W_dec, main, aux, dead)


class _SparseDecode(torch.autograd.Function):
    """sum over a row's selected latents of value * W_dec[latent] (no bias), with a sparse backward."""

    @staticmethod
    def forward(ctx, values, W_dec, sel):
        with torch.autocast(values.device.type, enabled=False):
            values = values.to(W_dec.dtype)
            out = sel.row_sums(values, W_dec)  # (B, d_in)
        ctx.save_for_backward(values, W_dec)
        ctx.sel = sel
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out: (B, d_in)
        values, W_dec = ctx.saved_tensors
        sel, grad_out = ctx.sel, grad_out.float().contiguous()
        d_values = d_W_dec = None
        if ctx.needs_input_grad[0]:  # <grad_out[b], W_dec[latent]> at each kept entry (sampled matmul)
            d_values = sampled_dots(sel, grad_out, W_dec)
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
