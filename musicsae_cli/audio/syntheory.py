"""SynTheory's labels under the names `data synth` uses, so probes move between the two datasets.

SynTheory (Wei et al., "Do Music Generation Models Encode Music Theory?", ISMIR 2024) publishes one subset per
concept: notes, intervals, scales, chords, simple_progressions, tempos and time_signatures, each row a rendered clip
with its concept's labels and the General MIDI instrument that played it. `data synth` writes the same concepts
with its own column names (see synth.LABEL_COLUMNS); this map renames SynTheory's columns and converts their values
to that vocabulary:

- pitch classes stay sharp-spelled names (`root_note_name` -> `pitch_class` for notes, `root_pitch_class` for
  intervals, `chord_root` for chords); their integer twins become `pitch_class_index`;
- intervals: `interval` (semitones) -> `interval_semitones` plus `interval_name` (m3, P5, ...); `play_style_name`
  UNISON -> `play` harmonic, UP/DOWN -> melodic, the direction kept in `play_direction`;
- chords: `chord_type` aug/dim -> `chord_quality` augmented/diminished; `inversion` in figured bass (5 root
  position, 6 first inversion, 64 second) -> `chord_inversion` 0/1/2;
- tempos: `bpm` as a float, as `data synth` writes it; `click_config_name` -> `beat_pattern`;
- every subset: `concept` (notes, intervals, chords, tempos as in `data synth`; scales, progressions and
  time_signatures beside them), the instrument's GM program name as `timbre`, its number as `midi_program`.

Columns the map does not name pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from .config import PITCH_CLASSES, pitch_class_name

# SynTheory subset -> the `concept` value `data synth` gives the same concept
CONCEPTS = {"notes": "notes", "intervals": "intervals", "chords": "chords", "tempos": "tempos", "scales": "scales",
            "simple_progressions": "progressions", "time_signatures": "time_signatures"}
INTERVAL_NAMES = ("P1", "m2", "M2", "m3", "M3", "P4", "TT", "P5", "m6", "M6", "m7", "M7", "P8")
CHORD_QUALITY = {"major": "major", "minor": "minor", "aug": "augmented", "dim": "diminished",
                 "augmented": "augmented", "diminished": "diminished"}
FIGURED_BASS = {"5": 0, "53": 0, "6": 1, "63": 1, "64": 2}
PLAY = {"UNISON": "harmonic", "UP": "melodic", "DOWN": "melodic"}
# columns renamed in every subset
COMMON = {"midi_program_name": "timbre", "midi_program_num": "midi_program", "midi_category": "instrument_family"}
# (subset, SynTheory column) -> musicsae column, where it differs by subset
ROOT_NAME = {"notes": "pitch_class", "intervals": "root_pitch_class", "chords": "chord_root",
             "scales": "root_pitch_class"}
ROOT_INDEX = {"notes": "pitch_class_index", "intervals": "root_pitch_class_index",
              "chords": "chord_root_index", "scales": "root_pitch_class_index"}


def is_syntheory(location: str | None) -> bool:
    """Whether a hub id (any owner's copy) or a local folder is named syntheory."""
    return bool(location) and location.replace("\\", "/").rstrip("/").split("/")[-1].lower() == "syntheory"


def subset_of(columns: list[str], subset: str | None) -> str | None:
    """The SynTheory subset a set of columns belongs to: `subset` when given, else recognised by its columns."""
    if subset:
        return subset if subset in CONCEPTS else None
    have = set(columns)
    for name, needs in (("chords", {"chord_type", "inversion"}), ("intervals", {"interval", "play_style_name"}),
                        ("scales", {"mode"}), ("simple_progressions", {"chord_progression"}),
                        ("time_signatures", {"time_signature"}), ("tempos", {"bpm", "click_config_name"}),
                        ("notes", {"root_note_name", "octave"})):
        if needs <= have:
            return name
    return None


def map_row(subset: str, row: dict[str, Any]) -> dict[str, Any]:
    """One SynTheory row's labels (the audio column already removed) under `data synth`'s names and values."""
    out: dict[str, Any] = {"concept": CONCEPTS[subset]}
    for key, value in row.items():
        if key in COMMON:
            out[COMMON[key]] = value
        elif key in ("root_note_name", "key_note_name"):
            name = pitch_class_name(str(value))
            out[ROOT_NAME.get(subset, "key") if key == "root_note_name" else "key"] = name
        elif key in ("root_note_pitch_class", "key_note_pitch_class"):
            out[ROOT_INDEX.get(subset, "key_index") if key == "root_note_pitch_class" else "key_index"] = value
        elif key == "midi_note_val":
            out["midi" if subset == "notes" else "root_midi"] = value
        elif key == "interval" and subset == "intervals":
            semis = int(value)
            out["interval_semitones"] = semis
            out["interval_name"] = INTERVAL_NAMES[semis] if 0 <= semis < len(INTERVAL_NAMES) else str(semis)
        elif key == "play_style_name":
            name = str(value).upper()
            if subset == "intervals":
                out["play"] = PLAY.get(name, name.lower())
            out["play_direction"] = name.lower()
        elif key == "play_style":
            continue  # the number of play_style_name
        elif key == "chord_type":
            out["chord_quality"] = CHORD_QUALITY.get(str(value), str(value))
        elif key == "inversion" and subset == "chords":
            out["chord_inversion"] = FIGURED_BASS.get(str(value), value)
        elif key == "bpm":
            out["bpm"] = float(value)
        elif key == "click_config_name":
            out["beat_pattern"] = value
        elif key == "chord_progression":
            out["progression"] = value
        else:
            out[key] = value
    if subset == "notes" and "midi" in out and "pitch_class" not in out:
        out["pitch_class"] = PITCH_CLASSES[int(out["midi"]) % 12]
    return out
