"""One dataset row into a manifest entry: which columns hold the audio and the labels (`plan_columns`), label
values checked for one type per column (`LabelTypes`), the row's audio decoded and written (`import_row`)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudioError, InputError
from .hf_loading import datasets_module
from .io import check_finite, resample, short_error
from .manifest import RESERVED


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
    ds = datasets_module()
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


class LabelTypes:
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


def _bit_depth(subtype: str, fmt: str) -> int:
    """The output bit depth that keeps a source's resolution: 24 for 24-bit, 32-bit and float sources (32-bit float
    in wav), else 16."""
    if subtype in ("FLOAT", "DOUBLE"):
        return 32 if fmt == "wav" else 24
    return 24 if subtype in ("PCM_24", "PCM_32") else 16


def import_row(row: dict, index: int, cols: Columns, cfg, stage: Path, types: LabelTypes, mapping: str,
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
