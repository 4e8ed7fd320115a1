"""The clips `model train-tiny` learns from (synthesised or a `data synth` folder), their prompts, split and words."""

from __future__ import annotations

from ..errors import InputError
from ..progress import ProgressFactory
from .tiny_train_config import TrainTinyConfig

INTERVAL_WORDS = {1: "minor second", 2: "major second", 3: "minor third", 4: "major third", 5: "perfect fourth",
                  6: "tritone", 7: "perfect fifth", 8: "minor sixth", 9: "major sixth", 10: "minor seventh",
                  11: "major seventh", 12: "octave"}
INVERSIONS = {1: "first", 2: "second", 3: "third"}
PATTERN_WORDS = {"rock": "a drum loop", "click": "a click track", "waltz": "a waltz click track"}


def prompt_of(row: dict) -> str:
    """The text prompt of a concept clip, naming the concept and its value ('a piano playing C4')."""
    concept = row.get("concept")
    timbre = row.get("timbre")
    art = "an" if str(timbre or "")[:1] in "aeiou" else "a"
    if concept in ("notes", "timbres"):
        return f"{art} {timbre} playing {row['pitch_class']}{int(row['octave'])}"
    if concept == "intervals":
        play = "" if row.get("play") in (None, "harmonic") else f" {row['play']}"
        return (f"{art} {timbre} playing a{play} {INTERVAL_WORDS[int(row['interval_semitones'])]} above "
                f"{row['root_pitch_class']}{int(row['octave'])}")
    if concept == "chords":
        inv = int(row.get("chord_inversion") or 0)
        tail = f" in {INVERSIONS[inv]} inversion" if inv else ""
        return f"{art} {timbre} playing a {row['chord_root']} {row['chord_quality']} chord{tail}"
    if concept == "tempos":
        return f"{PATTERN_WORDS.get(row['beat_pattern'], 'a beat')} at {float(row['bpm']):g} bpm"
    raise InputError(f"clip {row.get('item_id')} has no concept label to build a prompt from",
                     "train on a folder written by `musicsae data synth` (its manifest names each clip's concept)")


def rows_and_audio(cfg: TrainTinyConfig, progress: ProgressFactory) -> tuple[list[dict], object]:
    """(manifest rows with their prompts, float32 clips (N, samples) at 32 kHz): synthesised, or read from cfg.data."""
    import numpy as np

    from .tiny import SAMPLE_RATE

    if cfg.data is None:
        from ..audio.synth import plan, render

        synth = cfg.synth.model_copy(update={"sample_rate": SAMPLE_RATE})
        rows = plan(synth)
        audio = []
        with progress("Synthesising", len(rows)) as tracker:
            for row in rows:
                audio.append(render(row, synth))
                tracker.advance(1)
    else:
        from ..audio.io import load_audio
        from ..audio.manifest import load_dataset

        manifest = load_dataset(cfg.data)
        rows = manifest.rows
        needed = {"concept", "timbre", "pitch_class", "octave", "bpm"}
        if not rows or not needed & set(manifest.label_columns) or "concept" not in manifest.label_columns:
            raise InputError(f"{cfg.data} has no concept labels to build prompts from (labels: "
                             f"{', '.join(manifest.label_columns) or 'none'})",
                             "train on a folder written by `musicsae data synth`, or leave --data out")
        for row in rows:  # every clip must name its concept before any audio is read
            prompt_of(row)
        audio = []
        with progress("Reading audio", len(rows)) as tracker:
            for row in rows:
                audio.append(load_audio(row["path"], SAMPLE_RATE)[0].astype(np.float32))
                tracker.advance(1)
    rows = [{**r, "prompt": prompt_of(r)} for r in rows]
    n = min(len(a) for a in audio)
    return rows, np.stack([a[:n] for a in audio])  # (N, samples): clips cut to the shortest


def split_rows(rows: list[dict], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: per concept, round(val_fraction * groups) groups (at least one) held out."""
    import numpy as np

    train, val = [], []
    for concept in dict.fromkeys(r["concept"] for r in rows):
        idx = [i for i, r in enumerate(rows) if r["concept"] == concept]
        groups = list(dict.fromkeys(rows[i].get("group") or rows[i]["item_id"] for i in idx))
        if len(groups) < 2:
            raise InputError(f"concept {concept} has a single clip (or group): none can be held out for validation",
                             "give every concept at least two clips (e.g. raise max_per_concept or variants)")
        rng = np.random.default_rng([seed, len(concept), sum(map(ord, concept))])
        n_val = max(1, int(round(val_fraction * len(groups))))
        held = {groups[j] for j in rng.permutation(len(groups))[:n_val]}
        for i in idx:
            (val if (rows[i].get("group") or rows[i]["item_id"]) in held else train).append(i)
    return train, val


def vocabulary(prompts: list[str]) -> list[str]:
    """The tokenizer's words: tiny.WORDS (so prompts like 'calm jazz piano' still tokenise), every prompt word, and
    every note name (C0..B8), instrument, chord quality and interval word, so any concept prompt tokenises."""
    from ..audio.config import CHORD_QUALITIES, PITCH_CLASSES, VOICE_NAMES
    from .tiny import WORDS

    concept_words = [*(f"{pc}{o}" for o in range(9) for pc in PITCH_CLASSES), *VOICE_NAMES, *CHORD_QUALITIES,
                     *(w for name in INTERVAL_WORDS.values() for w in name.split()), "an", "playing", "above",
                     "inversion", *INVERSIONS.values(), "bpm", "loop", "click", "track", "waltz", "melodic"]
    return list(dict.fromkeys([*WORDS, "calm", *(w for p in prompts for w in p.split()), *concept_words]))
