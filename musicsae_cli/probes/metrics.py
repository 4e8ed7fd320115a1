"""Per-layer probe metrics beside a majority (or mean) baseline and a shuffled-label control (scikit-learn)."""

from __future__ import annotations

import warnings

import numpy as np

CLASSIFICATION = ("accuracy", "balanced_accuracy", "macro_f1")
REGRESSION = ("r2", "mae")


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics reported for `task`."""
    return CLASSIFICATION if task == "classification" else REGRESSION


def primary(task: str) -> str:
    """The metric that picks the best layer (higher is better)."""
    return "balanced_accuracy" if task == "classification" else "r2"


def scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """accuracy / balanced accuracy / macro-F1 (class indices), or R^2 / MAE (label units).

    R^2 divides by the test target's variance: with a constant target (or one sample) it is undefined, so it is
    None with the reason in `r2_undefined`, never scikit-learn's stand-in 0.0 / 1.0.
    """
    from sklearn import metrics

    with warnings.catch_warnings():
        # Predicted classes absent from y_true are legitimate here; the values are still defined.
        warnings.simplefilter("ignore")
        if task == "classification":
            return {"accuracy": float(metrics.accuracy_score(y_true, y_pred)),
                    "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
                    "macro_f1": float(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0))}
        out = {"r2": None, "mae": float(metrics.mean_absolute_error(y_true, y_pred))}
        reason = r2_undefined(y_true)
        if reason:
            out["r2_undefined"] = reason
        else:
            out["r2"] = float(metrics.r2_score(y_true, y_pred))
        return out


def r2_undefined(y_true: np.ndarray) -> str | None:
    """Why R^2 of these test targets is undefined (None when it is defined)."""
    if y_true.size < 2:
        return f"R² is undefined on {y_true.size} test sample(s)"
    if np.all(y_true == y_true[0]):
        return f"R² is undefined: the test target is constant ({float(y_true[0]):g} for all {y_true.size} samples)"
    return None


def decode(task: str, outputs: np.ndarray, target_mean: float = 0.0, target_std: float = 1.0) -> np.ndarray:
    """Predictions from probe outputs (..., n, C): class indices, or regression values in label units."""
    if task == "classification":
        return outputs.argmax(axis=-1)
    return outputs[..., 0].astype(np.float64) * target_std + target_mean


def layer_table(task: str, hookpoints: list[str], pred: np.ndarray, control: np.ndarray | None,
                y_train: np.ndarray, y_test: np.ndarray) -> list[dict]:
    """One row per hookpoint: metrics of `pred` (H, n_test), of the baseline and of the control (H, n_test)."""
    if task == "classification":
        values, counts = np.unique(y_train, return_counts=True)
        baseline_pred = np.full(y_test.shape, values[np.argmax(counts)])
    else:
        baseline_pred = np.full(y_test.shape, float(np.mean(y_train)))
    baseline = _numbers(scores(task, y_test, baseline_pred))  # same test targets: one reason per row is enough
    rows = []
    for h, hp in enumerate(hookpoints):
        row = {"hookpoint": hp, "layer": h, **scores(task, y_test, pred[h])}
        row.update({f"baseline_{k}": v for k, v in baseline.items()})
        if control is not None:
            row.update({f"control_{k}": v for k, v in _numbers(scores(task, y_test, control[h])).items()})
        rows.append(row)
    return rows


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("_undefined")}


def aggregate(folds: list[list[dict]]) -> list[dict]:
    """Mean over folds of every metric per hookpoint, with its std across folds as <metric>_std.

    A metric undefined in some folds (None) is averaged over the folds where it is defined, and its
    `<metric>_undefined` reason names the folds left out; undefined in every fold, it stays None.
    """
    if len(folds) == 1:
        return folds[0]
    out = []
    for h, first in enumerate(folds[0]):
        row = {"hookpoint": first["hookpoint"], "layer": first["layer"]}
        keys = list(dict.fromkeys(k for fold in folds for k in fold[h] if k not in ("hookpoint", "layer")))
        for key in keys:
            values = [fold[h].get(key) for fold in folds]
            if key.endswith("_undefined"):
                notes = [f"fold {f}: {v}" for f, v in enumerate(values) if v]
                row[key] = "; ".join(notes) + ("" if len(notes) == len(folds) else "; mean over the other folds")
                continue
            defined = np.array([v for v in values if v is not None], dtype=np.float64)
            row[key] = float(np.mean(defined)) if defined.size else None
            row[f"{key}_std"] = float(np.std(defined)) if defined.size else None
        out.append(row)
    return out


def best_layer(task: str, table: list[dict]) -> dict:
    """The hookpoint with the highest primary metric, with its value and the baseline/control beside it."""
    key = primary(task)
    values = np.array([row[key] for row in table], dtype=np.float64)
    best = table[int(np.nanargmax(values))] if np.isfinite(values).any() else table[0]
    out = {"hookpoint": best["hookpoint"], "metric": key, "value": best[key],
           "baseline": best.get(f"baseline_{key}")}
    if best.get(f"{key}_undefined"):
        out["undefined"] = best[f"{key}_undefined"]
    if f"control_{key}" in best:
        out["control"] = best[f"control_{key}"]
    return out
