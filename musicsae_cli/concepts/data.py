"""Concept audio -> fixed-length chunks, split by clip, and their codes encoded once (the codes cache).

The cache is a folder beside the learned concepts (`CONCEPTS/codes/`): codes.safetensors (chunks, K, T) plus
chunks.csv (concept, source clip, start, split) and a manifest naming the model, its weights' fingerprint and the
chunking. A run that finds a cache written for the same model and chunking reuses it; any difference re-encodes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError

FORMAT_VERSION = 1


def concept_clips(data: str | Path, column: str) -> dict[str, list[Path]]:
    """concept -> its audio files: from a folder of concept subfolders, or a manifest/dataset with `column`."""
    from ..audio.manifest import index_folder, load_dataset

    data = Path(data)
    if data.is_dir() and not (data / "manifest.csv").is_file():
        manifest = index_folder(data, label_name=column)
        if column not in manifest.label_columns:
            raise InputError(f"{data} has no concept subfolders (its audio files sit at the top)",
                             "put each concept's audio in a subfolder named after it, e.g. DATA/drums/*.wav")
    else:
        manifest = load_dataset(data)
        if column not in manifest.label_columns:
            raise InputError(f"{data} has no column {column!r} (labels: {', '.join(manifest.label_columns) or 'none'})",
                             "name the concept column with --set concept_column=NAME, or pass a folder of concept "
                             "subfolders")
    out: dict[str, list[Path]] = {}
    for row in manifest.rows:
        value = row.get(column)
        if value not in (None, ""):
            out.setdefault(str(value), []).append(Path(row["path"]))
    if not out:
        raise InputError(f"{data} names no concept in {column!r}", "check the concept column or subfolders")
    return out


def chunk_plan(clips: dict[str, list[Path]], chunk_s: float, max_per_clip: int | None, val_fraction: float,
               seed: int) -> tuple[list[dict], list[str]]:
    """(chunks, skipped clips): each chunk {concept, path, start_s, split}; clips held out per concept by whole clip.

    A clip shorter than one chunk is skipped (and listed); a concept left with no chunk is an InputError."""
    from ..audio.io import audio_info
    from ..errors import AudioError

    chunks, skipped = [], []
    for concept, paths in clips.items():
        usable = []
        for p in paths:
            try:
                seconds = audio_info(p).duration_s
            except AudioError:
                skipped.append(f"{p} (unreadable)")
                continue
            n = int(math.floor(seconds / chunk_s + 1e-9))
            if max_per_clip is not None:
                n = min(n, max_per_clip)
            if n < 1:
                skipped.append(f"{p} ({seconds:.2f} s < chunk {chunk_s:g} s)")
                continue
            usable.append((p, n))
        if not usable:
            raise InputError(f"concept {concept!r} has no clip of at least one chunk ({chunk_s:g} s)",
                             "lower chunk_s (--chunk-s) or add longer audio to the concept")
        rng = np.random.default_rng([seed, *map(ord, concept)])
        order = rng.permutation(len(usable))
        n_val = max(1, int(round(val_fraction * len(usable)))) if len(usable) > 1 else 0
        held = {int(i) for i in order[:n_val]}
        for j, (p, n) in enumerate(usable):
            for c in range(n):
                chunks.append({"concept": concept, "path": str(p), "start_s": round(c * chunk_s, 6),
                               "split": "val" if j in held else "train"})
    return chunks, skipped


def cache_matches(folder: Path, record: dict) -> bool:
    """Whether `folder` holds a complete codes cache written for `record` (model, fingerprint, chunks)."""
    import json

    path = folder / "manifest.json"
    if not (path.is_file() and (folder / "codes.safetensors").is_file()):
        return False
    try:
        return json.loads(path.read_text())["cache"] == record
    except (ValueError, KeyError):
        return False


def chunk_audio(chunk: dict, chunk_s: float, sample_rate: int) -> np.ndarray:
    """The mono audio (exactly chunk_s long, zero-padded) of one planned chunk at `sample_rate`."""
    from ..audio.io import load_audio

    audio, _ = load_audio(chunk["path"], sample_rate, offset_s=float(chunk["start_s"]), duration_s=chunk_s)
    n = int(round(chunk_s * sample_rate))
    return np.pad(audio[:n], (0, max(0, n - len(audio))))


def encode_chunks(adapter, chunks: list[dict], chunk_s: float, progress) -> object:
    """Codes (N, K, T) of every chunk, each encoded on its own by the model's tokenizer (capability tokens)."""
    import torch

    out = []
    with progress("Encoding chunks", len(chunks)) as tracker:
        for c in chunks:
            out.append(torch.as_tensor(adapter.tokenize([chunk_audio(c, chunk_s, adapter.sample_rate)])[0]).cpu())
            tracker.advance(1)
    t = min(int(c.shape[-1]) for c in out)
    return torch.stack([c[..., :t] for c in out]).to(torch.int32)


def write_cache(folder: Path, codes, chunks: list[dict], record: dict) -> None:
    """Write the cache into `folder` (a fresh folder: the caller stages it)."""
    from safetensors.torch import save_file

    from ..artifacts import new_manifest, write_csv_rows, write_json

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"codes": codes.contiguous()}, str(folder / "codes.safetensors"))
    write_csv_rows(folder / "chunks.csv", chunks)
    write_json(folder / "manifest.json", new_manifest("concept-codes", FORMAT_VERSION, None, cache=record,
                                                      shape=list(codes.shape)))


def read_cache(folder: Path) -> tuple[object, list[dict]]:
    import csv

    from safetensors.torch import load_file

    codes = load_file(str(folder / "codes.safetensors"))["codes"]
    with (folder / "chunks.csv").open(newline="") as fh:
        chunks = [{**r, "start_s": float(r["start_s"])} for r in csv.DictReader(fh)]
    return codes, chunks
