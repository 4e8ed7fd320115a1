"""Writer set-up: argument checks, output-path safety, the state of a store being resumed, the writer lock."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..artifacts import check_format_version, make_parents, read_manifest, swap_into_place
from ..errors import InputError, OutputExistsError, StoreError
from .format import (
    FORMAT_CSR,
    FORMAT_DENSE,
    FORMAT_VERSION,
    LOCK_FILE,
    SHARDS_DIR,
    STATUS_WRITING,
    check_hookpoint_name,
    committed_shard_dirs,
    hookpoint_files,
    is_store,
    manifest_formats,
    read_shard_json,
    tmp_shard_dirs,
)
from .schema import BASE_COLUMNS, unify

log = logging.getLogger("musicsae")

try:  # POSIX only; elsewhere two writers on one store are simply not detected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


def acquire_lock(root: Path) -> int | None:
    """Take the store's writer lock (released by the OS if the process dies); StoreError when held."""
    if fcntl is None:
        return None
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"another writer is using {root}",
                         "wait for it to finish, or stop it and rerun with --resume") from None
    return fd


def release_lock(root: Path, fd: int | None) -> None:
    """Release the writer lock; the file stays, as unlinking it would let two writers lock different files."""
    if fd is not None:
        os.close(fd)


def check_widths(hookpoints: Mapping[str, int]) -> dict[str, int]:
    """Validated hookpoint name -> width."""
    if not hookpoints:
        raise InputError("a store needs at least one hookpoint")
    widths = {}
    for name, width in hookpoints.items():
        check_hookpoint_name(name)
        if int(width) < 1:
            raise InputError(f"hookpoint {name!r} has width {width}; widths must be positive")
        widths[name] = int(width)
    return widths


def check_sparse(widths: dict[str, int], sparse: Iterable[str]) -> frozenset[str]:
    """The validated set of hookpoints to store as CSR."""
    names = frozenset([sparse] if isinstance(sparse, str) else sparse)
    unknown = sorted(names - set(widths))
    if unknown:
        raise InputError(f"sparse hookpoint(s) {', '.join(unknown)} are not among the store's hookpoints",
                         f"hookpoints: {', '.join(widths)}")
    # A dense "x.indptr" and a sparse "x" would both write x.indptr.npy.
    files = [f for name in widths for f in hookpoint_files(name, FORMAT_CSR if name in names else FORMAT_DENSE)]
    clash = sorted({f for f in files if files.count(f) > 1})
    if clash:
        raise InputError(f"hookpoint names collide on disk ({', '.join(clash)})", "rename one of the hookpoints")
    return names


def overwrite_stage(root: Path) -> Path:
    """Where a store that replaces `root` is built (--overwrite): the old one stays until the new one is complete.

    The name is fixed, so an interrupted overwrite is found again and resumed by the same command.
    """
    return root.parent / f".{root.name}.overwrite"


def holds_output(root: Path) -> bool:
    """Whether `root` exists as something other than an empty directory."""
    return root.exists() and not (root.is_dir() and not any(root.iterdir()))


def check_overwritable(root: Path) -> None:
    """Refuse to replace what is not a store, or a store another process is writing (before any work)."""
    if not is_store(root):
        raise InputError(f"refusing to overwrite {root}: it is not a musicsae activation store",
                         "delete it yourself if it should go, or choose another output path")
    release_lock(root, acquire_lock(root))


def replace_with(stage: Path, root: Path) -> None:
    """Move the finished store `stage` to `root`, replacing the old store there only now."""
    swap_into_place(stage, root, LOCK_FILE, "activation store")


def prepare_fresh(root: Path, overwrite: bool, resume: bool) -> bool:
    """Leave `root` as an empty directory for a new store; True when this call created it.

    An existing store is replaced here only when it is an abandoned overwrite stage; other stores are
    replaced by building the new one in `overwrite_stage` (see StoreWriter.create).
    """
    if not root.exists():
        make_parents(root)
        root.mkdir()
        return True
    if root.is_dir() and not any(root.iterdir()):
        if overwrite or resume:
            return False
        raise OutputExistsError(root, "activation store")
    store = is_store(root)
    if not overwrite:
        if resume:
            raise InputError(f"cannot resume {root}: it is not an activation store",
                             "pass the folder an earlier run wrote, or choose a new output path")
        err = OutputExistsError(root, "activation store")
        if store and _status(root) == STATUS_WRITING:
            err.hint = "it is incomplete: pass --resume to continue it, or --overwrite to start over"
        raise err
    check_overwritable(root)
    lock = acquire_lock(root)
    old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(root, old)
    finally:
        release_lock(old, lock)
    shutil.rmtree(old)
    root.mkdir()
    return True


def resume_state(root: Path, widths: dict[str, int], dtype: str, model: dict | None,
                 frame_rate: float | None, sparse: frozenset[str] = frozenset()) -> tuple[dict, int | None, dict]:
    """Lock a store for resuming, drop uncommitted shards, rebuild the writer state from committed ones."""
    manifest = read_manifest(root)
    check_format_version(manifest, FORMAT_VERSION, f"activation store {root}")
    lock = acquire_lock(root)
    try:
        _check_compatible(root, manifest, widths, dtype, model, frame_rate, sparse)
        for tmp in tmp_shard_dirs(root):
            shutil.rmtree(tmp)
        (root / SHARDS_DIR).mkdir(exist_ok=True)
        # Committed shards are the truth: the manifest may lag behind one commit if the writer was killed.
        state = {"done": set(), "n_rows": 0, "n_shards": 0, "columns": dict(BASE_COLUMNS), "item_columns": []}
        for shard_dir in committed_shard_dirs(root):
            info = read_shard_json(shard_dir)
            state["done"].update(info["items"])
            state["n_rows"] += int(info["n_rows"])
            state["n_shards"] += 1
            for name, type_name in info.get("columns", {}).items():
                state["columns"][name] = unify(name, state["columns"].get(name), type_name)
            new_columns = [c for c in info.get("item_columns", []) if c not in state["item_columns"]]
            state["item_columns"] += new_columns
    except BaseException:
        release_lock(root, lock)
        raise
    return manifest, lock, state


def _check_compatible(root: Path, manifest: dict, widths: dict[str, int], dtype: str,
                      model: dict | None, frame_rate: float | None, sparse: frozenset[str]) -> None:
    old_widths = {name: int(h["width"]) for name, h in manifest.get("hookpoints", {}).items()}
    old_sparse = {name for name, fmt in manifest_formats(manifest).items() if fmt == FORMAT_CSR}
    problems = []
    if old_widths != widths:
        problems.append(f"hookpoints: store has {_fmt(old_widths)}, requested {_fmt(widths)}")
    if old_sparse != set(sparse):
        problems.append(f"sparse hookpoints: store has {', '.join(sorted(old_sparse)) or 'none'}, "
                        f"requested {', '.join(sorted(sparse)) or 'none'}")
    if manifest.get("dtype") != dtype:
        problems.append(f"dtype: store has {manifest.get('dtype')}, requested {dtype}")
    if manifest.get("frame_rate") != frame_rate:
        problems.append(f"frame_rate: store has {manifest.get('frame_rate')}, requested {frame_rate}")
    # JSON round trip so that tuples and numpy scalars compare like the stored values.
    if model is not None and _model_key(json.loads(json.dumps(model, default=str))) != _model_key(
            manifest.get("model") or {}):
        problems.append(f"model: store has {manifest.get('model')}, requested {model}")
    if problems:
        raise StoreError(f"cannot resume {root}, its settings differ: " + "; ".join(problems),
                         "resume with the settings it was started with, or pass --overwrite to start over")


def _model_key(model: dict) -> dict:
    """What must match to resume: a model with a weights fingerprint is that fingerprint, wherever it lies."""
    return {k: v for k, v in model.items() if k != "id"} if model.get("fingerprint") else model


def _fmt(widths: dict[str, int]) -> str:
    return ", ".join(f"{name}={width}" for name, width in widths.items()) or "none"


def _status(root: Path) -> str | None:
    try:
        return read_manifest(root).get("status")
    except StoreError:
        return None


def resume_or_refuse(out: Path, record: dict, runtime_only: tuple[str, ...], what: str,
                     overwrite: bool = False) -> bool:
    """Whether writing `out` resumes an interrupted run of the same job (True) or starts fresh (False).

    A finished store, or anything that is not a store, is refused; an interrupted store written with other
    settings (ignoring `runtime_only` keys) is refused naming them. With `overwrite`, the question is asked of
    the overwrite stage instead: an interrupted overwrite with the same settings resumes (and says so), any
    other stage is started over.
    """
    if overwrite:
        if holds_output(out):
            check_overwritable(out)
        stage = overwrite_stage(out)
        if not (holds_output(out) and is_store(stage) and not _changed(read_manifest(stage), record, runtime_only)):
            return False
        log.info("resuming the interrupted --overwrite of %s (%s holds the new %s so far; the old one is "
                 "untouched until it is complete)", out, stage.name, what)
        return True
    if not out.exists():
        return False
    if not is_store(out):
        raise OutputExistsError(out, "output")
    manifest = read_manifest(out)
    if manifest.get("status") == "complete":
        raise OutputExistsError(out, what)
    changed = _changed(manifest, record, runtime_only)
    if changed:
        raise InputError(f"{out} is an interrupted run with other settings ({', '.join(changed)})",
                         "rerun it with the same settings to resume, or pass --overwrite to start over")
    return True


def _changed(manifest: dict, record: dict, runtime_only: tuple[str, ...]) -> list[str]:
    """Settings of `record` that differ from those a store was started with (runtime-only keys aside)."""
    before = manifest.get("config", {})
    wanted = json.loads(json.dumps(record, default=str))  # compare as stored: tuples become lists
    return [k for k in wanted if k not in runtime_only and before.get(k) != wanted[k]]
