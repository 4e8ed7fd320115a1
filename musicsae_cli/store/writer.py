"""StoreWriter: append items to an activation store, one atomically committed shard at a time."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Set
from pathlib import Path

import numpy as np

from ..artifacts import MANIFEST_NAME, new_manifest, write_config, write_json
from ..errors import InputError, StoreError
from .commit import PendingItem, fsync_path, write_shard
from .csr import CSR, as_csr
from .format import (
    CORRUPT_HINT,
    DENSE_FORMAT_VERSION,
    FORMAT_CSR,
    FORMAT_VERSION,
    INDEX_DTYPE,
    INDPTR_DTYPE,
    SHARDS_DIR,
    STATUS_COMPLETE,
    STATUS_WRITING,
    STORE_KIND,
    committed_shard_dirs,
    encode,
    is_store,
    manifest_formats,
    read_shard_json,
    shard_dirname,
    storage_dtype,
)
from .prepare import (
    acquire_lock,
    check_overwritable,
    check_sparse,
    check_widths,
    holds_output,
    overwrite_stage,
    prepare_fresh,
    release_lock,
    replace_with,
    resume_state,
)
from .schema import BASE_COLUMNS, check_column_name, frame_array, scalar_type, unify

DEFAULT_SHARD_BYTES = 256 * 2**20


class StoreWriter:
    """Appends items to a store; use :meth:`create`, then as a context manager (close() on success)."""

    def __init__(self, root: Path, manifest: dict, lock: int | None, shard_rows: int | None,
                 shard_bytes: int, state: dict | None = None, target: Path | None = None, created: bool = False):
        # Private: StoreWriter.create() validates arguments and prepares the directory.
        self.path = root  # where the store is being written (the overwrite stage until close moves it)
        self._target = target  # with --overwrite: the old store this one replaces when complete
        self._created = created or target is not None  # this writer's folder: discarded if it ends with no rows
        self._manifest = manifest
        self._lock = lock
        self._shard_rows = shard_rows
        self._shard_bytes = shard_bytes
        self._widths = {name: int(h["width"]) for name, h in manifest["hookpoints"].items()}
        self._sparse = frozenset(name for name, fmt in manifest_formats(manifest).items() if fmt == FORMAT_CSR)
        self._dtype = manifest["dtype"]
        self._storage = storage_dtype(self._dtype)
        self._frame_rate = manifest.get("frame_rate")
        state = state or {}
        self._done: set[str] = state.get("done", set())
        self._n_rows = state.get("n_rows", 0)
        self._n_shards = state.get("n_shards", 0)
        self._columns: dict[str, str] = state.get("columns", dict(BASE_COLUMNS))
        self._item_columns: list[str] = state.get("item_columns", [])
        self._pending: list[PendingItem] = []
        self._pending_ids: set[str] = set()
        self._pending_rows = 0
        self._pending_bytes = 0
        self._closed = False

    @classmethod
    def create(cls, path: str | Path, hookpoints: Mapping[str, int], dtype: str = "float16", *,
               model: dict | None = None, frame_rate: float | None = None,
               position_convention: str | None = None, config: dict | None = None,
               overwrite: bool = False, resume: bool = False, shard_rows: int | None = None,
               shard_bytes: int = DEFAULT_SHARD_BYTES, sparse: Iterable[str] = ()) -> StoreWriter:
        """Start a new store at `path`, or with `resume` continue an interrupted one (see the package doc).

        With `overwrite`, an existing store at `path` stays intact while the new one is written beside it (in
        `overwrite_stage(path)`); close() moves the finished store into place. `overwrite` with `resume`
        continues an interrupted overwrite. Hookpoints named in `sparse` are stored as CSR (their add_item
        arrays may be sparse).
        """
        widths = check_widths(hookpoints)
        sparse = check_sparse(widths, sparse)
        storage_dtype(dtype)
        if shard_rows is not None and int(shard_rows) < 1:
            raise InputError(f"shard_rows must be at least 1, got {shard_rows}")
        if int(shard_bytes) < 1:
            raise InputError(f"shard_bytes must be at least 1, got {shard_bytes}")
        if frame_rate is not None and not float(frame_rate) > 0:
            raise InputError(f"frame_rate must be positive, got {frame_rate}")
        frame_rate = None if frame_rate is None else float(frame_rate)
        root, target = Path(path), None
        if overwrite and holds_output(root):
            check_overwritable(root)
            root, target = overwrite_stage(root), root
        if resume and is_store(root):
            manifest, lock, state = resume_state(root, widths, dtype, model, frame_rate, sparse)
            writer = cls(root, manifest, lock, shard_rows, int(shard_bytes), state, target)
            if manifest.get("status") != STATUS_COMPLETE:
                writer._write_manifest(STATUS_WRITING)  # the manifest may lag one commit behind a kill
            return writer
        created = prepare_fresh(root, overwrite=overwrite, resume=resume)
        # Stores without CSR hookpoints keep the old version number: older releases read them unchanged.
        version = FORMAT_VERSION if sparse else DENSE_FORMAT_VERSION
        manifest = new_manifest(
            STORE_KIND, version, config, status=STATUS_WRITING, model=dict(model or {}),
            hookpoints={name: {"width": width, **({"format": FORMAT_CSR} if name in sparse else {})}
                        for name, width in widths.items()}, dtype=dtype,
            frame_rate=frame_rate, position_convention=position_convention,
            n_rows=0, n_items=0, n_shards=0, metadata_columns=dict(BASE_COLUMNS), item_columns=[],
        )
        # Manifest first: from here on the directory is recognisably a store (resumable, overwritable).
        write_json(root / MANIFEST_NAME, manifest)
        (root / SHARDS_DIR).mkdir(exist_ok=True)
        write_config(root, config or {})
        return cls(root, manifest, acquire_lock(root), shard_rows, int(shard_bytes), target=target, created=created)

    @property
    def done_items(self) -> Set[str]:
        """Item ids already committed (callers skip these when resuming); do not mutate."""
        return self._done

    @property
    def hookpoints(self) -> dict[str, int]:
        """Hookpoint name -> width."""
        return dict(self._widths)

    @property
    def sparse(self) -> frozenset[str]:
        """The hookpoints stored as CSR."""
        return self._sparse

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def n_rows(self) -> int:
        """Rows committed so far."""
        return self._n_rows

    @property
    def n_items(self) -> int:
        """Items committed so far."""
        return len(self._done)

    @property
    def n_shards(self) -> int:
        return self._n_shards

    def add_item(self, item_id: str, acts: Mapping[str, np.ndarray], item_meta: Mapping | None = None,
                 frame_meta: Mapping | None = None, time_s: np.ndarray | None = None,
                 frames: np.ndarray | None = None) -> bool:
        """Buffer one item's activations (n_frames, width) per hookpoint; False when it has no frames.

        Sparse hookpoints take a CSR (this package's, or a scipy sparse matrix), a tuple (indptr, indices,
        values) or a dense array; their rows are stored sorted by column, without explicit zeros.
        Any float dtype is converted to the store's dtype. Passing the storage dtype itself (float16, or
        for bfloat16 stores the bit patterns as uint16, e.g. `t.bfloat16().view(torch.int16).numpy()
        .view(np.uint16)`) skips the CPU conversion, which costs more than writing the bytes.
        """
        self._check_open()
        if not isinstance(item_id, str) or not item_id:
            raise InputError(f"item ids must be non-empty strings, got {item_id!r}")
        if item_id in self._done or item_id in self._pending_ids:
            raise InputError(f"duplicate item id {item_id!r}",
                             "item ids must be unique; skip ids in writer.done_items when resuming")
        arrays, n_frames = self._check_acts(item_id, acts)
        if n_frames == 0:
            return False
        columns, item_columns = dict(self._columns), list(self._item_columns)
        meta = dict(item_meta or {})
        for name, value in meta.items():
            check_column_name(name)
            if name in columns and name not in item_columns:
                raise InputError(f"metadata column {name!r} is per-frame in this store, not per-item")
            columns[name] = unify(name, columns.get(name), scalar_type(name, value))
            if name not in item_columns:
                item_columns.append(name)
        per_frame = {}
        for name, values in (frame_meta or {}).items():
            check_column_name(name)
            if name in item_columns:
                raise InputError(f"metadata column {name!r} is per-item in this store, not per-frame")
            per_frame[name] = frame_array(name, values, n_frames)
            columns[name] = unify(name, columns.get(name), str(per_frame[name].type))
        frames_arr = _frames(frames, n_frames)
        times = self._times(time_s, frames_arr)
        # Validation passed: only now change the writer's state.
        item_bytes = sum(self._nbytes(name, a) for name, a in arrays.items())
        if self._pending and self._would_overflow(n_frames, item_bytes):
            self.flush()
        self._columns, self._item_columns = columns, item_columns
        stored = {name: self._encode(a) for name, a in arrays.items()}
        self._pending.append(PendingItem(item_id, n_frames, stored, frames_arr, times, meta, per_frame))
        self._pending_ids.add(item_id)
        self._pending_rows += n_frames
        self._pending_bytes += item_bytes
        return True

    def flush(self) -> None:
        """Commit the buffered items as one shard (a no-op when nothing is buffered)."""
        self._check_open()
        if not self._pending:
            return
        info = write_shard(self.path / SHARDS_DIR, self._n_shards, self._pending, self._widths,
                           self._storage, self._columns, self._item_columns, self._sparse)
        self._n_shards += 1
        self._n_rows += info["n_rows"]
        self._done.update(self._pending_ids)
        self._pending, self._pending_ids = [], set()
        self._pending_rows = self._pending_bytes = 0
        self._write_manifest(STATUS_WRITING)

    def absorb(self, part: Path) -> int:
        """Move the committed shards of `part` (a store another process wrote, e.g. a rank's part of a
        distributed run) after this store's own, one atomic rename each, then remove `part`; returns the rows
        taken. Items this store holds already are refused (nothing is moved then)."""
        self._check_open()
        self.flush()
        part = Path(part)
        shards = committed_shard_dirs(part) if (part / SHARDS_DIR).is_dir() else []
        infos = [read_shard_json(d) for d in shards]
        ids = [i for info in infos for i in info["items"]]
        dup = next((i for i in ids if i in self._done), None)
        if dup is not None or len(set(ids)) != len(ids):
            raise StoreError(f"{part} holds item {dup or 'ids'} twice (already in {self.path})", CORRUPT_HINT)
        rows = 0
        for shard_dir, info in zip(shards, infos, strict=True):
            for name, type_name in info.get("columns", {}).items():
                self._columns[name] = unify(name, self._columns.get(name), type_name)
            self._item_columns += [c for c in info.get("item_columns", []) if c not in self._item_columns]
            os.rename(shard_dir, self.path / SHARDS_DIR / shard_dirname(self._n_shards))
            fsync_path(self.path / SHARDS_DIR)
            self._n_shards += 1
            self._n_rows += int(info["n_rows"])
            self._done.update(info["items"])
            rows += int(info["n_rows"])
            self._write_manifest(STATUS_WRITING)
        shutil.rmtree(part, ignore_errors=True)
        return rows

    def close(self) -> None:
        """Commit what is buffered, mark the store complete and (overwriting) move it into place."""
        if self._closed:
            return
        try:
            self.flush()
            self._write_manifest(STATUS_COMPLETE)
            if self._target is not None:
                replace_with(self.path, self._target)
                self.path, self._target = self._target, None
        finally:
            self._release()

    def abandon(self, keep: bool = False) -> None:
        """Drop buffered items and stop, leaving the store resumable (status "writing").

        A folder this writer made that holds no committed row is removed instead (unless `keep`: other writers
        may have committed into it): there is nothing to resume, and with --overwrite the old store is then
        exactly as it was.
        """
        self._pending, self._pending_ids = [], set()
        self._release()
        if not keep and self._created and self._n_rows == 0 and self._n_shards == 0 and self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception, committing half a batch of items would hide the failure; resume redoes them.
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the writer for {self.path} is closed", "open a new StoreWriter with resume")

    def _release(self) -> None:
        if not self._closed:
            self._closed = True
            release_lock(self.path, self._lock)

    def _would_overflow(self, n_frames: int, item_bytes: int) -> bool:
        rows_full = self._shard_rows is not None and self._pending_rows + n_frames > self._shard_rows
        return rows_full or self._pending_bytes + item_bytes > self._shard_bytes

    def _check_acts(self, item_id: str, acts: Mapping[str, np.ndarray]) -> tuple[dict, int]:
        missing = [name for name in self._widths if name not in acts]
        extra = [name for name in acts if name not in self._widths]
        if missing or extra:
            raise InputError(f"item {item_id!r}: hookpoints do not match the store "
                             f"(missing: {missing or 'none'}, unexpected: {extra or 'none'})",
                             f"pass exactly: {', '.join(self._widths)}")
        arrays, n_frames = {}, None
        for name, width in self._widths.items():
            if name in self._sparse:
                a = as_csr(acts[name], width, f"item {item_id!r}, hookpoint {name!r}", self._dtype == "bfloat16")
                n_frames = a.shape[0] if n_frames is None else n_frames
                if a.shape[0] != n_frames:
                    raise InputError(f"item {item_id!r}: hookpoints have different frame counts "
                                     f"({n_frames} vs {a.shape[0]} for {name!r})")
                arrays[name] = a
                continue
            a = np.asarray(acts[name])
            bf16_bits = self._dtype == "bfloat16" and a.dtype == np.uint16
            if a.ndim != 2 or a.shape[1] != width or not (a.dtype.kind == "f" or bf16_bits):
                raise InputError(f"item {item_id!r}: activations of {name!r} are {a.dtype} {a.shape}, "
                                 f"expected float (n_frames, {width})")
            if n_frames is not None and a.shape[0] != n_frames:
                raise InputError(f"item {item_id!r}: hookpoints have different frame counts "
                                 f"({n_frames} vs {a.shape[0]} for {name!r})")
            n_frames = a.shape[0]
            arrays[name] = a
        return arrays, int(n_frames)

    def _nbytes(self, name: str, a: np.ndarray | CSR) -> int:
        if name in self._sparse:
            return (a.shape[0] + 1) * INDPTR_DTYPE.itemsize + a.nnz * (INDEX_DTYPE.itemsize + self._storage.itemsize)
        return a.shape[0] * a.shape[1] * self._storage.itemsize

    def _encode(self, a: np.ndarray | CSR) -> np.ndarray | CSR:
        if isinstance(a, CSR):
            return CSR(a.indptr, np.ascontiguousarray(a.indices, INDEX_DTYPE), encode(a.data, self._dtype), a.shape)
        return encode(a, self._dtype)

    def _times(self, time_s: np.ndarray | None, frames: np.ndarray) -> np.ndarray | None:
        if time_s is None:
            return None if self._frame_rate is None else frames / self._frame_rate
        times = np.asarray(time_s, dtype=np.float64)
        if times.shape != frames.shape:
            raise InputError(f"time_s has shape {times.shape}, expected {frames.shape}")
        return times

    def _write_manifest(self, status: str) -> None:
        self._manifest.update(status=status, n_rows=self._n_rows, n_items=len(self._done),
                              n_shards=self._n_shards, metadata_columns=dict(self._columns),
                              item_columns=list(self._item_columns))
        write_json(self.path / MANIFEST_NAME, self._manifest)


def _frames(frames: np.ndarray | None, n_frames: int) -> np.ndarray:
    if frames is None:
        return np.arange(n_frames, dtype=np.int32)
    out = np.asarray(frames)
    if out.shape != (n_frames,) or out.dtype.kind not in "iu":
        raise InputError(f"frames must be {n_frames} integers, got {out.dtype} {out.shape}")
    return out.astype(np.int32)
