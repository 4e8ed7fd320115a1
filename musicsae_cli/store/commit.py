"""Write one shard into a temporary directory, fsync it, and rename it into place (the atomic commit)."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..artifacts import write_json
from .csr import CSR
from .format import INDEX_DTYPE, INDPTR_DTYPE, META_FILE, SHARD_FILE, TMP_PREFIX, shard_dirname, write_npy_header
from .schema import arrow_type


@dataclass
class PendingItem:
    """One validated item waiting in the writer's buffer, activations already in storage dtype."""

    item_id: str
    n_frames: int
    acts: dict[str, np.ndarray | CSR]  # hookpoint -> (n_frames, width) storage dtype: C-contiguous, or CSR
    frames: np.ndarray  # (n_frames,) int32
    time_s: np.ndarray | None  # (n_frames,) float64, or None when unknown
    item_meta: dict[str, object] = field(default_factory=dict)
    frame_meta: dict[str, pa.Array] = field(default_factory=dict)


def byte_view(a: np.ndarray) -> memoryview:
    """A flat byte view of a C-contiguous array (no copy)."""
    return memoryview(a.reshape(-1).view(np.uint8))


def fsync_path(path: Path) -> None:
    """fsync a file or, where the platform allows it, a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms; nothing more to do there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_shard(shards_dir: Path, index: int, items: list[PendingItem], widths: dict[str, int],
                storage: np.dtype, columns: dict[str, str], item_columns: list[str],
                sparse: frozenset[str] = frozenset()) -> dict:
    """Commit `items` as shard `index` and return its shard.json; nothing shows unless all succeeds.

    Hookpoints in `sparse` hold CSR items and are written as <name>.indptr/.indices/.values.npy.
    """
    tmp = shards_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        n_rows = sum(item.n_frames for item in items)
        for name, width in widths.items():
            if name in sparse:
                _write_csr(tmp, name, [item.acts[name] for item in items], storage, n_rows)
            else:
                _write_npy(tmp / f"{name}.npy", [item.acts[name] for item in items], storage, (n_rows, width))
        pq.write_table(meta_table(items, columns, item_columns), tmp / META_FILE)
        fsync_path(tmp / META_FILE)
        info = {
            "n_rows": n_rows,
            "items": [item.item_id for item in items],
            "item_rows": [item.n_frames for item in items],
            "hookpoints": list(widths),
            **({"sparse": sorted(sparse)} if sparse else {}),
            "columns": dict(columns),
            "item_columns": list(item_columns),
        }
        write_json(tmp / SHARD_FILE, info)  # atomic and fsynced
        fsync_path(tmp)
        os.rename(tmp, shards_dir / shard_dirname(index))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(shards_dir)  # make the rename itself durable
    return info


def _write_csr(tmp: Path, name: str, pieces: list[CSR], storage: np.dtype, n_rows: int) -> None:
    nnz = sum(p.nnz for p in pieces)
    # Each item's indptr restarts at 0: shift it by the values written before it, dropping its leading 0.
    bases = np.cumsum([0] + [p.nnz for p in pieces[:-1]]).tolist()
    indptr = [np.zeros(1, INDPTR_DTYPE)]
    indptr += [(p.indptr[1:] + base).astype(INDPTR_DTYPE) for p, base in zip(pieces, bases, strict=True)]
    _write_npy(tmp / f"{name}.indptr.npy", indptr, INDPTR_DTYPE, (n_rows + 1,))
    _write_npy(tmp / f"{name}.indices.npy", [p.indices for p in pieces], INDEX_DTYPE, (nnz,))
    _write_npy(tmp / f"{name}.values.npy", [p.data for p in pieces], storage, (nnz,))


def _write_npy(path: Path, pieces: list[np.ndarray], storage: np.dtype, shape: tuple[int, ...]) -> None:
    # Header first, then each item's rows: the shard is never concatenated in memory.
    with open(path, "wb") as fh:
        write_npy_header(fh, storage, shape)
        for piece in pieces:
            fh.write(byte_view(piece))
        fh.flush()
        os.fsync(fh.fileno())


def meta_table(items: list[PendingItem], columns: dict[str, str], item_columns: list[str]) -> pa.Table:
    """Row metadata of `items` with every column in `columns`, typed as the store currently types them."""
    counts = np.array([item.n_frames for item in items], dtype=np.int64)
    row_item = pa.array(np.repeat(np.arange(len(items)), counts))  # (n_rows,) item index of each row
    arrays: dict[str, pa.Array] = {
        "item_id": pa.array([item.item_id for item in items], pa.string()).take(row_item),
        "frame": pa.array(np.concatenate([item.frames for item in items]), pa.int32()),
        "time_s": pa.concat_arrays([
            pa.array(item.time_s, pa.float64()) if item.time_s is not None
            else pa.nulls(item.n_frames, pa.float64()) for item in items
        ]),
    }
    for name, type_name in columns.items():
        if name in arrays:
            continue
        target = arrow_type(type_name)
        if name in item_columns:
            values = pa.array([item.item_meta.get(name) for item in items], target)
            arrays[name] = values.take(row_item)  # broadcast each item's value over its rows
        else:
            arrays[name] = pa.concat_arrays([
                item.frame_meta[name].cast(target) if name in item.frame_meta
                else pa.nulls(item.n_frames, target) for item in items
            ])
    return pa.table(arrays)
