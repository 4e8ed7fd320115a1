"""`data index` of Hugging Face datasets: the hub, `save_to_disk` folders, Parquet/Arrow files, audiofolders.

A dataset source is read row by row with the `datasets` library (hub ids stream, local data is memory-mapped), its
audio column cast to `Audio(decode=False)` so each row carries the stored bytes (or a local path) and musicsae
decodes them itself with soundfile: no torchaudio or torchcodec. Every row becomes an audio file under
`<out>/audio/` (flac or wav, the source's rate unless `sample_rate` resamples, its channels) and a manifest row
whose labels are the dataset's scalar columns, class-label integers mapped to their names.

Sources (see `dataset_source`):
  hf:OWNER/NAME[@REVISION]   the hub (streamed); offline it fails at once with how to pass a local copy
  a `save_to_disk` folder    dataset_info.json + state.json, or dataset_dict.json with one folder per split
  Parquet / Arrow files      one file, or a folder of them (a local copy of a hub dataset repository)
  an audiofolder             audio files with metadata.csv / metadata.jsonl (`file_name` column)

The output is a dataset folder like `data synth` writes (manifest.csv, manifest.json, config.yaml, audio/) and
appears only when complete. It is built in the hidden sibling `.<name>.importing`; an interrupted run (Ctrl-C, a
killed process) leaves that folder with a journal of the rows done, and a rerun with the same source and settings
resumes after them. Bad input (a mixed-type label column, an undecodable row with `strict`) removes it: nothing
partial is left that reads as complete.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..artifacts import check_replaceable, new_manifest, swap_into_place, write_config, write_json
from ..errors import AudioError, InputError, OutputExistsError
from ..progress import ProgressFactory, no_progress
from .io import AUDIO_EXTENSIONS, check_finite, resample, short_error, skip_unusable
from .manifest import MANIFEST_FORMATS, RESERVED, Manifest

HF_PREFIX = "hf:"
IMPORT_FORMAT_VERSION = 1
JOURNAL = "rows.jsonl"
STAGE_SUFFIX = ".importing"
# settings that do not change what is written: a rerun may change them and still resume
RUNTIME_ONLY = ("strict", "decode", "keep_silent", "silence_db", "limit")
log = logging.getLogger("musicsae")


@dataclass
class DatasetSource:
    """Where a dataset lies: kind is hub, disk (save_to_disk), files (Parquet/Arrow) or audiofolder."""

    kind: str
    location: str
    revision: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{HF_PREFIX}{self.location}" + (f"@{self.revision}" if self.revision else "") \
            if self.kind == "hub" else self.location


def dataset_source(text: str | os.PathLike) -> DatasetSource | None:
    """The dataset a `data index` source names, or None for musicsae's own kinds (folders of audio, manifests)."""
    text = str(text)
    if text.startswith(HF_PREFIX):
        repo, _, revision = text[len(HF_PREFIX):].partition("@")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", repo) or (_ and not revision):
            raise InputError(f"bad dataset id {text!r}", "write hf:OWNER/NAME or hf:OWNER/NAME@REVISION")
        return DatasetSource("hub", repo, revision or None)
    path = Path(text)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                       and (path / "dataset_info.json").is_file()):
            return DatasetSource("disk", str(path))
        if (path / "manifest.json").is_file() and (path / "manifest.csv").is_file():
            return None  # a musicsae dataset folder
        if (path / "metadata.csv").is_file() or (path / "metadata.jsonl").is_file():
            return DatasetSource("audiofolder", str(path))
        tables = sorted(str(p) for p in path.rglob("*") if p.suffix in (".parquet", ".arrow") and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(path).parts))
        has_audio = any(p.suffix.lower() in AUDIO_EXTENSIONS for p in path.rglob("*"))
        return DatasetSource("files", str(path), files=tables) if tables and not has_audio else None
    if path.suffix == ".arrow" and path.is_file():
        return DatasetSource("files", str(path), files=[str(path)])
    if path.suffix == ".parquet" and path.is_file() and _has_audio_struct(path):
        return DatasetSource("files", str(path), files=[str(path)])
    return None


def _has_audio_struct(path: Path) -> bool:
    """Whether a Parquet file has a column of {bytes, path} structs (a dataset's audio), not a path column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:  # not Parquet at all: the manifest reader says so
        return False
    for f in schema:
        if pa.types.is_struct(f.type) and {"bytes", "path"} <= {c.name for c in f.type}:
            return True
    return False


# --------------------------------------------------------------------------------------------- opening
def _datasets():
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a dependency; only a broken install lacks it
        raise InputError("reading Hugging Face datasets needs the `datasets` package",
                         "pip install 'datasets>=4.0'") from exc
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def check_hub_reachable(source: DatasetSource, subset: str | None = None, timeout: float = 3.0) -> None:
    """InputError at once when the hub cannot be reached (offline mode, or no connection), with how to pass a local
    copy instead; datasets itself would retry for minutes."""
    name = f", '{subset}'" if subset else ""
    hint = (f"on a machine with access, save it: python -c \"import datasets; datasets.load_dataset("
            f"'{source.location}'{name}).save_to_disk('DIR')\" (or download the repository with "
            f"huggingface-cli download --repo-type dataset {source.location} --local-dir DIR), then index DIR")
    offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline:
        raise InputError(f"cannot stream {source.label}: Hugging Face offline mode is on (HF_HUB_OFFLINE)", hint)
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Hugging Face Hub ({host}) for {source.label}: {short_error(exc)}",
                         hint) from None


def open_dataset(source: DatasetSource, split: str | None, subset: str | None):
    """(rows: an iterable of dicts, features or None, number of rows or None, split, facts for the manifest).

    The audio column is cast to Audio(decode=False) by the caller (it must be found first)."""
    ds = _datasets()
    facts: dict[str, Any] = {"kind": source.kind, "dataset": source.label}
    if source.kind == "disk":
        loaded = ds.load_from_disk(source.location)
        if isinstance(loaded, ds.DatasetDict):
            names = list(loaded)
            split = split or (names[0] if len(names) == 1 else None)
            if split not in loaded:
                raise InputError(f"{source.location} has no split {split!r}" if split else
                                 f"{source.location} holds {len(names)} splits", "pass --split, one of: "
                                 + ", ".join(names))
            table = loaded[split]
        else:
            table = loaded
            own = str(table.split) if table.split is not None else None
            if split and own and split != own:
                raise InputError(f"{source.location} holds the split {own!r}, not {split!r}", f"pass --split {own}")
            split = split or own or "train"
        if subset:
            raise InputError("a save_to_disk folder has no subsets (configs)", "drop --subset")
        folder = Path(source.location) / (split if isinstance(loaded, ds.DatasetDict) else "")
        try:
            facts["fingerprint"] = json.loads((folder / "state.json").read_text("utf-8")).get("_fingerprint")
        except (OSError, ValueError):
            facts["fingerprint"] = None
        return table, table.features, len(table), split, facts
    if source.kind == "hub":
        check_hub_reachable(source, subset)
        path, kwargs = source.location, {"revision": source.revision}
    elif source.kind == "audiofolder":
        return _audiofolder(ds, source, split, subset, facts)
    elif Path(source.location).is_dir():
        path, kwargs = source.location, {}
    else:
        path = "arrow" if source.location.endswith(".arrow") else "parquet"
        kwargs = {"data_files": {"train": source.files}}
    split, subset = _check_split_and_subset(ds, source, path, kwargs, split, subset)
    try:
        stream = ds.load_dataset(path, name=subset, split=split, streaming=True, **kwargs)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"cannot open {source.label}: {short_error(exc)}",
                         "check the dataset id, --subset and --split") from None
    except Exception as exc:  # connection and hub errors carry their own types
        raise InputError(f"cannot open {source.label}: {short_error(exc)}",
                         "check the dataset id and your connection, or pass a local copy") from None
    info = stream.info
    splits = getattr(info, "splits", None) or {}
    total = splits[split].num_examples if split in splits and splits[split].num_examples else None
    facts.update(revision=source.revision, commit=_hub_commit(source) if source.kind == "hub" else None)
    return stream, stream.features, total, split, facts | {"subset": subset}


def _audiofolder(ds, source: DatasetSource, split: str | None, subset: str | None, facts: dict):
    """An audiofolder read as its metadata table (datasets' csv / json loader) plus each row's file as the audio.

    The `audiofolder` builder itself encodes every file through torchcodec, which cannot be used here; the
    metadata loaders and soundfile read the same folder without it."""
    folder = Path(source.location)
    if subset:
        raise InputError(f"{source.label} has no subsets (configs)", "drop --subset")
    if split not in (None, "train"):
        raise InputError(f"{source.label} has no split {split!r}", "pass --split train (an audiofolder's only split)")
    meta = folder / "metadata.csv" if (folder / "metadata.csv").is_file() else folder / "metadata.jsonl"
    try:
        table = ds.load_dataset("csv" if meta.suffix == ".csv" else "json", data_files={"train": [str(meta)]},
                                split="train", streaming=True)
    except Exception as exc:
        raise InputError(f"cannot read {meta}: {short_error(exc)}", "check the metadata file") from None
    features = table.features
    if features is not None and "file_name" not in features:
        raise InputError(f"{meta.name} has no file_name column", f"its columns: {', '.join(features)}")
    audio = ds.Audio(decode=False)

    class Rows:
        """The metadata rows, each with its file as the `audio` column (a path, read by soundfile)."""

        def __iter__(self):
            for row in table:
                name = row.pop("file_name", None)
                yield {"audio": {"bytes": None, "path": str(folder / name) if name else None}, **row}

        def cast_column(self, column, feature):
            return self

        def skip(self, n):
            it = iter(self)
            for _ in range(n):
                next(it, None)
            return it

    feats = None if features is None else ds.Features({"audio": audio, **{k: v for k, v in features.items()
                                                                           if k != "file_name"}})
    return Rows(), feats, None, "train", facts


def _check_split_and_subset(ds, source: DatasetSource, path: str, kwargs: dict, split: str | None,
                            subset: str | None) -> tuple[str, str | None]:
    """(split, subset) checked against what the dataset has; InputError listing them otherwise."""
    if source.kind in ("hub",) or (source.kind == "files" and Path(source.location).is_dir()):
        try:
            subsets = ds.get_dataset_config_names(path, **kwargs)
        except Exception as exc:
            raise InputError(f"cannot read the subsets of {source.label}: {short_error(exc)}",
                             "check the dataset id, or pass a local copy") from None
        if subset is None and len(subsets) > 1:
            raise InputError(f"{source.label} has {len(subsets)} subsets", "pass --subset, one of: "
                             + ", ".join(subsets))
        if subset is not None and subset not in subsets:
            raise InputError(f"{source.label} has no subset {subset!r}", "pass --subset, one of: "
                             + ", ".join(subsets))
        subset = subset or (subsets[0] if subsets and subsets[0] != "default" else None)
    elif subset:
        raise InputError(f"{source.label} has no subsets (configs)", "drop --subset")
    try:
        splits = ds.get_dataset_split_names(path, config_name=subset, **kwargs)
    except Exception as exc:
        raise InputError(f"cannot read the splits of {source.label}: {short_error(exc)}",
                         "check the dataset id and --subset") from None
    if split is None:
        if len(splits) != 1:
            raise InputError(f"{source.label} has {len(splits)} splits", "pass --split, one of: " + ", ".join(splits))
        split = splits[0]
    if split not in splits:
        raise InputError(f"{source.label} has no split {split!r}", "pass --split, one of: " + ", ".join(splits))
    return split, subset


def _hub_commit(source: DatasetSource) -> str | None:
    """The commit a hub revision resolves to (None when the hub does not say)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source.location, revision=source.revision).sha
    except Exception:
        return None


# --------------------------------------------------------------------------------------------- columns
@dataclass
class Columns:
    """How a dataset's columns become a manifest: the audio column, label columns with their decoders, group, id."""

    audio: str
    labels: dict[str, Any]  # column -> ClassLabel names (list) or None (a plain scalar)
    group: str | None
    item_id: str | None
    renamed: dict[str, str]  # dataset column -> manifest column, where a name is taken by musicsae


def plan_columns(features, first_row: dict | None, cfg) -> Columns:
    """Which columns hold the audio and the labels; InputError with the columns when something is missing."""
    ds = _datasets()
    names = list(features) if features is not None else list(first_row or {})
    if not names:
        raise InputError("the dataset has no columns (or no rows)", "check the source, --subset and --split")
    audio = cfg.audio_column
    if audio is None:
        found = [n for n in names if features is not None and isinstance(features[n], ds.Audio)]
        if not found and first_row is not None:
            found = [n for n in names if isinstance(first_row.get(n), dict) and {"bytes", "path"} <= set(first_row[n])]
        if not found:
            raise InputError("the dataset has no audio column", f"its columns: {', '.join(names)}; name one with "
                                                                "--audio-column")
        audio = found[0]
    elif audio not in names:
        raise InputError(f"no column {audio!r} in the dataset", f"its columns: {', '.join(names)}")
    labels: dict[str, Any] = {}
    for name in names:
        if name == audio:
            continue
        feature = features[name] if features is not None else None
        if isinstance(feature, ds.ClassLabel):
            labels[name] = list(feature.names)
        elif type(feature).__name__ == "Json":  # values of no one type (a JSON column): checked row by row
            labels[name] = None
        elif feature is None or (isinstance(feature, ds.Value) and _scalar_dtype(feature.dtype)):
            if feature is None and first_row is not None and not _is_scalar(first_row.get(name)):
                continue
            labels[name] = None
    keep = cfg.label_columns
    if keep is not None:
        missing = [c for c in keep if c not in labels]
        if missing:
            raise InputError(f"no scalar column {', '.join(map(repr, missing))} in the dataset",
                             f"its label columns: {', '.join(labels) or '-'}")
    for role, col in (("--group-column", cfg.group_column), ("--id-column", cfg.id_column)):
        if col is not None and col not in labels:
            raise InputError(f"{role} {col!r} is not a scalar column of the dataset",
                             f"its scalar columns: {', '.join(labels) or '-'}")
    group = cfg.group_column or ("group" if "group" in labels else None)
    if keep is not None:
        labels = {c: v for c, v in labels.items() if c in keep or c in (group, cfg.id_column)}
    renamed = {c: f"dataset_{c}" for c in labels if c in RESERVED and c not in (group, cfg.id_column)}
    return Columns(audio, labels, group, cfg.id_column, renamed)


def _scalar_dtype(dtype: str) -> bool:
    return dtype in ("bool", "string", "large_string") or bool(re.fullmatch(r"u?int\d+|float\d+", dtype))


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_))


class _LabelTypes:
    """The Python type of each label column's values, so a column mixing types fails with where it does."""

    def __init__(self):
        self.seen: dict[str, tuple[str, int]] = {}

    def check(self, column: str, value, row: int) -> Any:
        if value is None:
            return None
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            value = value.item()
        kind = "bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else \
            "text" if isinstance(value, str) else type(value).__name__
        if kind not in ("bool", "number", "text"):
            raise InputError(f"label column {column!r} holds {kind} values (row {row}), not scalars",
                             "keep other columns with --label")
        first = self.seen.setdefault(column, (kind, row))
        if first[0] != kind:
            raise InputError(f"label column {column!r} mixes types: {first[0]} (row {first[1]}) and {kind} "
                             f"(row {row})", "keep other columns with --label, or give the column one type")
        return value


# --------------------------------------------------------------------------------------------- import
def import_dataset(source: DatasetSource, out: Path, cfg, overwrite: bool = False,
                   progress: ProgressFactory = no_progress) -> dict:
    """Write the rows of a dataset as audio files plus a manifest into the dataset folder `out`."""
    from .syntheory import is_syntheory, subset_of

    ds = _datasets()
    _check_output_place(out, source, ds)
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    if out.exists():
        check_replaceable(out)
    rows, features, total, split, facts = open_dataset(source, cfg.split, cfg.subset)
    first = None
    if features is None:  # a stream that does not declare its features: look at its first row
        first = next(iter(rows), None)
        if first is None:
            raise InputError(f"{source.label} split {split!r} has no rows", "check --subset and --split")
    cols = plan_columns(features, first, cfg)
    rows = rows.cast_column(cols.audio, ds.Audio(decode=False))
    mapping = cfg.label_map
    if mapping == "auto":
        mapping = "syntheory" if is_syntheory(source.location) else "none"  # the hub id or a folder's name
    syn_subset = subset_of(list(cols.labels), facts.get("subset")) if mapping == "syntheory" else None
    if mapping == "syntheory" and syn_subset is None:
        raise InputError("the SynTheory label map does not know these columns", "pass --subset (notes, intervals, "
                         "scales, chords, simple_progressions, tempos, time_signatures) or --set label_map=none")
    settings = {**cfg.model_dump(mode="json"), "split": split, "subset": facts.get("subset"),
                "label_map": mapping, "source": source.label}
    stage, done = _stage(out, settings)
    limit = cfg.limit
    n_total = min(n for n in (total, limit) if n is not None) if (total, limit) != (None, None) else None
    types = _LabelTypes()
    skipped = [(r["row_label"], r["reason"]) for r in done if r.get("skipped")]
    written = [r for r in done if not r.get("skipped")]
    start = len(done)
    journal = open(stage / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
    try:
        with progress("Importing rows", n_total) as bar:
            bar.advance(start)
            for i, row in enumerate(_rows(rows, start)):
                index = start + i
                if limit is not None and index >= limit:
                    break
                entry = _import_row(row, index, cols, cfg, stage, types, mapping, syn_subset, split)
                if "reason" in entry:
                    label = f"row {index}"
                    skip_unusable(label, entry["reason"], cfg.strict, skipped)
                    entry = {"skipped": True, "row_label": label, "reason": entry["reason"], "row": index}
                else:
                    written.append(entry)
                journal.write(json.dumps(entry) + "\n")
                journal.flush()
                bar.advance()
    except (InputError, AudioError):  # bad input (or an unusable row with strict): nothing partial is kept
        journal.close()
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if not journal.closed:
            journal.close()
    if not written:
        shutil.rmtree(stage, ignore_errors=True)
        raise InputError(f"no usable audio among the {len(written) + len(skipped)} rows read from {source.label}",
                         "see the warnings for why each row was skipped")
    ids = [r["item_id"] for r in written]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        shutil.rmtree(stage, ignore_errors=True)
        raise InputError(f"--id-column {cols.item_id!r} repeats item ids ({', '.join(twice[:3])}"
                         f"{' ...' if len(twice) > 3 else ''})", "name a column whose values are unique, or drop "
                                                                  "--id-column")
    label_columns = list(dict.fromkeys(k for r in written for k in r["labels"]))
    manifest_rows = [{"path": stage / r["path"], "item_id": r["item_id"], "group": r["group"], **r["labels"],
                      "duration_s": r["duration_s"], "sample_rate": r["sample_rate"], "channels": r["channels"]}
                     for r in written]
    Manifest(manifest_rows, label_columns, stage).write(stage / "manifest.csv")
    head = {**facts, "split": split, "label_map": mapping, "audio_column": cols.audio,
            "rows_read": len(written) + len(skipped), "limit": limit,
            "class_labels": {c: names for c, names in cols.labels.items() if names is not None}}
    write_json(stage / "manifest.json", new_manifest(
        "dataset", IMPORT_FORMAT_VERSION, settings, source="hf", manifest="manifest.csv", n_items=len(written),
        label_columns=label_columns, origin=head, skipped=[{"row": r, "reason": why} for r, why in skipped]))
    write_config(stage, settings)
    (stage / JOURNAL).unlink()
    (stage / "settings.json").unlink()
    swap_into_place(stage, out)
    return {"path": str(out), "manifest": str(out / "manifest.csv"), "items": len(written),
            "label_columns": label_columns, "skipped": skipped, "split": split, "subset": facts.get("subset"),
            "resumed_rows": start, "label_map": mapping,
            "seconds_of_audio": round(sum(r["duration_s"] for r in written), 3)}


def _rows(rows, start: int):
    """The rows from `start` on (a memory-mapped table seeks; a stream skips)."""
    if start and hasattr(rows, "select"):
        return iter(rows.select(range(start, len(rows))))
    return iter(rows.skip(start)) if start else iter(rows)


def _check_output_place(out: Path, source: DatasetSource, ds) -> None:
    """Refuse an output inside the source folder or inside the datasets / hub caches."""
    if Path(out).suffix.lower() in MANIFEST_FORMATS:
        raise InputError(f"a dataset is written as a folder (audio files and manifest.csv), not as {out.name}",
                         f"pass -o {Path(out).with_suffix('')}/")
    target = out.resolve()
    places = [Path(source.location)] if source.kind != "hub" and Path(source.location).is_dir() else []
    caches = [ds.config.HF_DATASETS_CACHE]
    try:
        from huggingface_hub import constants

        caches.append(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        pass
    for place in [*places, *map(Path, caches)]:
        if not place.exists() and place not in places:
            continue
        base = place.resolve() if place.is_dir() else place.resolve().parent
        if target == base or base in target.parents:
            what = "the input dataset" if place in places else "the Hugging Face cache"
            raise InputError(f"the output {out} lies inside {what} ({place})",
                             "write the dataset folder somewhere else")


def _stage(out: Path, settings: dict) -> tuple[Path, list[dict]]:
    """(stage folder, rows already done): a resumable import of the same source and settings, or a new one."""
    stage = out.parent / f".{out.name}{STAGE_SUFFIX}"
    mine = {k: v for k, v in settings.items() if k not in RUNTIME_ONLY}
    if stage.is_dir():
        try:
            before = json.loads((stage / "settings.json").read_text("utf-8"))
        except (OSError, ValueError):
            before = None
        if before == mine and (stage / JOURNAL).is_file():
            done = []
            for line in (stage / JOURNAL).read_text("utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a line cut short by the interruption: redo that row
                if not entry.get("skipped") and not (stage / entry["path"]).is_file():
                    break
                done.append(entry)
            if done:
                log.warning("resuming the import into %s after %d rows", out, len(done))
            (stage / JOURNAL).write_text("".join(json.dumps(e) + "\n" for e in done), "utf-8")
            return stage, done
        if before is None and not (stage / JOURNAL).is_file():
            raise InputError(f"{stage} exists and musicsae did not write it", "move it away")
        shutil.rmtree(stage)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage.mkdir()
    write_json(stage / "settings.json", mine)
    return stage, []


def _bit_depth(subtype: str, fmt: str) -> int:
    """The output bit depth that keeps a source's resolution: 24 for 24-bit, 32-bit and float sources (32-bit float
    in wav), else 16."""
    if subtype in ("FLOAT", "DOUBLE"):
        return 32 if fmt == "wav" else 24
    return 24 if subtype in ("PCM_24", "PCM_32") else 16


def _import_row(row: dict, index: int, cols: Columns, cfg, stage: Path, types: _LabelTypes, mapping: str,
                syn_subset: str | None, split: str) -> dict:
    """Decode one row's audio and write it; its journal entry (or {"reason": ...} when it cannot be used)."""
    import soundfile as sf

    from .derive import write_audio_file

    audio = row.get(cols.audio)
    labels = {}
    for column, names in cols.labels.items():
        value = types.check(column, row.get(column), index)
        if names is not None and value is not None:
            value = names[int(value)] if 0 <= int(value) < len(names) else None  # -1: no label
        labels[cols.renamed.get(column, column)] = value
    group = labels.pop(cols.group) if cols.group else None
    item = labels.pop(cols.item_id) if cols.item_id else None
    if mapping == "syntheory":
        from .syntheory import map_row

        labels = map_row(syn_subset, labels)
    if not isinstance(audio, dict) or (audio.get("bytes") is None and not audio.get("path")):
        return {"reason": "no audio in the row"}
    try:
        stored = io.BytesIO(audio["bytes"]) if audio.get("bytes") is not None else audio["path"]
        with sf.SoundFile(stored) as fh:
            rate, subtype = fh.samplerate, fh.subtype
            data = fh.read(dtype="float32", always_2d=True)  # (N, C)
        check_finite(data, f"row {index}", rate)
    except AudioError as exc:
        return {"reason": getattr(exc, "reason", None) or short_error(exc)}
    except Exception as exc:  # libsndfile's errors for corrupt or unknown data
        return {"reason": f"cannot decode ({short_error(exc)})"}
    if data.shape[0] == 0:
        return {"reason": "zero-length audio"}
    x = np.ascontiguousarray(data.T)  # (C, N)
    peak = float(np.abs(x).max())
    if not cfg.keep_silent and (peak == 0.0 or 20 * np.log10(peak) < cfg.silence_db):
        return {"reason": f"silent (peak below {cfg.silence_db:g} dBFS)"}
    if cfg.sample_rate and cfg.sample_rate != rate:
        x, rate = resample(x, rate, cfg.sample_rate), cfg.sample_rate
    source_path = audio.get("path") or ""
    item_id = str(item) if item is not None else f"{split}-{index:06d}"
    if group is None:  # the source file when rows name one (several rows may come from one recording)
        group = Path(source_path).stem if source_path else item_id
    rel = Path("audio") / f"{split}-{index:06d}.{cfg.audio_format}"  # unique whatever the ids
    write_audio_file(stage / rel, x, int(rate), cfg.audio_format, cfg.bit_depth or _bit_depth(subtype,
                                                                                                cfg.audio_format))
    if source_path:
        labels.setdefault("source_path", source_path)
    return {"row": index, "path": rel.as_posix(), "item_id": item_id, "group": str(group), "labels": labels,
            "duration_s": round(x.shape[1] / rate, 6), "sample_rate": int(rate), "channels": int(x.shape[0])}
