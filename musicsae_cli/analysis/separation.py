"""The `analyze separation` service: how well raw activations or SAE latents separate labelled concepts.

For every label: the top latents per class (by mean-activation difference and by one-vs-rest AUROC), each
latent's mutual information with the label, silhouette scores, cross-validated random forests beside linear,
shuffled-label and majority/mean baselines, and t-SNE/UMAP projections, all saved with the seed. The samples
come from separation_data, the measures from separation_measures, projections and figures from
separation_plots; the `measures` setting chooses which run. Impossible folds are refused before any long
computation.

Written to OUT: separation.json (every label's measures, the sampling and the timings), per label
latents_<label>.csv and latent_stats_<label>.npz (every latent's numbers), cv_<label>.png, <method>_<label>.png
and projection_<label>.csv, config.yaml and manifest.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import InputError
from ..probes.data import check_label_column
from ..progress import ProgressFactory, no_progress
from ..results import Result, internal
from ..store.filters import choose_stream
from .config import SeparationConfig
from .latent_stats import latent_stats
from .latents import open_features
from .separation_data import Label, encode_label, load_samples, stratified_sample
from .separation_measures import check_folds, cross_validate, silhouette, top_latents
from .separation_plots import file_label, plot_cv, project

FORMAT_VERSION = 1
KIND = "separation"


@dataclass(kw_only=True)
class SeparationResult(Result):
    """What `analyze separation` reports: separation.json's fields (but the config) and the files written
    (--json: timings_s is printed last, as phase_elapsed_s)."""

    out: str
    kind: str
    store: str
    features: dict
    model: Any
    pooling: str
    seed: int
    where: list[str]
    stream: dict | None
    sampling: dict
    labels: dict
    timings_s: dict[str, float] = internal()
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "phase_elapsed_s": self.timings_s}

    def lines(self) -> list[str]:
        feats, samp = self.features, self.sampling
        lines = [self.out, f"{samp['samples']} samples x {feats['width']} {feats['kind']} of {feats['hookpoint']} "
                           f"(pooling {samp['pooling']}, {self.timings_s['total']:.1f} s)"]
        for name, r in self.labels.items():
            lines.append(f"{name} ({r['task']}, {len(r['classes'])} classes, {r['samples']} samples):")
            for cls, top in list(r.get("latents", {}).get("per_class", {}).items())[:12]:
                best = ", ".join(f"{t['latent']} ({t['auroc']:.2f})" for t in top["by_auroc"][:3])
                lines.append(f"  {cls}: top by AUROC {best}")
            sil = r.get("silhouette")
            if sil and "mean" in sil:
                lines.append(f"  silhouette {sil['mean']:.3f} ({sil['metric']}, {sil['samples']} samples): "
                             f"{sil['share_below_-0.1']:.0%} below -0.1, {sil['share_above_0.1']:.0%} above 0.1")
            for t, models in r.get("cv", {}).get("summary", {}).items():
                metric = "balanced_accuracy" if t == "classification" else "r2"
                scores = ", ".join(f"{m} {v[metric]['mean']:.3f}" for m, v in models.items())
                lines.append(f"  {t} {metric}: {scores}")
        return lines


def separation(store_path: str | Path, out: str | Path, cfg: SeparationConfig, overwrite: bool = False,
               progress: ProgressFactory = no_progress) -> SeparationResult:
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
    x, meta, sampling = load_samples(source, cfg, progress, streams.where)
    timings["read"] = time.perf_counter() - t0
    labels = [encode_label(name, meta[name], store.metadata_columns[name], cfg) for name in cfg.labels]
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
                res["latents"] = top_latents(stats, label.classes, cfg.top_n)
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
                files += plot_cv(stage, label.name, res["cv"], source.hookpoint)
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
    return SeparationResult(out=str(out), **{k: v for k, v in report.items() if k != "config"},
                            files=[str(Path(out) / f) for f in ["separation.json", *files]])


def _write_latent_tables(stage: Path, label: Label, stats: dict) -> list[str]:
    """latents_<label>.csv (one row per feature: density, MI, best class) and the full per-class arrays (.npz)."""
    diff = stats["mean_in"] - stats["mean_out"]
    best = np.argmax(stats["auroc"], axis=1)
    rows = [{"latent": i, "density": float(stats["density"][i]), "mi_bits": float(stats["mi_bits"][i]),
             "best_class": label.classes[best[i]], "best_class_auroc": float(stats["auroc"][i, best[i]]),
             "best_class_mean_diff": float(diff[i, best[i]])} for i in range(diff.shape[0])]
    csv_name, npz_name = f"latents_{file_label(label.name)}.csv", f"latent_stats_{file_label(label.name)}.npz"
    write_csv_rows(stage / csv_name, rows)
    np.savez(stage / npz_name, classes=np.asarray(label.classes, dtype=str), mean_in=stats["mean_in"],
             mean_out=stats["mean_out"], active_in=stats["active_in"], active_out=stats["active_out"],
             auroc=stats["auroc"], mi_bits=stats["mi_bits"], density=stats["density"])
    return [csv_name, npz_name]
