"""The clean/corrupt pairs of `analyze patch`, read from a pairs file or made from a dataset by a perturbation.

A pairs file (CSV or JSONL) has one row per pair; paths are relative to the file:

  clean, corrupt            two inputs: audio files (audio families) or sequence files (MIDI, codes: families
                            that read sequences); the corrupt input differs in what the experiment asks about
  clean_text, corrupt_text  two text prompts for a text-conditioned model; with them, `input` (or
                            clean/corrupt) is the audio both prompts are teacher-forced on
  text                      one prompt for both sides
  target, pair_id           the probe class the metric reads, and a name for the pair

Or a dataset with a perturbation NAME=SETTING: each item is the clean input and the item perturbed the corrupt one.
Runs of a pair must line up call by call, so both sides have equal lengths: audio of different lengths is cropped
to the shorter (or refused with `length: refuse`); token sequences of different lengths are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .config import PatchConfig


@dataclass
class Side:
    """One run's input: audio (mono, at the model's rate) or a family's Sequence, and an optional text prompt."""

    audio: np.ndarray | None = None
    sequence: Any = None
    text: str | None = None
    tokens: Any = None  # the model's own tokens of the input (metric loss), read once

    @property
    def length(self) -> int:
        return len(self.audio) if self.audio is not None else int(self.sequence.n_rows)


@dataclass
class Pair:
    pair_id: str
    clean: Side
    corrupt: Side
    target: str | None = None
    cropped: bool = False


def read_pairs(source: str | Path, cfg: PatchConfig, adapter) -> tuple[list[Pair], list[str]]:
    """(pairs, notes) from a pairs file or a perturbed dataset (see the module doc)."""
    source = Path(source)
    pairs = _from_file(source, cfg, adapter) if cfg.perturbation is None else _from_dataset(source, cfg, adapter)
    pairs = pairs[: cfg.max_pairs] if cfg.max_pairs else pairs
    if not pairs:
        raise InputError(f"no pairs in {source}", "add rows, or point at a dataset with items")
    return pairs, _equal_lengths(pairs, cfg, adapter)


def _reader(cfg: PatchConfig, adapter):
    """A function path -> Side for this family's inputs (audio, else sequence files)."""
    if adapter.can("audio"):
        from ..audio.io import load_audio

        def audio(path: Path) -> Side:
            x, _ = load_audio(path, sample_rate=adapter.sample_rate, mono=True, duration_s=cfg.excerpt_s)
            return Side(audio=np.ascontiguousarray(x, np.float32))
        return audio
    if adapter.can("sequences"):
        return lambda path: Side(sequence=path)  # read with the pair's text once it is known
    adapter.require("audio", "activation patching")


def _from_file(source: Path, cfg: PatchConfig, adapter) -> list[Pair]:
    from ..audio.manifest import read_records

    if not source.is_file():
        raise InputError(f"no pairs file {source}", "pass a CSV/JSONL with clean and corrupt columns, or a dataset "
                                                    "with --perturb NAME=SETTING")
    records = read_records(source)
    columns = set(records[0]) if records else set()
    prompts = {"clean_text", "corrupt_text"} <= columns
    if not ({"clean", "corrupt"} <= columns or (prompts and ("input" in columns or "clean" in columns))):
        raise InputError(f"{source.name} needs clean and corrupt columns (it has: {', '.join(sorted(columns)) or '-'})",
                         "one row per pair: clean,corrupt[,target] inputs, or clean_text,corrupt_text,input for "
                         "two prompts over one input")
    read = _reader(cfg, adapter)
    pairs = []
    def path(i: int, r: dict, col: str) -> Path:
        value = str(r.get(col) or "")
        if not value:
            raise InputError(f"pair {i + 1} of {source.name} has no {col}", "fill every row's inputs")
        p = Path(value)
        return p if p.is_absolute() else source.parent / p

    for i, r in enumerate(records):
        shared = r.get("text") or None
        texts = (r.get("clean_text") or None, r.get("corrupt_text") or None) if prompts else (shared, shared)
        if any(texts):
            for t in texts:
                adapter.check_prompt(t)
        if "clean" in columns and "corrupt" in columns and r.get("corrupt"):
            sides = [read(path(i, r, "clean")), read(path(i, r, "corrupt"))]
        else:
            one = path(i, r, "input" if "input" in columns else "clean")
            sides = [read(one), read(one)]
        for side, text in zip(sides, texts, strict=True):
            side.text = text
            if side.sequence is not None:
                side.sequence = adapter.read_sequence(side.sequence, text=text)
        pairs.append(Pair(str(r.get("pair_id") or f"pair{i:04d}"), *sides,
                          None if r.get("target") in (None, "") else str(r["target"])))
    return pairs


def _from_dataset(source: Path, cfg: PatchConfig, adapter) -> list[Pair]:
    from ..audio.manifest import load_dataset
    from .perturb import check_perturbations, perturb

    adapter.require("audio", "pairs made by perturbing audio")
    name, _, value = cfg.perturbation.partition("=")
    try:
        setting = float(value)
    except ValueError:
        raise InputError(f"bad perturbation {cfg.perturbation!r}", "write NAME=SETTING, e.g. pitch=2, gain=-6, "
                                                                   "tempo=0.8") from None
    check_perturbations({name: [setting]})
    manifest = load_dataset(source)
    read = _reader(cfg, adapter)
    pairs = []
    for i, row in enumerate(manifest.rows[: cfg.max_pairs] if cfg.max_pairs else manifest.rows):
        clean = read(Path(row["path"]))
        corrupt = perturb(name, clean.audio, adapter.sample_rate, setting, np.random.default_rng([cfg.seed, i]))
        target = row.get(cfg.target_column) if cfg.target_column else None
        pairs.append(Pair(str(row["item_id"]), clean, Side(audio=np.ascontiguousarray(corrupt, np.float32)),
                          None if target is None else str(target)))
    return pairs


def _equal_lengths(pairs: list[Pair], cfg: PatchConfig, adapter) -> list[str]:
    """Crop (or refuse) pairs of different lengths; audio is cut to whole frames. Notes on what was cropped."""
    for p in pairs:
        if p.clean.sequence is not None:
            if p.clean.length != p.corrupt.length:
                raise InputError(f"pair {p.pair_id}: the clean sequence has {p.clean.length} rows, the corrupt "
                                 f"{p.corrupt.length}; token sequences are not cropped (refused)",
                                 "pair sequences of equal length")
            continue
        sr, hop = adapter.sample_rate, adapter.hop_length
        if p.clean.length != p.corrupt.length:
            if cfg.length == "refuse":
                raise InputError(f"pair {p.pair_id}: clean is {p.clean.length / sr:.3f} s, corrupt "
                                 f"{p.corrupt.length / sr:.3f} s (refused: length refuse)",
                                 "give equal lengths, or --set length=crop")
            p.cropped = True
        n = (min(p.clean.length, p.corrupt.length) // hop) * hop
        if n == 0:
            raise InputError(f"pair {p.pair_id} is shorter than one frame", "use longer clips")
        p.clean.audio, p.corrupt.audio = p.clean.audio[:n], p.corrupt.audio[:n]
    cropped = [p.pair_id for p in pairs if p.cropped]
    if not cropped:
        return []
    return [f"{len(cropped)} pair(s) of different lengths cropped to the shorter: {', '.join(cropped[:5])}"
            + (" ..." if len(cropped) > 5 else "")]
