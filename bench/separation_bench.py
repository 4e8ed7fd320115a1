"""`analyze separation` on 100k frames x 16k SAE latents: minutes on 2 cores, and the latents never densified?

    .venv/bin/python bench/separation_bench.py            # 500 items x 200 frames = 100,000 rows, d_sae 16,384
    .venv/bin/python bench/separation_bench.py --small    # seconds: does it work

A latent store (CSR, k=64 active latents per frame, fp32) is written with StoreWriter: random latents plus,
for each of 8 classes, 4 planted latents that fire on 80% of that class's frames; a continuous `tempo` label
drives one more latent's value. Items pair into tracks (`group`), so folds are split by track.

Timed phases come from the report's own timings (read, per-label latent statistics, silhouette, grouped CV,
projections). Reference measured in the same run: the per-latent loop of the usual research scripts
(scikit-learn `roc_auc_score` per class and `mutual_info_score` per latent on a densified copy) on a slice of
latents, extrapolated to all latents; the vectorised statistics must agree with it. Peak RSS is printed next to
the size the dense (rows x latents) float32 matrix would have.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

CLASSES = 8
PLANTED = 4


def write_store(path: Path, items: int, frames: int, d_sae: int, k: int, seed: int = 0) -> None:
    from musicsae_cli.store import StoreWriter
    from musicsae_cli.store.csr import CSR

    rng = np.random.default_rng(seed)
    hp = "layers.12.sae"
    with StoreWriter.create(path, {hp: d_sae}, "float32", sparse=[hp], frame_rate=50.0,
                            model={"family": "musicgen", "id": "bench/random", "hidden_size": 1024}) as w:
        for i in range(items):
            cls = i % CLASSES
            tempo = float(rng.uniform(60, 180))
            idx = np.empty((frames, k), dtype=np.int64)
            for f in range(frames):
                idx[f] = rng.choice(d_sae - CLASSES * PLANTED - 1, size=k, replace=False) + CLASSES * PLANTED + 1
            vals = rng.exponential(1.0, size=(frames, k)).astype(np.float32)
            fire = rng.random((frames, PLANTED)) < 0.8
            idx[:, :PLANTED] = np.where(fire, cls * PLANTED + np.arange(PLANTED), idx[:, :PLANTED])
            vals[:, :PLANTED] = np.where(fire, 2.0 + rng.random((frames, PLANTED)), vals[:, :PLANTED])
            idx[:, PLANTED] = CLASSES * PLANTED  # the tempo latent: value grows with tempo
            vals[:, PLANTED] = tempo / 60 + rng.normal(0, 0.2, frames)
            order = np.argsort(idx, axis=1)
            idx, vals = np.take_along_axis(idx, order, 1), np.take_along_axis(vals, order, 1)
            csr = CSR(np.arange(0, frames * k + 1, k, dtype=np.int64), idx.reshape(-1).astype(np.int32),
                      vals.reshape(-1), (frames, d_sae))
            w.add_item(f"item{i:05d}", {hp: csr}, item_meta={"group": f"track{i // 2:05d}", "genre": f"g{cls}",
                                                             "tempo": tempo})


@contextmanager
def log_phases(description: str, total: float | None = None):
    """A progress factory that prints each phase's start and end (the bench runs unattended)."""
    t = time.perf_counter()
    print(f"    [{description} ...]", file=sys.stderr, flush=True)

    class Tracker:
        def advance(self, n: float = 1) -> None:
            pass

    yield Tracker()
    print(f"    [{description}: {time.perf_counter() - t:.1f} s]", file=sys.stderr, flush=True)


def reference_loop(x, y: np.ndarray, latents: np.ndarray, mi_bins: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-latent scikit-learn AUROC (one-vs-rest) and MI on a densified slice, as research scripts do it."""
    from sklearn.metrics import mutual_info_score, roc_auc_score

    t = time.perf_counter()
    dense = x[:, latents].toarray()
    auroc = np.empty((latents.size, CLASSES))
    mi = np.empty(latents.size)
    for j in range(latents.size):
        col = dense[:, j]
        for c in range(CLASSES):
            auroc[j, c] = roc_auc_score(y == c, col)
        nz = col != 0
        level = np.zeros(col.size, dtype=np.int64)
        if nz.any():
            order = np.argsort(np.argsort(col[nz], kind="stable"), kind="stable")
            level[nz] = 1 + np.minimum(order * mi_bins // nz.sum(), mi_bins - 1)
        mi[j] = mutual_info_score(y, level) / np.log(2)
    return auroc, mi, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a seconds-long run")
    ap.add_argument("--keep", type=Path, help="write (or reuse) the store here instead of a temporary folder")
    args = ap.parse_args()
    items, frames, d_sae, k, ref_latents = (40, 50, 2048, 32, 64) if args.small else (500, 200, 16384, 64, 256)
    from musicsae_cli.analysis.config import SeparationConfig
    from musicsae_cli.analysis.latent_stats import latent_stats
    from musicsae_cli.analysis.latents import open_features
    from musicsae_cli.analysis.separation import separation

    tmp = Path(tempfile.mkdtemp(prefix="sepbench-"))
    store = args.keep or tmp / "latents"
    try:
        t = time.perf_counter()
        if not (store / "manifest.json").is_file():
            write_store(store, items, frames, d_sae, k)
        print(f"store: {items * frames:,} rows x {d_sae:,} latents, k={k} ({time.perf_counter() - t:.1f} s to "
              f"write or reuse)")
        cfg = SeparationConfig(labels=["genre", "tempo"], folds=5, seed=0)
        t = time.perf_counter()
        res = separation(store, tmp / "out", cfg, progress=log_phases)
        total = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        dense_gb = items * frames * d_sae * 4 / 1e9
        print(f"separation, all measures, 2 labels: {total:.1f} s ({total / 60:.2f} min)")
        for phase, sec in res["timings_s"].items():
            print(f"  {phase:<26} {sec:8.1f} s")
        print(f"peak RSS {peak:.2f} GB; the dense rows x latents float32 matrix would be {dense_gb:.2f} GB")
        genre = res["labels"]["genre"]
        found = sum(row["latent"] // PLANTED == int(cls[1:]) and row["latent"] < CLASSES * PLANTED
                    for cls, top in genre["latents"]["per_class"].items() for row in top["by_auroc"][:PLANTED])
        print(f"planted latents recovered in each class's top {PLANTED} by AUROC: {found}/{CLASSES * PLANTED}")
        for label in ("genre", "tempo"):
            for task, models in res["labels"][label]["cv"]["summary"].items():
                metric = "balanced_accuracy" if task == "classification" else "r2"
                print(f"  {label} {task} {metric}: " + ", ".join(f"{m} {v[metric]['mean']:.3f}"
                                                              for m, v in models.items()))
        # Reference: the per-latent loop on a slice, extrapolated; and agreement with the vectorised numbers.
        source = open_features(store)
        x = source.read(np.arange(source.store.n_rows))
        y = np.repeat(np.arange(items) % CLASSES, frames)
        t = time.perf_counter()
        stats = latent_stats(x, y, CLASSES, cfg.mi_bins)
        ours = time.perf_counter() - t
        latents = np.r_[np.arange(CLASSES * PLANTED + 1),
                        np.random.default_rng(1).choice(d_sae, ref_latents, replace=False)]
        auroc, mi, ref = reference_loop(x, y, latents, cfg.mi_bins)
        ref_all = ref / latents.size * d_sae
        print(f"latent statistics (AUROC x {CLASSES} classes + MI, all {d_sae:,} latents): {ours:.1f} s; "
              f"per-latent scikit-learn loop: {ref:.1f} s for {latents.size} latents -> {ref_all:.0f} s for all "
              f"(extrapolated); speed-up {ref_all / ours:.0f}x")
        d_auroc = np.abs(auroc - stats["auroc"][latents]).max()
        d_mi = np.abs(mi - stats["mi_bits"][latents]).max()
        print(f"agreement on {latents.size} latents: max |AUROC diff| {d_auroc:.2e}, max |MI diff| {d_mi:.2e} bits")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
