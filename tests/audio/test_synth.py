"""Concept-audio synthesis: determinism, labels checked by analysing the audio, band-limits, manifest."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from musicsae_cli.audio.instruments import CUTOFF_FRACTION, VOICES, midi_to_hz, partials, render_note
from musicsae_cli.audio.synth import LABEL_COLUMNS, TARGET_LABEL, SynthConfig, plan, render, synthesize
from musicsae_cli.errors import ConfigError

SR = 16000


def small(**kw) -> SynthConfig:
    """A config that renders in well under a second."""
    base = dict(sample_rate=SR, duration_s=1.5, max_per_concept=4, timbres=["sine", "piano", "strings"],
                tempos_bpm=[90, 150])
    return SynthConfig(**{**base, **kw})


def spectrum(x: np.ndarray, sr: int, pad: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed magnitude spectrum, zero-padded for a fine frequency grid."""
    mag = np.abs(np.fft.rfft(x * np.hanning(x.size), pad * x.size))
    return np.fft.rfftfreq(pad * x.size, 1 / sr), mag


def autocorr_period(x: np.ndarray, lo: int, hi: int) -> float:
    """Period (samples, parabolically refined) from the autocorrelation: the shortest lag in [lo, hi] whose
    peak reaches 80% of the highest there, so multiples of the period (octave errors, accented bars) lose."""
    x = x - x.mean()
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * x.size)) ** 2)[: x.size]
    lags = np.arange(lo, hi + 1)
    peaks = lags[(r[lags] >= r[lags - 1]) & (r[lags] > r[lags + 1])]
    k = int(peaks[r[peaks] >= 0.8 * r[peaks].max()][0])
    a, b, c = r[k - 1], r[k], r[k + 1]
    return k + 0.5 * (a - c) / (a - 2 * b + c)


# --- determinism -------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    grid = dict(max_per_concept=None, pitch_classes=["C", "E"], octaves=[4], intervals=[3, 7],
                interval_play=["harmonic"], chord_qualities=["major"], timbres=["sine", "piano"],
                tempos_bpm=[100], beat_patterns=["rock"], timbre_notes=["C4"])
    first, second = synthesize(small(**grid), tmp_path / "a"), synthesize(small(**grid), tmp_path / "b")
    assert first == second and len(first) == 4 + 8 + 4 + 1 + 2
    for row in first:
        assert (tmp_path / "a" / row["path"]).read_bytes() == (tmp_path / "b" / row["path"]).read_bytes()
    other = synthesize(small(**grid, seed=1), tmp_path / "c")
    assert [r["item_id"] for r in other] == [r["item_id"] for r in first]
    for row in other:
        assert (tmp_path / "a" / row["path"]).read_bytes() != (tmp_path / "c" / row["path"]).read_bytes()


def test_a_clip_does_not_depend_on_the_rest_of_the_grid():
    """Per-clip RNG comes from (seed, item_id): shrinking the grid leaves the shared clips identical."""
    wide = small(concepts=["notes"], max_per_concept=None)
    narrow = small(concepts=["notes"], max_per_concept=None, octaves=[4], timbres=["piano"])
    row = plan(narrow)[0]
    twin = next(r for r in plan(wide) if r["item_id"] == row["item_id"])
    assert twin == row
    np.testing.assert_array_equal(render(row, narrow), render(twin, wide))


# --- ground truth ------------------------------------------------------------------------------------------

def test_sine_note_peaks_at_its_labelled_frequency():
    cfg = small(concepts=["notes"], timbres=["sine"], max_per_concept=None, octaves=[3, 5], detune_cents=20)
    for row in plan(cfg)[::5]:
        freqs, mag = spectrum(render(row, cfg), SR)
        assert abs(freqs[np.argmax(mag)] - row["frequency_hz"]) < 1.0, row["item_id"]
        assert row["frequency_hz"] == pytest.approx(midi_to_hz(row["midi"], row["detune_cents"]), abs=1e-3)
        assert row["midi"] == 12 * (row["octave"] + 1) + row["pitch_class_index"]


@pytest.mark.parametrize("timbre", ["sawtooth", "square", "organ", "strings", "piano", "pluck"])
def test_harmonic_timbre_fundamental_matches_midi(timbre):
    cfg = small(concepts=["notes"], timbres=[timbre], pitch_classes=["C", "F#", "A"], max_per_concept=None,
                sample_rate=32000)
    for row in plan(cfg):
        x = render(row, cfg)[int(0.3 * 32000):int(1.0 * 32000)]  # past the attack, before the release
        lag = autocorr_period(x, 32000 // 1200, 32000 // 60)
        assert 32000 / lag == pytest.approx(row["frequency_hz"], rel=0.01), row["item_id"]


@pytest.mark.parametrize("quality", ["major", "minor", "diminished", "augmented", "dom7", "maj7"])
def test_chord_clips_sound_every_chord_tone(quality):
    cfg = small(concepts=["chords"], timbres=["sine"], pitch_classes=["D"], chord_qualities=[quality],
                chord_inversions=[0, 1])
    rows = plan(cfg)
    assert [r["chord_inversion"] for r in rows] == [0, 1]
    for row in rows:
        midis = [int(m) for m in row["midi_notes"].split()]
        freqs, mag = spectrum(render(row, cfg), SR)
        level = {m: mag[np.abs(freqs - midi_to_hz(m, row["detune_cents"])) < 3].max()
                 for m in range(midis[0] - 2, midis[-1] + 3)}
        tones = [level[m] for m in midis]
        others = [v for m, v in level.items() if m not in midis]
        assert min(tones) > 30 * max(others), row["item_id"]
    assert [int(m) % 12 for m in rows[1]["midi_notes"].split()][-1] == 2  # first inversion: root on top


def onset_strength(x: np.ndarray, sr: int, band: tuple[float, float] | None = None) -> np.ndarray:
    """Rising log-energy per 1 ms frame, optionally of one frequency band (FFT mask)."""
    if band is not None:
        spec, freqs = np.fft.rfft(x), np.fft.rfftfreq(x.size, 1 / sr)
        x = np.fft.irfft(np.where((freqs >= band[0]) & (freqs <= band[1]), spec, 0), x.size)
    hop = sr // 1000
    env = np.sqrt(np.mean(x[: x.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    return np.maximum(np.diff(np.log1p(100 * env / env.max())), 0.0)  # log: loud and soft hits count alike


@pytest.mark.parametrize(("pattern", "band", "beats"), [
    ("click", None, 1.0),
    ("waltz", None, 1.0),
    ("rock", (0, 120), 2.0),  # kick band: kicks fall on beats 1 and 3
    ("rock", (5000, 8000), 0.5),  # hi-hat band: eighth notes
])
def test_tempo_clip_pulses_at_the_labelled_bpm(pattern, band, beats):
    cfg = small(concepts=["tempos"], beat_patterns=[pattern], tempos_bpm=[55, 97, 150, 210], duration_s=6.0)
    for row in plan(cfg):
        onsets = onset_strength(render(row, cfg).astype(np.float64), SR, band)
        period_ms = autocorr_period(onsets, int(beats * 60_000 / 230), int(beats * 60_000 / 50))
        assert period_ms / 1000 == pytest.approx(beats * 60 / row["bpm"], rel=0.02), row["item_id"]


def test_interval_labels_and_melodic_order():
    cfg = small(concepts=["intervals"], timbres=["sine"], pitch_classes=["C"], intervals=[7],
                max_per_concept=None)
    by_play = {r["play"]: r for r in plan(cfg)}
    assert set(by_play) == {"harmonic", "melodic"}
    row = by_play["melodic"]
    assert (row["interval_name"], row["root_pitch_class"], row["midi_notes"]) == ("P5", "C", "60 67")
    x = render(row, cfg)
    half = x.size // 2
    for segment, midi in ((x[: half - 2000], 60), (x[half + 2000:], 67)):
        freqs, mag = spectrum(segment, SR)
        assert abs(freqs[np.argmax(mag)] - midi_to_hz(midi, row["detune_cents"])) < 3.0


# --- band-limiting -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(VOICES))
@pytest.mark.parametrize("midi", [48, 84, 96])
def test_no_partial_reaches_the_band_limit(name, midi):
    f0 = midi_to_hz(midi)
    freqs, amps, _ = partials(name, f0, SR)
    assert freqs.size >= 1 and freqs.max() * VOICES[name].excursion < CUTOFF_FRACTION * SR


@pytest.mark.parametrize("name", ["sawtooth", "square"])
def test_high_note_has_no_aliased_energy(name):
    """A naive C7 sawtooth at 16 kHz folds its 3rd+ harmonics back; the band-limited one has energy only at
    k * f0."""
    f0 = midi_to_hz(96)
    x = render_note(name, f0, SR, SR, SR)[SR // 10:]  # held: no release, attack skipped
    freqs, mag = spectrum(x.astype(np.float64), SR)
    power = mag**2
    near_harmonic = np.abs(freqs / f0 - np.rint(freqs / f0)) * f0 < 25
    assert power[~near_harmonic].sum() < 1e-6 * power.sum()
    assert power[freqs > CUTOFF_FRACTION * SR].sum() < 1e-8 * power.sum()


# --- manifest rows -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    cfg = small(max_per_concept=6, variants=2, timbres=list(VOICES), gain_jitter_db=4.0,
                tempos_bpm=[90, 120, 150])
    return cfg, out, synthesize(cfg, out)


def test_rows_carry_every_label_and_files_exist(written):
    cfg, out, rows = written
    assert Counter(r["concept"] for r in rows) == {c: 12 for c in ("notes", "intervals", "chords", "tempos",
                                                                   "timbres")}
    assert all(tuple(r) == LABEL_COLUMNS for r in rows)
    assert len({r["item_id"] for r in rows}) == len(rows)
    for row in rows:
        path = out / row["path"]
        assert path.is_file() and Path(row["path"]).as_posix() == f"{row['concept']}/{row['item_id']}.wav"
        audio, sr = sf.read(str(path), dtype="float32")
        assert sr == cfg.sample_rate and audio.size == int(cfg.duration_s * sr)
        peak_db = 20 * np.log10(np.abs(audio).max())
        assert cfg.peak_db - cfg.gain_jitter_db - 0.05 <= peak_db <= cfg.peak_db + 0.05, row["item_id"]
        assert peak_db == pytest.approx(cfg.peak_db + row["gain_db"], abs=0.05)
        assert np.sqrt(np.mean(audio**2)) > 1e-3, f"{row['item_id']} is (nearly) silent"
        concept = row["concept"]
        assert row[TARGET_LABEL[concept]] is not None
        assert (row["timbre"] is None) == (concept == "tempos")


def test_variants_share_a_group_and_differ(written):
    cfg, out, rows = written
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    assert all(len(g) == 2 and {r["variant"] for r in g} == {0, 1} for g in groups.values())
    a, b = next(iter(groups.values()))
    assert a["item_id"] == f"{a['group']}-000"
    assert (a["gain_db"], a["onset_s"]) != (b["gain_db"], b["onset_s"])
    assert (out / a["path"]).read_bytes() != (out / b["path"]).read_bytes()


def test_timbres_concept_plays_the_same_notes_on_every_instrument():
    rows = plan(small(concepts=["timbres"], max_per_concept=None, timbres=list(VOICES)))
    notes = {t: sorted(r["midi"] for r in rows if r["timbre"] == t) for t in VOICES}
    assert len(rows) == 4 * len(VOICES) and all(n == notes["sine"] for n in notes.values())
    assert notes["sine"] == [48, 57, 64, 72]  # the default timbre_notes C3 A3 E4 C5


def test_subsampling_is_balanced_over_the_concept_label():
    rows = plan(SynthConfig(max_per_concept=30, concepts=["notes", "intervals", "chords"]))
    for concept in ("notes", "intervals", "chords"):
        counts = Counter(r[TARGET_LABEL[concept]] for r in rows if r["concept"] == concept)
        assert sum(counts.values()) == 30 and max(counts.values()) - min(counts.values()) <= 1


# --- config ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad", "closest"), [("pianno", "piano"), ("squre", "square"),
                                              ("Strings", "strings")])
def test_unknown_timbre_names_the_closest(bad, closest):
    with pytest.raises(ConfigError, match=f"did you mean '{closest}'") as info:
        SynthConfig(timbres=["sine", bad])
    assert "sawtooth" in info.value.hint and "\n" not in str(info.value)


def test_config_validation():
    assert SynthConfig(tempos_bpm="50:70:10").tempos_bpm == [50.0, 60.0, 70.0]
    assert SynthConfig(pitch_classes=["Db", "C#", "E"]).pitch_classes == ["C#", "E"]
    with pytest.raises(ValidationError):
        SynthConfig(sede=3)  # unknown keys are rejected
    with pytest.raises(ConfigError, match="pitch class 'H'"):
        SynthConfig(pitch_classes=["H"])
    with pytest.raises(ConfigError, match="intervals out of range"):
        SynthConfig(intervals=[0, 13])
    with pytest.raises(ConfigError, match="band limit"):
        plan(SynthConfig(sample_rate=8000, octaves=[8], concepts=["notes"]))
    assert all(f.description for f in SynthConfig.model_fields.values())
