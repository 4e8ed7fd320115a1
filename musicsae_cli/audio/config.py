"""The configs of the `data` commands (synth, index, split, chunk), with the names their validators check.

Kept apart from the code that runs them and free of numpy, pyarrow, soundfile and torch (stdlib and pydantic
only), so that `--help` can show option defaults cheaply. Each model is re-exported by the module that uses
it: SynthConfig by synth, IndexConfig by dataset, SplitConfig by split, ChunkConfig by chunk. Pitch and
instrument names live here too, since SynthConfig validates them; instruments re-exports them and checks at
import that VOICE_NAMES lists its voices in order.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..errors import ConfigError

# --- names: pitches, instruments, concepts ------------------------------------------------------------------

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
# The voices of instruments.VOICES, in its order (it checks this at import).
VOICE_NAMES: tuple[str, ...] = ("sine", "triangle", "square", "sawtooth", "organ", "strings", "piano", "pluck",
                                "bell")
Concept = Literal["notes", "intervals", "chords", "tempos", "timbres"]
CONCEPTS: tuple[str, ...] = ("notes", "intervals", "chords", "tempos", "timbres")
CHORD_QUALITIES: dict[str, tuple[int, ...]] = {
    "major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6), "augmented": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "dom7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10),
}
ChordQuality = Literal["major", "minor", "diminished", "augmented", "sus2", "sus4", "dom7", "maj7", "min7"]
_BOUNDS = {"intervals": (1, 12), "chord_inversions": (0, 3), "octaves": (0, 8), "tempos_bpm": (20, 400)}


def unknown_name_error(what: str, name: str, valid: list[str]) -> ConfigError:
    """A ConfigError for an unknown `what`, suggesting the closest valid name."""
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.0)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {what} {name!r}{guess}", f"valid {what}s: {', '.join(valid)}")


def pitch_class_name(name: str) -> str:
    """Canonical sharp spelling of a pitch class ('Db' -> 'C#'); ConfigError if unknown."""
    name = _FLATS.get(name, name)
    if name not in PITCH_CLASSES:
        raise unknown_name_error("pitch class", name, list(PITCH_CLASSES))
    return name


def note_to_midi(note: str) -> int:
    """MIDI number of a note name such as 'C4', 'F#3' or 'Bb2' (C4 = 60); ConfigError if malformed."""
    head = note.rstrip("0123456789-")
    if not head or head == note:
        raise ConfigError(f"bad note name {note!r}", "write a pitch class and an octave, e.g. 'C4' or 'F#3'")
    return 12 * (int(note[len(head):]) + 1) + PITCH_CLASSES.index(pitch_class_name(head))


# --- data synth ---------------------------------------------------------------------------------------------

class SynthConfig(BaseModel):
    """What concept audio to synthesise."""

    model_config = ConfigDict(extra="forbid")

    concepts: list[Concept] = Field(list(CONCEPTS), description="Concepts to generate, one folder each.")
    timbres: list[str] = Field(list(VOICE_NAMES), description="Instruments to play pitched material with: "
                               + ", ".join(VOICE_NAMES) + ".")
    pitch_classes: list[str] = Field(list(PITCH_CLASSES), description="Pitch classes of notes and of the "
                                     "roots of intervals and chords (sharps or flats, e.g. C# or Db).")
    octaves: list[int] = Field([3, 4, 5], description="Octaves of the notes concept (C4 = middle C).")
    root_octave: int = Field(4, ge=0, le=8, description="Octave of interval and chord roots.")
    intervals: list[int] = Field(list(range(1, 13)), description="Interval sizes in semitones (1-12).")
    interval_play: list[Literal["harmonic", "melodic"]] = Field(
        ["harmonic", "melodic"], description="Play the two notes together (harmonic) or in turn (melodic).")
    chord_qualities: list[ChordQuality] = Field(
        ["major", "minor", "diminished", "augmented"], description="Chord qualities: "
        + ", ".join(CHORD_QUALITIES) + ".")
    chord_inversions: list[int] = Field([0], description="Chord inversions (0 = root position; 3 applies to "
                                        "seventh chords only and is skipped for triads).")
    tempos_bpm: list[float] = Field([float(b) for b in range(50, 211, 10)], description="Tempos in BPM "
                                    "(20-400): a list, or 'start:stop:step' with stop included.")
    beat_patterns: list[Literal["click", "waltz", "rock"]] = Field(
        ["click", "rock"], description="click: 4/4 metronome with accented downbeat; waltz: 3/4 metronome; "
        "rock: kick/snare/hi-hat 4/4.")
    timbre_notes: list[str] = Field(["C3", "A3", "E4", "C5"], description="Notes every instrument plays in "
                                    "the timbres concept.")
    sample_rate: int = Field(32000, ge=8000, le=192000, description="Sample rate of the wav files (Hz).")
    duration_s: float = Field(4.0, ge=1.0, le=60.0, description="Length of every clip (seconds).")
    variants: int = Field(1, ge=1, le=100, description="Jittered renditions per grid point (they share a "
                          "group).")
    max_per_concept: int | None = Field(72, ge=1, description="Keep at most this many grid points per "
                                        "concept, chosen by seed and balanced over the concept's label; "
                                        "null keeps all.")
    seed: int = Field(0, ge=0, description="Seed for subsampling, jitter and noise.")
    gain_jitter_db: float = Field(3.0, ge=0.0, le=40.0, description="Each clip is attenuated by a random "
                                  "0..this many dB below peak_db.")
    onset_jitter_s: float = Field(0.05, ge=0.0, le=0.5, description="Random delay (seconds) of the first "
                                  "onset.")
    detune_cents: float = Field(5.0, ge=0.0, le=50.0, description="Random detune (+/- cents) of a whole "
                                "clip; intervals and chords stay exact.")
    peak_db: float = Field(-3.0, le=0.0, ge=-60.0, description="Peak level of every clip before gain jitter "
                           "(dBFS).")
    a4_hz: float = Field(440.0, gt=0.0, description="Tuning reference: frequency of A4 (Hz).")

    @field_validator("timbres")
    @classmethod
    def _known_timbres(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in VOICE_NAMES:
                raise unknown_name_error("timbre", name, list(VOICE_NAMES))  # naming the closest instrument
        return v

    @field_validator("pitch_classes")
    @classmethod
    def _known_pitch_classes(cls, v: list[str]) -> list[str]:
        return [pitch_class_name(p) for p in v]

    @field_validator("timbre_notes")
    @classmethod
    def _known_notes(cls, v: list[str]) -> list[str]:
        # Canonical spelling, so that Db4 and C#4 count as one note when duplicates are dropped.
        return [f"{PITCH_CLASSES[m % 12]}{m // 12 - 1}" for m in map(note_to_midi, v)]

    @field_validator("tempos_bpm", mode="before")
    @classmethod
    def _tempo_range(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                start, stop, step = (float(p) for p in v.split(":"))
            except ValueError:
                raise ConfigError(f"bad tempo range {v!r}", "write start:stop:step, e.g. 50:210:10") from None
            if step <= 0:
                raise ConfigError(f"tempo range step must be positive: {v!r}", "e.g. 50:210:10")
            count = math.floor((stop - start) / step + 1e-9) + 1
            return [round(start + i * step, 6) for i in range(count)]
        return v

    @field_validator("concepts", "timbres", "pitch_classes", "octaves", "intervals", "interval_play",
                     "chord_qualities", "chord_inversions", "tempos_bpm", "beat_patterns", "timbre_notes")
    @classmethod
    def _in_range_and_unique(cls, v: list, info: ValidationInfo) -> list:
        # Runs after the field's own validator; duplicates would give duplicate item ids.
        lo, hi = _BOUNDS.get(info.field_name, (None, None))
        bad = [x for x in v if lo is not None and not lo <= x <= hi]
        if bad:
            raise ConfigError(f"{info.field_name} out of range: {bad}", f"use values from {lo} to {hi}")
        if not v:
            raise ConfigError(f"{info.field_name} is empty", "list at least one value")
        return list(dict.fromkeys(v))


# --- data index ---------------------------------------------------------------------------------------------

class IndexConfig(BaseModel):
    """How `data index` reads a source and which audio it keeps."""

    model_config = ConfigDict(extra="forbid")

    path_column: str = Field("path", description="Manifest column holding audio paths (manifest sources).")
    label_columns: list[str] | None = Field(
        None, description="Manifest columns to keep as labels; null keeps every non-reserved column.")
    group_column: str | None = Field(
        None, description="Manifest column naming each item's track/source; default: 'group' if present, "
                          "else the item id.")
    id_column: str | None = Field(None, description="Manifest column with item ids; default: 'item_id' if "
                                                    "present, else the path without extension.")
    label_name: str = Field("label", description="Label column filled from class subfolder names (folders).")
    group_regex: str | None = Field(
        None, description="Regex searched in folder item ids (the path under the folder without extension); its "
                          "first (or `group`) capture is the group, e.g. '^(.+)_part\\d+$'. Matching no file is an "
                          "error; files it does not match are each their own group, with a warning (an error "
                          "with strict). Folders only: a manifest names groups with group_column.")
    decode: bool = Field(True, description="Decode every file fully to catch truncated or corrupt audio and NaN/Inf "
                                          "samples (without it only headers are read).")
    silence_db: float = Field(-60.0, description="Clips whose peak is below this level (dBFS) count as silent.")
    keep_silent: bool = Field(False, description="Keep silent clips instead of skipping them.")
    strict: bool = Field(False, description="Fail on the first unusable file instead of skipping it.")
    # Hugging Face datasets (hf:OWNER/NAME, a save_to_disk folder, Parquet/Arrow files, an audiofolder)
    split: str | None = Field(None, description="Dataset split to read (datasets only); default: the only one.")
    subset: str | None = Field(None, description="Dataset subset, the `name` (config) of load_dataset (datasets "
                                                 "only); default: the only one.")
    audio_column: str | None = Field(None, description="Dataset column holding the audio; default: the column of "
                                                       "Audio type.")
    sample_rate: int | None = Field(None, gt=0, description="Resample dataset audio to this rate (Hz); null keeps "
                                                            "each row's own rate.")
    audio_format: Literal["flac", "wav"] = Field("flac", description="File format of the audio a dataset's rows "
                                                                     "are written as (lossless either way).")
    bit_depth: Literal[16, 24, 32] | None = Field(
        None, description="Bit depth of those files; null keeps the source's (24 for 24-bit and float sources, "
                          "32-bit float in wav), else 16.")
    limit: int | None = Field(None, gt=0, description="Read only the first N rows of the split (datasets only).")
    label_map: Literal["auto", "syntheory", "none"] = Field(
        "auto", description="Rename labels to data synth's names: syntheory maps SynTheory's columns and values; "
                            "auto does so for a hub id named syntheory; none keeps the dataset's own.")


# --- data split ---------------------------------------------------------------------------------------------

class SplitConfig(BaseModel):
    """How `data split` separates audio into stems."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("htdemucs", description="Demucs model or bag name (e.g. htdemucs, htdemucs_ft, mdx_extra) or "
                                               "a single model's signature; hf://[namespace/]name for the hub.")
    repo: str | None = Field(None, description="Local model repository folder (.th models, .yaml bags); null "
                                               "loads the model from the hub (needs the network).")
    two_stems: str | None = Field(None, description="Write only this stem and the sum of the others (e.g. vocals); "
                                                    "null writes every stem of the model.")
    rest_name: str = Field("instrumental", description="Name of the summed stem in two-stem mode.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    shifts: int = Field(1, ge=0, description="Random time shifts averaged per file (shift trick); 0 = none, "
                                             "each one costs a full pass.")
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="Overlap between consecutive segments.")
    segment_s: float | None = Field(None, gt=0, description="Segment length in seconds; null = the model's own "
                                                            "(transformer models cannot go above it).")
    jobs: int = Field(0, ge=0, description="Threads separating segments in parallel on the CPU (0 = none).")
    seed: int = Field(0, description="Seed of the random shifts, re-applied for every file (same file, same "
                                     "stems, also when a run is resumed).")
    channels: Literal["input", "model"] = Field(
        "input", description="Channels of the stems: the input's (a mono file gives mono stems) or the model's.")
    sample_rate: int | None = Field(None, gt=0, description="Rate of the written stems (Hz); null = the model's.")
    format: Literal["wav", "flac", "mp3"] = Field("wav", description="Audio format of the stems.")
    bit_depth: Literal[16, 24, 32] = Field(16, description="Bits per sample (32 = float, wav only; mp3 ignores it).")
    clip: Literal["rescale", "clamp"] = Field(
        "rescale", description="Integer and mp3 outputs: scale all stems of a file by one factor when any would "
                               "clip (rescale), or clip each sample (clamp). Float wav is written as is.")
    strict: bool = Field(False, description="Fail on the first unusable file instead of skipping it.")


# --- data chunk ---------------------------------------------------------------------------------------------

class ChunkConfig(BaseModel):
    """How `data chunk` cuts audio into windows."""

    model_config = ConfigDict(extra="forbid")

    length_s: float = Field(5.0, gt=0, description="Window length in seconds.")
    hop_s: float | None = Field(None, gt=0, description="Step between window starts in seconds; null = length_s "
                                                        "(back to back). Smaller overlaps, larger leaves gaps.")
    last: Literal["drop", "pad", "keep"] = Field(
        "drop", description="The short piece after the last full window: drop it, zero-pad it to length_s, or "
                            "keep it short.")
    min_last_s: float = Field(0.0, ge=0, description="With last=pad or keep, drop a last piece shorter than this.")
    sample_rate: int | None = Field(None, gt=0, description="Resample to this rate (Hz); null keeps each file's.")
    mono: bool = Field(False, description="Mix every file down to one channel.")
    min_rms_db: float | None = Field(
        None, description="Drop windows whose RMS level (dBFS, over all channels, padding excluded) is below this; "
                          "null keeps every window (digital silence included).")
    format: Literal["wav", "flac", "mp3"] = Field("wav", description="Audio format of the chunks.")
    bit_depth: Literal[16, 24, 32] = Field(16, description="Bits per sample (32 = float, wav only; mp3 ignores it).")
    strict: bool = Field(False, description="Fail on the first unusable file instead of skipping it.")
