"""The feature dashboard's item view (`analyze features --item ITEM_ID`): which SAE latents fired when in one item.

Only that item's rows (among the analysed ones) are read. Per frame: how many latents are active and the few
largest (latent, value) pairs; over the item: each latent's summed activation, the largest ones chosen for the
latent x time heatmap, and every non-zero latent value as a CSV row. `analyze_features` writes them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc

from ..errors import InputError
from .config import FeaturesConfig
from .feature_scan import rows_metadata
from .latents import FeatureSource

if TYPE_CHECKING:
    import scipy.sparse as sp


@dataclass
class ItemView:
    """One item's latents over its frames, as the item view shows them."""

    rows: np.ndarray  # (n,) the item's analysed store rows
    x: sp.csr_matrix  # (n, d_sae) latents of those rows, explicit zeros dropped
    frames: np.ndarray  # (n,) int64 frame index of each row
    times: np.ndarray  # (n,) float64 time in seconds of each row (NaN where unknown)
    frame_rows: list[dict]  # per frame: frame, time_s, n_active and its largest latents
    csv_rows: list[dict]  # every non-zero (frame, latent, value), row order, then largest value first
    active: np.ndarray  # the latents active on some frame
    totals: np.ndarray  # (d_sae,) summed activation of each latent over the item
    shown: list[int]  # the heatmap's latents: the largest totals first


def safe_name(item: str) -> str:
    """A file name for an item id (path separators and odd characters replaced)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", item).strip("._") or "item"
    return name[:120]


def item_rows(store, rows: np.ndarray, item: str) -> np.ndarray:
    """The analysed rows of `item`; InputError with close matches for an unknown id."""
    ids = store.metadata(["item_id"]).column("item_id")
    hit = np.flatnonzero(pc.equal(ids, item).to_numpy(zero_copy_only=False))
    if hit.size == 0:
        known = pc.unique(ids).to_pylist()
        close = difflib.get_close_matches(item, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
            f"the store has {len(known)} items, e.g. {', '.join(known[:3])} (see `musicsae info STORE`)"
        raise InputError(f"unknown item '{item}'", hint)
    return np.intersect1d(hit, rows)


def item_latents(x, per_frame: int) -> list[list[tuple[int, float]]]:
    """Per row of CSR `x`, the `per_frame` largest (latent, value) pairs (ties: smaller latent first)."""
    out = []
    for i in range(x.shape[0]):
        a, b = x.indptr[i], x.indptr[i + 1]
        idx, val = x.indices[a:b], x.data[a:b]
        order = np.lexsort((idx, -val.astype(np.float64)))[:per_frame]
        out.append([(int(idx[o]), float(val[o])) for o in order])
    return out


def item_view(source: FeatureSource, rows: np.ndarray, cfg: FeaturesConfig) -> ItemView:
    """The latents of item `cfg.item` over its frames among `rows`; InputError when none of them is analysed."""
    store = source.store
    hit = item_rows(store, rows, cfg.item)
    if hit.size == 0:
        raise InputError(f"no rows of item '{cfg.item}' match the filters", "drop or change --where")
    meta = rows_metadata(store, hit, ["item_id", "frame", "time_s"])
    frames = meta.column("frame").to_numpy(zero_copy_only=False).astype(np.int64)
    times = meta.column("time_s").to_numpy(zero_copy_only=False).astype(np.float64)
    x = source.read(hit).tocsr()
    x.eliminate_zeros()
    x.sum_duplicates()
    per_frame = item_latents(x, cfg.per_frame)
    totals = np.asarray(x.sum(axis=0)).ravel()  # (d_sae,)
    active = np.flatnonzero(totals > 0)
    order = active[np.lexsort((active, -totals[active]))]
    shown = [int(i) for i in order[:cfg.item_latents]]
    frame_rows = [{"frame": int(f), "time_s": None if np.isnan(t) else float(t), "n_active": int(x.indptr[i + 1]
                                                                                                - x.indptr[i]),
                   "latents": [{"latent": j, "value": v} for j, v in lat]}
                  for i, (f, t, lat) in enumerate(zip(frames, times, per_frame, strict=True))]
    coo = x.tocoo()
    order_nz = np.lexsort((coo.col, -coo.data.astype(np.float64), coo.row))
    csv_rows = [{"item_id": cfg.item, "frame": int(frames[r]), "time_s": None if np.isnan(times[r]) else
                 float(times[r]), "latent": int(c), "value": float(v)}
                for r, c, v in zip(coo.row[order_nz], coo.col[order_nz], coo.data[order_nz], strict=True)]
    return ItemView(hit, x, frames, times, frame_rows, csv_rows, active, totals, shown)
