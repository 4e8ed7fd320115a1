"""`probe evaluate`: apply saved probes to another store (e.g. generated audio), same pooling, every hookpoint.

Writes per-sample predictions (long CSV: one row per sample and hookpoint), the mean predicted probability of
each class per hookpoint, and, where the store has the label column, the per-layer metrics beside the
baseline of the probe's training data (its majority class, or its mean target). On a store of generated audio
(both generation streams per clip) only the cond rows are pooled unless --where names a stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import check_output, check_replaceable, new_manifest, staged_directory, write_json
from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from ..results import ABSENT, Result, internal
from .model import ProbeSet
from .train import table_lines

log = logging.getLogger("musicsae")
EVAL_KIND = "probe_evaluation"


@dataclass(kw_only=True)
class ProbeEvaluation(Result):
    """What `probe evaluate` reports: mean predictions per hookpoint and, on a labelled store, the metrics."""

    evaluation: str = internal()  # the evaluation folder (the command's output)
    probes: str
    store: str
    task: str
    label: str
    label_column: str | None
    pooling: str
    samples: int
    where: list[str]
    stream: dict | None
    missing_labels: Any
    sampled_from_rows: int | None
    mean_probabilities: dict[str, dict[str, float]] = ABSENT  # classification
    mean_prediction: dict[str, float] = ABSENT  # regression
    unknown_labels: dict = ABSENT  # with labels: values the probes do not know, and their counts
    labelled_samples: int = ABSENT
    best: dict = ABSENT
    layers: list[dict] = ABSENT

    def lines(self) -> list[str]:
        lines = [self.evaluation, f"{self.samples} samples predicted ({self.pooling} pooling)"]
        for hp, probs in (self.get("mean_probabilities") or {}).items():
            lines.append(f"  {hp}: " + ", ".join(f"{c} {p:.3f}" for c, p in probs.items()))
        for hp, value in (self.get("mean_prediction") or {}).items():
            lines.append(f"  {hp}: mean prediction {value:.4g}")
        if self.get("layers"):
            lines += [f"metrics on {self.labelled_samples} labelled samples:", *table_lines(self.layers, self.best)]
        return lines


def check_compatible(probes: ProbeSet, store, allow_other_model: bool = False) -> None:
    """InputError when the store comes from another model than the probes, or lacks/changes a hookpoint."""
    from ..models.identity import check_same_model

    check_same_model("the probes", probes.model, store.model or {}, allow_other_model, against="the store's model")
    missing = [hp for hp in probes.hookpoints if hp not in store.widths]
    if missing:
        raise InputError(f"the store lacks probed hookpoint(s) {', '.join(missing)}",
                         "stored hookpoints: " + ", ".join(store.widths))
    for hp, width in probes.widths.items():
        if store.widths[hp] != width:
            raise InputError(f"hookpoint {hp} is {store.widths[hp]} wide in the store but {width} in the probes",
                             "evaluate on a store of the model (and SAE) the probes were trained on")


def evaluate_probes(probes_path: str | Path, store_path: str | Path, out: str | Path, *, where: list[str] | None = None,
                    label: str | None = None, allow_other_model: bool = False, max_rows: int | None = None,
                    overwrite: bool = False, progress: ProgressFactory = no_progress) -> ProbeEvaluation:
    """Predict every sample of a store with saved probes; metrics when the store has the label column."""
    from ..config import check_max_rows
    from ..store import ActivationStore

    check_max_rows(max_rows)
    from ..store.filters import choose_stream
    from .data import load_samples
    from .fit import apply
    from .metrics import best_layer, decode, layer_table

    probes = ProbeSet.load(probes_path)
    store = ActivationStore.open(store_path)
    check_compatible(probes, store, allow_other_model)
    column = label or probes.label
    if column not in store.metadata_columns:
        if label:
            from .data import check_label_column

            check_label_column(store, label)  # an explicitly named column must exist
        column = None
    out = check_output(out, overwrite, "evaluation folder")
    if out.exists():
        check_replaceable(out)
    if Path(store_path).resolve() == Path(str(probes.manifest.get("store", ""))).resolve():
        log.warning("this is the store the probes were trained on: its metrics include training samples")
    # Generated stores hold both generation streams of every clip: one of them (cond by default), never both pooled.
    streams = choose_stream(store, list(where or []), labels=[column] if column else [])
    # No split here, so samples are keyed by item_id (stores of generated audio have no group column).
    data = load_samples(store, probes.hookpoints, column, probes.task, probes.pooling, streams.where,
                        "item_id", max_rows, 0, progress, drop_missing=False)
    outputs = apply(probes.weight, probes.bias, probes.mean, probes.std, data.x)  # (H, n, C)
    pred = decode(probes.task, outputs, probes.target_mean, probes.target_std)  # (H, n)
    proba = _softmax(outputs) if probes.task == "classification" else None
    result = {"evaluation": str(out), "probes": str(probes_path), "store": str(store_path), "task": probes.task,
              "label": probes.label, "label_column": column, "pooling": probes.pooling, "samples": int(pred.shape[1]),
              "where": streams.where, "stream": streams.record(), "missing_labels": data.missing,
              "sampled_from_rows": data.sampled_from}
    if proba is not None:
        result["mean_probabilities"] = {hp: dict(zip(probes.classes, proba[h].mean(axis=0).round(6).tolist(),
                                                     strict=True)) for h, hp in enumerate(probes.hookpoints)}
    else:
        result["mean_prediction"] = {hp: float(pred[h].mean()) for h, hp in enumerate(probes.hookpoints)}
    table = None
    if column is not None and data.labelled.any():
        keep = data.labelled
        y_true, unknown = _true_targets(probes, data.labels[keep])
        result["unknown_labels"] = unknown
        reference = _training_reference(probes, y_true.size)
        table = layer_table(probes.task, probes.hookpoints, pred[:, keep], None, reference, y_true)
        result.update(labelled_samples=int(keep.sum()), best=best_layer(probes.task, table), layers=table)
        if result["best"].get("undefined"):
            log.warning("%s", result["best"]["undefined"])
    with staged_directory(out, overwrite) as stage:
        _write_predictions(stage / "predictions.csv", probes, data, pred, proba, column)
        write_json(stage / "mean_predictions.json", result.get("mean_probabilities") or result["mean_prediction"])
        if table is not None:
            from .report import write_report

            write_report(stage, probes.task, table, {k: result[k] for k in ("label", "label_column", "best",
                                                                            "where", "stream", "labelled_samples")})
        write_json(stage / "manifest.json", new_manifest(EVAL_KIND, 1, {"where": list(where or []),
                                                                       "label": column, "max_rows": max_rows},
                                                         **{k: v for k, v in result.items() if k != "layers"}))
    return ProbeEvaluation(**result)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _true_targets(probes: ProbeSet, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Class indices (-1 for a label the probe does not know: always wrong) or float targets; unknown counts."""
    if probes.task == "regression":
        return labels.astype(np.float64), {}
    index = {c: i for i, c in enumerate(probes.classes)}
    y = np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)
    values, counts = np.unique(labels[y < 0].astype(str), return_counts=True)
    unknown = dict(zip(values.tolist(), counts.tolist(), strict=True))
    if unknown:
        log.warning("labels the probe was not trained on (counted as wrong): %s",
                    ", ".join(f"{v} ({n})" for v, n in unknown.items()))
    return y, unknown


def _training_reference(probes: ProbeSet, n: int) -> np.ndarray:
    """Stand-in training labels whose majority (or mean) is the probe's training one, for the baseline."""
    if probes.task == "regression":
        return np.full(max(n, 1), probes.target_mean)
    counts = probes.manifest.get("class_counts") or {}
    majority = max(probes.classes, key=lambda c: counts.get(c, 0))
    return np.full(max(n, 1), probes.class_index(majority))


def _write_predictions(path: Path, probes: ProbeSet, data, pred: np.ndarray, proba: np.ndarray | None,
                       column: str | None) -> None:
    """Long CSV: item_id, [frame], hookpoint, [true label], prediction, [p_<class>...] per sample and hookpoint."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    h, n = pred.shape
    cols = {"item_id": np.tile(data.item_ids, h)}
    if data.frames is not None:
        cols["frame"] = np.tile(data.frames, h)
    cols["hookpoint"] = np.repeat(np.asarray(probes.hookpoints, dtype=object), n)
    if column is not None:
        truth = np.where(data.labelled, data.labels, None) if data.labels.dtype == object else \
            np.where(data.labelled, data.labels, np.nan)
        cols[column] = np.tile(truth, h)
    if probes.task == "classification":
        cols["prediction"] = np.asarray(probes.classes, dtype=object)[pred.reshape(-1)]
        for c, name in enumerate(probes.classes):
            cols[f"p_{name}"] = proba[:, :, c].reshape(-1).astype(np.float32)  # float32: a readable CSV
    else:
        cols["prediction"] = pred.reshape(-1)
    pacsv.write_csv(pa.table({k: pa.array(v) for k, v in cols.items()}), str(path))
