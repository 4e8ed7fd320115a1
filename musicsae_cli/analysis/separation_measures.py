"""The class-separation measures of `analyze separation`, each on one label's samples.

- Top latents: per class the features with the largest mean-activation difference and one-vs-rest AUROC, and
  overall those of highest mutual information with the label. The numbers come from latent_stats: class sums
  are sparse products and AUROC and mutual information come from one sort of each column's stored values, so
  100k frames x 16k latents never become a dense matrix.
- Silhouette of the class labels on a stratified sample: mean, per class, and the shares below, around and
  above 0. Continuous labels count as their quantile classes, never as raw values.
- Cross-validation: grouped (by split_column), stratified k-fold scores of a random forest, a linear model, the
  linear model on shuffled labels (chance control) and a majority/mean baseline; continuous labels are also
  regressed on their raw values. Folds that some class cannot fill are refused before any fitting.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..probes.splits import grouped_folds
from ..progress import ProgressFactory, no_progress
from .config import SeparationConfig
from .latent_stats import latent_stats
from .separation_data import Label, stratified_sample

SIL_LOW, SIL_HIGH = -0.1, 0.1
N_MODELS = 4  # models _fit_models yields per fold and task


def top_latents(stats: dict, classes: list[str], top_n: int) -> dict:
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
