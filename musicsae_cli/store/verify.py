"""Checks that a store's files are all there and whole, without trusting its manifest.

`problems(store)` reads every shard's index, every activation file's header (shape, dtype) and size, and every
metadata file's Parquet footer: cheap (no activation data is read) and enough to find a truncated, deleted or
swapped file. `deep=True` also reads the activation data and counts non-finite values. `check_files` raises
the first problem as a StoreError naming the file, for commands that should fail before they start work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StoreError
from .format import (
    CORRUPT_HINT,
    FORMAT_CSR,
    INDEX_DTYPE,
    INDPTR_DTYPE,
    META_FILE,
    committed_shard_dirs,
    hookpoint_files,
    read_shard_json,
)

VERIFY_HINT = CORRUPT_HINT


def problems(store, hookpoints: list[str] | None = None, deep: bool = False) -> list[str]:
    """One line per broken or missing file of `store` (empty when every checked file is whole)."""
    found = []
    on_disk = committed_shard_dirs(store.path)
    if store.status == "complete" and len(on_disk) != store.manifest.get("n_shards"):
        found.append(f"the manifest lists {store.manifest.get('n_shards')} shards, {len(on_disk)} are on disk")
    for shard in store.shards:
        try:
            info = read_shard_json(shard.path)
        except StoreError as exc:
            found.append(exc.message)
            continue
        n_rows = int(info["n_rows"])
        found += _metadata_problems(shard.path / META_FILE, n_rows)
        for hp in hookpoints or store.hookpoints:
            found += _hookpoint_problems(store, shard.path, hp, n_rows, deep)
    return found


def check_files(store, hookpoints: list[str] | None = None) -> None:
    """StoreError naming the first broken file of `hookpoints` (headers and sizes only)."""
    found = problems(store, hookpoints)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise StoreError(f"activation store {store.path} is damaged: {found[0]}{more}", VERIFY_HINT)


def verify_store(path: Path, manifest: dict) -> dict:
    """`musicsae info --verify` on a store: every shard's index and metadata, every activation value."""
    from ..errors import MusicSAEError
    from .reader import ActivationStore

    try:
        store = ActivationStore.open(path, allow_incomplete=True)
    except MusicSAEError as exc:
        return {"checked": "store manifest and shard indexes", "problems": [exc.message]}
    return {"checked": f"{store.n_shards} shards: indexes, metadata, every activation value",
            "problems": problems(store, deep=True)}


def _metadata_problems(path: Path, n_rows: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        return [f"{path}: missing"]
    try:
        rows = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        return [f"{path}: unreadable Parquet ({str(exc).splitlines()[0]})"]
    return [] if rows == n_rows else [f"{path}: {rows} rows, the shard holds {n_rows}"]


def _hookpoint_problems(store, shard_dir: Path, hookpoint: str, n_rows: int, deep: bool) -> list[str]:
    fmt = store.formats[hookpoint]
    found, nnz = [], None
    for name in hookpoint_files(hookpoint, fmt):
        path = shard_dir / name
        if not path.is_file():
            found.append(f"{path}: missing")
            continue
        part = name[len(hookpoint) + 1:-4] if fmt == FORMAT_CSR else "dense"
        expected_dtype = {"indptr": INDPTR_DTYPE, "indices": INDEX_DTYPE}.get(part, store.storage_dtype)
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:  # numpy refuses to map a file shorter than its header says
            found.append(f"{path}: truncated or unreadable ({str(exc).splitlines()[0]})")
            continue
        if part == "indices":
            nnz = array.shape[0]
        expected = {"dense": (n_rows, store.widths[hookpoint]), "indptr": (n_rows + 1,)}.get(part, (nnz,))
        if array.dtype != expected_dtype or (None not in expected and tuple(array.shape) != expected):
            found.append(f"{path}: holds {array.dtype} {tuple(array.shape)}, expected {expected_dtype} {expected}")
            continue
        if deep and part in ("dense", "values"):
            from .format import decode

            bad = 0
            for start in range(0, array.shape[0], 65536):  # bounded memory
                bad += int((~np.isfinite(decode(np.asarray(array[start:start + 65536]), store.dtype))).sum())
            if bad:
                found.append(f"{path}: {bad} non-finite values (NaN/Inf)")
    return found


__all__ = ["CORRUPT_HINT", "VERIFY_HINT", "check_files", "problems", "verify_store"]
