"""Self-describing artefacts: manifest.json in every output, atomic writes, and output-path safety."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError, OutputExistsError, StoreError

MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "config.yaml"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_csv_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Atomically write dicts as a CSV table, columns in first-seen order (an empty list gives an empty file)."""
    import csv
    import io

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def new_manifest(kind: str, format_version: int, config: dict | None = None, **fields: Any) -> dict:
    """The common head of every artefact manifest."""
    return {
        "kind": kind,
        "format_version": format_version,
        "musicsae_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
        "config": config or {},
    }


def read_manifest(directory: str | os.PathLike) -> dict:
    """Read `<directory>/manifest.json`; raise StoreError when it is missing or unreadable."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise StoreError(f"not a musicsae artefact (no {MANIFEST_NAME}): {directory}",
                         "pass the directory a musicsae command wrote")
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"unreadable manifest {path}: {exc}", "the artefact is corrupt; recreate it") from exc


def check_format_version(manifest: dict, supported: int, what: str) -> None:
    """Refuse artefacts written by a newer musicsae (their layout may differ)."""
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise StoreError(f"{what} has no valid format_version", "the artefact is corrupt; recreate it")
    if version > supported:
        raise StoreError(
            f"{what} has format version {version}, newer than this musicsae supports ({supported})",
            f"upgrade musicsae (this is {__version__}) to read it",
        )


def write_config(directory: str | os.PathLike, config: dict) -> None:
    """Save the resolved config beside an artefact as YAML."""
    import yaml

    atomic_write_text(Path(directory) / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))


def check_output(path: str | os.PathLike, overwrite: bool, what: str = "output") -> Path:
    """Refuse an existing output unless `overwrite`; never delete anything here."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path, what)
    if not path.parent.exists():
        raise InputError(f"parent folder does not exist: {path.parent}", "create it first or fix the path")
    return path


def check_replaceable(path: Path) -> None:
    """--overwrite replaces only a previous musicsae output (or an empty folder), never other user files."""
    if path.is_dir() and ((path / MANIFEST_NAME).is_file() or not any(path.iterdir())):
        return
    raise InputError(f"refusing to replace {path}: it is not a musicsae output",
                     "choose a new output path; --overwrite only replaces what musicsae wrote")


@contextmanager
def staged_directory(out: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Build a directory artefact in a hidden sibling and move it into place only when complete.

    A crash leaves at most a `.<name>.partial-*` sibling, never a directory that reads as complete.
    With `overwrite`, the old output is replaced only after the new one is fully written.
    """
    out = check_output(out, overwrite)
    if out.exists():
        check_replaceable(out)
    stage = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(stage, out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(stage, out)
