"""Do two sets of items look different inside the model? Per-layer cosines, separation and a permutation test.

The sets are two values of a store label (store mode) or two lists of prompts generated here (prompt mode: one
store with a `set` label a/b is written inside the output, and only the conditional stream is compared).
Per hookpoint, on pooled vectors (float64):

- cosines between every a and every b sample (cross-set) and between the pairs i<j within each set (the
  reference a cross-set value must be compared with): mean, std and 5/50/95% quantiles, both raw and "centred"
  (after subtracting the mean of all a and b samples: raw cosines of residual-stream vectors are dominated by
  a direction every item shares, so they are all close to 1);
- the cosine between the set means, ||mean_a - mean_b||, and the standardised separation: that norm divided
  by the pooled within-set RMS distance to the set mean;
- a seeded label-permutation test of ||mean_a - mean_b|| (p = (1 + #null >= observed) / (1 + permutations))
  that moves whole groups (the store's `group` column: all windows of one track) between the sets, since
  windows of one track are not independent; a group holding samples of both sets has its samples shuffled
  within itself (a paired comparison) while the other groups move as units;
- the difference-of-means direction mean_a - mean_b (float32), saved for `musicsae steer generate --file`.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import ConfigError, InputError, MusicSAEError, UsageError
from ..probes.data import check_label_column, label_text
from ..progress import ProgressFactory, no_progress
from ..results import ABSENT, Result
from ..store.filters import choose_stream
from .config import CompareConfig

log = logging.getLogger("musicsae")
FORMAT_VERSION = 1
DIRECTIONS_FILE = "directions.safetensors"
STORE_DIR = "store"
SET_LABEL = "set"
_EPS = 1e-12
_QUANTILES = (0.05, 0.5, 0.95)
_PERM_CHUNK = 128
NOTES = [
    "Raw cosines of residual-stream vectors are dominated by a direction shared by every item, so they sit close "
    "to 1 for any pair; the centred cosines subtract the mean of all a and b samples and show what tells the "
    "sets apart. Compare the cross-set value (ab) with the within-set values (aa, bb), never with 1.",
    "separation = ||mean_a - mean_b|| / pooled within-set RMS distance to the set mean (divisor n_a + n_b - 2).",
    "p_value: label-permutation test of ||mean_a - mean_b||, (1 + #permutations >= observed) / "
    "(1 + n_permutations), or exact over every split when there are no more splits than n_permutations "
    "(small sets: the smallest possible p is then 1 / #splits); one test per hookpoint, not corrected for "
    "testing several hookpoints.",
    "permutation_unit: what the test moves between the sets. group: every sample of a group (group_column, a "
    "track) moves together, so near-identical windows of one track cannot pass for independent evidence; a "
    "group holding samples of both sets (mixed_groups) keeps its counts and shuffles its samples within itself. "
    "item: items move independently (no group column). permutation.units counts the groups (or items), "
    "permutation.distinct_permutations the relabellings possible.",
    "directions.safetensors holds mean_a - mean_b per hookpoint in raw activation space (float32): a positive "
    "steering strength moves generation towards set a.",
]
FRAME_NOTE = ("frame pooling: frames of one item are not independent, so within-set cosines include pairs from "
              "the same item; the permutation test moves the frames of a group (or item) together, but prefer "
              "item pooling for inference.")
FEW_PERMUTATIONS = 20  # below this many distinct relabellings the test cannot reach p < 0.05


@dataclass(kw_only=True)
class CompareResult(Result):
    """What `analyze compare` reports: per hookpoint the cosines, separation and p-value, and the directions file."""

    out: str
    mode: str  # store or prompts
    store: str
    prompts: dict[str, list[dict]] = ABSENT  # prompt mode: set -> prompt_id, text
    generation: dict = ABSENT  # prompt mode: clips and rows generated, seconds
    model: Any
    label: str
    a: str
    b: str
    where: list[str]
    stream: dict | None
    pooling: str
    n_a: int
    n_b: int
    n_a_available: int
    n_b_available: int
    hookpoints: list[str]
    seed: int
    n_permutations: int
    permutation_unit: str | None
    permutation_units: int | None
    permutation: dict
    directions: str
    layers: list[dict]
    notes: list[str]
    elapsed_s: float

    def lines(self) -> list[str]:
        lines = [self.out, f"{self.label}: {self.a} (a, {self.n_a}) vs {self.b} (b, {self.n_b}), {self.pooling} "
                           f"pooling, {len(self.hookpoints)} hookpoints, {self.n_permutations} permutations "
                           f"({self.elapsed_s:.1f} s)"]
        if self.permutation_unit:
            mixed = self.permutation.get("mixed_groups") if self.permutation else None
            lines.append(f"  permutation test over whole {self.permutation_unit}s ({self.permutation_units} units"
                         + (f", {mixed} holding both sets" if mixed else "") + ")")
        lines.append("  hookpoint: cosine cross vs within a/b (raw | centred), separation, p-value")
        for r in self.layers:
            sep = "n/a" if r["separation"] is None else f"{r['separation']:.2f}"
            p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
            lines.append(f"  {r['hookpoint']}: {r['cos_ab_mean']:.3f} vs {r['cos_aa_mean']:.3f}/"
                         f"{r['cos_bb_mean']:.3f} | {r['centred_cos_ab_mean']:+.3f} vs "
                         f"{r['centred_cos_aa_mean']:+.3f}/{r['centred_cos_bb_mean']:+.3f}, separation {sep}, p={p}")
        lines.append(f"direction mean_a - mean_b per hookpoint: {self.directions} (musicsae steer generate --file)")
        return lines


# -- the statistics ------------------------------------------------------------------------------------------
def cosine_summary(values: np.ndarray) -> dict:
    """mean, std and the 5/50/95% quantiles of a set of cosines."""
    q = np.quantile(values, _QUANTILES)
    return {"mean": float(values.mean()), "std": float(values.std()), "q05": float(q[0]), "q50": float(q[1]),
            "q95": float(q[2])}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def pair_cosines(xa: np.ndarray, xb: np.ndarray) -> dict[str, np.ndarray]:
    """Cosines a x b (every pair), and a x a and b x b (pairs i<j), flattened."""
    ua, ub = _unit(xa), _unit(xb)
    ia = np.triu_indices(ua.shape[0], 1)
    ib = np.triu_indices(ub.shape[0], 1)
    return {"ab": (ua @ ub.T).ravel(), "aa": (ua @ ua.T)[ia], "bb": (ub @ ub.T)[ib]}


def permutation_masks(n_a: int, n_b: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """((P, n_a + n_b) bool, exact): True where a relabelling puts the sample in set a (n_a per row).

    When there are no more distinct splits than `n_permutations`, every split is enumerated (exact test);
    otherwise P = n_permutations seeded random relabellings.
    """
    n = n_a + n_b
    if math.comb(n, n_a) <= n_permutations:
        masks = np.zeros((math.comb(n, n_a), n), dtype=bool)
        for i, chosen in enumerate(itertools.combinations(range(n), n_a)):
            masks[i, list(chosen)] = True
        return masks, True
    rng = np.random.default_rng([seed, 7])
    ranks = np.argsort(rng.random((n_permutations, n)), axis=1)  # a uniform permutation per row
    return ranks < n_a, False


def grouped_permutation_masks(groups_a, groups_b, n_permutations: int, seed: int) -> tuple[np.ndarray, bool, dict]:
    """((P, n_a + n_b) bool, exact, record): relabellings that keep each group's samples together.

    A group whose samples all lie in one set moves as a unit: the relabelling picks as many such groups for a as
    a has. A group holding samples of both sets (mixed) keeps its number of a samples and shuffles them within
    itself. With one sample per group this is permutation_masks (the same masks for the same seed). When there
    are no more distinct relabellings than `n_permutations`, every one is enumerated (exact).
    """
    labels = np.asarray([str(g) for g in [*groups_a, *groups_b]])
    in_a = np.r_[np.ones(len(groups_a), bool), np.zeros(len(groups_b), bool)]
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # number the groups in order of appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[codes.ravel()]
    size = np.bincount(codes)
    n_in_a = np.bincount(codes, weights=in_a, minlength=size.size).astype(np.int64)
    mixed = np.flatnonzero((n_in_a > 0) & (n_in_a < size))
    pure = np.flatnonzero((n_in_a == 0) | (n_in_a == size))
    k = int((n_in_a[pure] > 0).sum())  # pure groups in set a
    members = {int(g): np.flatnonzero(codes == g) for g in mixed}
    distinct = math.comb(pure.size, k) * math.prod(math.comb(int(size[g]), int(n_in_a[g])) for g in mixed)
    record = {"units": int(size.size), "units_a": int(np.unique(codes[in_a]).size),
              "units_b": int(np.unique(codes[~in_a]).size), "mixed_groups": int(mixed.size),
              "mixed_examples": [str(labels[first[order[g]]]) for g in mixed[:3]],
              "distinct_permutations": distinct if distinct <= 10**15 else ">1e15"}
    n = labels.size
    if distinct <= n_permutations:
        choices = [itertools.combinations(range(pure.size), k),
                   *(itertools.combinations(members[int(g)].tolist(), int(n_in_a[g])) for g in mixed)]
        masks = np.zeros((distinct, n), dtype=bool)
        for i, (chosen, *within) in enumerate(itertools.product(*choices)):
            masks[i] = np.isin(codes, pure[list(chosen)])
            for picked in within:
                masks[i, list(picked)] = True
        return masks, True, record
    rng = np.random.default_rng([seed, 7])
    group_in_a = np.zeros((n_permutations, size.size), dtype=bool)
    group_in_a[:, pure] = np.argsort(rng.random((n_permutations, pure.size)), axis=1) < k
    masks = group_in_a[:, codes]
    for g in mixed:
        idx = members[int(g)]
        masks[:, idx] = np.argsort(rng.random((n_permutations, idx.size)), axis=1) < n_in_a[g]
    return masks, False, record


def permutation_null(x: np.ndarray, masks: np.ndarray, tracker=None) -> np.ndarray:
    """(P,) ||mean of the masked rows - mean of the others|| of `x` (n, d) for each permutation mask.

    Set sizes may differ between masks (whole groups of unequal sizes move); `tracker` advances per chunk.
    """
    out = np.empty(masks.shape[0])
    for lo in range(0, masks.shape[0], _PERM_CHUNK):
        m = masks[lo:lo + _PERM_CHUNK]
        n_a = m.sum(1, keepdims=True)
        w = np.where(m, 1.0 / n_a, -1.0 / (m.shape[1] - n_a))  # (chunk, n): mean over a minus mean over b
        out[lo:lo + _PERM_CHUNK] = np.linalg.norm(w @ x, axis=1)
        if tracker is not None:
            tracker.advance(1)
    return out


def permutation_chunks(masks: np.ndarray | None) -> int:
    """How many steps permutation_null reports for `masks`."""
    return 0 if masks is None else -(-masks.shape[0] // _PERM_CHUNK)


def compare_sets(xa, xb, masks: np.ndarray | None = None, exact: bool = False,
                 tracker=None) -> tuple[dict, np.ndarray]:
    """Every statistic of one hookpoint for samples `xa` (n_a, d) and `xb` (n_b, d), and mean_a - mean_b.

    `masks` (from permutation_masks) drive the permutation test; None skips it (p_value None). With `exact`
    the masks are every split (the observed one included): p = #null >= observed / #splits; otherwise
    p = (1 + #null >= observed) / (1 + #permutations).
    """
    xa = np.asarray(xa, dtype=np.float64)
    xb = np.asarray(xb, dtype=np.float64)
    n_a, n_b = xa.shape[0], xb.shape[0]
    mean_a, mean_b = xa.mean(0), xb.mean(0)
    diff = mean_a - mean_b
    row: dict = {"width": int(xa.shape[1]), "n_a": n_a, "n_b": n_b}
    for prefix, (ca, cb) in (("", (xa, xb)), ("centred_", _centre(xa, xb))):
        for pair, values in pair_cosines(ca, cb).items():
            row.update({f"{prefix}cos_{pair}_{k}": v for k, v in cosine_summary(values).items()})
    diff_norm = float(np.linalg.norm(diff))
    within = float(np.sqrt((((xa - mean_a) ** 2).sum() + ((xb - mean_b) ** 2).sum()) / (n_a + n_b - 2)))
    norm_a, norm_b = float(np.linalg.norm(mean_a)), float(np.linalg.norm(mean_b))
    row.update(cos_means=float(mean_a @ mean_b / max(norm_a * norm_b, _EPS)), norm_mean_a=norm_a,
               norm_mean_b=norm_b, diff_norm=diff_norm, within_rms=within,
               separation=diff_norm / within if within > 0 else None,
               p_value=None, n_permutations=0, permutation_exact=None, null_diff_norm_mean=None,
               null_diff_norm_q95=None)
    if masks is not None and masks.shape[0]:
        null = permutation_null(np.concatenate([xa, xb]), masks, tracker)
        # a relative tolerance: a permutation equal to the observed split must count despite rounding
        hits = int((null >= diff_norm * (1 - 1e-9)).sum())
        p_value = hits / null.size if exact else (1 + hits) / (1 + null.size)
        row.update(p_value=p_value, n_permutations=int(null.size), permutation_exact=bool(exact),
                   null_diff_norm_mean=float(null.mean()), null_diff_norm_q95=float(np.quantile(null, 0.95)))
    return row, diff.astype(np.float32)


def _centre(xa: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grand = np.concatenate([xa, xb]).mean(0)
    return xa - grand, xb - grand


# -- the command -----------------------------------------------------------------------------------------------
def parse_contrast(text: str) -> tuple[str, str, str]:
    """'label=a:b' -> (label, a, b), as `musicsae steer generate --contrast` writes it."""
    label, sep, values = (text or "").partition("=")
    a, sep2, b = values.partition(":")
    if not (sep and sep2 and label.strip() and a.strip() and b.strip()):
        raise UsageError(f"--contrast expects COL=a:b, got {text!r}", "e.g. --contrast concept=notes:tempos")
    return label.strip(), a.strip(), b.strip()


def compare(store: str | Path | None, out: str | Path, cfg: CompareConfig, overwrite: bool = False,
            progress: ProgressFactory = no_progress, adapter=None) -> CompareResult:
    """Compare the two sets of `cfg` (store mode with `store`, else prompt mode); write the results to `out`."""
    started = time.perf_counter()
    _check_mode(store, cfg)
    check_output(out, overwrite)  # fail before any reading or generation
    if cfg.prompt_mode:
        return _prompt_mode(out, cfg, overwrite, progress, adapter, started)
    from ..store import ActivationStore

    opened = ActivationStore.open(store)
    sets = _load_sets(opened, cfg.label, cfg.a, cfg.b, cfg, progress)
    record = {"mode": "store", "store": str(store)}
    with staged_directory(out, overwrite) as stage:
        res = _analyse_and_write(stage, out, opened, sets, cfg, record, progress)
    return CompareResult(**res, elapsed_s=round(time.perf_counter() - started, 3))


def _check_mode(store, cfg: CompareConfig) -> None:
    if cfg.prompt_mode and store is not None:
        raise UsageError("pass either STORE (store mode) or prompts (--prompts-a/--prompts-b), not both",
                         "see `musicsae analyze compare --help`")
    if not cfg.prompt_mode and store is None:
        raise UsageError("nothing to compare: pass STORE with --label COL --a VALUE --b VALUE, or "
                         "--prompts-a FILE --prompts-b FILE", "see `musicsae analyze compare --help`")
    if cfg.prompt_mode:
        given = [k for k in ("label", "a", "b") if getattr(cfg, k) is not None]
        if given:
            raise UsageError(f"{', '.join('--' + k for k in given)}: store-mode options given in prompt mode",
                             f"prompt mode labels the generated sets itself ('{SET_LABEL}' = a / b)")
        if cfg.extract.stream == "uncond":
            raise ConfigError("prompt mode compares the conditional stream, but extract.stream is uncond",
                              "set extract.stream to cond or both")
        return
    missing = [k for k in ("label", "a", "b") if not getattr(cfg, k)]
    if missing:
        raise UsageError(f"store mode needs --label COL --a VALUE --b VALUE (missing: "
                         f"{', '.join('--' + k for k in missing)})", "or the shorthand --contrast COL=a:b")
    if cfg.a == cfg.b:
        raise UsageError(f"--a and --b are the same value ({cfg.a!r})", "compare two different values")


# -- reading the two sets ----------------------------------------------------------------------------------------
class _Sets:
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


def _load_sets(store, label: str, a: str, b: str, cfg: CompareConfig, progress) -> _Sets:
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
    return _Sets(hookpoints, xs["a"], xs["b"], items["a"], items["b"], available, label, a, b, where,
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


# -- analysis and output ---------------------------------------------------------------------------------------
def _analyse_and_write(stage: Path, out, store, sets: _Sets, cfg: CompareConfig, record: dict, progress,
                       extra_files: tuple[str, ...] = ()) -> dict:
    from safetensors.numpy import save_file

    n_a, n_b = next(iter(sets.xa.values())).shape[0], next(iter(sets.xb.values())).shape[0]
    for name, n in (("a", n_a), ("b", n_b)):
        if sets.available[name] > n:
            log.warning("set %s: using a seeded sample of %d of %d %s (max_samples)", name, n,
                        sets.available[name], "items" if cfg.pooling == "item" else "frames")
    masks, exact, permutation = _permutations(sets, cfg)
    layers, directions = [], {}
    # one step per hookpoint's cosines, and one per chunk of its permutations
    with progress("Comparing", len(sets.hookpoints) * (1 + permutation_chunks(masks))) as bar:
        for li, hp in enumerate(sets.hookpoints):
            row, direction = compare_sets(sets.xa[hp], sets.xb[hp], masks, exact, bar)
            layers.append({"hookpoint": hp, "layer": li, **row})
            directions[hp] = np.ascontiguousarray(direction)
            bar.advance(1)
    config = cfg.model_dump(mode="json")
    notes = NOTES + ([FRAME_NOTE] if cfg.pooling == "frame" else [])
    result = {"out": str(out), **record, "model": store.model, "label": sets.label, "a": sets.a, "b": sets.b,
              "where": sets.where, "stream": sets.stream, "pooling": cfg.pooling, "n_a": n_a, "n_b": n_b,
              "n_a_available": sets.available["a"], "n_b_available": sets.available["b"],
              "hookpoints": sets.hookpoints, "seed": cfg.seed, "n_permutations": cfg.n_permutations,
              "permutation_unit": permutation["unit"], "permutation_units": permutation["units"],
              "permutation": permutation,
              "directions": str(Path(out) / DIRECTIONS_FILE), "layers": layers, "notes": notes}
    files = ["compare.json", "layers.csv", DIRECTIONS_FILE, "compare.png", *extra_files]
    save_file(directions, str(stage / DIRECTIONS_FILE),
              metadata={"kind": "difference of means", "direction": f"mean({sets.label}={sets.a}) - "
                        f"mean({sets.label}={sets.b})", "pooling": cfg.pooling, "store": str(record.get("store"))})
    write_csv_rows(stage / "layers.csv", layers)
    _plot(stage / "compare.png", layers, sets)
    write_json(stage / "compare.json", {**result, "items_a": sets.items_a, "items_b": sets.items_b,
                                        "config": config})
    write_config(stage, config)
    write_json(stage / "manifest.json", new_manifest("compare", FORMAT_VERSION, config, mode=record["mode"],
                                                     store=str(record.get("store")), model=store.model,
                                                     label=sets.label, a=sets.a, b=sets.b, n_a=n_a, n_b=n_b,
                                                     where=sets.where, stream=sets.stream,
                                                     hookpoints=sets.hookpoints, files=files))
    return result


def _permutations(sets: _Sets, cfg: CompareConfig) -> tuple[np.ndarray | None, bool, dict]:
    """(masks, exact, record) of the permutation test: whole groups move between the sets (see NOTES)."""
    unit = "item" if sets.group_column == "item_id" else "group"
    if not cfg.n_permutations:
        return None, False, {"unit": None, "units": None, "column": sets.group_column}
    masks, exact, record = grouped_permutation_masks(sets.groups_a, sets.groups_b, cfg.n_permutations, cfg.seed)
    record = {"unit": unit, "column": sets.group_column, **record, "exact": exact}
    distinct = record["distinct_permutations"]
    if record["mixed_groups"]:
        log.warning("%d of %d groups ('%s') hold samples of both sets (e.g. %s): the permutation test shuffles "
                    "their samples within each such group and moves the other groups whole", record["mixed_groups"],
                    record["units"], sets.group_column, ", ".join(record["mixed_examples"]))
    if isinstance(distinct, int) and distinct < FEW_PERMUTATIONS:
        log.warning("only %d distinct permutations of %d %ss (%d in a, %d in b) are possible, so the smallest "
                    "p-value is %.2g: compare more %ss per set%s", distinct, record["units"], unit,
                    record["units_a"], record["units_b"], 1 / distinct, unit,
                    "" if unit == "item" else " (--set group_column=item_id treats the items of a group as "
                    "independent, which is optimistic)")
    return masks, exact, record


def _plot(path: Path, layers: list[dict], sets: _Sets) -> None:
    """Cross- vs within-set cosine (mean, +-1 std band) per layer, raw and centred, and the separation."""
    from ..plotting import figure, figure_legend, hookpoint_ticks, output_name, style_axis, title

    x = np.arange(len(layers))
    names = [r["hookpoint"] for r in layers]
    n = f"n_a={layers[0]['n_a']}, n_b={layers[0]['n_b']} samples" if layers else None
    head = title(f"{sets.label}: {sets.a} (a) vs {sets.b} (b), per layer", run=output_name(path.parent), n=n)
    with figure(path, ncols=3, panel=(5.0, 3.8), title=head) as (fig, axes):
        series = (("ab", "cross a x b", "C3"), ("aa", f"within a ({sets.a})", "C0"),
                  ("bb", f"within b ({sets.b})", "C2"))
        panels = ((axes[0], "", "raw cosine"), (axes[1], "centred_", "centred cosine (shared mean removed)"))
        for ax, prefix, name in panels:
            for pair, label, color in series:
                mean = np.array([r[f"{prefix}cos_{pair}_mean"] for r in layers], dtype=float)
                std = np.array([r[f"{prefix}cos_{pair}_std"] for r in layers], dtype=float)
                ax.plot(x, mean, marker="o", ms=3, color=color, label=label)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, label=f"_{label} std")
            ax.set_title(name)
            hookpoint_ticks(ax, names)
            style_axis(ax, xlabel="hookpoint", ylabel="cosine (mean ± std over pairs)", bounded=(None, 1.0),
                       legend=False)
        sep = np.array([np.nan if r["separation"] is None else r["separation"] for r in layers], dtype=float)
        axes[2].plot(x, sep, marker="o", ms=3, color="C1", label="separation")
        for xi, r in zip(x, layers, strict=True):
            if r["p_value"] is not None and np.isfinite(sep[xi]):
                axes[2].annotate(f"p={r['p_value']:.2g}", (xi, sep[xi]), fontsize=6, textcoords="offset points",
                                 xytext=(0, 4), ha="center")
        axes[2].set_title("separation: ||mean_a - mean_b|| / within-set RMS")
        hookpoint_ticks(axes[2], names)
        style_axis(axes[2], xlabel="hookpoint", ylabel="separation", unit="within-set RMS distances",
                   bounded=(0.0, max(1.0, float(np.nanmax(sep)) * 1.15) if np.isfinite(sep).any() else 1.0))
        figure_legend(fig, axes[0])


# -- prompt mode ------------------------------------------------------------------------------------------------
def _prompt_mode(out, cfg: CompareConfig, overwrite: bool, progress, adapter,
                 started: float) -> CompareResult:
    from ..extract.generate import extract_generate
    from ..models import load_adapter
    from ..store import ActivationStore

    prompts = {name: _set_prompts(name, cfg) for name in ("a", "b")}
    for name, items in prompts.items():
        n = len(items) * cfg.extract.samples_per_prompt
        if n < 2:
            raise InputError(f"set {name} would have {n} generated clip; the within-set cosines need at least 2",
                             f"give set {name} at least 2 prompts, or raise extract.samples_per_prompt")
    ext = cfg.extract
    if adapter is None:
        from ..concepts.io import with_concepts

        adapter = with_concepts(load_adapter(ext.model, family=ext.family, revision=ext.revision, device=ext.device,
                                             dtype=ext.dtype, seed=ext.seed, options=ext.model_options), ext.concepts)
    hookpoints = adapter.resolve_hookpoints(ext.hookpoints)
    if cfg.hookpoints:
        hookpoints = [hp for hp in hookpoints if any(fnmatch.fnmatchcase(hp, p) for p in cfg.hookpoints)]
        if not hookpoints:
            raise InputError(f"--hookpoint {', '.join(cfg.hookpoints)} match none of the extracted hookpoints",
                             "available: " + ", ".join(adapter.resolve_hookpoints(ext.hookpoints)))
    ext = ext.model_copy(update={"hookpoints": ",".join(hookpoints)})
    where = [*cfg.where, "stream=cond"]
    source = f"{cfg.prompts_a_file or '--prompt-a'} vs {cfg.prompts_b_file or '--prompt-b'}"
    with staged_directory(out, overwrite) as stage:
        gen = extract_generate(prompts["a"] + prompts["b"], stage / STORE_DIR, ext, progress=progress,
                               adapter=adapter, source=source)
        store = ActivationStore.open(stage / STORE_DIR)
        run_cfg = cfg.model_copy(update={"where": where, "hookpoints": hookpoints})
        sets = _load_sets(store, SET_LABEL, "a", "b", run_cfg, progress)
        record = {"mode": "prompts", "store": str(Path(out) / STORE_DIR),
                  "prompts": {n: [{"prompt_id": p.prompt_id, "text": p.text} for p in items]
                              for n, items in prompts.items()},
                  "generation": {k: gen[k] for k in ("clips_written", "rows_written", "generated_seconds",
                                                     "elapsed_s")}}
        res = _analyse_and_write(stage, out, store, sets, run_cfg, record, progress, extra_files=(STORE_DIR,))
    return CompareResult(**res, elapsed_s=round(time.perf_counter() - started, 3))


def _set_prompts(name: str, cfg: CompareConfig) -> list:
    """The prompts of set `name` (file first, then the inline ones), ids prefixed and labelled set=name."""
    from ..extract.generate import Prompt, read_prompts

    path = getattr(cfg, f"prompts_{name}_file")
    items = read_prompts(path, cfg.extract.prompt_column) if path else []
    items += [Prompt(f"prompt{i:03d}", text, {}) for i, text in enumerate(getattr(cfg, f"prompts_{name}"))]
    if not items:
        raise UsageError(f"prompt mode: set {name} has no prompts", f"pass --prompts-{name} FILE or --prompt-{name} "
                         "TEXT (each set needs its own)")
    return [Prompt(f"{name}-{p.prompt_id}", p.text, {**p.labels, SET_LABEL: name}) for p in items]
