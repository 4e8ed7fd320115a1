"""Reading the two sets of `analyze compare` (analysis/compare.py) from a store: rows per label value, dense
hookpoints, pooled or per-frame samples, and the group of each sample (the permutation test's unit)."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError, MusicSAEError
from ..probes.data import check_label_column, label_text
from ..store.filters import choose_stream
from .config import CompareConfig

log = logging.getLogger("musicsae")


class Sets:
    """The samples of both sets: per hookpoint (n, d) float32, plus item ids and availability."""

    def __init__(self, hookpoints, xa, xb, items_a, items_b, available, label, a, b, where, stream=None,
                 groups_a=None, groups_b=None, group_column="item_id"):
        self.hookpoints, self.xa, self.xb = hookpoints, xa, xb
        self.items_a, self.items_b, self.available = items_a, items_b, available
        self.label, self.a, self.b, self.where, self.stream = label, a, b, where, stream
        n_a, n_b = next(iter(xa.values())).shape[0], next(iter(xb.values())).shape[0]
        # the permutation unit of each sample (its group, else its position: every sample on its own)
        self.groups_a = [f"a{i}" for i in range(n_a)] if groups_a is None else list(groups_a)
        self.groups_b = [f"b{i}" for i in range(n_b)] if groups_b is None else list(groups_b)
        self.group_column = group_column


def load_sets(store, label: str, a: str, b: str, cfg: CompareConfig, progress) -> Sets:
    check_label_column(store, label)
    hookpoints = pick_dense_hookpoints(store, cfg.hookpoints)
    # Both generation streams pooled into one sample would mix two computations: one stream, cond by default.
    streams = choose_stream(store, cfg.where, labels=[label])
    where = streams.where
    base = store.select(where) if where else np.arange(store.n_rows, dtype=np.int64)
    if base.size == 0:
        raise InputError(f"no store rows match --where {where}", "check the filters against `musicsae info STORE`")
    unit = "items" if cfg.pooling == "item" else "frames"
    group_column = _group_column(store, cfg.group_column)
    selected = {}
    for name, value in (("a", a), ("b", b)):
        rows = store.select([*where, f"{label}={value}"])
        if rows.size == 0:
            raise InputError(f"no store rows with {label}={value}" + (" (after --where)" if where else ""),
                             f"values of {label}: {', '.join(_values(store, label, base))}")
        selected[name] = rows
    if np.intersect1d(selected["a"], selected["b"]).size:
        raise InputError(f"{label}={a} and {label}={b} select the same rows", "compare two different values")
    xs, items, available, groups = {}, {}, {}, {}
    for name, seed_part in (("a", 1), ("b", 2)):
        x, ids, n, groups[name] = _samples(store, hookpoints, selected[name], cfg, seed_part, progress,
                                           group_column)
        value = a if name == "a" else b
        if n < 2:
            raise InputError(f"set {name} ({label}={value}) has {n} {unit[:-1] if n == 1 else unit}; the within-set "
                             "cosines need at least 2", "choose values with more samples, or relax --where")
        xs[name], items[name], available[name] = x, ids, n
    for name, x in xs.items():
        bad = [hp for hp in hookpoints if not np.isfinite(x[hp]).all()]
        if bad:
            raise MusicSAEError(f"non-finite activations (NaN/Inf) in set {name} at {bad[0]}",
                                "re-extract those items, or exclude them with --where")
    return Sets(hookpoints, xs["a"], xs["b"], items["a"], items["b"], available, label, a, b, where,
                 streams.record(), groups["a"], groups["b"], group_column)


def _group_column(store, column: str) -> str:
    """The column whose values the permutation test keeps together: `column`, or item_id when the store lacks
    the default 'group' (a store of generated prompts); another missing column is an error."""
    if column in store.metadata_columns:
        return column
    if column == "group":
        log.debug("the store has no 'group' column: the permutation test permutes items")
        return "item_id"
    columns = [c for c in store.metadata_columns if c not in ("frame", "time_s")]
    raise InputError(f"the store has no column '{column}' to group the permutation test by",
                     "set group_column to one of: " + ", ".join(columns))


def pick_dense_hookpoints(store, patterns: list[str]) -> list[str]:
    """Store hookpoints matching names or globs (all dense ones by default), in store order; CSR refused."""
    dense = [hp for hp in store.hookpoints if not store.is_sparse(hp)]
    if not patterns:
        if not dense:
            raise InputError("the store holds only sparse (CSR) latent hookpoints",
                             "compare reads dense activations: pass an activation store from `musicsae extract`")
        return dense
    from ..probes.data import pick_hookpoints

    chosen = pick_hookpoints(store, patterns)  # names or globs, closest-name errors, one width
    sparse = [hp for hp in chosen if store.is_sparse(hp)]
    if sparse:
        raise InputError(f"hookpoint {sparse[0]} is stored sparse (CSR latents); compare needs dense activations",
                         "choose dense hookpoints: " + (", ".join(dense) if dense else "(none in this store)"))
    return chosen


def _values(store, label: str, rows: np.ndarray, limit: int = 20) -> list[str]:
    values = store.metadata([label]).column(label).take(rows).to_pylist()
    found = sorted({label_text(v) for v in values if v is not None})
    return found[:limit] + (["..."] if len(found) > limit else []) if found else ["(none: every value is missing)"]


def _samples(store, hookpoints: list[str], rows: np.ndarray, cfg: CompareConfig, seed_part: int, progress,
             group_column: str = "item_id"):
    """({hookpoint: (n, d) float32}, item ids of the samples (unique, in order), samples available, group of
    each sample (`group_column`; an empty value counts as the sample's item))."""
    rng = np.random.default_rng([cfg.seed, seed_part])
    columns = list(dict.fromkeys(["item_id", group_column]))
    if cfg.pooling == "item":
        items, pooled = store.pool(hookpoints, "mean", rows=rows, progress=progress)
        ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
        available = ids.size
        if available > cfg.max_samples:
            keep = np.sort(rng.choice(available, size=cfg.max_samples, replace=False))
            ids, pooled = ids[keep], {hp: x[keep] for hp, x in pooled.items()}
        table = store.metadata(columns).take(rows)  # a per-frame group column is read at each item's first row
        group_of = dict(zip(table.column("item_id").to_pylist()[::-1], table.column(group_column).to_pylist()[::-1],
                            strict=True))
        groups = [_group_text(group_of.get(i), i) for i in ids]
        return pooled, [str(i) for i in ids], available, groups
    available = rows.size
    if available > cfg.max_samples:
        rows = np.sort(rng.choice(rows, size=cfg.max_samples, replace=False))
    table = store.metadata(columns).take(rows)
    ids = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    groups = [_group_text(g, i) for g, i in zip(table.column(group_column).to_pylist(), ids, strict=True)]
    x = {hp: store.read_rows(hp, rows) for hp in hookpoints}
    return x, [str(i) for i in dict.fromkeys(ids.tolist())], available, groups


def _group_text(value, item_id) -> str:
    return f"item:{item_id}" if value is None or value == "" else label_text(value)
