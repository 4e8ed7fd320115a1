"""The feature dashboard's two streaming passes over SAE latents, the choice of latents to show, and position
features.

Both passes read the analysed store rows in blocks of scipy CSR latents (never a dense rows x d_sae array):

1. `scan_all`, every latent: how often it is active (value > 0), the sum and the maximum of its values, and
   with select=label the sum of each latent per value of the label column;
2. `scan_selected`, the selected latents only: a histogram of their non-zero values (bins from 0 to the latent's
   maximum), the top-k activating frames (a streaming merge over blocks, `merge_topk`; ties go to the earlier
   row), and per label column the active frames and summed activation per label value.

Selection rules (`select_latents`): `density` the n most frequently active latents; `latents` a given list;
`random` n alive latents drawn with the seed; `label` per value v of `by_label` the n latents with the largest
difference mean(activation | frames with v) - mean(activation | all other selected frames, nulls included),
zeros counted, only positive differences; the union in value order.

Position features: a latent whose top frames (at least MIN_POSITION_FRAMES of them) all sit at the same frame
index of their items more likely encodes the position in the window than the sound (`position_frame`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..progress import ProgressFactory, no_progress
from .config import FeaturesConfig
from .feature_labels import MISSING, Labels
from .latents import FeatureSource

MIN_POSITION_FRAMES = 3  # a position feature needs at least this many top frames, all at one frame index


def rows_metadata(store, rows: np.ndarray, columns: list[str] | None) -> pa.Table:
    """The metadata `columns` at `rows` of `store` (the table as stored when `rows` covers every row)."""
    table = store.metadata(columns)
    if rows.size != store.n_rows:
        table = table.take(pa.array(rows))
    return table


def iter_blocks(source: FeatureSource, rows: np.ndarray, block_rows: int, tracker=None):
    """(start, CSR block) over `rows` in blocks; explicit zeros dropped, column indices sorted."""
    for start in range(0, rows.size, block_rows):
        x = source.read(rows[start:start + block_rows]).tocsr()
        x.eliminate_zeros()
        x.sum_duplicates()
        if tracker is not None:
            tracker.advance(x.shape[0])
        yield start, x


def scan_all(source: FeatureSource, rows: np.ndarray, block_rows: int, by_codes: np.ndarray | None = None,
             n_values: int = 0, progress: ProgressFactory = no_progress) -> dict:
    """Pass 1 over every latent: active count, sum and max (d_sae,), and per-value sums (n_values, d_sae)."""
    d = source.width
    count = np.zeros(d, np.int64)
    total = np.zeros(d, np.float64)
    peak = np.zeros(d, np.float64)
    by_sum = np.zeros((n_values, d), np.float64) if by_codes is not None else None
    with progress("Scanning latents", int(rows.size)) as tracker:
        for start, x in iter_blocks(source, rows, block_rows, tracker):
            if x.nnz == 0:
                continue
            idx = x.indices
            count += np.bincount(idx, minlength=d)
            total += np.bincount(idx, weights=x.data, minlength=d)
            peak = np.maximum(peak, x.max(axis=0).toarray().ravel())
            if by_sum is not None:
                # sums per (value, latent): row value codes repeated over each row's non-zeros
                codes = np.repeat(by_codes[start:start + x.shape[0]], np.diff(x.indptr))
                by_sum += np.bincount(codes.astype(np.int64) * d + idx, weights=x.data,
                                      minlength=n_values * d).reshape(n_values, d)
    return {"count": count, "sum": total, "max": peak, "by_sum": by_sum}


def scan_selected(source: FeatureSource, rows: np.ndarray, latents: list[int], peaks: np.ndarray, cfg: FeaturesConfig,
                  labels: Labels, progress: ProgressFactory = no_progress) -> dict:
    """Pass 2 over the selected latents: histograms, top-k frames, co-occurrence counts and sums per label value."""
    sel = np.asarray(latents, dtype=np.int64)
    m, bins = sel.size, cfg.bins
    hist = np.zeros((m, bins), np.int64)
    safe_peak = np.where(peaks > 0, peaks, 1.0)
    top = (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))  # (latent pos, value, row pos)
    co_count = {c: np.zeros((len(v), m), np.int64) for c, v in labels.values.items()}
    co_sum = {c: np.zeros((len(v), m), np.float64) for c, v in labels.values.items()}
    with progress("Reading selected latents", int(rows.size)) as tracker:
        for start, x in iter_blocks(source, rows, cfg.block_rows, tracker):
            xs = x[:, sel].tocoo()  # (b, m): column j is latent sel[j]
            keep = xs.data > 0
            r, c, v = xs.row[keep].astype(np.int64), xs.col[keep].astype(np.int64), xs.data[keep]
            if v.size == 0:
                continue
            b = np.clip((v / safe_peak[c] * bins).astype(np.int64), 0, bins - 1)
            hist += np.bincount(c * bins + b, minlength=m * bins).reshape(m, bins)
            pos = start + r
            top = merge_topk(np.concatenate([top[0], c]), np.concatenate([top[1], v.astype(np.float32)]),
                             np.concatenate([top[2], pos]), cfg.top_k)
            for col, codes in labels.codes.items():
                n_val = len(labels.values[col])
                key = codes[pos].astype(np.int64) * m + c
                co_count[col] += np.bincount(key, minlength=n_val * m).reshape(n_val, m)
                co_sum[col] += np.bincount(key, weights=v, minlength=n_val * m).reshape(n_val, m)
    return {"hist": hist, "top": top, "co_count": co_count, "co_sum": co_sum}


def merge_topk(lat: np.ndarray, val: np.ndarray, pos: np.ndarray, k: int):
    """Keep the k largest values per latent (ties: the smaller row position first), sorted by latent then rank."""
    if lat.size == 0:
        return lat, val, pos
    order = np.lexsort((pos, -val.astype(np.float64), lat))
    lat, val, pos = lat[order], val[order], pos[order]
    first = np.r_[0, np.flatnonzero(np.diff(lat)) + 1]
    rank = np.arange(lat.size) - np.repeat(first, np.diff(np.r_[first, lat.size]))
    keep = rank < k
    return lat[keep], val[keep], pos[keep]


def select_latents(cfg: FeaturesConfig, source: FeatureSource, stats: dict, n_rows: int,
                   labels: Labels) -> tuple[list[int], dict]:
    """The latents to show and a description of the rule (with per-latent reasons for select=label)."""
    count = stats["count"]
    alive = int((count > 0).sum())
    if cfg.select == "latents":
        latents = list(dict.fromkeys(source.check_latents(cfg.latents)))
        return latents, {"rule": "latents", "description": "the given latents", "latents": latents}
    if cfg.select == "density":
        order = np.lexsort((np.arange(count.size), -count))
        latents = [int(i) for i in order[:cfg.n] if count[i] > 0]
        return latents, {"rule": "density", "n": cfg.n, "description": f"the {len(latents)} most frequently "
                         f"active latents ({alive} of {source.width} are ever active)"}
    if cfg.select == "random":
        rng = np.random.default_rng(cfg.seed)
        pool = np.flatnonzero(count > 0)
        latents = sorted(int(i) for i in rng.choice(pool, size=min(cfg.n, pool.size), replace=False))
        return latents, {"rule": "random", "n": cfg.n, "seed": cfg.seed,
                         "description": f"{len(latents)} of the {alive} active latents drawn at random "
                                        f"(seed {cfg.seed})"}
    col = cfg.by_label
    codes, names = labels.codes[col], labels.values[col]
    n_per = np.bincount(codes, minlength=len(names)).astype(np.float64)
    latents: list[int] = []
    reasons: dict[int, list[dict]] = {}
    for vi, name in enumerate(names):
        if name == MISSING or n_per[vi] == 0 or n_per[vi] == n_rows:
            continue
        mean_in = stats["by_sum"][vi] / n_per[vi]
        mean_rest = (stats["sum"] - stats["by_sum"][vi]) / (n_rows - n_per[vi])
        diff = mean_in - mean_rest
        order = np.lexsort((np.arange(diff.size), -diff))
        for j in order[:cfg.n]:
            if diff[j] <= 0:
                break
            j = int(j)
            if j not in reasons:
                latents.append(j)
            reasons.setdefault(j, []).append({"value": name, "mean_in": float(mean_in[j]),
                                              "mean_rest": float(mean_rest[j]), "difference": float(diff[j])})
    return latents, {"rule": "label", "by_label": col, "n_per_value": cfg.n, "reasons": reasons,
                     "description": f"per value of {col}, the {cfg.n} latents with the largest difference in mean "
                                    f"activation between its frames and all other frames"}


def position_frame(top_frames: list[dict]) -> int | None:
    """The frame index every top frame sits at (at least MIN_POSITION_FRAMES of them), else None."""
    frames = {f["frame"] for f in top_frames}
    return int(next(iter(frames))) if len(top_frames) >= MIN_POSITION_FRAMES and len(frames) == 1 else None
