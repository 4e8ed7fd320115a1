"""Extraction during generation: prompts -> generated audio (written beside the store) + activations per stream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.io import write_wav
from ..audio.manifest import MANIFEST_FORMATS, read_records
from ..errors import InputError, UsageError
from ..progress import ProgressFactory, no_progress
from ..results import Result, internal
from .common import open_store, out_of_memory_hint, store_config, to_store
from .config import ExtractConfig

AUDIO_DIR = "generated"


@dataclass(frozen=True)
class Prompt:
    """One prompt with its id and any labels that came with it."""

    prompt_id: str
    text: str
    labels: dict


def read_prompts(path: str | Path, column: str = "prompt") -> list[Prompt]:
    """Prompts from a text file (one per line) or from a column of a CSV/JSONL/Parquet manifest."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt file not found: {path}", "pass a .txt file (one prompt per line) or a manifest")
    if path.suffix.lower() in MANIFEST_FORMATS:
        rows = read_records(path)
        if not rows or column not in rows[0]:
            found = ", ".join(rows[0]) if rows else "none"
            raise InputError(f"{path.name} has no prompt column '{column}' (columns: {found})",
                             "name it with --prompt-column")
        ids = [str(r.get("item_id") or r.get("id") or f"p{i:04d}") for i, r in enumerate(rows)]
        return [Prompt(pid, str(r[column]), {k: v for k, v in r.items() if k not in (column, "item_id", "id")})
                for pid, r in zip(ids, rows, strict=True)]
    lines = [line.strip() for line in path.read_text("utf-8").splitlines()]
    prompts = [Prompt(f"p{i:04d}", text, {}) for i, text in enumerate(t for t in lines if t)]
    if not prompts:
        raise InputError(f"no prompts in {path}", "write one prompt per line")
    return prompts


@dataclass(kw_only=True)
class GenerationExtraction(Result):
    """What `extract --prompts` reports: the clips generated (their audio folder) and the rows stored."""

    store: str = internal()  # the store written (the command's output)
    audio_dir: str
    hookpoints: list[str]
    clips_written: int
    rows_written: int
    store_items: int
    store_rows: int
    generated_seconds: float
    elapsed_s: float

    def lines(self) -> list[str]:
        return [self.store, f"{self.clips_written} clips generated ({self.generated_seconds:.1f} s of audio in "
                f"{self.audio_dir}), {self.rows_written} rows, {self.elapsed_s:.1f} s"]


def extract_generate(prompts: list[Prompt], out: str | Path, cfg: ExtractConfig, overwrite: bool = False,
                     progress: ProgressFactory = no_progress, adapter=None,
                     source: str = "prompts") -> GenerationExtraction:
    """Generate `samples_per_prompt` clips per prompt, storing each stream's activations and the audio."""
    from ..concepts.io import with_concepts
    from ..models import load_adapter

    if not prompts:
        raise InputError("no prompts given", "pass --prompt TEXT or --prompts FILE")
    adapter = adapter or with_concepts(load_adapter(cfg.model, family=cfg.family, revision=cfg.revision,
                                                    device=cfg.device, dtype=cfg.dtype, seed=cfg.seed,
                                                    options=cfg.model_options), cfg.concepts)
    adapter.require("generate", "extraction while generating (--prompts)")
    texted = getattr(adapter, "text_prompts", True)
    if not texted and any(p.text for p in prompts):
        raise UsageError(f"model '{adapter.model_id}' (family {adapter.family}) generates without text prompts",
                         "pass --prompt '' (unconditional) with --samples-per-prompt N")
    settings = adapter.generation_settings(cfg.generation).model_dump(mode="json")  # the family's, defaults filled
    hookpoints = adapter.resolve_hookpoints(cfg.hookpoints)
    record = {**store_config(cfg, "generate", source), "generation": settings}
    writer = open_store(out, adapter, hookpoints, cfg, record, overwrite)
    audio_dir = writer.path / AUDIO_DIR  # inside the store (its overwrite stage until it is complete)
    samples = [(p, s) for p in prompts for s in range(cfg.samples_per_prompt)]
    n_batches = -(-len(samples) // cfg.batch_size)
    started, written, rows = time.perf_counter(), 0, 0
    with writer, progress("Generating", n_batches) as bar:
        # Batches are fixed by position and seeded by number, so a resumed run generates the same clips.
        for b in range(n_batches):
            batch = samples[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            ids = [f"{p.prompt_id}-s{s}" for p, s in batch]
            if all(i in writer.done_items for i in ids):
                bar.advance()
                continue
            with out_of_memory_hint(cfg.batch_size, generating=True):
                texts = [p.text if texted else None for p, _ in batch]
                res = adapter.generate(texts, cfg.duration_s, hookpoints, seed=cfg.seed + b,
                                       streams=cfg.stream, settings=settings)
            for i, (item_id, (prompt, s)) in enumerate(zip(ids, batch, strict=True)):
                if item_id in writer.done_items:
                    continue
                n = res.n_frames if res.lengths is None else int(res.lengths[i])  # rows that end apart: no padding
                meta = {"prompt_id": prompt.prompt_id, "prompt": prompt.text, "sample": s, "batch": b,
                        "seed": cfg.seed + b, **prompt.labels}
                if res.audio is not None:
                    wav = write_wav(audio_dir / f"{item_id}.wav", res.audio[i], adapter.sample_rate)
                    meta["audio_path"] = str(wav.relative_to(writer.path))
                if res.tokens is not None:
                    audio_dir.mkdir(parents=True, exist_ok=True)
                    codes = res.tokens[i] if res.lengths is None else res.tokens[i][:n]
                    np.save(audio_dir / f"{item_id}.codes.npy", codes)
                    meta["codes_path"] = f"{AUDIO_DIR}/{item_id}.codes.npy"
                streams = list(res.acts)
                acts = {h: np.concatenate([to_store(res.acts[st][h][i][:_rows(res, n)], cfg.store_dtype)
                                           for st in streams])
                        for h in hookpoints}  # (n_streams * T, d), one stream after the other
                own = np.arange(n) if res.row_frames is None else np.asarray(res.row_frames)
                frames = np.tile(own, len(streams))
                frame_meta = {"stream": np.repeat(streams, len(own)),
                              **{c: np.tile(np.asarray(v, dtype=object), len(streams))
                                 for c, v in res.row_meta.items()}}
                writer.add_item(item_id, acts, item_meta=meta, frames=frames, frame_meta=frame_meta,
                                time_s=frames / adapter.frame_rate if adapter.frame_rate else None)
                written += 1
                rows += len(frames)
            bar.advance()
    elapsed = time.perf_counter() - started
    generated_s = written * res_seconds(cfg, adapter)
    return GenerationExtraction(store=str(out), audio_dir=str(Path(out) / AUDIO_DIR), hookpoints=hookpoints,
                                clips_written=written, rows_written=rows, store_items=writer.n_items,
                                store_rows=writer.n_rows, generated_seconds=round(generated_s, 3),
                                elapsed_s=round(elapsed, 3))


def _rows(res, n: int) -> int:
    """Captured rows of an item of n frames (or events): more where a frame has a row per track."""
    return n if res.row_frames is None else len(res.row_frames)


def res_seconds(cfg: ExtractConfig, adapter) -> float:
    """Seconds of audio in one generated clip (whole frames; the asked duration for a model without frames)."""
    if not adapter.frame_rate:
        return float(cfg.duration_s)
    return max(1, round(cfg.duration_s * adapter.frame_rate)) / adapter.frame_rate
