"""Per-item views of a store: the item table, and activations pooled over each item's rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from .format import FORMAT_CSR
from .schema import arrow_type
from .sparse_read import reduce_csr
from .stream import check_rows

POOLS = ("mean", "max", "last")
CHUNK_ROWS = 65536  # rows decoded at once while pooling; whole items only, so a longer item goes alone
# Sparse pooling scatters into (items, width) float64 cells; cap the items per chunk so that stays small.
CHUNK_CELLS = 2**22


def _shard_items(store, shard: int) -> pa.Table:
    """item_id and per-item metadata of one shard's items (their first rows), plus n_frames."""
    info = store.shards[shard]
    counts = np.asarray(info.item_rows, dtype=np.int64)
    firsts = np.cumsum(counts) - counts  # (n_items,) first local row of each item
    table = store.shard_metadata(shard, ["item_id", *store.item_columns]).take(pa.array(firsts))
    table = table.append_column("n_frames", pa.array(counts, pa.int64()))
    table = table.append_column("shard", pa.array(np.full(counts.size, shard, dtype=np.int32)))
    return table.append_column("row_start", pa.array(firsts + store.offsets[shard]))


def _empty_items(store) -> pa.Table:
    fields = [("item_id", pa.string())]
    fields += [(c, arrow_type(store.metadata_columns[c])) for c in store.item_columns]
    fields += [("n_frames", pa.int64()), ("shard", pa.int32()), ("row_start", pa.int64())]
    return pa.schema(fields).empty_table()


def item_table(store) -> pa.Table:
    """One row per item in store order: item_id, per-item metadata, n_frames, shard, row_start."""
    tables = [_shard_items(store, shard) for shard in range(store.n_shards)]
    return pa.concat_tables(tables) if tables else _empty_items(store)


def pool_items(store, hookpoints: str | Sequence[str], how: str = "mean", rows: np.ndarray | None = None,
               progress: ProgressFactory = no_progress) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Pool each item's selected rows (all rows by default) into one float32 vector per hookpoint.

    Items without selected rows are left out; the item table's n_frames counts the pooled rows.
    """
    names = [hookpoints] if isinstance(hookpoints, str) else list(hookpoints)
    for name in names:
        store._check_hookpoint(name)
    if how not in POOLS:
        raise InputError(f"unknown pooling {how!r}", f"use one of: {', '.join(POOLS)}")
    selected = check_rows(rows, store.n_rows)
    sparse_widths = [store.widths[name] for name in names if store.formats[name] == FORMAT_CSR]
    max_groups = max(1, CHUNK_CELLS // max(sparse_widths)) if sparse_widths else None
    tables, outs = [], {name: [] for name in names}
    with progress(f"Pooling ({how})", store.n_shards) as tracker:
        for shard, info in enumerate(store.shards):
            first_row = int(store.offsets[shard])
            if selected is None:
                local = np.arange(info.n_rows, dtype=np.int64)
            else:
                lo, hi = np.searchsorted(selected, store.offsets[shard:shard + 2])
                local = selected[lo:hi] - first_row
            if local.size:
                # codes: (m,) shard-local item number of each selected row; items are contiguous runs.
                codes = np.repeat(np.arange(len(info.items)), info.item_rows)[local]
                group_starts = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1])
                counts = np.diff(np.append(group_starts, local.size))
                for g0, g1 in item_chunks(counts, CHUNK_ROWS, max_groups):
                    r0 = int(group_starts[g0])
                    r1 = int(group_starts[g1]) if g1 < group_starts.size else local.size
                    rel = group_starts[g0:g1] - r0
                    for name in names:
                        if store.formats[name] == FORMAT_CSR:  # never densify the chunk's rows
                            x = store.read_rows_sparse(name, local[r0:r1] + first_row)
                            outs[name].append(reduce_csr(x, rel, counts[g0:g1], how))
                            continue
                        x = store.read_rows(name, local[r0:r1] + first_row)  # (r1 - r0, width) float32
                        outs[name].append(_reduce(x, rel, counts[g0:g1], how))
                table = _shard_items(store, shard).take(pa.array(codes[group_starts]))
                table = table.set_column(table.schema.get_field_index("n_frames"), "n_frames",
                                         pa.array(counts, pa.int64()))
                tables.append(table.drop_columns(["shard", "row_start"]))
            tracker.advance(1)
    items = pa.concat_tables(tables) if tables else _empty_items(store).drop_columns(["shard", "row_start"])
    acts = {name: np.concatenate(parts) if parts else np.zeros((0, store.widths[name]), np.float32)
            for name, parts in outs.items()}
    return items, acts


def item_chunks(counts: np.ndarray, limit: int, max_groups: int | None = None) -> list[tuple[int, int]]:
    """Split groups (with `counts` rows each) into consecutive runs of at most `limit` rows (and `max_groups`)."""
    bounds, total = [0], 0
    for i, count in enumerate(counts.tolist()):
        if total and (total + count > limit or (max_groups is not None and i - bounds[-1] >= max_groups)):
            bounds.append(i)
            total = 0
        total += count
    bounds.append(counts.size)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _reduce(x: np.ndarray, starts: np.ndarray, counts: np.ndarray, how: str) -> np.ndarray:
    """Pool the groups of consecutive rows of `x` that begin at `starts` -> (n_groups, width) float32."""
    if how == "last":
        return x[starts + counts - 1]
    # One reduction per group: ufunc.reduceat along axis 0 measured 7-20x slower (numpy 2.4, 1024 to 16384
    # wide), even for groups of two rows.
    out = np.empty((starts.size, x.shape[1]), dtype=np.float32)
    for g, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
        group = x[start:start + count]
        # float64 accumulation for the mean: long items summed in float32 lose precision.
        out[g] = group.sum(axis=0, dtype=np.float64) / count if how == "mean" else group.max(axis=0)
    return out
