"""Reading dense hookpoints: selected rows with one explicit read per run of consecutive rows."""

from __future__ import annotations

import numpy as np

from ..errors import StoreError
from .commit import byte_view
from .format import CORRUPT_HINT, npy_layout, read_exact


def dense_offset(store, hookpoint: str, shard: int) -> int:
    """Data offset of one shard's <hookpoint>.npy, its shape and dtype checked once and cached."""
    key = (hookpoint, shard)
    if key not in store._layouts:
        path = store.shards[shard].path / f"{hookpoint}.npy"
        offset, shape, dtype = npy_layout(path)
        expected = (store.shards[shard].n_rows, store.widths[hookpoint])
        if tuple(shape) != expected or dtype != store.storage_dtype:
            raise StoreError(f"activation file {path} holds {dtype} {tuple(shape)}, "
                             f"expected {store.storage_dtype} {expected}", CORRUPT_HINT)
        store._layouts[key] = offset
    return store._layouts[key]


def read_dense_sorted(store, hookpoint: str, rows: np.ndarray, out: np.ndarray) -> None:
    """Fill `out` (n, width), storage dtype, C-contiguous, with sorted in-range global `rows`."""
    shard_of = np.searchsorted(store.offsets, rows, side="right") - 1  # (n,) shard of each row
    # A run ends where the next row is not the next on disk or lies in another shard.
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shard_of) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [rows.size]])
    row_bytes = store.widths[hookpoint] * store.storage_dtype.itemsize
    flat = byte_view(out)
    for shard in np.unique(shard_of[starts]):
        offset = dense_offset(store, hookpoint, int(shard))
        local0 = int(store.offsets[shard])
        in_shard = shard_of[starts] == shard
        with open(store.shards[shard].path / f"{hookpoint}.npy", "rb", buffering=0) as fh:
            for start, end in zip(starts[in_shard].tolist(), ends[in_shard].tolist(), strict=True):
                at = offset + (int(rows[start]) - local0) * row_bytes
                read_exact(fh, at, flat[start * row_bytes:end * row_bytes])
