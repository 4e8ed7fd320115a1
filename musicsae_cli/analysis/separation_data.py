"""The samples a separation analysis measures: features read from the store, pooled per item when asked,
sampled per class, and each label coded into classes.

Features are raw activations or SAE latents, one row per frame or, with pooling mean|max, per item (a label must
then be constant within each item); sparse latents stay scipy CSR. With max_rows, a seeded sample stratified by
the first label is read. Continuous labels (e.g. bpm) are binned into quantile classes for every class measure
and keep their raw values for regression; missing values are coded -1 (NaN for the raw value).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, MusicSAEError
from ..probes.data import column_values, label_text, natural_key
from ..progress import ProgressFactory
from .config import SeparationConfig
from .latents import FeatureSource

log = logging.getLogger("musicsae")
NUMERIC = ("int32", "int64", "double")


@dataclass
class Label:
    """One label's samples: class codes (binned when continuous) and, for continuous labels, the raw values."""

    name: str
    task: str  # classification | regression
    classes: list[str]
    codes: np.ndarray  # (n,) int64 class of each labelled sample, -1 where missing
    values: np.ndarray | None  # (n,) float64 raw values (regression), NaN where missing
    edges: list[float] | None  # bin edges of a continuous label
    missing: int

    @property
    def present(self) -> np.ndarray:
        return self.codes >= 0


def load_samples(source: FeatureSource, cfg: SeparationConfig, progress: ProgressFactory, where: list[str]):
    """(features (n, W) scipy CSR or float32 array, metadata columns per sample, sampling record) of `where`'s rows."""
    store = source.store
    rows = store.select(where) if where else np.arange(store.n_rows, dtype=np.int64)
    if rows.size == 0:
        raise InputError("no rows to analyse" + (f" after filters {where}" if where else " (empty store)"),
                         "check --where against `musicsae info STORE`")
    split = cfg.split_column if cfg.split_column in store.metadata_columns else "item_id"
    if split != cfg.split_column:
        log.warning("store has no '%s' column; grouping folds by item_id", cfg.split_column)
    columns = list(dict.fromkeys(["item_id", split, *cfg.labels]))
    table = store.metadata(columns)
    meta = {c: column_values(table, c)[rows] for c in columns}
    meta["__group"] = meta[split].astype(str)
    sampling = {"rows_selected": int(rows.size), "split_column": split, "pooling": cfg.pooling}
    if cfg.pooling != "frame":
        starts = np.flatnonzero(np.r_[True, meta["item_id"][1:] != meta["item_id"][:-1]])
        for name in cfg.labels:
            _check_constant(name, meta[name], meta["item_id"], starts)
    else:
        starts = None
    n_samples = rows.size if starts is None else starts.size
    keep = None
    if cfg.max_rows is not None and n_samples > cfg.max_rows:
        first = meta[cfg.labels[0]] if starts is None else meta[cfg.labels[0]][starts]
        keep = stratified_sample(_codes_of(first), cfg.max_rows, cfg.seed)
        sampling["sampled_from"] = int(n_samples)
    if starts is None:
        if keep is not None:
            rows = rows[keep]
            meta = {c: v[keep] for c, v in meta.items()}
        with progress("Reading features", int(rows.size)) as bar:
            x = source.read(rows, bar)
    else:
        counts = np.diff(np.r_[starts, rows.size])
        if keep is not None:
            take = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in keep])
            rows, starts, counts = rows[take], np.r_[0, np.cumsum(counts[keep])[:-1]], counts[keep]
            meta = {c: v[take] for c, v in meta.items()}
        with progress("Reading features", int(rows.size)) as bar:
            x = _pool(source.read(rows, bar), starts, counts, cfg.pooling)
        meta = {c: v[starts] for c, v in meta.items()}
    sampling["samples"] = int(x.shape[0])
    sampling["features"] = int(x.shape[1])
    if not _finite(x):
        raise MusicSAEError("non-finite features (NaN/Inf) in the store", "re-extract, or exclude rows with --where")
    return x, meta, sampling


def _codes_of(values: np.ndarray) -> np.ndarray:
    _, codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    return codes


def _check_constant(name: str, values: np.ndarray, item_ids: np.ndarray, starts: np.ndarray) -> None:
    text = np.asarray([str(v) for v in values])
    first = np.repeat(text[starts], np.diff(np.r_[starts, text.size]))
    if np.any(first != text):
        bad = item_ids[np.flatnonzero(first != text)[0]]
        raise InputError(f"label '{name}' varies within item {bad}", "analyse frames with --pooling frame")


def _pool(x, starts: np.ndarray, counts: np.ndarray, how: str):
    """Per-item mean or max of consecutive rows; sparse input stays sparse."""
    import scipy.sparse as sp

    n = x.shape[0]
    item = np.repeat(np.arange(starts.size), counts)
    if sp.issparse(x):
        if how == "mean":
            weights = sp.csr_matrix((1.0 / counts[item], (item, np.arange(n))), shape=(starts.size, n))
            return (weights @ x).astype(np.float32).tocsr()
        parts, limit = [], max(1, (1 << 24) // max(x.shape[1], 1))  # densify a bounded run of items at a time
        for a, b in _item_runs(counts, limit):
            r0, r1 = int(starts[a]), int(starts[b - 1] + counts[b - 1])
            parts.append(sp.csr_matrix(np.maximum.reduceat(x[r0:r1].toarray(), starts[a:b] - r0, axis=0)))
        return sp.vstack(parts, format="csr") if parts else x[:0]
    if how == "mean":
        return (np.add.reduceat(x.astype(np.float64), starts, axis=0) / counts[:, None]).astype(np.float32)
    return np.maximum.reduceat(x, starts, axis=0)


def _item_runs(counts: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive item ranges [a, b) holding at most `limit` rows (or one item)."""
    runs, a, total = [], 0, 0
    for i, k in enumerate(counts.tolist()):
        if total and total + k > limit:
            runs.append((a, i))
            a, total = i, 0
        total += k
    if counts.size:
        runs.append((a, counts.size))
    return runs


def _finite(x) -> bool:
    import scipy.sparse as sp

    return bool(np.isfinite(x.data).all()) if sp.issparse(x) else bool(np.isfinite(x).all())


def stratified_sample(codes: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of at most `max_n`, each class in proportion (at least 2 if it has them)."""
    n = codes.size
    if n <= max_n:
        return np.arange(n)
    rng = np.random.default_rng([seed, 7])
    classes, counts = np.unique(codes, return_counts=True)
    quota = np.maximum(np.minimum(counts, 2), np.floor(counts * max_n / n).astype(np.int64))
    while quota.sum() > max_n and (quota > 2).any():  # the minimum of 2 may overshoot: trim the largest
        quota[np.argmax(quota)] -= 1
    picks = [rng.choice(np.flatnonzero(codes == c), size=int(q), replace=False) for c, q in zip(classes, quota,
                                                                                              strict=True)]
    return np.sort(np.concatenate(picks))


def encode_label(name: str, raw: np.ndarray, arrow_type: str, cfg: SeparationConfig) -> Label:
    """Class codes of a label (quantile bins for continuous ones), with missing values coded -1."""
    present = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) and v != "" for v in raw])
    if not present.any():
        raise InputError(f"label '{name}' is empty for every selected sample", "choose another --label or --where")
    numeric = arrow_type in NUMERIC
    distinct = np.unique(np.asarray([str(v) for v in raw[present]]))
    task = cfg.task
    if task == "auto":
        task = "regression" if numeric and distinct.size > cfg.max_classes else "classification"
    if task == "regression" and not numeric:
        raise InputError(f"label '{name}' holds {arrow_type} values; regression needs numbers",
                         "use --task classification")
    codes = np.full(raw.size, -1, dtype=np.int64)
    if task == "classification":
        text = np.asarray([label_text(v) for v in raw[present]])
        classes = sorted(set(text.tolist()), key=natural_key)
        if len(classes) < 2:
            raise InputError(f"label '{name}' has a single class ({classes[0]!r}) among the selected samples",
                             "separation needs two or more classes; choose another --label or --where")
        index = {c: i for i, c in enumerate(classes)}
        codes[present] = [index[t] for t in text]
        return Label(name, task, classes, codes, None, None, int((~present).sum()))
    values = np.full(raw.size, np.nan)
    values[present] = raw[present].astype(np.float64)
    edges = np.unique(np.quantile(values[present], np.linspace(0, 1, cfg.n_bins + 1)))
    if edges.size < 3:
        raise InputError(f"label '{name}' has too few distinct values to bin into classes",
                         "use --task classification, or a label with more values")
    codes[present] = np.clip(np.searchsorted(edges, values[present], side="right") - 1, 0, edges.size - 2)
    classes = [f"{_num(edges[i])}-{_num(edges[i + 1])}" for i in range(edges.size - 1)]
    used = np.unique(codes[present])
    remap = np.full(len(classes), -1)
    remap[used] = np.arange(used.size)
    codes[present] = remap[codes[present]]
    return Label(name, "regression", [classes[i] for i in used], codes, values, edges.tolist(),
                 int((~present).sum()))


def _num(value: float) -> str:
    return f"{value:.4g}"
