"""Shuffled, resumable batches over stores far larger than RAM: "blocks then buffer".

The selected rows are cut into blocks of `block_rows` consecutive rows; an epoch visits the blocks in
a permutation seeded by (seed, epoch). Consecutive groups of blocks form buffers of about
`buffer_rows` rows: a buffer is read with sequential reads, its rows are permuted (seeded by seed,
epoch and the buffer number) and batches are cut from the resulting flat stream. The stream order
depends only on the row count and the settings, so `start_batch` resumes an epoch exactly, and memory
stays near one buffer (two with `prefetch`, which reads the next buffer while batches are consumed).
Mixing is local: a batch draws rows from the blocks of one or two buffers; larger buffers mix better.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .csr import CSR, vstack
from .format import FORMAT_CSR, decode


@dataclass
class Batch:
    """One batch: global row indices and each hookpoint's activations for those rows."""

    index: int  # batch number within the epoch; resume with start_batch=index + 1
    rows: np.ndarray  # (B,) int64 global row indices
    # hookpoint -> (B, width) float32, or the storage dtype with raw=True; a CSR for sparse hookpoints
    # streamed with sparse=True
    acts: dict[str, np.ndarray | CSR]

    def __len__(self) -> int:
        return int(self.rows.size)


@dataclass(frozen=True)
class EpochPlan:
    """The visiting order of one epoch, computed without reading any activations."""

    n: int  # number of selected rows
    block_rows: int
    blocks_per_buffer: int
    block_order: np.ndarray  # (n_blocks,) block numbers in visiting order
    buffer_starts: np.ndarray  # (n_buffers + 1,) stream position where each buffer starts
    shuffle: bool
    seed: int
    epoch: int

    @property
    def n_buffers(self) -> int:
        return self.buffer_starts.size - 1

    def buffer_positions(self, k: int) -> np.ndarray:
        """Positions (indices into the selected rows) of buffer `k`, in stream order."""
        blocks = np.sort(self.block_order[k * self.blocks_per_buffer:(k + 1) * self.blocks_per_buffer])
        pos = np.concatenate([np.arange(b * self.block_rows, min((b + 1) * self.block_rows, self.n))
                              for b in blocks.tolist()] or [np.empty(0, dtype=np.int64)])
        if self.shuffle:
            # [seed, epoch, 1, k] never equals the block-order key [seed, epoch, 0] (SeedSequence
            # ignores trailing zeros, so the tag must sit before k).
            pos = pos[np.random.default_rng([self.seed, self.epoch, 1, k]).permutation(pos.size)]
        return pos.astype(np.int64, copy=False)


def plan_epoch(n: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
               buffer_rows: int = 65536, block_rows: int = 2048) -> EpochPlan:
    """The block order and buffer boundaries of one epoch over `n` selected rows."""
    for name, value in (("buffer_rows", buffer_rows), ("block_rows", block_rows)):
        if int(value) < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if int(seed) < 0 or int(epoch) < 0:
        raise InputError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
    n_blocks = -(-n // block_rows)
    order = np.arange(n_blocks, dtype=np.int64)
    if shuffle:
        order = np.random.default_rng([int(seed), int(epoch), 0]).permutation(n_blocks)
    per_buffer = max(1, int(buffer_rows) // int(block_rows))
    sizes = np.full(n_blocks, block_rows, dtype=np.int64)
    if n_blocks:
        sizes[-1] = n - (n_blocks - 1) * block_rows  # only the last block can be short
    buffer_sizes = np.add.reduceat(sizes[order], np.arange(0, n_blocks, per_buffer)) if n_blocks else sizes
    starts = np.concatenate([[0], np.cumsum(buffer_sizes)]).astype(np.int64)
    return EpochPlan(n, int(block_rows), per_buffer, order, starts, bool(shuffle), int(seed), int(epoch))


def epoch_order(n: int, **plan_options) -> np.ndarray:
    """The whole stream order of one epoch as positions into the selected rows (for tests, small stores)."""
    plan = plan_epoch(n, **plan_options)
    parts = [plan.buffer_positions(k) for k in range(plan.n_buffers)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def iter_batches(store, hookpoints: str | Sequence[str], batch_size: int, *, rows: np.ndarray | None = None,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, buffer_rows: int = 65536,
                 block_rows: int = 2048, start_batch: int = 0, drop_last: bool = False, raw: bool = False,
                 prefetch: bool = True, sparse: bool = False, part: tuple[int, int] | None = None
                 ) -> Iterator[Batch]:
    """Batches over the selected `rows` (default: all), each selected row exactly once per epoch.

    With `sparse`, CSR hookpoints come as CSR batches; otherwise every hookpoint comes dense. With `part` =
    (rank, world), only that rank's share of every batch is read and yielded: batch positions [batch_size * rank
    // world, batch_size * (rank + 1) // world), so the ranks' shares, in rank order, are the batch (with
    `drop_last`, every rank gets the same number of batches).
    """
    names = [hookpoints] if isinstance(hookpoints, str) else list(hookpoints)
    if not names:
        raise InputError("stream() needs at least one hookpoint")
    for name in names:
        store._check_hookpoint(name)
    if int(batch_size) < 1 or int(start_batch) < 0:
        raise InputError(f"batch_size must be >= 1 and start_batch >= 0, got {batch_size}, {start_batch}")
    selected = check_rows(rows, store.n_rows)
    n = store.n_rows if selected is None else selected.size
    plan = plan_epoch(n, shuffle, seed, epoch, buffer_rows, block_rows)
    share = (0, int(batch_size))
    if part is not None:
        rank, world = (int(v) for v in part)
        if not (0 <= rank < world <= batch_size):
            raise InputError(f"part {part} of batches of {batch_size}: need 0 <= rank < world <= batch_size")
        share = (batch_size * rank // world, batch_size * (rank + 1) // world)
    # Validation above runs at call time; reading starts on the first next().
    return _batches(store, names, int(batch_size), plan, selected, int(start_batch), drop_last, raw, prefetch,
                    bool(sparse), share)


def check_rows(rows: np.ndarray | None, n_rows: int) -> np.ndarray | None:
    """Validate a row selection: strictly increasing global indices within the store."""
    if rows is None:
        return None
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise InputError(f"rows must be a 1-D array of row indices, got {rows.dtype} {rows.shape}")
    rows = rows.astype(np.int64, copy=False)
    if rows.size and (rows[0] < 0 or rows[-1] >= n_rows or np.any(rows[1:] <= rows[:-1])):
        raise InputError(f"rows must be strictly increasing indices in [0, {n_rows})",
                         "pass np.unique(rows), e.g. the result of store.select()")
    return rows


def _batches(store, names: list[str], batch_size: int, plan: EpochPlan, selected: np.ndarray | None,
             start_batch: int, drop_last: bool, raw: bool, prefetch: bool, sparse: bool,
             share: tuple[int, int]) -> Iterator[Batch]:
    n_batches = plan.n // batch_size if drop_last else -(-plan.n // batch_size)
    if start_batch >= n_batches:
        return
    skip, end = start_batch * batch_size, min(plan.n, n_batches * batch_size)
    starts = plan.buffer_starts
    first = int(np.searchsorted(starts, skip, side="right")) - 1
    stop = int(np.searchsorted(starts, end, side="left"))  # buffers first..stop-1 hold [skip, end)

    def load(k: int):
        # Only the part of buffer k inside [skip, end) is read, so resuming reads nothing it skips.
        lo, hi = max(skip, starts[k]) - starts[k], min(end, starts[k + 1]) - starts[k]
        pos = plan.buffer_positions(k)[lo:hi]
        if share != (0, batch_size):  # this rank's positions of every batch only
            offset = (starts[k] + lo + np.arange(pos.size)) % batch_size
            pos = pos[(offset >= share[0]) & (offset < share[1])]
        wanted = pos if selected is None else selected[pos]  # (m,) global rows in stream order
        order = np.argsort(wanted, kind="stable")
        where = np.empty_like(order)
        where[order] = np.arange(order.size)  # stream position -> row of the sorted read buffer
        bufs = {}
        for name in names:
            if store.formats[name] == FORMAT_CSR:  # buffered sparse: a dense buffer may not fit in memory
                bufs[name] = store.read_sorted_csr(name, wanted[order])
                continue
            bufs[name] = np.empty((wanted.size, store.widths[name]), dtype=store.storage_dtype)
            store.read_sorted_into(name, wanted[order], bufs[name])
        return wanted, where, bufs

    def piece_of(buf: np.ndarray | CSR, idx: np.ndarray) -> np.ndarray | CSR:
        if isinstance(buf, CSR):
            piece = buf.take(idx)
            piece = piece if raw else piece.with_data(decode(piece.data, store.dtype))
            return piece if sparse else piece.toarray()
        return buf[idx] if raw else decode(buf[idx], store.dtype)

    def submit(pool, k: int) -> Future:
        if pool is not None:
            return pool.submit(load, k)
        done: Future = Future()
        done.set_result(load(k))
        return done

    index, fill, size = start_batch, 0, share[1] - share[0]  # rows per (full) batch of this share
    parts_rows: list[np.ndarray] = []
    parts_acts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with ThreadPoolExecutor(1, thread_name_prefix="store-prefetch") if prefetch else nullcontext() as pool:
        future = submit(pool, first)
        for k in range(first, stop):
            wanted, where, bufs = future.result()
            if k + 1 < stop:
                future = submit(pool, k + 1)
            i = 0
            while i < wanted.size:
                take = min(size - fill, wanted.size - i)
                idx = where[i:i + take]
                parts_rows.append(wanted[i:i + take])
                for name in names:
                    parts_acts[name].append(piece_of(bufs[name], idx))
                fill += take
                i += take
                if fill == size:
                    yield _batch(index, parts_rows, parts_acts)
                    index, fill = index + 1, 0
            del wanted, where, bufs  # let the buffer go before the next one is taken
    if fill:
        yield _batch(index, parts_rows, parts_acts)


def _batch(index: int, parts_rows: list[np.ndarray], parts_acts: dict[str, list]) -> Batch:
    # A batch spans at most a few pieces (one per buffer it crosses); concatenate and reset them.
    rows = parts_rows[0] if len(parts_rows) == 1 else np.concatenate(parts_rows)
    acts = {name: p[0] if len(p) == 1 else vstack(p) if isinstance(p[0], CSR) else np.concatenate(p)
            for name, p in parts_acts.items()}
    parts_rows.clear()
    for p in parts_acts.values():
        p.clear()
    return Batch(index, rows, acts)
