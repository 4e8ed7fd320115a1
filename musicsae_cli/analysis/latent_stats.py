"""Per-latent class statistics from one sort of each column's stored values: sparse input stays sparse.

`latent_stats(x, y)` gives, per feature and class, the mean activation inside and outside the class, the share
of active samples, and one-vs-rest AUROC, plus each feature's mutual information with the classes. Implicit
zeros of a sparse column are one tie block, so 100k frames x 16k latents are never densified.
"""

from __future__ import annotations

import numpy as np

from ..progress import ProgressFactory, no_progress

SORT_BLOCK = 1 << 22  # stored values sorted at once per column block


def latent_stats(x, y: np.ndarray, n_classes: int, mi_bins: int = 4,
                 progress: ProgressFactory = no_progress) -> dict[str, np.ndarray]:
    """Per feature and class: mean in/out, share active in/out, one-vs-rest AUROC; per feature: MI (bits).

    `x` is (n, W) scipy sparse or dense, `y` (n,) class codes 0..C-1. AUROC counts ties (e.g. the zeros of
    inactive latents) as half; MI discretises each feature into zero plus `mi_bins` quantile levels of its
    non-zero values.
    """
    import scipy.sparse as sp

    n, width = x.shape
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)  # (C,)
    onehot = sp.csr_matrix((np.ones(n), (y, np.arange(n))), shape=(n_classes, n))
    xs = x.tocsc() if sp.issparse(x) else sp.csc_matrix(x)
    xs.sort_indices()
    sums = np.asarray((onehot @ xs).todense()).T  # (W, C)
    active = np.asarray((onehot @ (xs != 0).astype(np.float64)).todense()).T  # (W, C)
    total_sum, total_active = sums.sum(1, keepdims=True), active.sum(1, keepdims=True)
    rest = np.maximum(n - counts, 1.0)
    auroc = np.empty((width, n_classes))
    mi = np.empty(width)
    indptr = xs.indptr
    bounds = _column_blocks(indptr, SORT_BLOCK)
    with progress("Latent statistics", len(bounds) - 1) as bar:
        for j0, j1 in zip(bounds[:-1], bounds[1:], strict=True):
            auroc[j0:j1], mi[j0:j1] = _rank_block(xs, j0, j1, y, counts, n, mi_bins)
            bar.advance(1)
    return {"mean_in": sums / counts, "mean_out": (total_sum - sums) / rest,
            "active_in": active / counts, "active_out": (total_active - active) / rest,
            "density": total_active[:, 0] / n, "auroc": auroc, "mi_bits": mi, "class_counts": counts}


def _column_blocks(indptr: np.ndarray, limit: int) -> list[int]:
    """Column boundaries so that each block holds at most `limit` stored values (or a single column)."""
    bounds, j, width = [0], 0, indptr.size - 1
    while j < width:
        stop = int(np.searchsorted(indptr, indptr[j] + limit, side="right")) - 1
        j = max(stop, j + 1)
        j = min(j, width)
        bounds.append(j)
    return bounds


def _rank_block(xs, j0: int, j1: int, y: np.ndarray, counts: np.ndarray, n: int, mi_bins: int):
    """(AUROC (B, C), MI (B,)) of columns j0..j1 from the ranks of their stored values."""
    b, c = j1 - j0, counts.size
    p0, p1 = int(xs.indptr[j0]), int(xs.indptr[j1])
    nnz = np.diff(xs.indptr[j0:j1 + 1]).astype(np.int64)  # (B,)
    col = np.repeat(np.arange(b), nnz)
    vals = np.asarray(xs.data[p0:p1], dtype=np.float64)
    rws = xs.indices[p0:p1]
    order = np.lexsort((vals, col))
    vals, rws, col = vals[order], rws[order], col[order]
    pos = np.arange(vals.size) - (xs.indptr[j0:j1][col] - p0)  # 0-based position within the column
    new = np.r_[True, (col[1:] != col[:-1]) | (vals[1:] != vals[:-1])] if vals.size else np.zeros(0, bool)
    gid = np.cumsum(new) - 1
    size = np.bincount(gid)
    avg = pos[new][gid] + (size[gid] - 1) / 2.0  # tie-averaged 0-based position among the stored values
    zeros = n - nnz  # (B,) implicit zeros per column
    negative = np.bincount(col, weights=vals < 0, minlength=b)
    rank = avg + 1.0 + np.where(vals > 0, zeros[col], 0)  # 1-based rank among all n values
    zero_rank = negative + (zeros + 1) / 2.0
    cls = y[rws]
    key = col * c + cls
    rank_sum = np.bincount(key, weights=rank, minlength=b * c).reshape(b, c)
    stored = np.bincount(key, minlength=b * c).reshape(b, c)
    rank_sum += (counts[None, :] - stored) * zero_rank[:, None]
    u = rank_sum - counts * (counts + 1) / 2.0
    auroc = u / np.maximum(counts * (n - counts), 1.0)
    # Mutual information: level 0 = zero, 1..mi_bins = quantiles of the stored values by rank.
    level = 1 + np.minimum((avg / np.maximum(nnz[col], 1) * mi_bins).astype(np.int64), mi_bins - 1)
    levels = mi_bins + 1
    table = np.bincount((col * levels + level) * c + cls, minlength=b * levels * c).reshape(b, levels, c)
    table = table.astype(np.float64)
    table[:, 0, :] = counts[None, :] - stored
    return auroc, _mutual_information(table, n)


def _mutual_information(table: np.ndarray, n: int) -> np.ndarray:
    """(B,) MI in bits of (B, levels, classes) contingency tables of n samples each."""
    p = table / n
    pl = p.sum(2, keepdims=True)
    pc = p.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / (pl * pc)), 0.0)
    return np.maximum(terms.sum(axis=(1, 2)), 0.0)
