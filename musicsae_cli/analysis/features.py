"""The `analyze features` service: what each SAE latent responds to, as static HTML pages with audio, or the
item view of one item.

Dashboard: the selected store rows are read in two streaming passes (feature_scan: every latent's density and
peak, then the selected latents' histograms, top frames and label counts); the latents to show are chosen by
density, at random, by label or from a given list (feature_scan.select_latents). Each selected latent gets its
label co-occurrence and top labels (feature_labels), its nearest probe directions (feature_probes, with
--probe), its top frames with their labels, and whether it is a position feature (every top frame at one
frame index: flagged in features.json and on the pages). Written to OUT: index.html and one page per latent
(dashboard), features.json (every number, every label value), audio clips and spectrograms (or piano rolls for
symbolic stores) of the top frames, histograms and a density plot (feature_media), config.yaml and
manifest.json.

Item view (`item` set): only that item's rows are read (feature_item); written to OUT: items/<item>.png (a
latent x time heatmap), items/<item>.csv (every non-zero latent value of the item), features.json,
config.yaml and manifest.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import InputError
from ..probes.data import check_label_column
from ..progress import ProgressFactory, no_progress
from ..store.filters import StreamChoice, choose_stream
from .config import FeaturesConfig
from .feature_item import item_view, safe_name
from .feature_labels import NOT_LABELS, Labels, cooccurrence, label_columns, shown_label_columns, top_labels
from .feature_media import (
    write_clips,
    write_density_plot,
    write_heatmap,
    write_histograms,
    write_piano_rolls,
    write_spectrograms,
)
from .feature_probes import load_probes, probe_neighbours
from .feature_results import FeatureDashboard, FeatureItemView, FeaturesResult
from .feature_scan import position_frame, rows_metadata, scan_all, scan_selected, select_latents
from .latents import FeatureSource, open_features

FORMAT_VERSION = 1
KIND = "feature_dashboard"


# ---------------------------------------------------------------------------------------------------------------
# entry point
def analyze_features(store: str | Path, out: str | Path, cfg: FeaturesConfig, overwrite: bool = False,
                     progress: ProgressFactory = no_progress) -> FeaturesResult:
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
    res.elapsed_s = round(time.perf_counter() - started, 3)
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
# dashboard
def _dashboard(source: FeatureSource, rows: np.ndarray, out, cfg: FeaturesConfig, overwrite: bool,
               progress: ProgressFactory, streams: StreamChoice) -> FeatureDashboard:
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
    table = rows_metadata(store, rows, list(dict.fromkeys([*meta_cols, *candidates, *([by] if by else [])])))
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
                 "cooccurrence": cooccurrence(j, cnt, n, labels, base, scan, cfg.min_lift, cfg.min_lift_frames),
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
    return FeatureDashboard(out=str(out), mode="dashboard", **info, audio={"clips": n_clips, "unavailable": n_missing},
                            piano_rolls=sum(1 for e in entries for f in e["top_frames"] if f.get("roll")),
                            latents=[{"latent": e["latent"], "density": e["density"],
                                      "mean_active": e["mean_active"], "top_labels": e["top_labels"],
                                      "nearest_probe": e["probes"][0] if e["probes"] else None,
                                      "position_frame": e["position_frame"]} for e in entries],
                            index_html=str(Path(out) / "index.html"))


def sae_architecture(source: FeatureSource) -> str | None:
    """The SAE's architecture (relu, topk, ...) where known."""
    spec = getattr(source.sae, "spec", None)
    return getattr(spec, "arch", None) or source.sae_cfg.get("architecture") or None


def _frame_entry(rank: int, pos: int, value: float, rows: np.ndarray, meta: dict, labels: Labels) -> dict:
    time_s = meta["time_s"][pos]
    return {"rank": rank + 1, "row": int(rows[pos]), "value": value, "item_id": meta["item_id"][pos],
            "frame": int(meta["frame"][pos]),
            "time_s": None if time_s is None or np.isnan(time_s) else float(time_s),
            "source_path": meta["source_path"][pos] if "source_path" in meta else None,
            "labels": {c: labels.values[c][labels.codes[c][pos]] for c in labels.columns}}


# ---------------------------------------------------------------------------------------------------------------
# item view
def _item_mode(source: FeatureSource, rows: np.ndarray, out, cfg: FeaturesConfig, overwrite: bool,
               streams: StreamChoice) -> FeatureItemView:
    store = source.store
    view = item_view(source, rows, cfg)
    name = safe_name(cfg.item)
    config = cfg.model_dump(mode="json")
    info = {"store": str(store.path), "sae": source.sae_path, "member": cfg.member, "source": source.describe(),
            "hookpoint": source.hookpoint, "width": source.width, "item_id": cfg.item,
            "n_frames": int(view.rows.size),
            "where": streams.where, "stream": streams.record(), "latents_active": int(view.active.size),
            "heatmap_latents": view.shown,
            "totals": {str(j): float(view.totals[j]) for j in view.shown}}
    with staged_directory(out, overwrite) as stage:
        (stage / "items").mkdir()
        write_csv_rows(stage / "items" / f"{name}.csv", view.csv_rows)
        write_heatmap(stage / "items" / f"{name}.png", view.x, view.shown, view.times, view.frames, cfg.item,
                      int(view.active.size),
                      {"run": Path(out).name, "hookpoint": source.hookpoint, "architecture": sae_architecture(source)})
        write_json(stage / "features.json", {"kind": KIND, "mode": "item", **info, "config": config,
                                             "frames": view.frame_rows})
        write_config(stage, config)
        files = [f"items/{name}.csv", f"items/{name}.png", "features.json", "config.yaml"]
        write_json(stage / "manifest.json", new_manifest(KIND, FORMAT_VERSION, config, mode="item",
                                                         store=str(store.path), sae=source.sae_path,
                                                         hookpoint=source.hookpoint, item_id=cfg.item,
                                                         where=streams.where, stream=streams.record(), files=files))
    return FeatureItemView(out=str(out), mode="item", **info, heatmap=str(Path(out) / "items" / f"{name}.png"),
                           csv=str(Path(out) / "items" / f"{name}.csv"), frames=view.frame_rows,
                           per_frame=cfg.per_frame)


__all__ = ["KIND", "analyze_features"]
