"""Probe samples from a store: labels (missing ones reported), one read of every hookpoint (splits: splits.py)."""

from __future__ import annotations

import difflib
import fnmatch
import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, MusicSAEError
from ..progress import ProgressFactory, no_progress
from ..store import ActivationStore

log = logging.getLogger("musicsae")
NUMERIC = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float", "double",
           "float16", "float32", "float64", "halffloat")
_EXAMPLES = 5


@dataclass
class ProbeData:
    """Samples (pooled items or frames) of the chosen hookpoints, with their labels and groups."""

    hookpoints: list[str]
    x: np.ndarray  # (H, n, d) float32 features of every hookpoint
    labels: np.ndarray | None  # (n,) str (classification) or float64 (regression); None when unlabelled
    groups: np.ndarray  # (n,) str split key (track) of each sample
    item_ids: np.ndarray  # (n,) str
    rows: np.ndarray  # (n,) int64 global row of each sample (an item's first pooled row)
    frames: np.ndarray | None  # (n,) frame numbers (frame pooling), else None
    split_column: str
    missing: dict = field(default_factory=dict)  # {"rows", "items", "examples"} of rows without a label
    labelled: np.ndarray | None = None  # (n,) bool: sample has a label (all True when missing rows were dropped)
    sampled_from: int | None = None  # frame pooling: rows available before the max_rows sample
    bytes_read: int = 0  # activation bytes read from the store (approximate for CSR)
    widths: dict = field(default_factory=dict)  # {hookpoint: its own width}; x is zero-padded to the widest


def pick_hookpoints(store: ActivationStore, patterns: list[str]) -> list[str]:
    """Store hookpoints matching names or globs (all by default), in store order.

    Hookpoints of different widths are probed together: each one's features are zero-padded to the widest, and a
    zero feature with unit scale adds nothing to a linear probe, so each probe is that of its own width."""
    if not patterns:
        chosen = list(store.hookpoints)
    else:
        chosen = []
        for pattern in patterns:
            hits = [hp for hp in store.hookpoints if fnmatch.fnmatchcase(hp, pattern)]
            if not hits:
                close = difflib.get_close_matches(pattern, store.hookpoints, n=1)
                guess = f"did you mean '{close[0]}'? " if close else ""
                raise InputError(f"hookpoint '{pattern}' is not in the store",
                                 guess + "available: " + ", ".join(store.hookpoints))
            chosen += [hp for hp in hits if hp not in chosen]
        chosen = [hp for hp in store.hookpoints if hp in chosen]
    return chosen


def padded_stack(arrays: list[np.ndarray]) -> np.ndarray:
    """(H, n, d_max) float32 from per-hookpoint (n, d_h) arrays, zero-padded on the feature axis."""
    d = max(a.shape[1] for a in arrays)
    out = np.zeros((len(arrays), arrays[0].shape[0], d), dtype=np.float32)
    for h, a in enumerate(arrays):
        out[h, :, : a.shape[1]] = a
    return out


def check_label_column(store: ActivationStore, label: str | None) -> str:
    """The label column, or InputError naming the closest metadata column."""
    if not label:
        raise InputError("no label column given", "pass --label COLUMN, one of: " + ", ".join(store.item_columns))
    if label not in store.metadata_columns:
        columns = [c for c in store.metadata_columns if c not in ("item_id", "frame", "time_s")]
        close = difflib.get_close_matches(label, columns, n=1, cutoff=0.0)
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise InputError(f"the store has no label column '{label}'", guess + "columns: " + ", ".join(columns))
    return label


def load_samples(store: ActivationStore, hookpoints: list[str], label: str | None, task: str, pooling: str,
                 where: list[str], split_column: str, max_rows: int | None = None, seed: int = 0,
                 progress: ProgressFactory = no_progress, drop_missing: bool = True) -> ProbeData:
    """Read every hookpoint once (pooled per item, or per frame) for the rows matching `where`.

    Rows whose label is missing are reported (count and example items), never silently, and left out
    (`drop_missing`) or kept with `labelled` False. With `label=None` every selected row is kept, labels None.
    """
    rows = store.select(where) if where else np.arange(store.n_rows, dtype=np.int64)
    if rows.size == 0:
        raise InputError("no rows to probe" + (f" after filters {where}" if where else " (empty store)"),
                         "check --where against `musicsae info STORE`")
    if split_column not in store.metadata_columns:
        log.warning("store has no '%s' column; splitting by item_id instead", split_column)
        split_column = "item_id"
    columns = list(dict.fromkeys(["item_id", split_column, *([label] if label else [])]))
    meta = store.metadata(columns)
    item_ids = column_values(meta, "item_id")[rows].astype(str)
    groups = column_values(meta, split_column)[rows].astype(str)
    labels, missing, ok = None, {"rows": 0, "items": 0, "examples": []}, np.ones(rows.size, dtype=bool)
    if label:
        values = meta.column(label).take(rows)
        labels, ok = _labels(values, store.metadata_columns[label], task, label)
        if not ok.all():
            bad = np.unique(item_ids[~ok])
            missing = {"rows": int((~ok).sum()), "items": int(bad.size), "examples": bad[:_EXAMPLES].tolist()}
            log.warning("label '%s' is missing for %d item(s) (%d rows)%s: %s%s", label, bad.size,
                        missing["rows"], ", left out" if drop_missing else "", ", ".join(missing["examples"]),
                        " ..." if bad.size > _EXAMPLES else "")
            if drop_missing:
                rows, item_ids, groups, labels, ok = rows[ok], item_ids[ok], groups[ok], labels[ok], ok[ok]
        if not ok.any() and drop_missing:
            raise InputError(f"every selected row lacks a '{label}' label", "choose another --label or --where")
    if pooling == "frame":
        data = _frames(store, hookpoints, rows, item_ids, groups, labels, ok, max_rows, seed, progress)
    else:
        data = _pooled(store, hookpoints, pooling, rows, item_ids, groups, labels, ok, label, progress)
    data.split_column, data.missing = split_column, missing
    if not np.isfinite(data.x).all():
        bad = np.flatnonzero(~np.isfinite(data.x).all(axis=(0, 2)))
        raise MusicSAEError(f"non-finite activations (NaN/Inf) in {bad.size} sample(s), e.g. item "
                            f"{data.item_ids[bad[0]]}", "re-extract those items, or exclude them with --where")
    return data


def column_values(table, name: str) -> np.ndarray:
    """One metadata column of an arrow table as a numpy array (objects for strings and nulls)."""
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def label_text(value) -> str:
    """A label value as class text: whole floats without ".0" (bpm 120.0 -> "120")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def natural_key(value: str) -> tuple:
    """Sort numbers numerically, before other strings ("2" < "10" < "jazz"); ties by the text itself."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _labels(values, arrow_type: str, task: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, present mask): str labels for classification, float64 for regression; nulls/NaN missing."""
    present = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if task == "regression":
        if arrow_type not in NUMERIC:
            raise InputError(f"label '{label}' holds {arrow_type} values; regression needs numbers",
                             "use --task classification, or a numeric column such as bpm")
        out = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        present &= np.isfinite(np.where(present, out, 0.0))
        return out, present
    raw = values.to_pylist()
    if arrow_type in ("float", "double", "float32", "float64"):
        present &= np.array([v is None or np.isfinite(v) for v in raw], dtype=bool)
        raw = [_number_text(v) for v in raw]
    return np.array(["" if v is None else str(v) for v in raw], dtype=object), present


def _number_text(value) -> str | None:
    if value is None or not np.isfinite(value):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _pooled(store, hookpoints, how, rows, item_ids, groups, labels, ok, label, progress) -> ProbeData:
    items, acts = store.pool(hookpoints, how, rows=rows, progress=progress)
    # Items are contiguous runs of rows: one sample per run, in store order (the order pool returns).
    starts = np.flatnonzero(np.r_[True, item_ids[1:] != item_ids[:-1]])
    counts = np.diff(np.r_[starts, rows.size])
    pooled_ids = np.asarray(items.column("item_id").to_pylist(), dtype=object).astype(str)
    if starts.size != pooled_ids.size or np.any(item_ids[starts] != pooled_ids):
        raise MusicSAEError("pooled items do not line up with the selected rows", "the store may be corrupt")
    varies = None if labels is None else (np.repeat(labels[starts], counts) != labels) & ok
    if varies is not None and labels.dtype.kind == "f":
        varies &= ~np.isnan(labels)
    if varies is not None and varies.any():
        varying = np.unique(item_ids[varies])
        raise InputError(f"label '{label}' varies within {varying.size} item(s) (e.g. {varying[0]})",
                         "probe per frame with --pooling frame")
    x = padded_stack([acts.pop(hp) for hp in hookpoints])  # (H, n_items, d_max)
    return ProbeData(hookpoints, x, None if labels is None else labels[starts], groups[starts], item_ids[starts],
                     rows[starts], None, "", labelled=ok[starts], bytes_read=_bytes(store, hookpoints, rows.size),
                     widths={hp: int(store.widths[hp]) for hp in hookpoints})


def _frames(store, hookpoints, rows, item_ids, groups, labels, ok, max_rows, seed, progress) -> ProbeData:
    available = rows.size
    if max_rows is not None and rows.size > max_rows:
        keep = np.sort(np.random.default_rng([seed, 11]).choice(rows.size, size=max_rows, replace=False))
        log.warning("frame pooling: using a seeded sample of %d of %d rows (max_rows)", max_rows, rows.size)
        rows, item_ids, groups, ok = rows[keep], item_ids[keep], groups[keep], ok[keep]
        labels = None if labels is None else labels[keep]
    d = max(store.widths[hp] for hp in hookpoints)
    x = np.zeros((len(hookpoints), rows.size, d), dtype=np.float32)  # (H, n, d_max), zero-padded
    batch = 8192
    with progress("Reading frames", -(-rows.size // batch)) as tracker:
        for b in store.stream(hookpoints, batch, rows=rows, shuffle=False):
            pos = np.searchsorted(rows, b.rows)
            for h, hp in enumerate(hookpoints):
                x[h, pos, : store.widths[hp]] = b.acts[hp]
            tracker.advance(1)
    frames = column_values(store.metadata(["frame"]), "frame")[rows].astype(np.int64)
    return ProbeData(hookpoints, x, labels, groups, item_ids, rows, frames, "", labelled=ok,
                     sampled_from=available if available != rows.size else None,
                     bytes_read=_bytes(store, hookpoints, rows.size),
                     widths={hp: int(store.widths[hp]) for hp in hookpoints})


def _bytes(store, hookpoints: list[str], n_rows: int) -> int:
    """Activation bytes behind `n_rows` rows of `hookpoints` (CSR: the stored arrays, pro rata)."""
    total = 0
    for hp in hookpoints:
        if store.is_sparse(hp):
            size = sum(f.stat().st_size for s in store.shards for f in s.path.glob(f"{hp}.*.npy"))
            total += int(size * n_rows / max(store.n_rows, 1))
        else:
            total += n_rows * store.widths[hp] * np.dtype(store.storage_dtype).itemsize
    return total
