"""The activation store: model-layer activations on disk, one row per audio frame (numpy + pyarrow only).

Layout of a store directory::

    manifest.json      kind="activation_store", format_version, status "writing" | "complete", model,
                       hookpoints {name: {"width": w} or {"width": w, "format": "csr"}}, dtype, frame_rate,
                       position_convention, n_rows, n_items, n_shards, metadata_columns {name: arrow type},
                       item_columns [names], config
    config.yaml        the resolved config
    .writer.lock       taken (flock) by the one live writer
    shards/00000/      a committed shard: <hookpoint>.npy (rows, width) per dense hookpoint; per CSR
                       hookpoint <hookpoint>.indptr.npy (rows + 1, int64), .indices.npy (nnz, int32) and
                       .values.npy (nnz, store dtype); meta.parquet (one row per activation row),
                       shard.json {n_rows, items, item_rows, hookpoints, columns, item_columns[, sparse]}
    shards/.tmp-*/     a shard being written, or garbage from a killed writer (removed on resume)

format_version: 2 when a store has a CSR hookpoint, else 1 (older releases still read dense stores); this
release reads both. CSR hookpoints (e.g. SAE latents: wide, few non-zeros per row) store each row's
non-zeros sorted by column, without explicit zeros.

dtypes: "float32" and "float16" are stored natively; "bfloat16" as '<u2' bit patterns (float32 rounded to
nearest even). Readers return float32 unless asked for the raw storage dtype (`raw=True`).

Row metadata: `item_id` (string), `frame` (int32), `time_s` (float64, null without a frame rate) plus the
writer's per-item fields (str/int/float/bool/None; e.g. source_path, group, genre, bpm) and per-frame
fields (e.g. stream="cond"/"uncond"). An item's rows are contiguous and never span two shards.

Writing::

    with StoreWriter.create(path, {"layers.3": 1024}, "float16", model={...}, frame_rate=50.0,
                            position_convention=..., config={...}, overwrite=False, resume=False,
                            shard_rows=None, shard_bytes=256 * 2**20, sparse=()) as w:
        for item in items:
            if item.id in w.done_items:      # committed by an earlier, interrupted run
                continue
            w.add_item(item.id, {"layers.3": acts}, item_meta={"genre": "rock"},
                       frame_meta={"stream": streams}, time_s=None, frames=None)   # -> False if 0 frames

A hookpoint named in `sparse` is stored as CSR; add_item takes for it a CSR (store.CSR or scipy.sparse),
a tuple (indptr, indices, values) or a dense array, all (n_frames, width).

A shard is written to shards/.tmp-<uuid>/, fsynced and renamed to shards/<index>/; the manifest is
rewritten after every commit. Leaving the `with` on an exception commits nothing pending and keeps
status "writing"; `create(..., resume=True)` then continues (it must be given the same hookpoints, widths,
sparse hookpoints, dtype, frame_rate and model). `overwrite=True` replaces only an existing store or an empty directory.

Reading::

    s = ActivationStore.open(path, allow_incomplete=False)
    s.hookpoints, s.widths, s.formats, s.dtype, s.n_rows, s.n_items, s.n_shards, s.frame_rate, s.manifest
    s.metadata(columns=None) -> pa.Table           s.items() -> pa.Table (one row per item)
    s.select(["stream=cond", "genre in rock,jazz", "bpm>=100"]) -> int64 global row indices
    s.hookpoint_format(hookpoint) -> "dense" | "csr"      s.is_sparse(hookpoint) -> bool
    s.read_rows(hookpoint, rows, raw=False) -> (n, width) float32 (dense, for sparse hookpoints too)
    s.read_rows_sparse(hookpoint, rows, raw=False) -> CSR (n, width), float32 values; .to_scipy() converts
    s.array(hookpoint, shard) -> memmap            s.sparse_arrays(hookpoint, shard) -> (indptr, indices, values)
    s.stream(hookpoints, batch_size, rows=None, shuffle=True, seed=0, epoch=0, buffer_rows=65536,
             block_rows=2048, start_batch=0, drop_last=False, raw=False, prefetch=True,
             sparse=False) -> Iterator[Batch]      (sparse=True: CSR hookpoints come as CSR batches)
    s.pool(hookpoints, how="mean" | "max" | "last", rows=None) -> (item table, {hookpoint: (n_items, width)})
    s.describe() -> dict                           (with hookpoint_formats and, for CSR, nnz per row)

Sparse hookpoints are buffered, read and pooled as CSR, never as a dense shard; only read_rows() and
dense stream batches materialise (rows, width).
"""

from .csr import CSR
from .filters import parse_where
from .format import FORMAT_VERSION, STORE_KIND, bf16_decode, bf16_encode, is_store
from .reader import ActivationStore, Shard
from .stream import Batch, EpochPlan, epoch_order, plan_epoch
from .writer import StoreWriter

__all__ = [
    "CSR",
    "FORMAT_VERSION",
    "STORE_KIND",
    "ActivationStore",
    "Batch",
    "EpochPlan",
    "Shard",
    "StoreWriter",
    "bf16_decode",
    "bf16_encode",
    "epoch_order",
    "is_store",
    "parse_where",
    "plan_epoch",
]
