"""Dataset manifests: one row per audio item with its path, id, group and labels.

Read from CSV/JSONL/Parquet or built from a folder (class subfolders become labels). Paths are stored
relative to the manifest's folder when the audio lies under it, so a dataset folder can be moved whole.
The `group` column names the track or source an item came from, so later splits never put frames of one
track on both sides.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_bytes, check_output
from ..errors import InputError
from .io import AUDIO_EXTENSIONS

MANIFEST_FORMATS = (".csv", ".jsonl", ".parquet")
# Columns musicsae itself fills in; everything else in a manifest is a label.
RESERVED = ("path", "item_id", "group", "duration_s", "sample_rate", "channels")


@dataclass
class Manifest:
    """Rows of a dataset; `path` in every row is absolute after loading."""

    rows: list[dict[str, Any]]
    label_columns: list[str] = field(default_factory=list)
    root: Path = field(default_factory=Path.cwd)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def columns(self) -> list[str]:
        extra = [c for c in ("duration_s", "sample_rate", "channels") if any(c in r for r in self.rows)]
        return ["path", "item_id", "group", *self.label_columns, *extra]

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically as CSV, JSONL or Parquet (by extension), with paths relative where possible."""
        path = Path(path)
        atomic_write_bytes(path, self.encode(path))
        return path

    def encode(self, path: str | os.PathLike) -> bytes:
        """The bytes of this manifest written at `path` (format by extension, paths relative to its folder)."""
        path = Path(path)
        fmt = manifest_format(path)
        root = path.resolve().parent
        rows = [{**{c: r.get(c) for c in self.columns}, "path": _relative(r["path"], root)} for r in self.rows]
        if fmt == ".csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
            return buf.getvalue().encode("utf-8")
        if fmt == ".jsonl":
            return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        return sink.getvalue().to_pybytes()


def read_manifest_file(
    path: str | os.PathLike,
    path_column: str = "path",
    label_columns: list[str] | None = None,
    group_column: str | None = None,
    id_column: str | None = None,
) -> Manifest:
    """Load a CSV/JSONL/Parquet manifest; `label_columns=None` takes every non-reserved column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}", "pass a .csv, .jsonl or .parquet file or a folder of audio")
    records = read_records(path)
    if not records:
        raise InputError(f"manifest is empty: {path}", "it needs a header and at least one row")
    columns = list(dict.fromkeys(k for r in records for k in r))
    _require(path, columns, path_column, "path", "--path-column")
    if group_column:
        _require(path, columns, group_column, "group", "--group-column")
    if id_column:
        _require(path, columns, id_column, "id", "--id-column")
    special = {path_column, group_column or "group", id_column or "item_id"}
    if label_columns is None:
        labels = [c for c in columns if c not in special and c not in RESERVED]
    else:
        for col in label_columns:
            _require(path, columns, col, "label", "--label")
        labels = list(label_columns)
    root = path.resolve().parent
    rows = []
    for i, rec in enumerate(records):
        raw = rec.get(path_column)
        if raw in (None, ""):
            raise InputError(f"{path}: row {i + 1} has an empty '{path_column}'", "every row needs an audio path")
        audio = Path(str(raw)).expanduser()
        audio = audio if audio.is_absolute() else root / audio
        item_id = str(rec.get(id_column or "item_id") or _default_id(audio, root))
        group = rec.get(group_column or "group")
        row = {"path": audio, "item_id": item_id, "group": str(group) if group not in (None, "") else item_id}
        row.update({c: rec.get(c) for c in labels})
        for extra in ("duration_s", "sample_rate", "channels"):
            if rec.get(extra) not in (None, ""):
                row[extra] = rec[extra]
        rows.append(row)
    _check_unique(rows, path)
    return Manifest(rows, labels, root)


def load_dataset(source: str | os.PathLike) -> Manifest:
    """Rows of a dataset given as a manifest file, a dataset folder (with manifest.csv) or a folder of audio."""
    source = Path(source)
    if source.is_dir():
        inner = source / "manifest.csv"
        return read_manifest_file(inner) if (source / "manifest.json").is_file() and inner.is_file() \
            else index_folder(source)
    if not source.exists():
        raise InputError(f"no such file or folder: {source}", "pass a manifest, a dataset folder or a folder of audio")
    return read_manifest_file(source)


def index_folder(folder: str | os.PathLike, label_name: str = "label", group_regex: str | None = None,
                 strict: bool = False) -> Manifest:
    """Build a manifest from a folder; first-level subfolders are class labels (column `label_name`).

    `group_regex` is searched in each item id (the path under the folder without its extension, e.g.
    'jazz/track0_part1'); its capture is the item's group. Matching no file is an error; matching only some is a
    warning (an error with `strict`) naming how many did not match: each of those is its own group.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}", "pass a folder of audio files or a manifest file")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise InputError(f"no audio files in {folder}", f"looked for {', '.join(AUDIO_EXTENSIONS)}")
    pattern = _compile_group_regex(group_regex)
    nested = any(len(p.relative_to(folder).parts) > 1 for p in files)
    rows, unmatched = [], []
    for p in files:
        rel = p.relative_to(folder)
        item_id = rel.with_suffix("").as_posix()
        group = _group_of(item_id, pattern)
        if group is None:
            unmatched.append(item_id)
        row = {"path": p.resolve(), "item_id": item_id, "group": item_id if group is None else group}
        if nested:
            row[label_name] = rel.parts[0] if len(rel.parts) > 1 else None
        rows.append(row)
    if pattern is not None and unmatched:
        _report_unmatched(group_regex, unmatched, len(rows), strict)
    _check_unique(rows, folder)
    return Manifest(rows, [label_name] if nested else [], folder.resolve())


def _compile_group_regex(expr: str | None) -> re.Pattern | None:
    if expr is None:
        return None
    try:
        pattern = re.compile(expr)
    except re.error as exc:
        raise InputError(f"invalid --group-regex '{expr}': {exc}", "e.g. '^(.+)_chunk\\d+$'") from exc
    if pattern.groups < 1:
        raise InputError(f"--group-regex '{expr}' has no capture group", "wrap the track part in (...)")
    return pattern


def _group_of(item_id: str, pattern: re.Pattern | None) -> str | None:
    """The group the pattern's capture gives `item_id`: the item id itself without a pattern, None when the
    pattern does not match (or captures nothing)."""
    if pattern is None:
        return item_id
    match = pattern.search(item_id)
    if not match:
        return None
    group = match.group("group") if "group" in pattern.groupindex else match.group(1)
    return group or None


def _report_unmatched(expr: str, unmatched: list[str], total: int, strict: bool) -> None:
    """--group-regex matching no item id is an error; matching only some, a warning (an error with --strict)."""
    examples = ", ".join(f"'{i}'" for i in unmatched[:2])
    if len(unmatched) == total:
        raise InputError(f"--group-regex '{expr}' matches none of the {total} files",
                         f"it is searched in item ids (the path under the folder without extension) such as "
                         f"{examples}; e.g. '^(.+)_part\\d+$' groups 'jazz/song_part3' as 'jazz/song'")
    message = (f"--group-regex '{expr}' matches {total - len(unmatched)} of {total} files; the other "
               f"{len(unmatched)} (e.g. {examples}) are each their own group")
    if strict:
        raise InputError(message, "widen the regex so every file names its track, or drop --strict to accept "
                                  "one group per unmatched file")
    logging.getLogger("musicsae").warning("%s: if they belong to tracks too, widen the regex (--strict makes this an "
                                          "error)", message)


def read_records(path: Path) -> list[dict]:
    """The rows of a CSV (numeric columns typed), JSONL or Parquet file as dicts.

    InputError "cannot read manifest X: <why>" for a file that cannot be opened or parsed, in every format.
    """
    fmt = manifest_format(path)
    try:
        if fmt == ".csv":
            return _infer_types(_csv_records(path))
        if fmt == ".jsonl":
            return _jsonl_records(path)
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except _Unreadable as exc:
        raise InputError(f"cannot read manifest {path}: {exc}", f"is it a valid {fmt[1:]} file?") from None
    except Exception as exc:
        if _is_arrow_error(exc):  # before OSError: pyarrow's ArrowIOError is one too
            why = re.sub(r"^Could not open Parquet input source '.*?': ", "", _first_line(exc))  # names the path
            raise InputError(f"cannot read manifest {path}: {why}",
                             "is it a valid parquet file, written completely?") from exc
        if isinstance(exc, OSError):
            raise InputError(f"cannot read manifest {path}: {_first_line(exc)}",
                             "check the path and permissions") from exc
        raise


class _Unreadable(Exception):
    """A manifest that opens but does not parse; its message says where and why."""


def _csv_records(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, strict=True)  # strict: a stray or unclosed quote is an error, not a cell
        try:
            records = list(reader)
        except UnicodeDecodeError as exc:
            raise _Unreadable(f"not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise _Unreadable(f"line {reader.line_num + 1}: {_first_line(exc)}") from None
        header = reader.fieldnames or []
    for i, rec in enumerate(records, 1):
        if None in rec:  # DictReader keeps the cells beyond the header under the key None
            raise _Unreadable(f"row {i} has {len(header) + len(rec[None])} cells but the header names "
                              f"{len(header)} columns")
    return records


def _jsonl_records(path: Path) -> list[dict]:
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"not UTF-8 text ({exc.reason})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Unreadable(f"line {n} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise _Unreadable(f"line {n} is not a JSON object (one object per line)")
        out.append(rec)
    return out


def _is_arrow_error(exc: Exception) -> bool:
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, pa.ArrowException)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _infer_types(records: list[dict]) -> list[dict]:
    """CSV cells are text: columns whose every non-empty cell is a number become int or float."""
    if not records:
        return records
    for col in records[0]:
        values = [r[col] for r in records if r.get(col) not in (None, "")]
        for cast in (int, float):
            try:
                converted = [cast(v) for v in values]
            except (TypeError, ValueError):
                continue
            it = iter(converted)
            for r in records:
                r[col] = next(it) if r.get(col) not in (None, "") else None
            break
        else:
            for r in records:
                if r.get(col) == "":
                    r[col] = None
    return records


def _require(path: Path, columns: list[str], col: str, role: str, flag: str) -> None:
    if col in columns:
        return
    close = difflib.get_close_matches(col, columns, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise InputError(f"manifest {path.name} has no {role} column '{col}' (columns: {', '.join(columns)})",
                     f"{hint}name the right one with {flag}")


def _check_unique(rows: list[dict], where: Path) -> None:
    seen: set[str] = set()
    for r in rows:
        if r["item_id"] in seen:
            raise InputError(f"duplicate item id '{r['item_id']}' in {where}", "item ids must be unique")
        seen.add(r["item_id"])


def _default_id(audio: Path, root: Path) -> str:
    try:
        return audio.resolve().relative_to(root).with_suffix("").as_posix()
    except ValueError:
        return audio.with_suffix("").name


def _relative(audio: Path, root: Path) -> str:
    try:
        return Path(audio).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(Path(audio).resolve())


def check_manifest_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Validate where a manifest will be written: a known format, not a folder, not existing unless overwrite,
    and replaced only when musicsae wrote it and nobody changed it since (its record says so)."""
    path = Path(path)
    manifest_format(path)
    if path.is_dir():
        raise InputError(f"--out is a folder: {path}", "name a manifest file, e.g. manifest.csv")
    check_output(path, overwrite, "manifest")
    from .manifest_record import check_replaceable_manifest

    check_replaceable_manifest(path)
    return path


def manifest_format(path: Path) -> str:
    """The manifest format of `path` by extension; InputError for anything else."""
    fmt = path.suffix.lower()
    if fmt not in MANIFEST_FORMATS:
        raise InputError(f"unsupported manifest format '{path.suffix or path.name}'",
                         f"use one of {', '.join(MANIFEST_FORMATS)}")
    return fmt
