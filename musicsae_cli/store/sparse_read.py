"""Reading CSR hookpoints: selected rows with explicit reads, and per-item pooling without densifying."""

from __future__ import annotations

import numpy as np

from ..errors import InputError, StoreError
from .commit import byte_view
from .csr import CSR
from .format import CORRUPT_HINT, INDEX_DTYPE, INDPTR_DTYPE, npy_layout, read_exact


def csr_layout(store, hookpoint: str, shard: int) -> tuple[int, int, int, int]:
    """(indptr, indices, values data offsets, nnz) of one shard's CSR files, checked once and cached."""
    key = (hookpoint, shard, "csr")
    if key not in store._layouts:
        path = store.shards[shard].path
        n_rows = store.shards[shard].n_rows
        offsets, nnz = [], None
        for part, dtype in (("indptr", INDPTR_DTYPE), ("indices", INDEX_DTYPE), ("values", store.storage_dtype)):
            file = path / f"{hookpoint}.{part}.npy"
            offset, shape, found = npy_layout(file)
            if part == "indices" and len(shape) == 1:
                nnz = int(shape[0])  # the values file must then hold as many
            expected = (n_rows + 1,) if part == "indptr" else (nnz,)
            if tuple(shape) != expected or found != dtype:
                raise StoreError(f"sparse activation file {file} holds {found} {tuple(shape)}, "
                                 f"expected {dtype} {expected}", CORRUPT_HINT)
            offsets.append(offset)
        store._layouts[key] = (*offsets, nnz)
    return store._layouts[key]


def shard_nnz(store, hookpoint: str, shard: int) -> int:
    """Stored values of one shard's CSR hookpoint (from the file header only)."""
    return csr_layout(store, hookpoint, shard)[3]


def read_sorted_csr(store, hookpoint: str, rows: np.ndarray) -> CSR:
    """Sorted global `rows` of a CSR hookpoint, values in the storage dtype.

    Per shard, one read of the indptr span covering the rows, then one read of indices and of values
    per run of consecutive rows (explicit reads, not memmaps, for the reason given in read_sorted_into).
    """
    width = store.widths[hookpoint]
    if rows.size and (rows[0] < 0 or rows[-1] >= store.n_rows):
        raise InputError(f"row indices must lie in [0, {store.n_rows}), got {rows[0]}..{rows[-1]}")
    shard_of = np.searchsorted(store.offsets, rows, side="right") - 1  # (n,) shard of each row
    bounds = np.flatnonzero(np.diff(shard_of)) + 1
    segments = np.split(np.arange(rows.size), bounds) if rows.size else []
    plans = []  # per shard: (shard, nnz start of each run, nnz end of each run, row counts within runs)
    counts = np.zeros(rows.size, dtype=np.int64)  # (n,) stored values of each row
    for seg in segments:
        shard = int(shard_of[seg[0]])
        indptr_at = csr_layout(store, hookpoint, shard)[0]
        local = rows[seg] - store.offsets[shard]
        lo, hi = int(local[0]), int(local[-1]) + 1
        span = np.empty(hi - lo + 1, dtype=INDPTR_DTYPE)  # indptr[lo..hi]
        with open(store.shards[shard].path / f"{hookpoint}.indptr.npy", "rb", buffering=0) as fh:
            read_exact(fh, indptr_at + lo * INDPTR_DTYPE.itemsize, byte_view(span))
        starts, ends = span[local - lo], span[local - lo + 1]
        counts[seg] = ends - starts
        # A run of consecutive rows is one contiguous range of stored values.
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        first = np.concatenate([[0], breaks])
        last = np.concatenate([breaks, [local.size]]) - 1
        plans.append((shard, starts[first], ends[last]))
    indptr = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=INDEX_DTYPE)
    data = np.empty(int(indptr[-1]), dtype=store.storage_dtype)
    at = 0  # where the next shard's values go in the output
    for shard, run_starts, run_ends in plans:
        _, indices_at, values_at, _ = csr_layout(store, hookpoint, shard)
        dst_starts = at + np.concatenate([[0], np.cumsum(run_ends - run_starts)])  # (n_runs + 1,)
        for dst, part, offset in ((indices, "indices", indices_at), (data, "values", values_at)):
            size = dst.dtype.itemsize
            with open(store.shards[shard].path / f"{hookpoint}.{part}.npy", "rb", buffering=0) as fh:
                for start, d0, d1 in zip(run_starts.tolist(), dst_starts[:-1].tolist(), dst_starts[1:].tolist(),
                                         strict=True):
                    read_exact(fh, offset + start * size, byte_view(dst[d0:d1]))
        at = int(dst_starts[-1])
    return CSR(indptr, indices, data, (rows.size, width))


def reduce_csr(x: CSR, starts: np.ndarray, counts: np.ndarray, how: str) -> np.ndarray:
    """Pool groups of consecutive CSR rows (beginning at `starts`) -> dense (n_groups, width) float32."""
    n_groups, width = starts.size, x.shape[1]
    if how == "last":
        return x.take(starts + counts - 1).toarray().astype(np.float32, copy=False)
    # key: (nnz,) flat (group, column) cell of each stored value; the output is only (n_groups, width).
    group_of_row = np.repeat(np.arange(n_groups, dtype=np.int64), counts)
    key = np.repeat(group_of_row, x.row_nnz()) * width + x.indices
    cells = n_groups * width
    if how == "mean":
        # float64 accumulation, as for dense pooling: long items summed in float32 lose precision.
        sums = np.bincount(key, weights=x.data.astype(np.float64), minlength=cells).reshape(n_groups, width)
        return (sums / counts[:, None]).astype(np.float32)
    best = np.full(cells, -np.inf, dtype=np.float32)
    np.maximum.at(best, key, x.data.astype(np.float32, copy=False))
    # A cell missing from some row of its group also holds an implicit zero there.
    seen = np.bincount(key, minlength=cells)
    full = seen == np.repeat(counts, width)
    return np.where(full, best, np.maximum(best, 0)).reshape(n_groups, width)
