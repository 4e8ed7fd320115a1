"""How well raw activations or SAE latents separate labelled concepts.

For every label: the top latents per class (by mean-activation difference and by one-vs-rest AUROC), each
latent's mutual information with the label, silhouette scores, cross-validated random forests beside linear,
shuffled-label and majority/mean baselines, and t-SNE/UMAP projections, all saved with the seed.

Sparse features stay sparse: class sums are sparse products, and AUROC and mutual information come from one
sort of each column's stored values (implicit zeros are a single tie block), so 100k frames x 16k latents
never become a dense matrix. Continuous labels (e.g. bpm) are binned into quantile classes for every class
measure and regressed on their raw values in cross-validation; they are never fed raw to a silhouette.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import InputError, MusicSAEError
from ..probes.data import check_label_column, column_values, label_text, natural_key
from ..probes.splits import grouped_folds
from ..progress import ProgressFactory, no_progress
from ..store.filters import choose_stream
from .config import SeparationConfig
from .latent_stats import latent_stats
from .latents import FeatureSource, open_features

log = logging.getLogger("musicsae")
FORMAT_VERSION = 1
KIND = "separation"
SIL_LOW, SIL_HIGH = -0.1, 0.1
N_MODELS = 4  # models _fit_models yields per fold and task
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


# -- entry point ----------------------------------------------------------------------------------------------
def separation(store_path: str | Path, out: str | Path, cfg: SeparationConfig, overwrite: bool = False,
               progress: ProgressFactory = no_progress) -> dict:
    """Run every configured measure for every label of `cfg` on the store's features; write them to `out`."""
    t0 = time.perf_counter()
    if not cfg.labels:
        raise InputError("no label given", "pass --label COLUMN (repeatable)")
    check_output(out, overwrite)
    source = open_features(store_path, cfg.hookpoint, cfg.sae, cfg.member, cfg.device, cfg.batch_size,
                           cfg.allow_other_model)
    store = source.store
    for name in cfg.labels:
        check_label_column(store, name)
    streams = choose_stream(store, cfg.where, labels=cfg.labels)  # never both generation streams pooled together
    timings: dict[str, float] = {}
    x, meta, sampling = _load(source, cfg, progress, streams.where)
    timings["read"] = time.perf_counter() - t0
    labels = [_encode_label(name, meta[name], store.metadata_columns[name], cfg) for name in cfg.labels]
    groups = meta["__group"]
    if "cv" in cfg.measures:  # refuse impossible folds before any long computation
        for label in labels:
            keep = np.flatnonzero(label.present)
            sub = stratified_sample(label.codes[keep], cfg.cv_max_rows, cfg.seed)
            check_folds(label.codes[keep][sub], groups[keep][sub], label.classes, cfg.folds, cfg.split_column,
                        label.name)
    results, files = {}, []
    with staged_directory(out, overwrite) as stage:
        for label in labels:
            keep = np.flatnonzero(label.present)
            xl, yl = x[keep], label.codes[keep]
            res: dict = {"task": label.task, "classes": label.classes, "bin_edges": label.edges,
                         "class_counts": dict(zip(label.classes, np.bincount(yl, minlength=len(label.classes))
                                                  .tolist(), strict=True)),
                         "samples": int(keep.size), "missing": label.missing}
            if "latents" in cfg.measures:
                t = time.perf_counter()
                stats = latent_stats(xl, yl, len(label.classes), cfg.mi_bins, progress)
                res["latents"] = _top_latents(stats, label.classes, cfg.top_n)
                tables = _write_latent_tables(stage, label, stats)
                best = np.argmax(stats["auroc"], axis=1)
                res["latents"]["per_latent"] = {  # every latent; the per-class matrices are in the .npz
                    "density": stats["density"].round(6).tolist(), "mi_bits": stats["mi_bits"].round(6).tolist(),
                    "best_class_index": best.tolist(), "best_class_auroc": stats["auroc"][np.arange(best.size), best]
                    .round(6).tolist(), "per_class_tables": tables[1]}
                files += tables
                timings[f"latents:{label.name}"] = time.perf_counter() - t
            if "silhouette" in cfg.measures:
                t = time.perf_counter()
                res["silhouette"] = silhouette(xl, yl, label.classes, cfg, progress)
                timings[f"silhouette:{label.name}"] = time.perf_counter() - t
            if "cv" in cfg.measures:
                t = time.perf_counter()
                values = None if label.values is None else label.values[keep]
                res["cv"] = cross_validate(xl, yl, values, groups[keep], label, cfg, progress)
                files += _plot_cv(stage, label.name, res["cv"], source.hookpoint)
                timings[f"cv:{label.name}"] = time.perf_counter() - t
            if "projections" in cfg.measures and cfg.projections:
                t = time.perf_counter()
                values = None if label.values is None else label.values[keep]
                res["projections"], made = project(stage, xl, yl, values, label, meta["item_id"][keep], cfg,
                                                   progress, source.hookpoint)
                files += made
                timings[f"projections:{label.name}"] = time.perf_counter() - t
            results[label.name] = res
        timings["total"] = time.perf_counter() - t0
        config = cfg.model_dump(mode="json")
        report = {"kind": KIND, "store": str(store_path), "features": source.describe(),
                  "model": store.model, "pooling": cfg.pooling, "seed": cfg.seed, "where": streams.where,
                  "stream": streams.record(), "sampling": sampling,
                  "labels": results, "timings_s": {k: round(v, 3) for k, v in timings.items()}, "config": config}
        write_json(stage / "separation.json", report)
        write_config(stage, config)
        write_json(stage / "manifest.json", new_manifest(KIND, FORMAT_VERSION, config, store=str(store_path),
                                                         features=source.describe(), labels=cfg.labels,
                                                         seed=cfg.seed, where=streams.where,
                                                         stream=streams.record(),
                                                         files=["separation.json", *files]))
    return {"out": str(out), **{k: v for k, v in report.items() if k != "config"},
            "files": [str(Path(out) / f) for f in ["separation.json", *files]]}


# -- samples --------------------------------------------------------------------------------------------------
def _load(source: FeatureSource, cfg: SeparationConfig, progress: ProgressFactory, where: list[str]):
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


# -- labels ---------------------------------------------------------------------------------------------------
def _encode_label(name: str, raw: np.ndarray, arrow_type: str, cfg: SeparationConfig) -> Label:
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


# -- top latents ----------------------------------------------------------------------------------------------
def _top_latents(stats: dict, classes: list[str], top_n: int) -> dict:
    """Per class: the top_n features by mean difference and by AUROC, each with its numbers; top MI overall."""
    diff = stats["mean_in"] - stats["mean_out"]
    out = {"per_class": {}, "by_mi": []}
    for ci, name in enumerate(classes):
        by_diff = np.argsort(-diff[:, ci], kind="stable")[:top_n]
        by_auroc = np.argsort(-stats["auroc"][:, ci], kind="stable")[:top_n]
        out["per_class"][name] = {"by_mean_diff": [_latent_row(stats, i, ci, diff) for i in by_diff],
                                  "by_auroc": [_latent_row(stats, i, ci, diff) for i in by_auroc]}
    for i in np.argsort(-stats["mi_bits"], kind="stable")[:top_n]:
        best = int(np.argmax(stats["auroc"][i]))
        out["by_mi"].append({"latent": int(i), "mi_bits": float(stats["mi_bits"][i]),
                             "density": float(stats["density"][i]), "best_class": classes[best],
                             "best_class_auroc": float(stats["auroc"][i, best])})
    return out


def _latent_row(stats: dict, i: int, ci: int, diff: np.ndarray) -> dict:
    return {"latent": int(i), "mean_diff": float(diff[i, ci]), "auroc": float(stats["auroc"][i, ci]),
            "mean_in": float(stats["mean_in"][i, ci]), "mean_out": float(stats["mean_out"][i, ci]),
            "active_in": float(stats["active_in"][i, ci]), "active_out": float(stats["active_out"][i, ci]),
            "mi_bits": float(stats["mi_bits"][i])}


def _write_latent_tables(stage: Path, label: Label, stats: dict) -> list[str]:
    """latents_<label>.csv (one row per feature: density, MI, best class) and the full per-class arrays (.npz)."""
    diff = stats["mean_in"] - stats["mean_out"]
    best = np.argmax(stats["auroc"], axis=1)
    rows = [{"latent": i, "density": float(stats["density"][i]), "mi_bits": float(stats["mi_bits"][i]),
             "best_class": label.classes[best[i]], "best_class_auroc": float(stats["auroc"][i, best[i]]),
             "best_class_mean_diff": float(diff[i, best[i]])} for i in range(diff.shape[0])]
    csv_name, npz_name = f"latents_{_safe(label.name)}.csv", f"latent_stats_{_safe(label.name)}.npz"
    write_csv_rows(stage / csv_name, rows)
    np.savez(stage / npz_name, classes=np.asarray(label.classes, dtype=str), mean_in=stats["mean_in"],
             mean_out=stats["mean_out"], active_in=stats["active_in"], active_out=stats["active_out"],
             auroc=stats["auroc"], mi_bits=stats["mi_bits"], density=stats["density"])
    return [csv_name, npz_name]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# -- silhouette -----------------------------------------------------------------------------------------------
def silhouette(x, y: np.ndarray, classes: list[str], cfg: SeparationConfig,
               progress: ProgressFactory = no_progress) -> dict:
    """Silhouette of the class labels on a stratified sample: mean, per class, and shares below/around/above 0."""
    from sklearn.metrics import silhouette_samples

    idx = stratified_sample(y, cfg.silhouette_max, cfg.seed)
    xs, ys = x[idx], y[idx]
    present = np.unique(ys)
    if present.size < 2 or present.size >= ys.size:
        return {"skipped": "needs at least two classes and more samples than classes", "samples": int(ys.size)}
    _, ys = np.unique(ys, return_inverse=True)
    with progress(f"Silhouette ({ys.size} samples)", 1) as bar:
        s = silhouette_samples(xs, ys, metric=cfg.silhouette_metric)
        bar.advance(1)
    zero_rows = int((np.asarray(abs(xs).sum(axis=1)).ravel() == 0).sum())
    per_class = {classes[c]: float(s[ys == i].mean()) for i, c in enumerate(present)}
    return {"mean": float(s.mean()), "per_class": per_class, "samples": int(ys.size),
            "sampled_from": int(y.size), "metric": cfg.silhouette_metric,
            "share_below_-0.1": float((s < SIL_LOW).mean()),
            "share_between": float(((s >= SIL_LOW) & (s <= SIL_HIGH)).mean()),
            "share_above_0.1": float((s > SIL_HIGH).mean()), "zero_feature_samples": zero_rows}


# -- cross-validation -----------------------------------------------------------------------------------------
def check_folds(y: np.ndarray, groups: np.ndarray, classes: list[str], folds: int, split_column: str,
                label: str = "") -> None:
    """InputError when some class has too few samples or groups for `folds` grouped, stratified folds."""
    hint = f"lower --folds, or split by another column than '{split_column}'"
    n_groups = np.unique(groups).size
    if n_groups < folds:
        raise InputError(f"{folds}-fold cross-validation needs at least {folds} groups, found {n_groups} in "
                         f"'{split_column}'", hint)
    for ci, name in enumerate(classes):
        members = y == ci
        k = int(members.sum())
        if k < folds:
            raise InputError(f"class '{name}' of '{label}' has {k} sample(s), too few for {folds}-fold "
                             "cross-validation", hint)
        g = np.unique(groups[members]).size
        if g < folds:
            raise InputError(f"class '{name}' of '{label}' occurs in only {g} group(s) of '{split_column}', too "
                             f"few for {folds}-fold cross-validation", hint)


def cross_validate(x, y: np.ndarray, values: np.ndarray | None, groups: np.ndarray, label: Label,
                   cfg: SeparationConfig, progress: ProgressFactory = no_progress) -> dict:
    """Grouped, stratified k-fold scores of a random forest, a linear model and controls (mean and std).

    The linear models see every feature (sparse stays sparse). The forest sees, per fold, the `rf_features`
    features with the highest mutual information with the classes on that fold's training rows only (no test
    row informs the selection), as a dense block: forests on wide sparse input are slow and mostly split on
    uninformative columns.
    """
    available = y.size
    idx = stratified_sample(y, cfg.cv_max_rows, cfg.seed)
    x, y, groups = x[idx], y[idx], groups[idx]
    values = None if values is None else values[idx]
    check_folds(y, groups, label.classes, cfg.folds, cfg.split_column, label.name)
    tasks = ["classification"] + (["regression"] if values is not None else [])
    scores: dict[str, dict[str, list]] = {t: {} for t in tasks}
    fold_rows = []
    splits, split_seed = grouped_folds(y, groups, cfg.folds, cfg.seed, label.name)
    n_classes = len(label.classes)
    # one step per fold's feature choice and per fitted model (forest, linear, shuffled linear, baseline)
    with progress("Cross-validating", len(splits) * (1 + len(tasks) * N_MODELS)) as bar:
        for f, (train, test) in enumerate(splits):
            xtr, xte = x[train], x[test]
            chosen = _forest_features(xtr, y[train], n_classes, cfg)
            forest_x = (_dense(xtr[:, chosen]), _dense(xte[:, chosen]))
            bar.advance(1)
            for task in tasks:
                target = y if task == "classification" else values
                for model, fitted in _fit_models(task, xtr, forest_x[0], target[train], cfg, f):
                    bar.advance(1)
                    pred = fitted.predict(forest_x[1] if model == "random_forest" else xte)
                    metrics = _metrics(task, target[test], pred)
                    for k, v in metrics.items():
                        scores[task].setdefault(model, {}).setdefault(k, []).append(v)
                    fold_rows.append({"task": task, "model": model, "fold": f, "train": int(train.size),
                                      "test": int(test.size), "test_groups": int(np.unique(groups[test]).size),
                                      **({"forest_features": int(chosen.size)} if model == "random_forest" else {}),
                                      **metrics})
    summary = {task: {model: {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in m.items()}
                      for model, m in per.items()} for task, per in scores.items()}
    return {"folds": cfg.folds, "split_column": cfg.split_column, "stratified_by": "class" + (
        " (quantile bins of the value)" if values is not None else ""), "samples": int(y.size),
        "sampled_from": int(available), "groups": int(np.unique(groups).size), "split_seed": split_seed,
        "summary": summary,
        "per_fold": fold_rows, "models": _model_notes(cfg, x.shape[1])}


def _forest_features(xtr, ytr: np.ndarray, n_classes: int, cfg: SeparationConfig) -> np.ndarray:
    """Sorted columns the forest sees: all, or the rf_features with the highest training-fold MI."""
    width = xtr.shape[1]
    if width <= cfg.rf_features:
        return np.arange(width)
    mi = latent_stats(xtr, ytr, n_classes, cfg.mi_bins)["mi_bits"]
    return np.sort(np.argsort(-mi, kind="stable")[:cfg.rf_features])


def _dense(x) -> np.ndarray:
    import scipy.sparse as sp

    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)


def _fit_models(task: str, x, x_forest: np.ndarray, target: np.ndarray, cfg: SeparationConfig, fold: int):
    """Yield (name, fitted model): random forest, linear, linear on shuffled labels, majority/mean."""
    import scipy.sparse as sp
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    seed = cfg.seed + 1000 * fold

    def scaler():
        return MaxAbsScaler() if sp.issparse(x) else StandardScaler()

    shuffled = np.random.default_rng([cfg.seed, fold, 3]).permutation(target)
    if task == "classification":
        forest = RandomForestClassifier(n_estimators=cfg.n_estimators, min_samples_leaf=cfg.min_samples_leaf,
                                        max_features="sqrt", n_jobs=cfg.n_jobs, random_state=seed)

        def linear():
            return make_pipeline(scaler(), LogisticRegression(C=cfg.linear_c, max_iter=1000))
        dummy = DummyClassifier(strategy="most_frequent")
    else:
        forest = RandomForestRegressor(n_estimators=cfg.n_estimators, min_samples_leaf=cfg.min_samples_leaf,
                                       max_features="sqrt", n_jobs=cfg.n_jobs, random_state=seed)

        def linear():
            return make_pipeline(scaler(), Ridge(alpha=1.0 / cfg.linear_c))
        dummy = DummyRegressor(strategy="mean")
    yield "random_forest", forest.fit(x_forest, target)
    yield "linear", _quiet_fit(linear(), x, target)
    yield "linear_shuffled_labels", _quiet_fit(linear(), x, shuffled)
    yield "majority" if task == "classification" else "mean", dummy.fit(x, target)


def _quiet_fit(model, x, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _metrics(task: str, truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, mean_absolute_error, r2_score

    if task == "classification":
        return {"accuracy": float(accuracy_score(truth, pred)),
                "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
                "macro_f1": float(f1_score(truth, pred, average="macro"))}
    return {"r2": float(r2_score(truth, pred)), "mae": float(mean_absolute_error(truth, pred))}


def _model_notes(cfg: SeparationConfig, width: int) -> dict:
    chosen = (f"the {cfg.rf_features} features of highest mutual information on each training fold"
              if width > cfg.rf_features else "every feature")
    return {"random_forest": f"{cfg.n_estimators} trees, max_features sqrt, min_samples_leaf "
                             f"{cfg.min_samples_leaf}, on {chosen}",
            "linear": f"max-abs (sparse) or standard scaling, then logistic regression C={cfg.linear_c} or ridge "
                      f"alpha={1 / cfg.linear_c:g}",
            "linear_shuffled_labels": "the linear model trained on permuted training labels (chance control)",
            "majority": "predicts the most frequent training class", "mean": "predicts the training mean"}


def _plot_cv(stage: Path, name: str, cv: dict, hookpoint: str | None = None) -> list[str]:
    """cv_<label>.png: each model's cross-validated score (mean ± std over folds) beside the baselines, on a fixed
    axis (balanced accuracy 0-1, R² up to 1), the test size in the title."""
    from ..plotting import figure, output_name, style_axis, title

    tasks = list(cv["summary"])
    file = f"cv_{_safe(name)}.png"
    per_fold = cv["samples"] / cv["folds"]
    n = (f"{cv['folds']}-fold CV grouped by {cv['split_column']} over {cv['samples']} samples (about "
         f"{per_fold:.0f} test samples per fold)")
    head = title(f"{name}: cross-validated separation", run=output_name(stage), hookpoint=hookpoint, n=n)
    with figure(stage / file, ncols=len(tasks), panel=(5.6, 3.8), title=head) as (_, axes):
        for ax, task in zip(axes, tasks, strict=True):
            metric, bounded = ("balanced accuracy", (0.0, 1.0)) if task == "classification" else ("R²", (None, 1.0))
            key = "balanced_accuracy" if task == "classification" else "r2"
            models = list(cv["summary"][task])
            means = [cv["summary"][task][m][key]["mean"] for m in models]
            stds = [cv["summary"][task][m][key]["std"] for m in models]
            ax.bar(range(len(models)), means, yerr=stds, capsize=4,
                   color=["#3b6ea8", "#6aa84f", "#999999", "#cccccc"][:len(models)])
            ax.set_xticks(range(len(models)), [m.replace("_", "\n") for m in models], fontsize=8)
            ax.set_title(f"{task} ({metric}, mean ± std over folds)")
            ax.axhline(0, color="black", linewidth=0.5)
            style_axis(ax, xlabel="model", ylabel=metric, bounded=bounded)
    return [file]


# -- projections ----------------------------------------------------------------------------------------------
def project(stage: Path, x, y: np.ndarray, values: np.ndarray | None, label: Label, item_ids: np.ndarray,
            cfg: SeparationConfig, progress: ProgressFactory = no_progress,
            hookpoint: str | None = None) -> tuple[dict, list[str]]:
    """t-SNE / UMAP of a stratified sample (after SVD/PCA to svd_dims), saved as PNG and CSV coordinates; the
    figures' titles name `hookpoint`."""
    import scipy.sparse as sp

    idx = stratified_sample(y, cfg.embed_max, cfg.seed)
    xs, ys = x[idx], y[idx]
    n = ys.size
    if n < 5:
        return {"skipped": f"too few samples ({n}) to project"}, []
    dims = min(cfg.svd_dims, xs.shape[1] - 1, n - 1)
    if sp.issparse(xs):
        from sklearn.decomposition import TruncatedSVD

        with progress(f"SVD of {n} samples ({label.name})", 1) as bar:
            reduced = TruncatedSVD(n_components=max(dims, 2), random_state=cfg.seed).fit_transform(xs)
            bar.advance(1)
        reducer = f"TruncatedSVD({max(dims, 2)})"
    else:
        from sklearn.decomposition import PCA

        with progress(f"PCA of {n} samples ({label.name})", 1) as bar:
            reduced = PCA(n_components=max(dims, 2), random_state=cfg.seed).fit_transform(xs)
            bar.advance(1)
        reducer = f"PCA({max(dims, 2)})"
    info = {"samples": int(n), "sampled_from": int(y.size), "reduced_with": reducer, "methods": {}}
    files, coords = [], {}
    for method in cfg.projections:
        if method == "tsne":
            from sklearn.manifold import TSNE

            perplexity = float(min(cfg.perplexity, (n - 1) / 3))
            with progress(f"t-SNE of {n} samples ({label.name})", 1) as bar:
                emb = TSNE(n_components=2, perplexity=perplexity, init="pca",
                           random_state=cfg.seed).fit_transform(reduced)
                bar.advance(1)
            info["methods"]["tsne"] = {"perplexity": perplexity}
        else:
            import warnings

            import umap

            neighbors = int(min(cfg.umap_neighbors, n - 1))
            with warnings.catch_warnings(), progress(f"UMAP of {n} samples ({label.name})", 1) as bar:
                warnings.simplefilter("ignore")  # UMAP warns that a fixed seed disables its parallelism
                emb = umap.UMAP(n_neighbors=neighbors, random_state=cfg.seed).fit_transform(reduced)
                bar.advance(1)
            info["methods"]["umap"] = {"n_neighbors": neighbors}
        coords[method] = emb
        file = f"{method}_{_safe(label.name)}.png"
        _plot_embedding(stage / file, emb, ys, None if values is None else values[idx], label, method, n, y.size,
                        hookpoint)
        files.append(file)
    csv = f"projection_{_safe(label.name)}.csv"
    write_csv_rows(stage / csv, [{"item_id": str(item_ids[i]), "class": label.classes[ys[j]],
                                  **({"value": float(values[i])} if values is not None else {}),
                                  **{f"{m}_{a}": float(coords[m][j, k]) for m in coords for k, a in enumerate("xy")}}
                                 for j, i in enumerate(idx)])
    return info, [*files, csv]


def _plot_embedding(path: Path, emb: np.ndarray, ys: np.ndarray, values: np.ndarray | None, label: Label,
                    method: str, n: int, total: int, hookpoint: str | None = None) -> None:
    from ..plotting import figure, output_name, pyplot, title

    name = "t-SNE" if method == "tsne" else "UMAP"
    head = title(f"{name} of {n} samples (stratified from {total}) by {label.name}", run=output_name(path.parent),
                 hookpoint=hookpoint)
    with figure(path, size=(7.4, 5.8), title=head) as (fig, (ax,)):
        if values is not None:
            points = ax.scatter(emb[:, 0], emb[:, 1], c=values, cmap="viridis", s=8, alpha=0.8)
            fig.colorbar(points, ax=ax, label=label.name)
        else:
            cmap = pyplot().get_cmap("tab20" if len(label.classes) > 10 else "tab10")
            for ci, cls in enumerate(label.classes):
                m = ys == ci
                if m.any():
                    ax.scatter(emb[m, 0], emb[m, 1], s=8, alpha=0.8, color=cmap(ci % cmap.N), label=cls)
            fig.legend(loc="outside right upper", fontsize=7, markerscale=2, title=label.name,
                       ncols=1 if len(label.classes) <= 20 else 2)
        ax.set_xlabel(f"{name} 1 (arbitrary units)")
        ax.set_ylabel(f"{name} 2 (arbitrary units)")
        ax.set_xticks([])
        ax.set_yticks([])
