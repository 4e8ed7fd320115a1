"""Labelled concept audio, after SynTheory (Wei et al. 2024): clips in which one musical concept varies.

`plan` lays out the grid of clips as manifest rows (every label column on every row, None where it does not
apply); `render` synthesises one row; `synthesize` writes them all as wav files. Each clip's jitter and noise
come from an RNG seeded by (seed, item_id), so a clip never depends on which other clips were generated.
SynthConfig and the concept and chord names live in config (importable without numpy) and are re-exported here.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..progress import ProgressFactory, no_progress
from .config import _BOUNDS, CHORD_QUALITIES, CONCEPTS, ChordQuality, Concept, SynthConfig  # noqa: F401 (re-exported)
from .instruments import (  # noqa: F401 (VOICES, get_voice, pitch_class_name: re-exported)
    CUTOFF_FRACTION,
    PITCH_CLASSES,
    VOICES,
    get_voice,
    midi_to_hz,
    note_to_midi,
    pitch_class_name,
    render_note,
    render_pattern,
)
from .io import write_wav

INTERVAL_NAMES = ("P1", "m2", "M2", "m3", "M3", "P4", "TT", "P5", "m6", "M6", "m7", "M7", "P8")
# The label each concept is about: `max_per_concept` keeps these balanced when it subsamples.
TARGET_LABEL = {"notes": "pitch_class", "intervals": "interval_semitones", "chords": "chord_quality",
                "tempos": "bpm", "timbres": "timbre"}
LABEL_COLUMNS: tuple[str, ...] = (
    "item_id", "path", "group", "concept", "variant", "duration_s", "sample_rate",
    "timbre", "pitch_class", "pitch_class_index", "octave", "midi", "frequency_hz", "midi_notes",
    "root_pitch_class", "interval_semitones", "interval_name", "play",
    "chord_root", "chord_quality", "chord_inversion", "bpm", "beat_pattern",
    "gain_db", "detune_cents", "onset_s",
)


def _point_id(concept: str, *parts: Any) -> str:
    return "-".join([concept, *(str(p).replace("#", "s") for p in parts)])  # '#' is awkward in paths


def _grid(cfg: SynthConfig, concept: str) -> list[dict]:
    """Grid points of one concept, in a fixed order: labels plus the id of the content (`group`)."""
    points: list[dict] = []
    if concept in ("notes", "timbres"):
        notes = ([(pc, o) for pc in cfg.pitch_classes for o in cfg.octaves] if concept == "notes"
                 else [(PITCH_CLASSES[m % 12], m // 12 - 1) for m in map(note_to_midi, cfg.timbre_notes)])
        for timbre in cfg.timbres:
            for pc, octave in notes:
                midi = 12 * (octave + 1) + PITCH_CLASSES.index(pc)
                ident = (f"{pc}{octave}", timbre) if concept == "notes" else (timbre, f"{pc}{octave}")
                points.append(dict(group=_point_id(concept, *ident), timbre=timbre, pitch_class=pc,
                                   pitch_class_index=PITCH_CLASSES.index(pc), octave=octave, midi=midi,
                                   midi_notes=str(midi)))
    elif concept == "intervals":
        for timbre in cfg.timbres:
            for pc in cfg.pitch_classes:
                root = 12 * (cfg.root_octave + 1) + PITCH_CLASSES.index(pc)
                for semis in cfg.intervals:
                    for play in cfg.interval_play:
                        name = INTERVAL_NAMES[semis]
                        points.append(dict(
                            group=_point_id(concept, f"{pc}{cfg.root_octave}", name, play, timbre),
                            timbre=timbre, root_pitch_class=pc, octave=cfg.root_octave,
                            interval_semitones=semis, interval_name=name, play=play,
                            midi_notes=f"{root} {root + semis}"))
    elif concept == "chords":
        for timbre in cfg.timbres:
            for pc in cfg.pitch_classes:
                root = 12 * (cfg.root_octave + 1) + PITCH_CLASSES.index(pc)
                for quality in cfg.chord_qualities:
                    for inv in cfg.chord_inversions:
                        tones = CHORD_QUALITIES[quality]
                        if inv >= len(tones):
                            continue  # a triad has no third inversion
                        voiced = [root + s for s in tones[inv:]] + [root + s + 12 for s in tones[:inv]]
                        points.append(dict(
                            group=_point_id(concept, f"{pc}{cfg.root_octave}", quality, f"inv{inv}", timbre),
                            timbre=timbre, chord_root=pc, octave=cfg.root_octave, chord_quality=quality,
                            chord_inversion=inv, midi_notes=" ".join(map(str, voiced))))
    elif concept == "tempos":
        for pattern in cfg.beat_patterns:
            for bpm in cfg.tempos_bpm:
                points.append(dict(group=_point_id(concept, f"{bpm:g}bpm", pattern), bpm=float(bpm),
                                   beat_pattern=pattern))
    return points


def _subsample(points: list[dict], concept: str, cap: int | None, seed: int) -> list[dict]:
    """At most `cap` points, chosen by `seed`, round-robin over the concept's label so it stays balanced."""
    if cap is None or len(points) <= cap:
        return points
    strata: dict[Any, list[int]] = defaultdict(list)
    for i, p in enumerate(points):
        strata[p[TARGET_LABEL[concept]]].append(i)
    rng = np.random.default_rng([seed, _hash(concept)])
    queues = [list(rng.permutation(idx)) for idx in strata.values()]
    chosen: list[int] = []
    while len(chosen) < cap:
        for q in queues:
            if q and len(chosen) < cap:
                chosen.append(int(q.pop()))
    return [points[i] for i in sorted(chosen)]  # back in grid order: the manifest order stays stable


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _rng(seed: int, item_id: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _hash(item_id), stream])


def plan(config: SynthConfig) -> list[dict]:
    """The manifest rows `synthesize` would write, in a stable order, without rendering audio."""
    rows = []
    for concept in config.concepts:
        points = _grid(config, concept)
        if not points:  # only chords can end up empty: inversion 3 of triads alone
            raise ConfigError(f"the {concept} settings yield no clips", "add inversions 0-2 or sevenths")
        for point in _subsample(points, concept, config.max_per_concept, config.seed):
            _check_band_limit(point, config)
            rows.extend(_row(config, concept, point, variant) for variant in range(config.variants))
    return rows


def _row(cfg: SynthConfig, concept: str, point: dict, variant: int) -> dict:
    item_id = f"{point['group']}-{variant:03d}"
    rng = _rng(cfg.seed, item_id, 0)
    row = dict.fromkeys(LABEL_COLUMNS)
    row.update(point, item_id=item_id, path=f"{concept}/{item_id}.wav", concept=concept, variant=variant,
               duration_s=cfg.duration_s, sample_rate=cfg.sample_rate,
               gain_db=round(-float(rng.uniform(0.0, cfg.gain_jitter_db)), 4),
               onset_s=round(float(rng.uniform(0.0, cfg.onset_jitter_s)), 5),
               detune_cents=round(float(rng.uniform(-cfg.detune_cents, cfg.detune_cents)), 4))
    if concept == "tempos":
        row["detune_cents"] = 0.0  # nothing pitched to detune
    if row["midi"] is not None:  # the frequency actually sounding, detune included
        row["frequency_hz"] = round(midi_to_hz(row["midi"], row["detune_cents"], cfg.a4_hz), 4)
    return row


def _check_band_limit(point: dict, cfg: SynthConfig) -> None:
    # Checked at the largest possible detune, so whether a config is valid never depends on the seed.
    if point.get("midi_notes") is None:
        return
    top = midi_to_hz(max(map(int, point["midi_notes"].split())), cfg.detune_cents, cfg.a4_hz)
    cutoff = CUTOFF_FRACTION * cfg.sample_rate
    if top >= cutoff:
        raise ConfigError(f"{point['group']}: {top:.0f} Hz is above the band limit {cutoff:.0f} Hz at "
                          f"{cfg.sample_rate} Hz", "use lower notes or a higher sample_rate")


def render(row: dict, config: SynthConfig) -> np.ndarray:
    """Synthesise the clip of one manifest row: float32 (N,), peak at peak_db + gain_db dBFS."""
    sr = config.sample_rate
    n = int(round(config.duration_s * sr))
    onset = int(round(row["onset_s"] * sr))
    if row["concept"] == "tempos":
        x = render_pattern(row["beat_pattern"], row["bpm"], n, sr, row["onset_s"], _rng(config.seed,
                           row["item_id"], 1))
    else:
        # The key goes up a quarter of the clip (at most 1 s) before the end, so every clip ends decaying.
        release = n - int(round(min(1.0, 0.25 * config.duration_s) * sr))
        midis = [int(m) for m in row["midi_notes"].split()]
        melodic = row["play"] == "melodic"
        x = np.zeros(n)
        for i, midi in enumerate(midis):
            f0 = midi_to_hz(midi, row["detune_cents"], config.a4_hz)
            start, stop = onset, release
            if melodic:  # first note in the first half, second in the second half
                mid = onset + (release - onset) // 2
                start, stop = (onset, mid) if i == 0 else (mid, release)
            x[start:] += render_note(row["timbre"], f0, sr, n - start, stop - start)
    fade = min(n, int(0.01 * sr))
    x[n - fade:] *= np.linspace(1.0, 0.0, fade)  # never end on a cut
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        raise ConfigError(f"{row['item_id']} rendered silent", "check its notes against the sample rate")
    return (x * (10.0 ** ((config.peak_db + row["gain_db"]) / 20.0) / peak)).astype(np.float32)


def synthesize(config: SynthConfig, out_dir: Path, progress: ProgressFactory = no_progress) -> list[dict]:
    """Render every planned clip to `out_dir`/<concept>/<item_id>.wav; returns the manifest rows."""
    rows = plan(config)
    out_dir = Path(out_dir)
    with progress("Synthesising", len(rows)) as tracker:
        for row in rows:
            write_wav(out_dir / row["path"], render(row, config), config.sample_rate)
            tracker.advance(1)
    return rows
