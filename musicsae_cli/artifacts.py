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
from .errors import InputError, MusicSAEError, OutputExistsError, StoreError

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
    make_parents(path)
    return path


def make_parents(path: str | os.PathLike) -> None:
    """Create the missing folders above an output (`-o runs/topk` creates `runs/`), like `mkdir -p`."""
    parent = Path(path).parent
    if not parent.is_dir():
        if parent.exists():
            raise InputError(f"not a folder: {parent}", "choose an output (-o) inside a folder")
        parent.mkdir(parents=True, exist_ok=True)


def check_replaceable(path: Path) -> None:
    """--overwrite replaces only a previous musicsae output (or an empty folder), never other user files."""
    if path.is_dir() and ((path / MANIFEST_NAME).is_file() or not any(path.iterdir())):
        return
    raise InputError(f"refusing to replace {path}: it is not a musicsae output",
                     "choose a new output path; --overwrite only replaces what musicsae wrote")


STAGE_LOCK = ".musicsae-stage.lock"  # held (flock) by the process building a stage; gone with the process


@contextmanager
def staged_directory(out: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Build a directory artefact in a hidden sibling and move it into place only when complete.

    A crash leaves at most a `.<name>.partial-*` sibling, never a directory that reads as complete; the next
    run for the same output removes such leftovers of dead processes. With `overwrite`, the old output is
    replaced only after the new one is fully written.
    """
    out = check_output(out, overwrite)
    if out.exists():
        check_replaceable(out)
    remove_stale_stages(out)
    stage = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    lock = hold_lock(stage / STAGE_LOCK, f"another process is building {stage}", "wait for it to finish")
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    (stage / STAGE_LOCK).unlink(missing_ok=True)
    swap_into_place(stage, out)


def replace_folder(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final` (a sibling of it), the old `final` kept aside until the new one is in
    place, so a crash leaves one complete copy (a checkpoint, say) under one of the two names."""
    if final.exists():
        old = final.parent / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def swap_into_place(stage: Path, out: Path, lock_name: str | None = None, what: str = "output") -> None:
    """Move the finished `stage` to `out`; an old `out` is moved aside first and removed only afterwards.

    With `lock_name`, the old output's lock file (see hold_lock) is taken first: an output another process is
    still writing is never replaced.
    """
    if not out.exists():
        os.replace(stage, out)
        return
    lock = hold_lock(out / lock_name, f"another process is writing the {what} {out}",
                     "wait for it to finish, or stop it first") if lock_name and out.is_dir() else None
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(out, old)
    finally:
        if lock is not None:
            os.close(lock)
    os.replace(stage, out)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def hold_lock(path: Path, message: str, hint: str) -> int | None:
    """Create `path` and hold an exclusive flock on it until the fd is closed or the process ends.

    MusicSAEError(message, hint) when another process holds it; None where flock does not exist.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: concurrent writers are not detected there
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise MusicSAEError(message, hint) from None
    return fd


def remove_stale_stages(out: Path) -> list[Path]:
    """Remove `.<name>.partial-*` stages of `out` whose builder died (and `.old-*` copies of a finished swap).

    Only folders named the way staged_directory names them are touched, and a stage whose lock a live process
    holds is left alone. Returns what was removed.
    """
    import re

    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(partial|old)-[0-9a-f]{{8}}$")
    removed = []
    for sibling in out.parent.iterdir() if out.parent.is_dir() else []:
        match = pattern.match(sibling.name)
        if not match or not sibling.is_dir():
            continue
        if match.group(1) == "old" and not out.exists():
            continue  # killed between the two renames: the only copy of the previous output
        if match.group(1) == "partial" and _in_use(sibling):
            continue
        shutil.rmtree(sibling, ignore_errors=True)
        removed.append(sibling)
    return removed


def _in_use(stage: Path) -> bool:
    """Whether a live process holds the stage's lock (a stage without one is in use only while it is new)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return True
    lock = stage / STAGE_LOCK
    if not lock.exists():
        return time.time() - stage.stat().st_mtime < 60  # just created, its lock not yet taken
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


# ---- training state: nested dicts, lists, tensors and numbers as safetensors + JSON --------------------------------
STATE = "state"  # a checkpoint folder holds state/state.safetensors (tensors) and state/state.json (the rest)


def _pack(obj, prefix: str, tensors: dict):
    """JSON-able skeleton of `obj`, its tensors moved into `tensors` under path-like keys."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().clone()  # a copy: safetensors refuses tied (shared) tensors
        return {"t": prefix}
    if isinstance(obj, dict):
        return {"d": [[k, _pack(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"l": [_pack(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)], "tuple": isinstance(obj, tuple)}
    if hasattr(obj, "item"):  # numpy scalars
        return {"v": obj.item()}
    return {"v": obj}


def _unpack(skeleton, tensors: dict):
    if "t" in skeleton:
        return tensors[skeleton["t"]]
    if "d" in skeleton:
        return {k: _unpack(v, tensors) for k, v in skeleton["d"]}
    if "l" in skeleton:
        items = [_unpack(v, tensors) for v in skeleton["l"]]
        return tuple(items) if skeleton["tuple"] else items
    return skeleton["v"]


def save_state(folder: Path, state: dict) -> None:
    """Write `state` as folder/state.safetensors + state.json, replacing the previous pair atomically."""
    from safetensors.torch import save_file

    tensors: dict = {}
    skeleton = _pack(state, "s", tensors)
    tmp = folder / f".{STATE}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / f"{STATE}.safetensors"))
    (tmp / f"{STATE}.json").write_text(json.dumps(skeleton))
    replace_folder(tmp, folder / STATE)


def load_state(folder: Path) -> dict | None:
    """The state saved by save_state in `folder`, or None when there is none."""
    from safetensors.torch import load_file

    final = folder / STATE
    if not (final / f"{STATE}.json").is_file():
        return None
    return _unpack(json.loads((final / f"{STATE}.json").read_text()), load_file(str(final / f"{STATE}.safetensors")))
