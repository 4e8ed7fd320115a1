"""Encode an activation store with an SAE into a latent store: the same rows and metadata, one CSR hookpoint.

The latent store is an ordinary activation store whose only hookpoint, "<hookpoint>.sae" (width d_sae), is
stored as CSR, so probes and analyses read raw activations and SAE latents through one reader. It is
written item by item in source row order, committed shard by shard, and resumable like any store.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, MusicSAEError
from ..progress import ProgressFactory, no_progress
from ..results import Result, internal
from ..store import CSR, ActivationStore, StoreWriter
from ..store.csr import vstack
from ..store.pool import item_chunks
from ..store.prepare import resume_or_refuse
from ..store.ranks import StoreRun
from ..store.schema import BASE_COLUMNS
from ..store.writer import DEFAULT_SHARD_BYTES
from .data import pick_hookpoint

LATENT_SUFFIX = ".sae"
LATENT_DTYPES = ("float32", "float16")
PRECISIONS = ("fp32", "bf16")
# Settings that do not change what the latent store holds; a rerun may change them and still resume.
_RUNTIME_ONLY = ("batch_size", "device", "shard_bytes")
_SHOWN_BAD_ROWS = 5
_COUNT_CHUNK = 2**24  # stored indices counted at once when summarising


@dataclasses.dataclass(kw_only=True)
class EncodeResult(Result):
    """What `sae encode` reports: the latent store written and a summary of its latents."""

    out: str
    source_store: str
    hookpoint: str
    latent_hookpoint: str
    d_sae: int
    dtype: str
    rows_encoded: int
    items_resumed: int
    rows: int
    items: int
    mean_l0: float
    dead_latents: int
    seconds: float = internal()

    def lines(self) -> list[str]:
        return [self.out, ", ".join(f"{k}: {v}" for k, v in self.to_json().items())]


def encode_store(sae, store_path: str | Path, out: str | Path, hookpoint: str | None = None,
                 where: list[str] | None = None, batch_size: int = 4096, overwrite: bool = False,
                 device: str = "cpu", progress: ProgressFactory = no_progress, sae_info: dict | None = None,
                 dtype: str = "float32", shard_bytes: int = DEFAULT_SHARD_BYTES,
                 precision: str = "fp32") -> EncodeResult:
    """Write the SAE latents of the rows of `store_path` matching `where` into a latent store at `out`.

    `sae` needs `spec.d_in`, `spec.d_sae`, `encode(x) -> (B, d_sae)` and may offer `encode_sparse(x) ->
    (values, indices)` (each (B, k)) or None; it is moved to `device`. `dtype` is the latent store's value
    dtype (float32 or float16); `shard_bytes` caps a shard's size; `precision` "bf16" runs the encoder under
    bf16 autocast (fp32 weights; the selection carries the bf16 matmul's rounding). An interrupted run resumes
    when rerun with the same settings; a complete output is refused unless `overwrite`. Returns a summary.
    """
    t0 = time.perf_counter()
    if dtype not in LATENT_DTYPES:
        raise InputError(f"unsupported latent store dtype {dtype!r}", f"use one of: {', '.join(LATENT_DTYPES)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", f"use one of: {', '.join(PRECISIONS)}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    source = ActivationStore.open(store_path)
    if Path(out).resolve() == source.path.resolve():
        raise InputError(f"the latent store would replace its source {source.path}", "choose another output path")
    where = [where] if isinstance(where, str) else list(where or [])
    hookpoint = pick_hookpoint(source, hookpoint)
    d_in, d_sae = int(sae.spec.d_in), int(sae.spec.d_sae)
    if source.widths[hookpoint] != d_in:
        raise InputError(f"hookpoint {hookpoint!r} of {source.path} has width {source.widths[hookpoint]}, "
                         f"but the SAE expects d_in={d_in}", "encode the hookpoint the SAE was trained on")
    rows = source.select(where)
    if rows.size == 0:
        raise InputError(f"no rows of {source.path} match {where}",
                         "check the filters against `musicsae info STORE`")
    latent = hookpoint + LATENT_SUFFIX
    record = {"mode": "encode", "source_store": str(Path(store_path).resolve()), "hookpoint": hookpoint,
              "latent_hookpoint": latent, "where": where, "d_in": d_in, "d_sae": d_sae,
              "dtype": dtype, "sae": dict(sae_info or {}), "batch_size": int(batch_size), "device": str(device),
              "shard_bytes": int(shard_bytes)}
    if precision != "fp32":  # recorded only when not the default, so runs from before the option still resume
        record["precision"] = precision
    encoder = _Encoder(sae, device, int(batch_size), precision)  # before the writer takes its lock
    # on several ranks each encodes a contiguous block of the source's items into its part (see store.ranks)
    store = StoreRun(lambda: _open_writer(Path(out), source, latent, d_sae, dtype, record, overwrite),
                     _store_arguments(source, latent, d_sae, dtype, record),
                     {k: v for k, v in record.items() if k not in _RUNTIME_ONLY},
                     [str(source.path), str(source.n_rows), str(source.n_items)])
    resumed = len(store.done)
    items = [item for shard in source.shards for item in shard.items]
    mine = frozenset(store.mine(items)) if store.d.active else None
    stats = {"rows": 0}
    with store, progress("Encoding", int(rows.size) if mine is None else _rows_of(source, rows, mine)) as tracker:
        for shard in range(source.n_shards):
            stats["rows"] += _encode_shard(source, shard, rows, hookpoint, latent, encoder, store.writer,
                                           store.done, mine, tracker)
        stats, _, _, _ = store.finish(stats, [], lambda skipped: InputError("no rows were encoded"))
    n_encoded = stats["rows"]
    summary = latent_summary(ActivationStore.open(out), latent)
    return EncodeResult(out=str(out), source_store=str(source.path), hookpoint=hookpoint, latent_hookpoint=latent,
                        d_sae=d_sae, dtype=dtype, rows_encoded=n_encoded, items_resumed=resumed, **summary,
                        seconds=round(time.perf_counter() - t0, 3))


def latent_summary(store: ActivationStore, hookpoint: str) -> dict:
    """rows, items, mean L0 (stored values per row) and dead latents (never stored) of a CSR hookpoint."""
    counts = np.zeros(store.widths[hookpoint], dtype=np.int64)  # (d_sae,) rows each latent fires on
    for shard in range(store.n_shards):
        indices = store.sparse_arrays(hookpoint, shard)[1]
        for start in range(0, indices.size, _COUNT_CHUNK):  # bounded memory on large shards
            counts += np.bincount(indices[start:start + _COUNT_CHUNK], minlength=counts.size)
        del indices
    nnz = int(counts.sum())
    return {"rows": store.n_rows, "items": store.n_items,
            "mean_l0": nnz / store.n_rows if store.n_rows else 0.0, "dead_latents": int((counts == 0).sum())}


class _Encoder:
    """Runs the SAE on float32 row blocks and returns CSR latents, never a dense (B, d_sae) when it can."""

    def __init__(self, sae, device: str, batch_size: int, precision: str = "fp32"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.bf16 = precision == "bf16"
        self.sae = sae.to(self.device)
        self.d_sae = int(sae.spec.d_sae)
        self.batch_size = batch_size

    def __call__(self, x: np.ndarray) -> CSR:
        """(m, d_in) float32 -> CSR (m, d_sae) float32 of the non-zero latents."""
        parts = []
        with self.torch.inference_mode(), self.torch.autocast(self.device.type, dtype=self.torch.bfloat16,
                                                              enabled=self.bf16):
            for start in range(0, x.shape[0], self.batch_size):
                xb = self.torch.from_numpy(x[start:start + self.batch_size]).to(self.device)  # (B, d_in)
                parts.append(self._batch(xb))
        return vstack(parts)

    def _batch(self, xb) -> CSR:
        n = xb.shape[0]
        sparse = self.sae.encode_sparse(xb) if hasattr(self.sae, "encode_sparse") else None
        if sparse is not None:
            values, indices = sparse  # (B, k) each; the store writer sorts columns and drops zeros
            k = values.shape[1]
            indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
            return CSR(indptr, indices.reshape(-1).to(self.torch.int32).cpu().numpy(),
                       values.reshape(-1).float().cpu().numpy(), (n, self.d_sae))
        latents = self.sae.encode(xb).float()  # (B, d_sae)
        if tuple(latents.shape) != (n, self.d_sae):
            raise MusicSAEError(f"the SAE encoded {n} rows to shape {tuple(latents.shape)}, "
                                f"expected ({n}, {self.d_sae})")
        nz = latents != 0
        where = nz.nonzero()  # (nnz, 2) (row, latent), row-major: already canonical CSR order
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(nz.sum(dim=1).cpu().numpy(), out=indptr[1:])
        return CSR(indptr, where[:, 1].to(self.torch.int32).cpu().numpy(), latents[nz].cpu().numpy(),
                   (n, self.d_sae))


def _rows_of(source: ActivationStore, rows: np.ndarray, items: frozenset) -> int:
    """How many of the selected `rows` belong to `items`."""
    owner = np.concatenate([np.repeat([i in items for i in s.items], s.item_rows) for s in source.shards])
    return int(owner[rows].sum())


def _encode_shard(source: ActivationStore, shard: int, rows: np.ndarray, hookpoint: str, latent: str,
                  encode: _Encoder, writer: StoreWriter, done_items, mine: frozenset | None, tracker) -> int:
    """Encode the selected, not yet committed items of one shard (of them, those in `mine` when given); returns
    the rows encoded."""
    info, first_row = source.shards[shard], int(source.offsets[shard])
    lo, hi = np.searchsorted(rows, source.offsets[shard:shard + 2])
    local = rows[lo:hi] - first_row  # (m,) selected shard-local rows
    if not local.size:
        return 0
    codes = np.repeat(np.arange(len(info.items)), info.item_rows)[local]  # (m,) item number of each row
    starts = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1])  # first row of each item's run
    counts = np.diff(np.append(starts, local.size))
    if mine is not None:  # another rank's items are not this one's to encode, nor to count
        keep = np.array([info.items[c] in mine for c in codes[starts].tolist()], dtype=bool)
        if not keep.any():
            return 0
        local = local[np.repeat(keep, counts)]
        codes = codes[np.repeat(keep, counts)]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1])
        counts = np.diff(np.append(starts, local.size))
    todo = np.array([info.items[c] not in done_items for c in codes[starts].tolist()], dtype=bool)
    tracker.advance(int(counts[~todo].sum()))  # committed by an earlier run
    if not todo.any():
        return 0
    # Keep the rows of the items still to do; items stay contiguous runs.
    local = local[np.repeat(todo, counts)]
    starts, counts = np.cumsum(counts[todo]) - counts[todo], counts[todo]
    meta = source.shard_metadata(shard).take(local)  # (m, columns) row metadata of those rows
    done = 0
    chunks = [(g0, g1, int(starts[g0]), int(starts[g1]) if g1 < starts.size else local.size)
              for g0, g1 in item_chunks(counts, encode.batch_size)]
    parts = [local[r0:r1] + first_row for _, _, r0, r1 in chunks]
    for (g0, g1, r0, r1), x in zip(chunks, _prefetched(source, hookpoint, parts), strict=True):
        _check_finite(x, local[r0:r1] + first_row, meta.slice(r0, r1 - r0), hookpoint, source.path)
        latents = encode(x)
        if not np.isfinite(latents.data).all():
            bad = int(latents.row_ids()[~np.isfinite(latents.data)][0])
            raise MusicSAEError(f"the SAE produced non-finite latents for row {first_row + int(local[r0 + bad])}",
                                "the SAE weights may be corrupt; check them or retrain")
        for g in range(g0, g1):
            a, b = int(starts[g]), int(starts[g]) + int(counts[g])
            _add_item(writer, source, latent, latents.slice_rows(a - r0, b - r0), meta.slice(a, b - a))
        tracker.advance(r1 - r0)
        done += r1 - r0
    return done


def _prefetched(source: ActivationStore, hookpoint: str, parts: list[np.ndarray]):
    """The (n, d_in) float32 rows of each of `parts` (store row numbers), the next part read in a thread while
    this one encodes."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        reads = [pool.submit(source.read_rows, hookpoint, rows) for rows in parts[:1]]
        for i in range(len(parts)):
            if i + 1 < len(parts):  # the next part's read starts before this one is handed over
                reads.append(pool.submit(source.read_rows, hookpoint, parts[i + 1]))
            yield reads[i].result()
            reads[i] = None


def _add_item(writer: StoreWriter, source: ActivationStore, latent: str, latents: CSR, meta) -> None:
    item_columns = source.item_columns
    frame_columns = [c for c in source.metadata_columns if c not in BASE_COLUMNS and c not in item_columns]
    times = meta.column("time_s")
    writer.add_item(
        meta.column("item_id")[0].as_py(), {latent: latents},
        item_meta={c: meta.column(c)[0].as_py() for c in item_columns},
        frame_meta={c: _values(meta.column(c)) for c in frame_columns},
        time_s=None if times.null_count == len(times) else times.to_numpy(zero_copy_only=False),
        frames=meta.column("frame").to_numpy(),
    )


def _values(column):
    # Null-free columns convert directly; with nulls, Python values keep ints ints (numpy would make NaNs).
    return column.to_numpy(zero_copy_only=False) if column.null_count == 0 else column.to_pylist()


def _check_finite(x: np.ndarray, rows: np.ndarray, meta, hookpoint: str, path: Path) -> None:
    finite = np.isfinite(x).all(axis=1)  # (m,)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    item_ids = meta.column("item_id")
    shown = ", ".join(f"row {int(rows[i])} (item {item_ids[int(i)].as_py()!r})" for i in bad[:_SHOWN_BAD_ROWS])
    more = f" and {bad.size - _SHOWN_BAD_ROWS} more in this block" if bad.size > _SHOWN_BAD_ROWS else ""
    raise MusicSAEError(f"non-finite activations (NaN/Inf) in {hookpoint!r} of {path}: {shown}{more}",
                        "exclude those items with --where (e.g. item_id!=ID) or re-extract them; "
                        "items before them are kept and a rerun resumes")


def _open_writer(out: Path, source: ActivationStore, latent: str, d_sae: int, dtype: str, record: dict,
                 overwrite: bool) -> StoreWriter:
    """A writer for `out`: new, replacing a store (`overwrite`), or resuming an interrupted run of the same job."""
    resume = resume_or_refuse(out, record, _RUNTIME_ONLY, "latent store", overwrite)
    return StoreWriter.create(out, **_store_arguments(source, latent, d_sae, dtype, record), overwrite=overwrite,
                              resume=resume)


def _store_arguments(source: ActivationStore, latent: str, d_sae: int, dtype: str, record: dict) -> dict:
    return {"hookpoints": {latent: d_sae}, "dtype": dtype, "model": source.model, "frame_rate": source.frame_rate,
            "position_convention": source.position_convention, "config": record, "sparse": [latent],
            "shard_bytes": record["shard_bytes"]}
