"""MIDI and note lists -> the Multitrack Music Transformer's event codes, with a musical label for every event.

The Multitrack Music Transformer (MMT; Dong, Chen, McAuley, Berg-Kirkpatrick, ICASSP 2023) reads a song as a
sequence of events, each a row of six codes in the field order type, beat, position, pitch, duration, instrument:

- one start-of-song event; one instrument event per instrument the song uses (ascending instrument code); one
  start-of-notes event; one note event per note, in (beat, position, pitch, duration, program) order; one
  end-of-song event. Events that are not notes hold 0 in every field but type (and instrument, for instrument
  events).
- time is counted in steps of 1/12 beat (12 positions per quarter-note beat): a note at step s has beat s // 12 and
  position s % 12. Code = value + 1 for beat, position and pitch; 0 means "none".
- a note's length in steps is rounded to the nearest of 32 known durations (ties to the shorter), lengths above 384
  steps count as 384; its code is the index of that duration + 1.
- a note's General MIDI program maps to one of 64 instruments (code = 1 + rank in the instrument list below);
  drum tracks and programs without an instrument (sound effects, some pipes and percussion) are left out.

Reading a MIDI file follows how MMT's training data were made: onsets and ends are converted to steps with Python's
round (ticks * 12 / ticks per beat), a note that rounds to 0 steps lasts 1, duplicates are dropped, and the song
is shifted by whole beats so that its first note falls in beat 0. One difference remains: notes of one pitch that
overlap on one channel (ambiguous in MIDI) are paired as pretty_midi pairs them (a note-off ends every open note of
that pitch), while MusPy, which made MMT's data, pairs them first in, first out; such notes can get other lengths.

A model reads at most `max_beat` beats (notes in later beats are dropped) and `max_seq_len` events (the events
between are cut, the end-of-song event kept). MMT's own note lists (`.npy` or `.csv` with columns beat, position,
pitch, duration, program, durations in steps) are read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

RESOLUTION = 12  # time steps per quarter-note beat
MAX_BEAT = 1024  # beats the encoding itself can name (a model reads max_beat of them, 256 by default)
MAX_DURATION = 384  # longer notes are encoded as this many steps
FIELDS = ("type", "beat", "position", "pitch", "duration", "instrument")
EVENT_TYPES = ("start-of-song", "instrument", "start-of-notes", "note", "end-of-song")
SOS, INSTRUMENT, SON, NOTE, EOS = range(5)
KNOWN_DURATIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 18, 20, 21, 24, 30, 36, 40, 42, 48, 60, 72, 84,
                   96, 120, 144, 168, 192, 384)
NOTE_COLUMNS = ("beat", "position", "pitch", "duration", "program")

# Instrument name, the program that stands for it when decoding, and the General MIDI programs mapped to it; the
# order is the code order (code = index + 1). Programs in no row are not encoded.
_INSTRUMENT_TABLE: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("piano", 0, (0, 1, 2, 3)), ("electric-piano", 4, (4, 5)), ("harpsichord", 6, (6,)), ("clavinet", 7, (7,)),
    ("celesta", 8, (8,)), ("glockenspiel", 9, (9,)), ("music-box", 10, (10,)), ("vibraphone", 11, (11,)),
    ("marimba", 12, (12,)), ("xylophone", 13, (13,)), ("tubular-bells", 14, (14,)), ("dulcimer", 15, (15,)),
    ("organ", 16, (16, 17, 18, 20)), ("church-organ", 19, (19,)), ("accordion", 21, (21,)),
    ("harmonica", 22, (22,)), ("bandoneon", 23, (23,)),
    ("nylon-string-guitar", 24, (24,)), ("steel-string-guitar", 25, (25,)),
    ("electric-guitar", 26, tuple(range(26, 32))),
    ("bass", 32, (32,)), ("electric-bass", 33, (33, 34, 35)), ("slap-bass", 36, (36, 37)),
    ("synth-bass", 38, (38, 39)),
    ("violin", 40, (40, 110)), ("viola", 41, (41,)), ("cello", 42, (42,)), ("contrabass", 43, (43,)),
    ("harp", 46, (46,)), ("timpani", 47, (47,)),
    ("strings", 49, (44, 45, 48, 49)), ("synth-strings", 50, (50, 51)), ("voices", 52, (52, 53, 54)),
    ("orchestra-hit", 55, (55,)),
    ("trumpet", 56, (56, 59)), ("trombone", 57, (57,)), ("tuba", 58, (58,)), ("horn", 60, (60,)),
    ("brasses", 61, (61,)), ("synth-brasses", 62, (62, 63)),
    ("soprano-saxophone", 64, (64,)), ("alto-saxophone", 65, (65,)), ("tenor-saxophone", 66, (66,)),
    ("baritone-saxophone", 67, (67,)), ("oboe", 68, (68,)), ("english-horn", 69, (69,)), ("bassoon", 70, (70,)),
    ("clarinet", 71, (71,)),
    ("piccolo", 72, (72,)), ("flute", 73, (73,)), ("recorder", 74, (74,)), ("pan-flute", 75, (75,)),
    ("ocarina", 79, (79,)),
    ("lead", 80, tuple(range(80, 88))), ("pad", 88, tuple(range(88, 96))),
    ("sitar", 104, (104,)), ("banjo", 105, (105,)), ("shamisen", 106, (106,)), ("koto", 107, (107,)),
    ("kalimba", 108, (108,)), ("bag-pipe", 109, (109,)), ("shehnai", 111, (111,)),
    ("melodic-tom", 117, (117,)), ("synth-drums", 118, (118, 119)),
)
INSTRUMENTS: tuple[str, ...] = tuple(row[0] for row in _INSTRUMENT_TABLE)
INSTRUMENT_PROGRAM: dict[str, int] = {name: program for name, program, _ in _INSTRUMENT_TABLE}
PROGRAM_INSTRUMENT: dict[int, str] = {p: name for name, _, programs in _INSTRUMENT_TABLE for p in programs}

# Vocabulary of each field (codes 0 .. n-1); a model's beat vocabulary is max_beat + 1 instead.
N_TOKENS = (len(EVENT_TYPES), MAX_BEAT + 2, RESOLUTION + 1, 129, len(KNOWN_DURATIONS) + 1, len(INSTRUMENTS) + 1)
_DURATION_CODE = np.array([int(np.argmin(np.abs(np.array(KNOWN_DURATIONS) - d))) + 1 for d in range(MAX_DURATION + 1)])


def instrument_code(program: int) -> int:
    """Instrument code of a General MIDI program (0 when MMT does not encode it)."""
    name = PROGRAM_INSTRUMENT.get(int(program))
    return 0 if name is None else INSTRUMENTS.index(name) + 1


def duration_code(steps: int) -> int:
    """Code of a note lasting `steps` time steps: its nearest known duration (longer than 384 counts as 384)."""
    return int(_DURATION_CODE[min(max(int(steps), 0), MAX_DURATION)])


@dataclass
class Events:
    """A song as MMT events: `codes` (T, 6) int64 in field order FIELDS, and `labels`, one column per fact, each of
    length T (row t describes event t).

    Label columns: type (event type name), beat, position (0-11, in 1/12 beat), pitch (MIDI number), pitch_class
    (0 = C), octave (MIDI convention: 60 is C4), duration (the encoded known duration, in 1/12 beat), instrument
    (MMT's instrument name), program (the note's General MIDI program; for an instrument event the program that
    stands for that instrument), time_s (the quantised onset in seconds through the MIDI file's tempo map). Where a
    fact does not apply (or is unknown, as time in a note list): -1, "" or NaN.
    """

    codes: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def rows(self) -> list[dict]:
        """The labels as one dict per event (plain Python values)."""
        return [{k: _plain(v[t]) for k, v in self.labels.items()} for t in range(len(self))]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# ---- notes ----
def notes_from_midi(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(notes (N, 5) int64 with columns NOTE_COLUMNS, sorted and without duplicates; onset_s (N,) seconds) for the
    MIDI file at `path`, beats counted from the file's start. InputError when it does not parse or has no note MMT
    encodes."""
    import pretty_midi

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such MIDI file: {path}", "check the path")
    try:
        midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido and pretty_midi raise many kinds on malformed files
        detail = (str(exc).splitlines() or ["malformed"])[0]
        raise InputError(f"cannot read MIDI file {path}: {type(exc).__name__}: {detail}",
                         "check that it is a standard MIDI file (.mid)") from exc
    tpq = float(midi.resolution)
    rows: set[tuple[int, int, int, int, int]] = set()
    onset_tick: dict[int, int] = {}
    n_any = 0
    for inst in midi.instruments:
        n_any += len(inst.notes)
        if inst.is_drum or instrument_code(inst.program) == 0:
            continue
        for note in inst.notes:
            start_tick, end_tick = midi.time_to_tick(note.start), midi.time_to_tick(note.end)
            start = round(start_tick * RESOLUTION / tpq)
            steps = round(end_tick * RESOLUTION / tpq) - start
            beat, position = divmod(start, RESOLUTION)
            rows.add((beat, position, int(note.pitch), max(steps, 1), int(inst.program)))
            onset_tick.setdefault(start, start_tick)
    if not rows:
        what = "has no notes" if n_any == 0 else "has no notes MMT encodes (only drums or unencoded programs)"
        raise InputError(f"MIDI file {path} is empty: it {what}", "pass a MIDI file with pitched, non-drum notes")
    notes = np.array(sorted(rows), dtype=np.int64)
    steps = notes[:, 0] * RESOLUTION + notes[:, 1]
    # Time of the quantised onset: the step converted back to ticks, then through the tempo map.
    onset_s = np.array([midi.tick_to_time(int(round(s * tpq / RESOLUTION))) for s in steps], dtype=np.float64)
    return notes, onset_s


def read_notes(path: str | Path) -> np.ndarray:
    """An MMT note list: `.npy` (N, 5) or `.csv` with a header row, columns NOTE_COLUMNS (durations in steps)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such note file: {path}", "check the path")
    try:
        if path.suffix.lower() == ".npy":
            notes = np.load(path, allow_pickle=False)
        else:
            notes = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except Exception as exc:
        raise InputError(f"cannot read note list {path}: {type(exc).__name__}",
                         "an MMT note list is .npy or .csv with columns beat,position,pitch,duration,program") from exc
    notes = np.asarray(notes)
    if notes.size == 0:
        raise InputError(f"note list {path} is empty", "pass a note list with at least one note")
    if notes.ndim != 2 or notes.shape[1] != 5 or not np.issubdtype(notes.dtype, np.number):
        raise InputError(f"note list {path} has shape {notes.shape}, not (N, 5)",
                         "columns: beat, position, pitch, duration, program")
    notes = notes.astype(np.int64)
    for col, (name, hi) in enumerate((("beat", None), ("position", RESOLUTION - 1), ("pitch", 127),
                                      ("duration", None), ("program", 127))):
        bad = np.flatnonzero((notes[:, col] < 0) | ((notes[:, col] > hi) if hi is not None else False))
        if bad.size:
            raise InputError(f"note list {path}: {name} {notes[bad[0], col]} in row {bad[0]} is out of range",
                             f"{name} must lie in 0..{hi}" if hi is not None else f"{name} must be >= 0")
    return notes


# ---- notes -> events ----
def encode_notes(notes: np.ndarray, onset_s: np.ndarray | None = None, *, max_beat: int | None = None,
                 max_seq_len: int | None = None, source: str = "") -> Events:
    """MMT events for `notes` (N, 5) in NOTE_COLUMNS order (as given: sort them first if they are not), with labels.

    Notes in beat >= `max_beat` (or > the encoding's last beat) and of programs MMT does not encode are left out;
    with `max_seq_len`, the sequence keeps its first max_seq_len - 1 events and its end-of-song event."""
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 5)
    onset_s = np.full(len(notes), np.nan) if onset_s is None else np.asarray(onset_s, dtype=np.float64)
    if max_beat is not None:  # a model reads beats 0 .. max_beat - 1
        notes, onset_s = notes[notes[:, 0] < int(max_beat)], onset_s[notes[:, 0] < int(max_beat)]
    inst_codes = sorted({instrument_code(p) for p in notes[:, 4]} - {0})  # every instrument, even past MAX_BEAT
    keep = (notes[:, 0] <= MAX_BEAT) & np.array([instrument_code(p) > 0 for p in notes[:, 4]], dtype=bool)
    notes, onset_s = notes[keep], onset_s[keep]

    n = 3 + len(inst_codes) + len(notes)
    codes = np.zeros((n, 6), dtype=np.int64)
    lab = _empty_labels(n)
    codes[0, 0] = SOS
    for i, code in enumerate(inst_codes, start=1):
        codes[i, 0], codes[i, 5] = INSTRUMENT, code
        lab["instrument"][i] = INSTRUMENTS[code - 1]
        lab["program"][i] = INSTRUMENT_PROGRAM[INSTRUMENTS[code - 1]]
    son = 1 + len(inst_codes)
    codes[son, 0] = SON
    rows = slice(son + 1, son + 1 + len(notes))
    if len(notes):
        beat, pos, pitch, dur, prog = notes.T
        dcodes = np.array([duration_code(d) for d in dur], dtype=np.int64)
        icodes = np.array([instrument_code(p) for p in prog], dtype=np.int64)
        codes[rows] = np.stack([np.full(len(notes), NOTE), beat + 1, pos + 1, pitch + 1, dcodes, icodes], axis=1)
        lab["beat"][rows], lab["position"][rows], lab["pitch"][rows] = beat, pos, pitch
        lab["pitch_class"][rows], lab["octave"][rows] = pitch % 12, pitch // 12 - 1
        lab["duration"][rows] = np.array(KNOWN_DURATIONS)[dcodes - 1]
        lab["instrument"][rows] = [INSTRUMENTS[c - 1] for c in icodes]
        lab["program"][rows] = prog
        lab["time_s"][rows] = onset_s
    codes[-1, 0] = EOS
    lab["type"][:] = [EVENT_TYPES[c] for c in codes[:, 0]]
    if max_seq_len is not None and n > int(max_seq_len):
        if int(max_seq_len) < 2:
            raise InputError(f"max_seq_len {max_seq_len} is too short", "it must be at least 2")
        take = np.r_[0:int(max_seq_len) - 1, n - 1]
        codes, lab = codes[take], {k: v[take] for k, v in lab.items()}
    return Events(codes=codes, labels=lab, source=source)


def _empty_labels(n: int) -> dict[str, np.ndarray]:
    labels: dict[str, np.ndarray] = {"type": np.full(n, "", dtype=object)}
    labels.update({k: np.full(n, -1, dtype=np.int64)
                   for k in ("beat", "position", "pitch", "pitch_class", "octave", "duration")})
    labels["instrument"] = np.full(n, "", dtype=object)
    labels["program"] = np.full(n, -1, dtype=np.int64)
    labels["time_s"] = np.full(n, np.nan, dtype=np.float64)
    return labels


def read_events(path: str | Path, *, max_beat: int | None = None, max_seq_len: int | None = None,
                shift_to_first_beat: bool = True) -> Events:
    """Events of a MIDI file (.mid/.midi) or an MMT note list (.npy/.csv); see the module docstring for the rules.

    `shift_to_first_beat` (MIDI only) counts beats from the beat of the first note, as MMT's data were prepared;
    time_s always counts from the file's start."""
    path = Path(path)
    if path.suffix.lower() in (".npy", ".csv"):
        return encode_notes(read_notes(path), max_beat=max_beat, max_seq_len=max_seq_len, source=str(path))
    notes, onset_s = notes_from_midi(path)
    if shift_to_first_beat:
        notes[:, 0] -= notes[0, 0]
    return encode_notes(notes, onset_s, max_beat=max_beat, max_seq_len=max_seq_len, source=str(path))


# ---- codes ----
def check_codes(codes, n_tokens: tuple[int, ...] | list[int] = N_TOKENS, what: str = "events") -> np.ndarray:
    """`codes` as a (T, 6) int64 array; InputError naming the field, row and value of the first code outside its
    field's vocabulary (0 .. n_tokens[field] - 1)."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[1] != len(FIELDS):
        raise InputError(f"{what} have shape {tuple(arr.shape)}, not (T, 6)",
                         "MMT events are rows of type, beat, position, pitch, duration, instrument codes")
    if arr.shape[0] == 0:
        raise InputError(f"{what} are empty", "pass at least one event")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"{what} hold non-integer codes", "MMT codes are integers")
    arr = arr.astype(np.int64)
    for f, (name, n) in enumerate(zip(FIELDS, n_tokens, strict=True)):
        bad = np.flatnonzero((arr[:, f] < 0) | (arr[:, f] >= int(n)))
        if bad.size:
            t = int(bad[0])
            raise InputError(f"{what}: {name} code {int(arr[t, f])} at event {t} is outside the vocabulary 0..{n - 1}",
                             "encode MIDI with read_events (beats past the model's max_beat are dropped there)")
    return arr


def events_from_codes(codes, n_tokens: tuple[int, ...] | list[int] = N_TOKENS) -> Events:
    """Events (labels decoded from the codes alone: no program beyond the instrument's, no time) for (T, 6) codes."""
    arr = check_codes(codes, n_tokens)
    lab = _empty_labels(len(arr))
    lab["type"][:] = [EVENT_TYPES[c] for c in arr[:, 0]]
    for t, (kind, beat, pos, pitch, dur, inst) in enumerate(arr):
        if inst > 0 and kind in (INSTRUMENT, NOTE):
            lab["instrument"][t] = INSTRUMENTS[inst - 1]
            lab["program"][t] = INSTRUMENT_PROGRAM[INSTRUMENTS[inst - 1]]
        if kind != NOTE:
            continue
        lab["beat"][t], lab["position"][t] = beat - 1, pos - 1
        if pitch > 0:
            p = pitch - 1
            lab["pitch"][t], lab["pitch_class"][t], lab["octave"][t] = p, p % 12, p // 12 - 1
        if dur > 0:
            lab["duration"][t] = KNOWN_DURATIONS[dur - 1]
    return Events(codes=arr, labels=lab)
