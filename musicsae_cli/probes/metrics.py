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


def scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """accuracy / balanced accuracy / macro-F1 (class indices), or R^2 / MAE (label units)."""
    from sklearn import metrics

    with warnings.catch_warnings():
        # Predicted classes absent from y_true, or one-sample R^2, are legitimate here; the values are still defined.
        warnings.simplefilter("ignore")
        if task == "classification":
            return {"accuracy": float(metrics.accuracy_score(y_true, y_pred)),
                    "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
                    "macro_f1": float(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0))}
        return {"r2": float(metrics.r2_score(y_true, y_pred)) if y_true.size > 1 else float("nan"),
                "mae": float(metrics.mean_absolute_error(y_true, y_pred))}


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
    baseline = scores(task, y_test, baseline_pred)
    rows = []
    for h, hp in enumerate(hookpoints):
        row = {"hookpoint": hp, "layer": h, **scores(task, y_test, pred[h])}
        row.update({f"baseline_{k}": v for k, v in baseline.items()})
        if control is not None:
            row.update({f"control_{k}": v for k, v in scores(task, y_test, control[h]).items()})
        rows.append(row)
    return rows


def aggregate(folds: list[list[dict]]) -> list[dict]:
    """Mean over folds of every metric per hookpoint, with its std across folds as <metric>_std."""
    if len(folds) == 1:
        return folds[0]
    out = []
    for h, first in enumerate(folds[0]):
        row = {"hookpoint": first["hookpoint"], "layer": first["layer"]}
        for key in first:
            if key in ("hookpoint", "layer"):
                continue
            values = np.array([fold[h][key] for fold in folds], dtype=np.float64)
            row[key] = float(np.mean(values))
            row[f"{key}_std"] = float(np.std(values))
        out.append(row)
    return out


def best_layer(task: str, table: list[dict]) -> dict:
    """The hookpoint with the highest primary metric, with its value and the baseline/control beside it."""
    key = primary(task)
    values = np.array([row[key] for row in table], dtype=np.float64)
    best = table[int(np.nanargmax(values))] if np.isfinite(values).any() else table[0]
    out = {"hookpoint": best["hookpoint"], "metric": key, "value": best[key],
           "baseline": best.get(f"baseline_{key}")}
    if f"control_{key}" in best:
        out["control"] = best[f"control_{key}"]
    return out
