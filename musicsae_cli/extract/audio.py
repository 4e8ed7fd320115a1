"""Teacher-forced extraction: audio -> model -> frame-aligned activations in a store, resumable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.io import audio_info, load_audio, skip_unusable
from ..audio.manifest import load_dataset
from ..errors import AudioError, InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result, skipped_lines
from ..store.ranks import StoreRun
from .common import StoreExtraction, open_store, out_of_memory_hint, store_arguments, store_config, to_store
from .config import ExtractConfig
from .windows import plan_windows, window_id


@dataclass
class _Job:
    item_id: str
    audio: np.ndarray  # (n,) mono at the model's rate, a whole number of frames
    start: int  # first sample of the window in the source
    meta: dict
    text: str | None


class AudioExtraction(StoreExtraction):
    """What `extract` of audio reports: windows and rows written, speed, and the inputs skipped."""

    def lines(self) -> list[str]:
        return [self.store, f"{self.windows_written} windows, {self.rows_written} rows of {len(self.hookpoints)} "
                f"hookpoints; {self.audio_seconds:.1f} s of audio in {self.elapsed_s:.1f} s "
                f"({self.audio_s_per_s or 0:.1f} audio s/s)", *skipped_lines(self.skipped)]


def extract_audio(source: str | Path, out: str | Path, cfg: ExtractConfig, overwrite: bool = False,
                  progress: ProgressFactory = no_progress, adapter=None) -> Result:
    """Run the model over every window of every item in `source` and store the requested hookpoints."""
    from ..concepts.io import with_concepts
    from ..models import load_adapter
    from .sequences import extract_sequences, is_sequence_source

    if not Path(source).exists():
        load_dataset(source)  # its error for a missing source, before any model loads
    adapter = adapter or with_concepts(load_adapter(cfg.model, family=cfg.family, revision=cfg.revision,
                                                    device=cfg.device, dtype=cfg.dtype, seed=cfg.seed,
                                                    options=cfg.model_options), cfg.concepts)
    if is_sequence_source(source, adapter):  # the model's own code or event files, not audio
        return extract_sequences(source, out, cfg, overwrite, progress, adapter)
    manifest = load_dataset(source)
    if cfg.text_column and manifest.rows and cfg.text_column not in manifest.rows[0]:
        raise InputError(f"the manifest has no text column '{cfg.text_column}'",
                         f"columns: {', '.join(manifest.columns)}")
    adapter.require("audio", "extraction from audio")
    if cfg.text or cfg.text_column:
        adapter.check_prompt(cfg.text or "text")  # a model that reads no prompt refuses before any work
    hookpoints = adapter.resolve_hookpoints(cfg.hookpoints)  # before any work
    record = store_config(cfg, "audio", str(source))
    store = StoreRun(lambda: open_store(out, adapter, hookpoints, cfg, record, overwrite),
                     store_arguments(adapter, hookpoints, cfg, record), record, [r["item_id"] for r in manifest.rows])
    writer, rows = store.writer, store.mine(manifest.rows)
    sr, hop = adapter.sample_rate, adapter.hop_length
    skipped: list[tuple[str, str]] = []
    stats = {"windows": 0, "rows": 0, "audio_s": 0.0}
    started = time.perf_counter()

    def run(batch: list[_Job]) -> None:
        with out_of_memory_hint(cfg.batch_size):
            acts = adapter.audio_activations([j.audio for j in batch], hookpoints, [j.text for j in batch])
        for job, item in zip(batch, acts, strict=True):
            n = next(iter(item.values())).shape[0]
            frames = np.arange(n)
            writer.add_item(job.item_id, {h: to_store(item[h], cfg.store_dtype) for h in hookpoints},
                            item_meta=job.meta, time_s=(job.start // hop + frames) / adapter.frame_rate)
            stats["windows"] += 1
            stats["rows"] += n
            stats["audio_s"] += len(job.audio) / sr

    with store, progress("Extracting", len(rows)) as bar:
        in_batches(rows, lambda row: _jobs_for(row, manifest.label_columns, store.done, cfg, sr, hop, skipped,
                                               adapter.input_channels), cfg.batch_size, run, bar)
        # nothing stored anywhere: an error, and the empty store this run started is removed
        stats, skipped, n_items, n_rows = store.finish(stats, skipped, lambda s: nothing_usable(source, s))
    elapsed = time.perf_counter() - started
    return AudioExtraction(store=str(out), hookpoints=hookpoints, windows_written=stats["windows"],
                           rows_written=stats["rows"], store_items=n_items, store_rows=n_rows,
                           audio_seconds=round(stats["audio_s"], 3), elapsed_s=round(elapsed, 3),
                           audio_s_per_s=round(stats["audio_s"] / elapsed, 3) if elapsed > 0 else None,
                           skipped=[{"path": p, "reason": r} for p, r in skipped])


def in_batches(rows: list, jobs_of, batch_size: int, run, bar) -> None:
    """Call `run` on the jobs of every row (`jobs_of(row)`, an iterable), `batch_size` jobs at a time (the last
    batch may be smaller), advancing `bar` once per row."""
    batch: list = []
    for row in rows:
        for job in jobs_of(row):
            batch.append(job)
            if len(batch) == batch_size:
                run(batch)
                batch = []
        bar.advance()
    if batch:
        run(batch)


def nothing_usable(source, skipped: list[tuple[str, str]]) -> InputError:
    """The error for a run that found no usable audio: never a complete store of 0 rows."""
    first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
    return InputError(f"no usable audio in {source}: {len(skipped)} file(s) skipped{first}",
                      f"`musicsae data index {source} --out index.csv` lists every file's problem")


def channels_fed(source: int, model: int) -> str:
    """How a file of `source` channels reaches a model taking `model` channels (musicsae feeds a mono mix)."""
    steps = [f"downmixed {source} -> 1"] if source > 1 else []
    if model > 1:
        steps.append(f"mono duplicated onto {model}")
    return ", ".join(steps) or "as is"


def _jobs_for(row: dict, labels: list[str], done, cfg: ExtractConfig, sr: int, hop: int,
              skipped: list[tuple[str, str]], channels: int = 1):
    """The not-yet-stored windows of one manifest row (the audio is read only when some are missing)."""
    path = Path(row["path"])
    try:
        info = audio_info(path)
        expected = plan_windows(int(info.frames * sr / info.sample_rate), sr, hop, cfg.window_s, cfg.hop,
                                cfg.min_window_s)
        if expected and all(window_id(row["item_id"], w, len(expected)) in done for w in expected):
            return
        audio, _ = load_audio(path, sample_rate=sr, mono=True)
    except AudioError as exc:
        skip_unusable(path, exc.message, cfg.strict, skipped, exc)
        return
    windows = plan_windows(len(audio), sr, hop, cfg.window_s, cfg.hop, cfg.min_window_s)
    if not windows:
        skip_unusable(path, f"shorter than one frame ({hop} samples at {sr} Hz)", cfg.strict, skipped)
        return
    text = cfg.text if cfg.text is not None else (row.get(cfg.text_column) if cfg.text_column else None)
    base = {"source_item": row["item_id"], "source_path": str(path), "group": row["group"],
            "source_sample_rate": int(info.sample_rate), "source_channels": int(info.channels),
            "channels_fed": channels_fed(int(info.channels), channels), **{c: row.get(c) for c in labels}}
    if text is not None:
        base["text"] = str(text)
    for w in windows:
        item_id = window_id(row["item_id"], w, len(windows))
        if item_id in done:
            continue
        meta = {**base, "window": w.index, "window_start_s": w.start / sr}
        yield _Job(item_id, audio[w.start:w.start + w.length], w.start, meta,
                   None if text is None else str(text))

