"""`probe train`: read the store once, split by group, fit every hookpoint's probe at once, report, save.

Protocol (leak-free): samples of one group (track) sit on one side only, and the
split is stratified by class (by quantile bins of a regression target) so every class is tested when the groups
allow it (probes.splits); classes missing from a side, or with few test samples, are warned about and recorded;
feature standardisation is fitted on the training part only; metrics sit beside a majority/mean baseline and a
probe trained on shuffled training labels. A store with several generation streams is probed on one of them
(store.filters.choose_stream). Without folds the saved probes are the ones evaluated (trained on
the training groups). With `folds: k` the metrics are the mean and std over k group folds and the saved
probes are refitted on all labelled groups (the usual cross-validate-then-refit), so their own held-out
score is the cross-validated one.

On several ranks (torchrun), the hookpoints are dealt out round-robin: each rank reads and fits its own (the
splits depend on the labels and groups only, so every rank splits alike) and rank 0 gathers the probes and their
metrics in hookpoint order and writes the folder.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import check_output, check_replaceable, new_manifest, staged_directory, write_config
from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result, internal
from .config import ProbeConfig
from .model import FORMAT_VERSION, KIND, ProbeSet

log = logging.getLogger("musicsae")


def _num(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def table_lines(layers: list[dict], best: dict) -> list[str]:
    """The per-layer metric table (beside its baseline and control) and the best layer, as printed."""
    key = best["metric"]
    lines = []
    for row in layers:
        extra = "".join(f"  {name} {_num(row[f'{name}_{key}'])}" for name in ("baseline", "control")
                        if f"{name}_{key}" in row)
        spread = f" ± {_num(row[f'{key}_std'])}" if row.get(f"{key}_std") is not None else ""
        lines.append(f"  {row['hookpoint']}: {key} {_num(row[key])}{spread}{extra}")
    lines.append(f"best: {best['hookpoint']} ({key} {_num(best['value'])})"
                 + (f"; {best['undefined']}" if best.get("undefined") else ""))
    return lines


@dataclass(kw_only=True)
class ProbeTrainResult(Result):
    """What `probe train` reports: the split, per-layer metrics and the best layer (--json: timing_s is printed
    last, as phase_elapsed_s)."""

    probes: str = internal()  # the probes folder (the command's output)
    store: str
    task: str
    label: str
    loss: str
    pooling: str
    classes: list[str]
    class_counts: dict[str, int] | None
    split: dict
    where: list[str]
    stream: dict | None
    missing_labels: Any
    sampled_from_rows: int | None
    best: dict
    hookpoints: list[str]
    iterations: int
    converged: bool | None
    bytes_read: int
    timing_s: dict[str, float] = internal()
    layers: list[dict]

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "phase_elapsed_s": self.timing_s}

    def lines(self) -> list[str]:
        s = self.split
        head = [self.probes, f"{self.task} probes for '{self.label}' on {len(self.hookpoints)} hookpoint(s) "
                f"({self.pooling} pooling, {s['samples']} samples, {s['groups']} groups; "
                + (f"{s['folds']}-fold by {s['column']})" if s["folds"] else
                   f"test {s['test_samples']} samples of {s['test_groups']} {s['column']}s)")]
        return head + table_lines(self.layers, self.best)


def train_probes(store_path: str | Path, out: str | Path, cfg: ProbeConfig, overwrite: bool = False,
                 progress: ProgressFactory = no_progress) -> ProbeTrainResult | None:
    """Train one probe per hookpoint of `cfg` on a store; returns the summary (per-layer metrics included); on
    ranks other than 0 of a distributed run, None (rank 0 writes and reports)."""
    from .. import distributed
    from ..store import ActivationStore
    from ..store.filters import choose_stream
    from .data import check_label_column, load_samples, pick_hookpoints
    from .metrics import aggregate, best_layer, layer_table
    from .report import write_report
    from .splits import holdout_split, kfold_split, split_warnings

    start = time.perf_counter()
    d = distributed.current()

    def setup():
        store = ActivationStore.open(store_path)
        label = check_label_column(store, cfg.label)
        hookpoints = pick_hookpoints(store, cfg.hookpoints)
        checked = check_output(out, overwrite, "probes folder")
        if checked.exists():
            check_replaceable(checked)  # fail before reading the store, not after training
        return store, label, hookpoints, checked, choose_stream(store, cfg.where, labels=[label])

    store, label, all_hookpoints, out, streams = distributed.agreed(setup)
    hookpoints = all_hookpoints[d.rank::d.world] if d.active else all_hookpoints  # this rank's
    if not hookpoints:  # more ranks than hookpoints: this one has nothing to fit
        distributed.gather(None)
        return None
    data = load_samples(store, hookpoints, label, cfg.task, cfg.pooling, streams.where, cfg.split_column,
                        cfg.max_rows, cfg.seed, progress)
    read_s = time.perf_counter() - start
    classes, y = encode_targets(cfg.task, data.labels, label)
    if cfg.folds:
        fold_of, split_seed = kfold_split(cfg.task, y, data.groups, cfg.folds, cfg.seed, label)
        splits = [(fold_of != f, fold_of == f) for f in range(cfg.folds)]
    else:
        test, split_seed = holdout_split(cfg.task, y, data.groups, cfg.test_fraction, cfg.seed, label,
                                         data.split_column)
        splits = [(~test, test)]
    warnings = split_warnings(classes, y, splits) if cfg.task == "classification" else []
    tables, fitted = [], None
    with progress("Training probes", len(splits) + (1 if cfg.folds else 0)) as tracker:
        for f, (train, test) in enumerate(splits):
            fitted, target, pred, control = _fit_and_predict(data, y, train, test, cfg, classes, f)
            tables.append(layer_table(cfg.task, hookpoints, pred, control, y[train], y[test]))
            tracker.advance(1)
        if cfg.folds:  # refit on every labelled group (see the module docstring)
            fitted, target, _, _ = _fit_and_predict(data, y, np.ones(y.size, bool), None, cfg, classes, -1)
            tracker.advance(1)
    fit_s = time.perf_counter() - start - read_s
    if d.active:  # every rank's probes and metrics, in the order of the hookpoints
        shares = distributed.gather((hookpoints, tables, fitted.weight[0], fitted.bias[0], fitted.mean, fitted.std,
                                     fitted.iterations, data.bytes_read))
        if not d.main:
            return None
        hookpoints, tables, fitted, bytes_read = _merge_ranks(all_hookpoints, [s for s in shares if s is not None])
        data.bytes_read = bytes_read
    table = aggregate(tables)
    best = best_layer(cfg.task, table)
    if best.get("undefined"):
        log.warning("%s", best["undefined"])
        warnings.append(best["undefined"])
    train0, test0 = splits[0]  # with folds: the first fold's sides
    split = {"column": data.split_column, "folds": cfg.folds, "samples": int(y.size),
             "groups": int(np.unique(data.groups).size),
             "train_samples": int(train0.sum()), "test_samples": int(test0.sum()),
             "train_groups": int(np.unique(data.groups[train0]).size),
             "test_groups": int(np.unique(data.groups[test0]).size),
             "probes_trained_on": "all labelled groups" if cfg.folds else "training groups",
             "stratified_by": "class" if cfg.task == "classification" else "quantile bins of the target",
             "split_seed": split_seed, "warnings": warnings}
    summary = {"task": cfg.task, "label": label, "loss": cfg.fit_loss, "pooling": cfg.pooling,
               "classes": classes, "class_counts": _counts(cfg.task, classes, y), "split": split,
               "where": streams.where, "stream": streams.record(),
               "missing_labels": data.missing, "sampled_from_rows": data.sampled_from, "best": best}
    manifest = new_manifest(KIND, FORMAT_VERSION, cfg.model_dump(mode="json"), store=str(store_path),
                            **summary, **target, metrics={"best": best, "file": "metrics.json"},
                            widths={hp: int(store.widths[hp]) for hp in hookpoints})
    probes = ProbeSet(cfg.task, label, classes, hookpoints, cfg.pooling, store.model, fitted.weight[0],
                      fitted.bias[0], fitted.mean, fitted.std, manifest=manifest)
    with staged_directory(out, overwrite) as stage:
        probes.save(stage)
        write_config(stage, {"store": str(store_path), **cfg.model_dump(mode="json")})
        write_report(stage, cfg.task, table, summary)
        write_split(stage / "split.csv", data, fold_of if cfg.folds else np.where(test0, "test", "train"))
    return ProbeTrainResult(probes=str(out), store=str(store_path), **summary, hookpoints=hookpoints,
                            iterations=fitted.iterations,
                            converged=fitted.iterations < cfg.max_iter if cfg.optimizer == "lbfgs" else None,
                            bytes_read=data.bytes_read,
                            timing_s={"read": round(read_s, 3), "fit": round(fit_s, 3),
                                      "total": round(time.perf_counter() - start, 3)},
                            layers=table)


def write_split(path: Path, data, side: np.ndarray) -> None:
    """split.csv: item_id, [frame], group and side (train/test, or the fold number) of every sample."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = {"item_id": data.item_ids, **({"frame": data.frames} if data.frames is not None else {}),
            "group": data.groups, "fold" if side.dtype.kind in "iu" else "side": side}
    pacsv.write_csv(pa.table({k: pa.array(v) for k, v in cols.items()}), str(path))


def encode_targets(task: str, labels: np.ndarray, label: str) -> tuple[list[str], np.ndarray]:
    """(classes, class index per sample) for classification; ([], float64 values) for regression."""
    if task == "regression":
        if np.unique(labels).size < 2:
            raise InputError(f"label '{label}' takes a single value; nothing to regress", "choose another label")
        return [], labels.astype(np.float64)
    from .data import natural_key

    classes = sorted({str(v) for v in labels}, key=natural_key)
    if len(classes) < 2:
        raise InputError(f"label '{label}' has {len(classes)} class(es) ({', '.join(classes)}); a probe needs 2+",
                         "choose another label, or widen --where")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(v)] for v in labels], dtype=np.int64)
    rare = [f"{c} ({n})" for c, n in zip(classes, np.bincount(y, minlength=len(classes)), strict=True) if n < 2]
    if rare:
        log.warning("label '%s': class(es) with fewer than 2 samples: %s", label, ", ".join(rare))
    return classes, y


def _merge_ranks(hookpoints: list[str], shares: list[tuple]):
    """(hookpoints, per-fold tables, fitted probes, bytes read) of every rank's share, in hookpoint order."""
    from types import SimpleNamespace

    where = {hp: (r, j) for r, share in enumerate(shares) for j, hp in enumerate(share[0])}
    pick = [where[hp] for hp in hookpoints]
    tables = [[{**shares[r][1][f][j], "layer": h} for h, (r, j) in enumerate(pick)] for f in range(len(shares[0][1]))]
    fitted = SimpleNamespace(weight=[np.stack([shares[r][2][j] for r, j in pick])],
                             bias=[np.stack([shares[r][3][j] for r, j in pick])],
                             mean=np.stack([shares[r][4][j] for r, j in pick]),
                             std=np.stack([shares[r][5][j] for r, j in pick]),
                             iterations=max(share[6] for share in shares))
    return hookpoints, tables, fitted, sum(share[7] for share in shares)


def _counts(task: str, classes: list[str], y: np.ndarray) -> dict | None:
    if task != "classification":
        return None
    counts = Counter(y.tolist())
    return {c: int(counts.get(i, 0)) for i, c in enumerate(classes)}


def _fit_and_predict(data, y: np.ndarray, train: np.ndarray, test: np.ndarray | None, cfg: ProbeConfig,
                     classes: list[str], fold: int):
    """Fit on the `train` samples of `data` (ProbeData) (plus a shuffled-label control when evaluating); predict `test`.

    Returns (fitted, target standardisation, predictions (H, n_test), control predictions or None).
    """
    from .fit import apply, fit_probes
    from .metrics import decode

    y_train = y[train]
    target = {}
    if cfg.task == "regression":
        mu, sd = float(y_train.mean()), float(y_train.std())
        if sd == 0:
            raise InputError(f"the training part of label '{cfg.label}' is constant", "use more groups")
        target = {"target_mean": mu, "target_std": sd}
        variants = [(y_train - mu) / sd]
    else:
        variants = [y_train]
    with_control = cfg.control and test is not None
    if with_control:  # seeded per fold: the control is reproducible and differs between folds
        variants.append(variants[0][np.random.default_rng([cfg.seed, 3, max(fold, 0)]).permutation(y_train.size)])
    n_out = 1 if cfg.task == "regression" else len(classes)
    x = data.x
    widths = [data.widths.get(hp, x.shape[2]) for hp in data.hookpoints]
    fitted = fit_probes(x[:, train], np.stack(variants), n_out, cfg.fit_loss, optimizer=cfg.optimizer,
                        max_iter=cfg.max_iter, lr=cfg.learning_rate, batch_size=cfg.batch_size,
                        weight_decay=cfg.weight_decay, seed=cfg.seed, device=cfg.device, widths=widths)
    if test is None:
        return fitted, target, None, None
    x_test = x[:, test]  # (H, n_test, d)
    outputs = [apply(fitted.weight[k], fitted.bias[k], fitted.mean, fitted.std, x_test)
               for k in range(len(variants))]
    preds = [decode(cfg.task, o, target.get("target_mean", 0.0), target.get("target_std", 1.0)) for o in outputs]
    return fitted, target, preds[0], preds[1] if with_control else None
