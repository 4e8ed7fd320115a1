"""Feature dashboard: what each SAE latent responds to, as static HTML pages with audio, plus an item view.

Dashboard (`features`): two streaming passes over the selected store rows, in row blocks of scipy CSR latents
(never a dense rows x d_sae array):

1. every latent: how often it is active (value > 0), the sum and the maximum of its values, and with
   select=label the sum of each latent per value of the label column;
2. the selected latents only: a histogram of their non-zero values (bins from 0 to the latent's maximum), the
   top-k activating frames (a streaming merge over blocks; ties go to the earlier row), and per label column
   the active frames and summed activation per label value.

Selection rules: `density` the n most frequently active latents; `latents` a given list; `random` n alive
latents drawn with the seed; `label` per value v of `by_label` the n latents with the largest difference
mean(activation | frames with v) - mean(activation | all other selected frames, nulls included), zeros
counted, only positive differences; the union in value order.

Co-occurrence: for a label column and value v, P(v | latent active) against the base rate P(v) over all
analysed frames; lift = P(v | active) / P(v) (0 when the latent is never active with v). Nulls are a value
of their own, "(missing)". Label columns default to the metadata columns (bookkeeping ones aside) with 2 ..
max_label_values distinct values; float columns count only when every value is whole (like bpm 120.0).
features.json keeps every value; the pages list only those with lift >= min_lift on at least
min_lift_frames active frames ("listed": true), and top labels are chosen among them.

Position features: a latent whose top frames (at least MIN_POSITION_FRAMES of them) all sit at the same
frame index of their items more likely encodes the position in the window than the sound; it is flagged
(position_feature, position_frame) in features.json and on the pages.

Audio clips and their spectrograms: feature_media.

Item view (`item` set): only that item's rows are read; per frame the latents that fired (top few printed),
a latent x time heatmap PNG and a CSV of every non-zero latent value of the item.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import InputError
from ..probes.data import check_label_column
from ..progress import ProgressFactory, no_progress
from ..store.filters import StreamChoice, choose_stream
from .config import FeaturesConfig
from .feature_media import (
    write_clips,
    write_density_plot,
    write_heatmap,
    write_histograms,
    write_piano_rolls,
    write_spectrograms,
)
from .latents import FeatureSource, open_features

FORMAT_VERSION = 1
KIND = "feature_dashboard"
MISSING = "(missing)"
# Metadata columns that identify rows or files rather than label them.
NOT_LABELS = ("item_id", "frame", "time_s", "source_path", "source_item", "group", "window", "window_start_s",
              "text", "path")
TOP_LABEL_MIN_SHARE = 0.25  # a "top label" covers at least this share of the latent's active frames
N_TOP_LABELS = 3
MIN_POSITION_FRAMES = 3  # a position feature needs at least this many top frames, all at one frame index


@dataclass
class Labels:
    """Label columns over the analysed rows: per column the codes (n,) and the value names (nulls last)."""

    codes: dict[str, np.ndarray] = field(default_factory=dict)  # column -> (n,) int32 value index
    values: dict[str, list[str]] = field(default_factory=dict)  # column -> value names, MISSING last if any

    @property
    def columns(self) -> list[str]:
        return list(self.codes)


# ---------------------------------------------------------------------------------------------------------------
# entry point
def analyze_features(store: str | Path, out: str | Path, cfg: FeaturesConfig, overwrite: bool = False,
                     progress: ProgressFactory = no_progress) -> dict:
    """Write the feature dashboard (or, with cfg.item, the item view) of the SAE latents of `store` to `out`."""
    started = time.perf_counter()
    check_output(out, overwrite)  # fail before any reading
    source = open_latents(store, cfg)
    # Generated stores hold both generation streams of every clip: one of them (cond by default), never both.
    streams = choose_stream(source.store, cfg.where, labels=[c for c in [*(cfg.labels or []), cfg.by_label] if c])
    rows = source.store.select(streams.where) if streams.where else np.arange(source.store.n_rows, dtype=np.int64)
    if rows.size == 0:
        raise InputError(f"no rows of {source.store.path} match {streams.where}",
                         "check the filters against `musicsae info STORE`")
    if cfg.item is not None:
        res = _item_mode(source, rows, out, cfg, overwrite, streams)
    else:
        res = _dashboard(source, rows, out, cfg, overwrite, progress, streams)
    res["elapsed_s"] = round(time.perf_counter() - started, 3)
    return res


def open_latents(store: str | Path, cfg: FeaturesConfig) -> FeatureSource:
    """The SAE latents of `store` (encoded on the fly, or a latent store); InputError for raw activations."""
    source = open_features(store, cfg.hookpoint, cfg.sae, cfg.member, device=cfg.device, batch_size=cfg.batch_size,
                           allow_other_model=cfg.allow_other_model)
    if source.kind != "latents":
        raise InputError(f"{source.hookpoint} of {source.store.path} holds activations, not SAE latents",
                         "pass --sae SAE (encoded on the fly), or a latent store written by `musicsae sae encode`")
    return source


# ---------------------------------------------------------------------------------------------------------------
# reading
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


# ---------------------------------------------------------------------------------------------------------------
# labels
def label_columns(store, table: pa.Table, requested: list[str] | None, max_values: int,
                  extra: str | None = None) -> Labels:
    """Code the label columns of `table` (the analysed rows): requested ones, or the categorical-looking ones."""
    known = store.metadata_columns
    for col in [*(requested or []), *([extra] if extra else [])]:
        check_label_column(store, col)
    if requested is not None:
        columns = list(dict.fromkeys(requested))
    else:
        columns = [c for c in known if c not in NOT_LABELS and known[c] != "null"]
    if extra is not None and extra not in columns:
        columns.append(extra)
    out = Labels()
    for col in columns:
        arr = table.column(col).combine_chunks()
        if requested is None and col != extra and not _categorical(arr, known[col], max_values):
            continue
        codes, values = encode_column(arr)
        real = len(values) - (values[-1] == MISSING if values else 0)
        if col == extra or requested is not None:
            if real > max_values:
                raise InputError(f"label column '{col}' has {real} distinct values (more than max_label_values="
                                 f"{max_values})", "choose a categorical column, or raise it with "
                                 f"--set max_label_values={real}")
        out.codes[col], out.values[col] = codes, values
    return out


def _categorical(arr: pa.Array, arrow_type: str, max_values: int) -> bool:
    valid = pc.drop_null(arr)
    if len(valid) == 0:
        return False
    n = len(pc.unique(valid))
    if not 2 <= n <= max_values:
        return False
    if arrow_type == "double":
        return bool(pc.all(pc.equal(pc.floor(valid), valid)).as_py())
    return True


def encode_column(arr: pa.Array) -> tuple[np.ndarray, list[str]]:
    """(codes (n,) int32, value names): values sorted (numbers numerically), nulls coded as MISSING, last."""
    valid = pc.drop_null(arr)
    uniques = pc.unique(valid).to_pylist()
    uniques.sort(key=lambda v: (0, v, "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0, str(v)))
    names = [value_name(v) for v in uniques]
    if len(uniques):
        codes = pc.index_in(arr, value_set=pa.array(uniques, type=arr.type)).to_numpy(zero_copy_only=False)
    else:
        codes = np.full(len(arr), np.nan)
    missing = np.isnan(codes) if codes.dtype.kind == "f" else np.zeros(len(arr), bool)
    codes = np.where(missing, len(names), np.nan_to_num(codes)).astype(np.int32)
    if missing.any():
        names.append(MISSING)
    return codes, names


def value_name(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------------------------------------------
# selection
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


# ---------------------------------------------------------------------------------------------------------------
# dashboard
def _dashboard(source: FeatureSource, rows: np.ndarray, out, cfg: FeaturesConfig, overwrite: bool,
               progress: ProgressFactory, streams: StreamChoice) -> dict:
    from .dashboard import write_pages

    store = source.store
    if cfg.select == "latents":
        source.check_latents(cfg.latents)  # before any reading
    probes = load_probes(cfg.probes, store.model, cfg.allow_other_model)
    decoder = source.decoder() if probes else None  # InputError now, not after reading, when there is no SAE
    by = cfg.by_label if cfg.select == "label" else None
    known = store.metadata_columns
    for col in [*(cfg.labels or []), *([by] if by else [])]:
        check_label_column(store, col)
    candidates = cfg.labels if cfg.labels is not None else [c for c in known if c not in NOT_LABELS]
    meta_cols = ["item_id", "frame", "time_s"] + [c for c in ("source_path",) if c in known]
    table = _metadata(store, rows, list(dict.fromkeys([*meta_cols, *candidates, *([by] if by else [])])))
    labels = label_columns(store, table, cfg.labels, cfg.max_label_values, by)
    n = int(rows.size)
    stats = scan_all(source, rows, cfg.block_rows, labels.codes.get(by) if by else None,
                     len(labels.values[by]) if by else 0, progress)
    latents, selection = select_latents(cfg, source, stats, n, labels)
    if not latents:
        raise InputError("no latent is selected: none is active on the analysed rows"
                         if cfg.select != "label" else f"no latent is more active on any value of {cfg.by_label}",
                         "check --where, or choose latents with --latent")
    sel = np.asarray(latents, np.int64)
    scan = scan_selected(source, rows, latents, stats["max"][sel], cfg, labels, progress)
    neighbours, probe_notes = probe_neighbours(decoder, source.model_hookpoint, latents, probes)
    base = {c: np.bincount(labels.codes[c], minlength=len(labels.values[c])) for c in labels.columns}
    meta = {c: table.column(c).to_numpy(zero_copy_only=False) if c in ("frame", "time_s")
            else table.column(c).to_pylist() for c in meta_cols}
    entries = []
    where = {"run": Path(out).name, "hookpoint": source.hookpoint, "architecture": sae_architecture(source)}
    for j, latent in enumerate(latents):
        cnt = int(stats["count"][latent])
        peak = float(stats["max"][latent])
        entry = {"latent": latent, "n_active": cnt, "density": cnt / n,
                 "mean_active": float(stats["sum"][latent] / cnt) if cnt else None,
                 "max": peak if cnt else None,
                 "histogram": {"edges": np.linspace(0.0, peak, cfg.bins + 1).tolist() if cnt else [],
                               "counts": scan["hist"][j].tolist() if cnt else []},
                 "cooccurrence": _cooccurrence(j, cnt, n, labels, base, scan, cfg.min_lift, cfg.min_lift_frames),
                 "probes": neighbours.get(latent, [])}
        entry["top_labels"] = top_labels(entry["cooccurrence"])
        if selection["rule"] == "label":
            entry["selected_for"] = selection["reasons"].get(latent, [])
        keep = scan["top"][0] == j
        entry["top_frames"] = [_frame_entry(rank, int(p), float(v), rows, meta, labels)
                               for rank, (p, v) in enumerate(zip(scan["top"][2][keep], scan["top"][1][keep],
                                                                strict=True))]
        frame = position_frame(entry["top_frames"])
        entry["position_feature"], entry["position_frame"] = frame is not None, frame
        entry["label_columns_shown"] = shown_label_columns(entry["top_frames"], labels.columns)
        entries.append(entry)
    if selection["rule"] == "label":
        selection = {k: v for k, v in selection.items() if k != "reasons"}
    config = cfg.model_dump(mode="json")
    info = {"store": str(store.path), "sae": source.sae_path, "member": cfg.member, "source": source.describe(),
            "hookpoint": source.hookpoint, "model_hookpoint": source.model_hookpoint, "width": source.width,
            "n_rows": n, "where": streams.where, "stream": streams.record(), "frame_rate": store.frame_rate,
            "label_columns": labels.columns, "run": where["run"], "architecture": where["architecture"],
            "min_lift": cfg.min_lift, "min_lift_frames": cfg.min_lift_frames,
            "selection": selection, "seed": cfg.seed,
            "dead_latents": int((stats["count"] == 0).sum()),
            "mean_l0": float(stats["count"].sum() / n),
            "probes": [{"path": str(p["path"]), "label": p["set"].label, "task": p["set"].task} for p in probes],
            "probe_notes": probe_notes}
    with staged_directory(out, overwrite) as stage:
        with progress("Cutting clips", None):
            clips = write_clips(stage, entries, cfg.clip_s, store.frame_rate, store.path)
        with progress("Drawing spectrograms", sum(len(e["top_frames"]) for e in entries)) as bar:
            plots = write_spectrograms(stage, entries, store.frame_rate, bar)
        plots += write_piano_rolls(stage, entries, store)  # symbolic stores: the notes around each top event
        plots += write_histograms(stage, entries, where)
        plots.append(write_density_plot(stage, stats["count"], n, where))
        pages = write_pages(stage, info, entries, config)
        write_json(stage / "features.json", {"kind": KIND, **info, "config": config, "latents": entries,
                                             "active_counts": stats["count"].tolist()})
        write_config(stage, config)
        files = ["index.html", "features.json", "config.yaml", *pages, *plots, *clips]
        write_json(stage / "manifest.json", new_manifest(KIND, FORMAT_VERSION, config, mode="dashboard",
                                                         store=str(store.path), sae=source.sae_path,
                                                         hookpoint=source.hookpoint, latents=latents,
                                                         where=streams.where, stream=streams.record(),
                                                         files=sorted(set(files))))
    n_clips = sum(1 for e in entries for f in e["top_frames"] if f["audio"]["file"])
    n_missing = sum(1 for e in entries for f in e["top_frames"] if not f["audio"]["file"])
    return {"out": str(out), "mode": "dashboard", "index": str(Path(out) / "index.html"), **info,
            "audio": {"clips": n_clips, "unavailable": n_missing},
            "piano_rolls": sum(1 for e in entries for f in e["top_frames"] if f.get("roll")),
            "latents": [{"latent": e["latent"], "density": e["density"], "mean_active": e["mean_active"],
                         "top_labels": e["top_labels"], "nearest_probe": e["probes"][0] if e["probes"] else None,
                         "position_frame": e["position_frame"]}
                        for e in entries]}


def _metadata(store, rows: np.ndarray, columns: list[str] | None) -> pa.Table:
    table = store.metadata(columns)
    if rows.size != store.n_rows:
        table = table.take(pa.array(rows))
    return table


def sae_architecture(source: FeatureSource) -> str | None:
    """The SAE's architecture (relu, topk, ...) where known."""
    spec = getattr(source.sae, "spec", None)
    return getattr(spec, "arch", None) or source.sae_cfg.get("architecture") or None


def position_frame(top_frames: list[dict]) -> int | None:
    """The frame index every top frame sits at (at least MIN_POSITION_FRAMES of them), else None."""
    frames = {f["frame"] for f in top_frames}
    return int(next(iter(frames))) if len(top_frames) >= MIN_POSITION_FRAMES and len(frames) == 1 else None


def shown_label_columns(top_frames: list[dict], columns: list[str]) -> list[str]:
    """The label columns with a value on at least one top frame (columns missing on every one are hidden)."""
    return [c for c in columns if any(f["labels"].get(c) not in (None, "", MISSING) for f in top_frames)]


def _cooccurrence(j: int, cnt: int, n: int, labels: Labels, base: dict, scan: dict, min_lift: float,
                  min_frames: int) -> dict:
    out = {}
    for col in labels.columns:
        rows = []
        for vi, name in enumerate(labels.values[col]):
            k = int(scan["co_count"][col][vi, j])
            p_active = k / cnt if cnt else None
            p_base = int(base[col][vi]) / n
            lift = (p_active / p_base) if p_active is not None and p_base else None
            rows.append({"value": name, "n_frames": int(base[col][vi]), "n_active": k, "p_active": p_active,
                         "base_rate": p_base, "lift": lift,
                         "mean_activation": float(scan["co_sum"][col][vi, j] / base[col][vi])
                         if base[col][vi] else None,
                         "listed": lift is not None and lift >= min_lift and k >= min_frames})
        rows.sort(key=lambda r: (-(r["lift"] or 0.0), -r["n_active"], r["value"]))
        out[col] = rows
    return out


def top_labels(cooc: dict) -> list[dict]:
    """Up to N_TOP_LABELS listed (column, value) pairs (lift >= min_lift on >= min_lift_frames active frames)
    covering >= TOP_LABEL_MIN_SHARE of the latent's active frames, largest lift first."""
    pairs = [{"column": col, "value": r["value"], "lift": r["lift"], "p_active": r["p_active"]}
             for col, rows in cooc.items() for r in rows
             if r["value"] != MISSING and r["listed"] and (r["p_active"] or 0.0) >= TOP_LABEL_MIN_SHARE]
    pairs.sort(key=lambda p: (-p["lift"], -p["p_active"], p["column"], p["value"]))
    return pairs[:N_TOP_LABELS]


def _frame_entry(rank: int, pos: int, value: float, rows: np.ndarray, meta: dict, labels: Labels) -> dict:
    time_s = meta["time_s"][pos]
    return {"rank": rank + 1, "row": int(rows[pos]), "value": value, "item_id": meta["item_id"][pos],
            "frame": int(meta["frame"][pos]),
            "time_s": None if time_s is None or np.isnan(time_s) else float(time_s),
            "source_path": meta["source_path"][pos] if "source_path" in meta else None,
            "labels": {c: labels.values[c][labels.codes[c][pos]] for c in labels.columns}}


# ---------------------------------------------------------------------------------------------------------------
# probes
def load_probes(paths: list[str], model: dict, allow_other_model: bool) -> list[dict]:
    """Probe sets to compare latents with; each must come from the store's model (unless allowed)."""
    from ..models.identity import check_same_model
    from ..probes.model import ProbeSet

    sets = [{"path": str(p), "set": ProbeSet.load(p)} for p in paths]
    for p in sets:
        check_same_model(f"the probes {p['path']}", p["set"].model, model, allow_other_model,
                         against="the store's model")
    return sets


def probe_neighbours(decoder: np.ndarray | None, hookpoint: str, latents: list[int],
                     probes: list[dict]) -> tuple[dict[int, list[dict]], list[str]]:
    """Per latent, every probe direction at `hookpoint` by cosine with its decoder row (largest first)."""
    if not probes:
        return {}, []
    notes, dirs = [], []
    for p in probes:
        ps = p["set"]
        if hookpoint not in ps.hookpoints:
            notes.append(f"probes {p['path']} ({ps.label}) have no direction at {hookpoint} "
                         f"(probed: {', '.join(ps.hookpoints)}); skipped")
            continue
        if ps.widths[hookpoint] != decoder.shape[1]:
            notes.append(f"probes {p['path']} ({ps.label}) expect width {ps.widths[hookpoint]} at {hookpoint}, "
                         f"the SAE decodes to {decoder.shape[1]}; skipped")
            continue
        classes = ps.classes if ps.task == "classification" else [None]
        for cls in classes:
            dirs.append(({"probe": p["path"], "label": ps.label, "class": cls}, ps.direction(hookpoint, cls)))
    if not dirs:
        return {}, notes
    mat = np.stack([d for _, d in dirs]).astype(np.float64)  # (P, d_in)
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    rows = decoder[np.asarray(latents)].astype(np.float64)  # (m, d_in)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    cos = rows @ mat.T  # (m, P)
    out = {}
    for i, latent in enumerate(latents):
        order = np.argsort(-cos[i], kind="stable")
        out[latent] = [{**dirs[p][0], "cosine": float(cos[i, p])} for p in order]
    return out, notes


# ---------------------------------------------------------------------------------------------------------------
# item view
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


def _item_mode(source: FeatureSource, rows: np.ndarray, out, cfg: FeaturesConfig, overwrite: bool,
               streams: StreamChoice) -> dict:
    store = source.store
    hit = item_rows(store, rows, cfg.item)
    if hit.size == 0:
        raise InputError(f"no rows of item '{cfg.item}' match the filters", "drop or change --where")
    meta = _metadata(store, hit, ["item_id", "frame", "time_s"])
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
    name = safe_name(cfg.item)
    config = cfg.model_dump(mode="json")
    info = {"store": str(store.path), "sae": source.sae_path, "member": cfg.member, "source": source.describe(),
            "hookpoint": source.hookpoint, "width": source.width, "item_id": cfg.item, "n_frames": int(hit.size),
            "where": streams.where, "stream": streams.record(), "latents_active": int(active.size),
            "heatmap_latents": shown,
            "totals": {str(j): float(totals[j]) for j in shown}}
    with staged_directory(out, overwrite) as stage:
        (stage / "items").mkdir()
        write_csv_rows(stage / "items" / f"{name}.csv", csv_rows)
        write_heatmap(stage / "items" / f"{name}.png", x, shown, times, frames, cfg.item, int(active.size),
                      {"run": Path(out).name, "hookpoint": source.hookpoint, "architecture": sae_architecture(source)})
        write_json(stage / "features.json", {"kind": KIND, "mode": "item", **info, "config": config,
                                             "frames": frame_rows})
        write_config(stage, config)
        files = [f"items/{name}.csv", f"items/{name}.png", "features.json", "config.yaml"]
        write_json(stage / "manifest.json", new_manifest(KIND, FORMAT_VERSION, config, mode="item",
                                                         store=str(store.path), sae=source.sae_path,
                                                         hookpoint=source.hookpoint, item_id=cfg.item,
                                                         where=streams.where, stream=streams.record(), files=files))
    return {"out": str(out), "mode": "item", **info, "heatmap": str(Path(out) / "items" / f"{name}.png"),
            "csv": str(Path(out) / "items" / f"{name}.csv"), "frames": frame_rows}


__all__ = ["KIND", "MISSING", "analyze_features", "merge_topk", "select_latents"]
