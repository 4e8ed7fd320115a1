"""Figures and projections of `analyze separation`.

- cv_<label>.png: each model's cross-validated score (mean ± std over folds) beside the baselines.
- t-SNE and UMAP projections of a stratified sample (after TruncatedSVD for sparse features, PCA for dense ones,
  to svd_dims dimensions): <method>_<label>.png coloured by class (or by value for a continuous label), and the
  coordinates of every projected sample in projection_<label>.csv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import write_csv_rows
from ..progress import ProgressFactory, no_progress
from .config import SeparationConfig
from .separation_data import Label, stratified_sample


def file_label(name: str) -> str:
    """A label name as it appears in file names (characters other than letters, digits, - and _ replaced)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def plot_cv(stage: Path, name: str, cv: dict, hookpoint: str | None = None) -> list[str]:
    """cv_<label>.png: each model's cross-validated score (mean ± std over folds) beside the baselines, on a fixed
    axis (balanced accuracy 0-1, R² up to 1), the test size in the title."""
    from ..plotting import figure, output_name, style_axis, title

    tasks = list(cv["summary"])
    file = f"cv_{file_label(name)}.png"
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
        file = f"{method}_{file_label(label.name)}.png"
        _plot_embedding(stage / file, emb, ys, None if values is None else values[idx], label, method, n, y.size,
                        hookpoint)
        files.append(file)
    csv = f"projection_{file_label(label.name)}.csv"
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
