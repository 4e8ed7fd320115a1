"""Extraction from sequence files: a model's own token files (audio-codec code files, symbolic event files) ->
one stored row per row the family defines (a frame of a track, an event), labelled with the family's row labels.

A source is a sequence file, a folder of them (first-level subfolders are the class label `label`, as for audio
folders) or a manifest whose `path` column names them; for a family that encodes audio stems into its tokens, also
the output of `data split` (one item per separated input, its stems together). The store is written like an
audio store: resumable by item, nothing complete on zero rows, one-line errors for files that cannot be read
(skipped with a warning unless strict).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..audio.io import skip_unusable
from ..errors import InputError, MusicSAEError
from ..progress import ProgressFactory, no_progress
from ..results import skipped_lines
from ..store.ranks import StoreRun
from .audio import in_batches
from .common import StoreExtraction, open_store, out_of_memory_hint, store_arguments, store_config, to_store
from .config import ExtractConfig

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")


def _has_suffix(path: Path, suffixes) -> bool:
    return "".join(path.suffixes[-1:]).lower() in suffixes


def stem_manifest(source):
    """The manifest of a `data split` output (a folder with manifest.csv, or that file: rows with `stem` and
    `source_item`), else None."""
    path = Path(source)
    path = path / "manifest.csv" if path.is_dir() else path
    if not (path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES):
        return None
    from ..audio.manifest import read_manifest_file

    try:
        manifest = read_manifest_file(path)
    except MusicSAEError:
        return None
    rows = manifest.rows
    return manifest if rows and all(r.get("stem") and r.get("source_item") for r in rows) else None


def stem_items(manifest) -> tuple[list[dict], list[str]]:
    """One row per separated item of a `data split` manifest: its id (the input's), `stems` (stem -> file) and the
    input's labels and group."""
    labels = [c for c in manifest.label_columns if c not in ("stem", "source_item", "source_path")]
    items: dict[str, dict] = {}
    for r in manifest.rows:
        item = items.setdefault(str(r["source_item"]), {
            "item_id": str(r["source_item"]), "path": str(r.get("source_path") or r["path"]), "stems": {},
            "group": r.get("group"), **{c: r.get(c) for c in labels}})
        item["stems"][str(r["stem"])] = str(r["path"])
    return list(items.values()), labels


def is_sequence_source(source, adapter) -> bool:
    """Whether `source` holds sequence files the model reads (so extraction reads them, not audio): its own
    token files, or the stems of `data split` for a family that encodes stems (`reads_stems`)."""
    if not adapter.can("sequences"):
        return False
    if getattr(adapter, "reads_stems", False) and stem_manifest(source) is not None:
        return True
    path, suffixes = Path(source), tuple(adapter.sequence_suffixes)
    if path.is_file():
        if _has_suffix(path, suffixes):
            return True
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            from ..audio.manifest import read_manifest_file

            rows = read_manifest_file(path).rows
            return bool(rows) and all(_has_suffix(Path(r["path"]), suffixes) for r in rows)
        return False
    if path.is_dir() and not (path / "manifest.csv").is_file():
        return any(_has_suffix(p, suffixes) for p in path.rglob("*") if p.is_file())
    return False


def sequence_rows(source, suffixes) -> tuple[list[dict], list[str]]:
    """(rows with item_id, path, group and labels, label columns) of a sequence file, folder or manifest."""
    path = Path(source)
    if path.is_file() and _has_suffix(path, suffixes):
        stem = path.name[: -len(path.suffix)]
        return [{"item_id": stem, "path": str(path.resolve()), "group": stem}], []
    if path.is_file():
        from ..audio.manifest import read_manifest_file

        manifest = read_manifest_file(path)
        return manifest.rows, list(manifest.label_columns)
    files = sorted(p for p in path.rglob("*") if p.is_file() and _has_suffix(p, suffixes)
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise InputError(f"no sequence files in {path}", f"looked for {', '.join(suffixes)}")
    nested = any(len(p.relative_to(path).parts) > 1 for p in files)
    rows = []
    for p in files:
        rel = p.relative_to(path)
        item_id = str(rel)[: -len(p.suffix)]
        row = {"item_id": item_id, "path": str(p.resolve()), "group": item_id}
        if nested:
            row["label"] = rel.parts[0] if len(rel.parts) > 1 else ""
        rows.append(row)
    return rows, (["label"] if nested else [])


class SequenceExtraction(StoreExtraction):
    """What `extract` of sequence files (codes, events) reports: files and rows written, the inputs skipped."""

    def lines(self) -> list[str]:
        return [self.store, f"{self.items_written} sequence files, {self.rows_written} rows of "
                f"{len(self.hookpoints)} hookpoints in {self.elapsed_s:.1f} s", *skipped_lines(self.skipped)]


def extract_sequences(source: str | Path, out: str | Path, cfg: ExtractConfig, overwrite: bool = False,
                      progress: ProgressFactory = no_progress, adapter=None) -> SequenceExtraction:
    """Read every sequence file of `source` with the model and store the requested hookpoints, row by row."""
    from ..models import load_adapter

    adapter = adapter or load_adapter(cfg.model, family=cfg.family, revision=cfg.revision, device=cfg.device,
                                      dtype=cfg.dtype, seed=cfg.seed, options=cfg.model_options)
    adapter.require("sequences", "extraction from sequence files")
    stems = stem_manifest(source) if getattr(adapter, "reads_stems", False) else None
    rows, labels = stem_items(stems) if stems is not None else sequence_rows(source, tuple(adapter.sequence_suffixes))
    if cfg.text_column and rows and cfg.text_column not in rows[0]:
        raise InputError(f"{source} has no text column '{cfg.text_column}'",
                         "name a manifest column with --text-column")
    # a prompt the model cannot read stops the run before anything is written (per-item prompts: the first's)
    adapter.check_prompt(cfg.text if not cfg.text_column else next((str(r[cfg.text_column]) for r in rows
                                                                    if r.get(cfg.text_column)), None))
    hookpoints = adapter.resolve_hookpoints(cfg.hookpoints)  # before any work
    record = store_config(cfg, "sequences", str(source))
    store = StoreRun(lambda: open_store(out, adapter, hookpoints, cfg, record, overwrite),
                     store_arguments(adapter, hookpoints, cfg, record), record, [r["item_id"] for r in rows])
    writer, rows = store.writer, store.mine(rows)
    skipped: list[tuple[str, str]] = []
    stats = {"items": 0, "rows": 0}
    started = time.perf_counter()

    def run(batch) -> None:
        with out_of_memory_hint(cfg.batch_size):
            acts = adapter.sequence_activations([seq for _, seq in batch], hookpoints)
        for (row, seq), item in zip(batch, acts, strict=True):
            meta = {"source_item": row["item_id"], "source_path": str(row["path"]), "group": row.get("group"),
                    **{c: row.get(c) for c in labels}, **seq.item_meta}
            if writer.add_item(row["item_id"], {h: to_store(item[h], cfg.store_dtype) for h in hookpoints},
                               item_meta=meta, frame_meta=seq.frame_meta, time_s=seq.time_s, frames=seq.frames):
                stats["items"] += 1
                stats["rows"] += seq.n_rows

    def read(row: dict) -> list[tuple[dict, object]]:
        """[(row, its sequence)], or [] for a row already stored or unusable (skipped)."""
        if row["item_id"] in store.done:
            return []
        try:
            text = row.get(cfg.text_column) if cfg.text_column else cfg.text
            seq = adapter.read_sequence(row["path"], text=str(text) if text else None,
                                        **({"stems": row["stems"]} if "stems" in row else {}))
        except MusicSAEError as exc:
            skip_unusable(Path(row["path"]), exc.message, cfg.strict, skipped, exc)
            return []
        if seq.n_rows > 0:
            return [(row, seq)]
        skip_unusable(Path(row["path"]), "no rows", cfg.strict, skipped)
        return []

    with store, progress("Extracting", len(rows)) as bar:
        in_batches(rows, read, cfg.batch_size, run, bar)
        stats, skipped, n_items, n_rows = store.finish(stats, skipped, lambda s: _nothing(source, s))
    elapsed = time.perf_counter() - started
    return SequenceExtraction(store=str(out), hookpoints=hookpoints, items_written=stats["items"],
                              rows_written=stats["rows"], store_items=n_items, store_rows=n_rows,
                              elapsed_s=round(elapsed, 3), skipped=[{"path": p, "reason": r} for p, r in skipped])


def _nothing(source, skipped: list) -> InputError:
    first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
    return InputError(f"no usable sequence files in {source}: {len(skipped)} skipped{first}",
                      "check the files with the model's family (musicsae model families)")
