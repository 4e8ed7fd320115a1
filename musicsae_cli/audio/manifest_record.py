"""The record beside a manifest file `data index` writes, so that --overwrite replaces only what musicsae wrote.

The record, `.<name>.musicsae.json` beside the manifest, says who wrote the file, when, from what source with which
settings, and the sha256 of its bytes. --overwrite replaces a manifest file only when its record exists and the
file still has those bytes: the rule artifacts.check_replaceable applies to output folders, for single files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import atomic_write_bytes, new_manifest, write_json
from ..errors import InputError

if TYPE_CHECKING:
    from .manifest import Manifest

RECORD_FORMAT_VERSION = 1


def record_path(path: str | os.PathLike) -> Path:
    """Where the record of a manifest file musicsae writes lies: `.<name>.musicsae.json` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.musicsae.json"


def write_recorded(manifest: Manifest, path: str | os.PathLike, source: str | os.PathLike | None,
                   config: dict | None) -> Path:
    """Write `manifest` atomically, then its record (sha256 of the bytes written, source, config)."""
    path = Path(path)
    data = manifest.encode(path)
    atomic_write_bytes(path, data)
    write_json(record_path(path), new_manifest(
        "manifest", RECORD_FORMAT_VERSION, config, file=path.name, sha256=hashlib.sha256(data).hexdigest(),
        n_items=len(manifest), source=None if source is None else str(source)))
    return path


def manifest_record(path: str | os.PathLike, check: bool = False) -> dict | None:
    """The record of a manifest file musicsae wrote (None without one); with `check`, None also when the file's
    bytes differ from the recorded ones (edited, or replaced by something else, since)."""
    path = Path(path)
    record = _read_record(record_path(path))
    if record is None or record.get("file") != path.name:
        return None
    if check:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
        if digest != record.get("sha256"):
            return None
    return record


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(record, dict) and record.get("kind") == "manifest" and isinstance(record.get("sha256"), str)
    return record if ok else None


def check_replaceable_manifest(path: Path) -> None:
    """InputError unless an existing manifest file at `path` is one musicsae wrote and nobody changed since
    (also for a record-named file beside it that is not a record)."""
    if (path.exists() or path.is_symlink()) and manifest_record(path, check=True) is None:
        raise InputError(f"refusing to replace {path}: musicsae did not write it (or it was edited since)",
                         "choose a new --out path, or delete it yourself")
    record = record_path(path)
    if record.exists() and _read_record(record) is None:
        raise InputError(f"refusing to replace {record}: musicsae did not write it",
                         "choose a new --out path, or move that file away")
