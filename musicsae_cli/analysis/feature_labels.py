"""Label columns of the feature dashboard, and how often each label value comes with a latent.

Label columns are coded once over the analysed rows (`Labels`: per column an int32 code per row and the value
names). They default to the metadata columns (bookkeeping ones such as item_id, frame or source_path aside) with
2 .. max_label_values distinct values; float columns count only when every value is whole (like bpm 120.0).
Values sort numerically when they are numbers; nulls are a value of their own, "(missing)", coded last.

Co-occurrence: for a label column and value v, P(v | latent active) against the base rate P(v) over all
analysed frames; lift = P(v | active) / P(v) (0 when the latent is never active with v). features.json keeps
every value; the pages list only those with lift >= min_lift on at least min_lift_frames active frames
("listed": true), and a latent's top labels are chosen among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..probes.data import check_label_column

MISSING = "(missing)"
# Metadata columns that identify rows or files rather than label them.
NOT_LABELS = ("item_id", "frame", "time_s", "source_path", "source_item", "group", "window", "window_start_s",
              "text", "path")
TOP_LABEL_MIN_SHARE = 0.25  # a "top label" covers at least this share of the latent's active frames
N_TOP_LABELS = 3


@dataclass
class Labels:
    """Label columns over the analysed rows: per column the codes (n,) and the value names (nulls last)."""

    codes: dict[str, np.ndarray] = field(default_factory=dict)  # column -> (n,) int32 value index
    values: dict[str, list[str]] = field(default_factory=dict)  # column -> value names, MISSING last if any

    @property
    def columns(self) -> list[str]:
        return list(self.codes)


def label_columns(store, table: pa.Table, requested: list[str] | None, max_values: int,
                  extra: str | None = None) -> Labels:
    """Code the label columns of `table` (the analysed rows): requested ones, or the categorical-looking ones."""
    known = store.metadata_columns
    for col in [*(requested or []), *([extra] if extra else [])]:
        check_label_column(store, col)
    if requested is not None:
        columns = list(dict.fromkeys(requested))
    else:
        columns = [c for c in known if c not in NOT_LABELS and known[c] != "null"]
    if extra is not None and extra not in columns:
        columns.append(extra)
    out = Labels()
    for col in columns:
        arr = table.column(col).combine_chunks()
        if requested is None and col != extra and not _categorical(arr, known[col], max_values):
            continue
        codes, values = encode_column(arr)
        real = len(values) - (values[-1] == MISSING if values else 0)
        if col == extra or requested is not None:
            if real > max_values:
                raise InputError(f"label column '{col}' has {real} distinct values (more than max_label_values="
                                 f"{max_values})", "choose a categorical column, or raise it with "
                                 f"--set max_label_values={real}")
        out.codes[col], out.values[col] = codes, values
    return out


def _categorical(arr: pa.Array, arrow_type: str, max_values: int) -> bool:
    valid = pc.drop_null(arr)
    if len(valid) == 0:
        return False
    n = len(pc.unique(valid))
    if not 2 <= n <= max_values:
        return False
    if arrow_type == "double":
        return bool(pc.all(pc.equal(pc.floor(valid), valid)).as_py())
    return True


def encode_column(arr: pa.Array) -> tuple[np.ndarray, list[str]]:
    """(codes (n,) int32, value names): values sorted (numbers numerically), nulls coded as MISSING, last."""
    valid = pc.drop_null(arr)
    uniques = pc.unique(valid).to_pylist()
    uniques.sort(key=lambda v: (0, v, "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0, str(v)))
    names = [value_name(v) for v in uniques]
    if len(uniques):
        codes = pc.index_in(arr, value_set=pa.array(uniques, type=arr.type)).to_numpy(zero_copy_only=False)
    else:
        codes = np.full(len(arr), np.nan)
    missing = np.isnan(codes) if codes.dtype.kind == "f" else np.zeros(len(arr), bool)
    codes = np.where(missing, len(names), np.nan_to_num(codes)).astype(np.int32)
    if missing.any():
        names.append(MISSING)
    return codes, names


def value_name(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cooccurrence(j: int, cnt: int, n: int, labels: Labels, base: dict, scan: dict, min_lift: float,
                 min_frames: int) -> dict:
    """Per label column, every value of it with selected latent number `j` (active on `cnt` of `n` frames):
    frames, active frames, P(value | active), base rate, lift, mean activation and whether it is listed; largest
    lift first. `base` holds the frames per value, `scan` the co-occurrence counts and sums of scan_selected."""
    out = {}
    for col in labels.columns:
        rows = []
        for vi, name in enumerate(labels.values[col]):
            k = int(scan["co_count"][col][vi, j])
            p_active = k / cnt if cnt else None
            p_base = int(base[col][vi]) / n
            lift = (p_active / p_base) if p_active is not None and p_base else None
            rows.append({"value": name, "n_frames": int(base[col][vi]), "n_active": k, "p_active": p_active,
                         "base_rate": p_base, "lift": lift,
                         "mean_activation": float(scan["co_sum"][col][vi, j] / base[col][vi])
                         if base[col][vi] else None,
                         "listed": lift is not None and lift >= min_lift and k >= min_frames})
        rows.sort(key=lambda r: (-(r["lift"] or 0.0), -r["n_active"], r["value"]))
        out[col] = rows
    return out


def top_labels(cooc: dict) -> list[dict]:
    """Up to N_TOP_LABELS listed (column, value) pairs (lift >= min_lift on >= min_lift_frames active frames)
    covering >= TOP_LABEL_MIN_SHARE of the latent's active frames, largest lift first."""
    pairs = [{"column": col, "value": r["value"], "lift": r["lift"], "p_active": r["p_active"]}
             for col, rows in cooc.items() for r in rows
             if r["value"] != MISSING and r["listed"] and (r["p_active"] or 0.0) >= TOP_LABEL_MIN_SHARE]
    pairs.sort(key=lambda p: (-p["lift"], -p["p_active"], p["column"], p["value"]))
    return pairs[:N_TOP_LABELS]


def shown_label_columns(top_frames: list[dict], columns: list[str]) -> list[str]:
    """The label columns with a value on at least one top frame (columns missing on every one are hidden)."""
    return [c for c in columns if any(f["labels"].get(c) not in (None, "", MISSING) for f in top_frames)]
