"""ActivationStore: open a store, read its metadata and activations (float32 by default)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..artifacts import check_format_version
from ..errors import InputError, StoreError
from ..kinds import expect_kind
from ..progress import ProgressFactory, no_progress
from .csr import CSR
from .dense_read import read_dense_sorted
from .format import (
    CORRUPT_HINT,
    FORMAT_CSR,
    FORMAT_VERSION,
    META_FILE,
    STATUS_COMPLETE,
    STORE_KIND,
    committed_shard_dirs,
    decode,
    manifest_formats,
    read_shard_json,
    storage_dtype,
)
from .schema import conform
from .sparse_read import read_sorted_csr
from .stream import Batch, iter_batches


@dataclass(frozen=True)
class Shard:
    """One committed shard: where it is, and which items (in order) its rows belong to."""

    index: int
    path: Path
    n_rows: int
    items: tuple[str, ...]
    item_rows: tuple[int, ...]


class ActivationStore:
    """Read access to a store; create with :meth:`open`. Safe to share between threads."""

    def __init__(self, root: Path, manifest: dict, shards: list[Shard]):
        # Private: use ActivationStore.open(), which validates the manifest and the shards.
        self.path = root
        self.manifest = manifest
        self.shards = shards
        self.widths: dict[str, int] = {name: int(h["width"]) for name, h in manifest["hookpoints"].items()}
        self.formats: dict[str, str] = manifest_formats(manifest)  # hookpoint -> "dense" | "csr"
        self.dtype: str = manifest["dtype"]
        self.storage_dtype = storage_dtype(self.dtype)
        # offsets[i] is the global index of shard i's first row; offsets[-1] == n_rows.
        self.offsets = np.concatenate([[0], np.cumsum([s.n_rows for s in shards])]).astype(np.int64)
        self._layouts: dict[tuple, object] = {}  # per (hookpoint, shard): checked file offsets

    @classmethod
    def open(cls, path: str | Path, allow_incomplete: bool = False) -> ActivationStore:
        """Open a complete store; StoreError when it is not one, is newer, or is still being written."""
        root = Path(path)
        manifest = expect_kind(root, STORE_KIND)
        check_format_version(manifest, FORMAT_VERSION, f"activation store {root}")
        status = manifest.get("status")
        if status != STATUS_COMPLETE and not allow_incomplete:
            raise StoreError(f"activation store {root} is incomplete (status {status!r}, "
                             f"{manifest.get('n_items', 0)} items committed so far)",
                             "rerun the command that wrote it to resume it")
        shards = []
        for index, shard_dir in enumerate(committed_shard_dirs(root)):
            info = read_shard_json(shard_dir)
            shards.append(Shard(index, shard_dir, int(info["n_rows"]), tuple(info["items"]),
                                tuple(int(n) for n in info["item_rows"])))
        if status == STATUS_COMPLETE and len(shards) != manifest.get("n_shards"):
            raise StoreError(f"activation store {root} lists {manifest.get('n_shards')} shards "
                             f"but holds {len(shards)}", CORRUPT_HINT)
        return cls(root, manifest, shards)

    @property
    def hookpoints(self) -> list[str]:
        return list(self.widths)

    def hookpoint_format(self, hookpoint: str) -> str:
        """How `hookpoint` is stored: "dense" or "csr"."""
        self._check_hookpoint(hookpoint)
        return self.formats[hookpoint]

    def is_sparse(self, hookpoint: str) -> bool:
        """True when `hookpoint` is stored as CSR."""
        return self.hookpoint_format(hookpoint) == FORMAT_CSR

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_items(self) -> int:
        return sum(len(s.items) for s in self.shards)

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def frame_rate(self) -> float | None:
        return self.manifest.get("frame_rate")

    @property
    def position_convention(self) -> str | None:
        return self.manifest.get("position_convention")

    @property
    def model(self) -> dict:
        return self.manifest.get("model", {})

    @property
    def status(self) -> str:
        return self.manifest.get("status", "")

    @property
    def metadata_columns(self) -> dict[str, str]:
        """Column name -> arrow type string, for every row-metadata column."""
        return dict(self.manifest.get("metadata_columns", {}))

    @property
    def item_columns(self) -> list[str]:
        """The metadata columns given per item (constant over an item's rows)."""
        return list(self.manifest.get("item_columns", []))

    def shard_metadata(self, shard: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Row metadata of one shard, conformed to the store-wide schema."""
        wanted = self._columns(columns)
        path = self.shards[shard].path / META_FILE
        try:
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in wanted if c in present])
        except (OSError, pa.ArrowInvalid) as exc:  # deleted, truncated or not Parquet
            from .verify import VERIFY_HINT

            reason = "missing" if not path.exists() else f"unreadable ({str(exc).splitlines()[0]})"
            raise StoreError(f"metadata file {path} is {reason}", VERIFY_HINT) from None
        return conform(table, wanted)

    def iter_metadata(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Row metadata shard by shard (bounded memory for large stores)."""
        for shard in range(self.n_shards):
            yield self.shard_metadata(shard, columns)

    def metadata(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Row metadata of all rows in store order (columns missing from a shard are null there)."""
        tables = list(self.iter_metadata(columns))
        if not tables:
            return conform(pa.table({}), self._columns(columns))
        return pa.concat_tables(tables)

    def select(self, where: Sequence[str] | str | None) -> np.ndarray:
        """Sorted global row indices (int64) whose metadata match every filter ("genre=rock", "bpm>=100")."""
        from .filters import select_rows

        return select_rows(self, where)

    def array(self, hookpoint: str, shard: int) -> np.memmap:
        """One shard's activations as a read-only memmap in the storage dtype (bf16: uint16 bit patterns)."""
        if self.is_sparse(hookpoint):
            raise InputError(f"hookpoint {hookpoint!r} is sparse (CSR)", "use sparse_arrays() or read_rows()")
        return _memmap(self.shards[shard].path / f"{hookpoint}.npy")

    def sparse_arrays(self, hookpoint: str, shard: int) -> tuple[np.memmap, np.memmap, np.memmap]:
        """One shard's CSR arrays (indptr, indices, values) as read-only memmaps, values in the storage dtype."""
        if not self.is_sparse(hookpoint):
            raise InputError(f"hookpoint {hookpoint!r} is dense", "use array() or read_rows()")
        path = self.shards[shard].path
        return tuple(_memmap(path / f"{hookpoint}.{part}.npy") for part in ("indptr", "indices", "values"))

    def read_rows(self, hookpoint: str, rows: np.ndarray, raw: bool = False) -> np.ndarray:
        """Activations of global `rows` (any order) as float32 (n, width), or the storage dtype with `raw`.

        Sparse hookpoints come dense too; use read_rows_sparse() for large selections of them.
        """
        if self.is_sparse(hookpoint):
            return self.read_rows_sparse(hookpoint, rows, raw).toarray()
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        order = None
        if rows.size > 1 and np.any(rows[1:] < rows[:-1]):
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
        out = np.empty((rows.size, self._width(hookpoint)), dtype=self.storage_dtype)
        self.read_sorted_into(hookpoint, rows, out)
        if order is not None:
            unsorted = np.empty_like(out)
            unsorted[order] = out
            out = unsorted
        return out if raw else decode(out, self.dtype)

    def read_rows_sparse(self, hookpoint: str, rows: np.ndarray, raw: bool = False) -> CSR:
        """Rows of a sparse hookpoint (any order) as a CSR of float32 values (storage dtype with `raw`).

        The CSR has scipy's attributes (indptr, indices, data, shape, toarray); `.to_scipy()` converts.
        """
        if not self.is_sparse(hookpoint):
            raise InputError(f"hookpoint {hookpoint!r} is dense", "use read_rows() for dense hookpoints")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        order = np.argsort(rows, kind="stable") if rows.size > 1 and np.any(rows[1:] < rows[:-1]) else None
        out = self.read_sorted_csr(hookpoint, rows if order is None else rows[order])
        if order is not None:
            out = out.take(np.argsort(order))  # back to the requested order
        return out if raw else out.with_data(decode(out.data, self.dtype))

    def read_sorted_csr(self, hookpoint: str, rows: np.ndarray) -> CSR:
        """Sorted global `rows` of a sparse hookpoint as a CSR in the storage dtype."""
        self._check_hookpoint(hookpoint)
        return read_sorted_csr(self, hookpoint, rows)

    def read_sorted_into(self, hookpoint: str, rows: np.ndarray, out: np.ndarray) -> None:
        """Fill `out` (n, width) in the storage dtype with sorted global `rows`, reading contiguous runs.

        Explicit reads rather than memmaps: mapped pages count in the process RSS for as long as the
        map lives, so streaming a whole store through maps grows RSS toward the store size.
        """
        width = self._width(hookpoint)
        if out.shape != (rows.size, width) or out.dtype != self.storage_dtype or not out.flags.c_contiguous:
            raise InputError(f"output buffer must be C-contiguous {self.storage_dtype} {(rows.size, width)}, "
                             f"got {out.dtype} {out.shape}")
        if rows.size == 0:
            return
        if rows[0] < 0 or rows[-1] >= self.n_rows:
            raise InputError(f"row indices must lie in [0, {self.n_rows}), got {rows[0]}..{rows[-1]}")
        if self.formats[hookpoint] == FORMAT_CSR:
            csr = self.read_sorted_csr(hookpoint, rows)
            out[...] = 0
            out[csr.row_ids(), csr.indices] = csr.data
            return
        read_dense_sorted(self, hookpoint, rows, out)

    def stream(self, hookpoints: str | Sequence[str], batch_size: int, *, rows: np.ndarray | None = None,
               shuffle: bool = True, seed: int = 0, epoch: int = 0, buffer_rows: int = 65536,
               block_rows: int = 2048, start_batch: int = 0, drop_last: bool = False, raw: bool = False,
               prefetch: bool = True, sparse: bool = False, part: tuple[int, int] | None = None) -> Iterator[Batch]:
        """Batches of the selected rows, each once per epoch, in a resumable block-then-buffer shuffle.

        Same seed and epoch give the same batches; `start_batch` resumes there exactly. Memory stays
        near buffer_rows rows (twice that with `prefetch`), whatever the store size. See stream.py.
        Sparse hookpoints are buffered as CSR and densified per batch, or given as CSR with `sparse`. With
        `part` = (rank, world), only that rank's share of each batch (see stream.py).
        """
        return iter_batches(self, hookpoints, batch_size, rows=rows, shuffle=shuffle, seed=seed, epoch=epoch,
                            buffer_rows=buffer_rows, block_rows=block_rows, start_batch=start_batch,
                            drop_last=drop_last, raw=raw, prefetch=prefetch, sparse=sparse, part=part)

    def pool(self, hookpoints: str | Sequence[str], how: str = "mean", rows: np.ndarray | None = None,
             progress: ProgressFactory = no_progress) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """One vector per item (mean, max or last over its selected rows) plus the item table."""
        from .pool import pool_items

        return pool_items(self, hookpoints, how, rows, progress)

    def items(self) -> pa.Table:
        """One row per item: item_id, the per-item metadata, n_frames, shard and row_start."""
        from .pool import item_table

        return item_table(self)

    def describe(self) -> dict:
        """A JSON-ready summary of the store (for `musicsae info`)."""
        from .describe import describe_store

        return describe_store(self)

    def _columns(self, columns: Sequence[str] | None) -> dict[str, str]:
        known = self.metadata_columns
        if columns is None:
            return known
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise InputError(f"unknown metadata column(s): {', '.join(unknown)}",
                             f"columns: {', '.join(known)}")
        return {c: known[c] for c in columns}

    def _check_hookpoint(self, hookpoint: str) -> None:
        if hookpoint not in self.widths:
            raise InputError(f"hookpoint {hookpoint!r} is not in the store {self.path}",
                             f"stored hookpoints: {', '.join(self.widths)}")

    def _width(self, hookpoint: str) -> int:
        self._check_hookpoint(hookpoint)
        return self.widths[hookpoint]


def _memmap(path: Path) -> np.memmap:
    """A read-only memmap of a shard file; StoreError naming it when it is missing or truncated."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        from .verify import VERIFY_HINT

        reason = "missing" if not path.exists() else f"truncated or unreadable ({str(exc).splitlines()[0]})"
        raise StoreError(f"activation file {path} is {reason}", VERIFY_HINT) from None
