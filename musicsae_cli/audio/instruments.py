"""Synthesised instruments for concept audio: band-limited voices, a small drum kit and beat patterns.

Every pitched voice is a list of explicit partials. `partials` drops any partial that could reach
`CUTOFF_FRACTION` of the sample rate (vibrato and chorus excursions included), so no clip aliases.
Harmonic sustained voices play from a wavetable (cost independent of the partial count); decaying or
inharmonic voices are additive, each partial computed only while it is audible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import (  # noqa: F401 (the pitch names are re-exported)
    _FLATS,
    PITCH_CLASSES,
    VOICE_NAMES,
    note_to_midi,
    pitch_class_name,
    unknown_name_error,
)

# 90% of Nyquist: the guard band absorbs the sidebands that envelopes and vibrato put around each partial.
CUTOFF_FRACTION = 0.45
# Linear-interpolation images of a table this long sit near (TABLE_SIZE - k) * f0, below -100 dB.
TABLE_SIZE = 8192
# Partials 60 dB under the loudest add nothing audible but cost time.
MIN_PARTIAL_AMP = 1e-3
# Additive voices compute each partial until it has decayed by 60 dB.
_DECAY_SPAN = np.log(1e3)

Spectrum = Callable[[float, np.ndarray], "tuple[np.ndarray, np.ndarray, np.ndarray | None]"]


@dataclass(frozen=True)
class Voice:
    """One instrument: its spectrum, envelope and pitch modulation."""

    name: str
    description: str
    spectrum: Spectrum  # (f0, harmonic numbers 1..K) -> (ratios, amps, decay_s or None for sustained)
    attack_s: float = 0.01
    release_s: float = 0.1  # time for the note to fall 60 dB after the key is released
    vibrato_cents: float = 0.0
    vibrato_hz: float = 5.5
    vibrato_delay_s: float = 0.3
    chorus_cents: float = 0.0  # three copies, at 0 and +/- this much: an ensemble, not a single player

    @property
    def excursion(self) -> float:
        """Largest factor by which any partial's frequency rises above its nominal value."""
        return float(2.0 ** ((self.vibrato_cents + self.chorus_cents) / 1200.0))


def _odd(k: np.ndarray) -> np.ndarray:
    return (k % 2 == 1).astype(float)


def _sustained(amps: Callable[[float, np.ndarray], np.ndarray]) -> Spectrum:
    return lambda f0, k: (k.astype(float), amps(f0, k), None)


def _piano(f0: float, k: np.ndarray):
    # Stiff-string stretch f_k = k f0 sqrt(1 + B k^2), renormalised so partial 1 sits exactly at f0.
    b = 2e-4
    ratios = k * np.sqrt(1.0 + b * k**2) / np.sqrt(1.0 + b)
    amps = np.abs(np.sin(np.pi * k * 0.12)) / k  # hammer strikes at 12% of the string length
    tau1 = float(np.clip(3.0 * (110.0 / f0) ** 0.6, 0.3, 4.0))  # low strings ring longer
    return ratios, amps, tau1 / (1.0 + 0.6 * (k - 1))


def _pluck(f0: float, k: np.ndarray):
    amps = np.abs(np.sin(np.pi * k * 0.18)) / k**1.3  # plucked near the bridge: bright
    tau1 = float(np.clip(1.2 * (220.0 / f0) ** 0.5, 0.25, 2.5))
    return k.astype(float), amps, tau1 / (1.0 + 0.9 * (k - 1))  # brightness dies first


# Tuned church bell: hum, prime (= the labelled pitch), minor-third tierce, quint, nominal, upper partials.
_BELL = np.array([
    (0.50, 0.55, 4.0), (1.00, 0.80, 2.6), (1.20, 0.65, 2.0), (1.50, 0.35, 1.5), (2.00, 1.00, 1.7),
    (2.52, 0.35, 0.9), (2.66, 0.30, 0.8), (3.01, 0.25, 0.6), (4.17, 0.20, 0.4), (5.43, 0.12, 0.3),
])


def _bell(f0: float, k: np.ndarray):
    scale = float(np.clip((440.0 / f0) ** 0.4, 0.5, 2.0))
    return _BELL[:, 0].copy(), _BELL[:, 1].copy(), _BELL[:, 2] * scale


# Drawbars 8' 4' 2 2/3' 2' 1 3/5' 1 1/3' 1' = harmonics 1 2 3 4 5 6 8, at settings 8 6 4 5 2 3 4 (about
# 3 dB a step). The 16' and 5 1/3' bars are left out: they would put the perceived pitch an octave low.
_DRAWBARS = {1: 8, 2: 6, 3: 4, 4: 5, 5: 2, 6: 3, 8: 4}


def _organ_amps(f0: float, k: np.ndarray) -> np.ndarray:
    return np.array([10 ** ((_DRAWBARS[i] - 8) * 3 / 20) if i in _DRAWBARS else 0.0 for i in k.tolist()])


VOICES: dict[str, Voice] = {v.name: v for v in [
    Voice("sine", "pure sine", _sustained(lambda f0, k: (k == 1).astype(float))),
    Voice("triangle", "band-limited triangle (odd harmonics, 1/k^2)",
          _sustained(lambda f0, k: _odd(k) * (-1.0) ** ((k - 1) // 2) / k**2)),
    Voice("square", "band-limited square (odd harmonics, 1/k)", _sustained(lambda f0, k: _odd(k) / k)),
    Voice("sawtooth", "band-limited sawtooth (all harmonics, 1/k)", _sustained(lambda f0, k: 1.0 / k)),
    Voice("organ", "drawbar organ, sustained", _sustained(_organ_amps), attack_s=0.008, release_s=0.06),
    Voice("strings", "saw-like ensemble: slow attack, delayed vibrato, chorus",
          _sustained(lambda f0, k: 1.0 / k / np.sqrt(1.0 + (k * f0 / 3500.0) ** 2)),
          attack_s=0.25, release_s=0.35, vibrato_cents=12.0, chorus_cents=6.0),
    Voice("piano", "stretched partials, each decaying exponentially", _piano, attack_s=0.003, release_s=0.2),
    Voice("pluck", "bright plucked string, upper partials die first", _pluck, attack_s=0.002, release_s=0.1),
    Voice("bell", "tuned bell, inharmonic partials", _bell, attack_s=0.002, release_s=3.0),
]}
if tuple(VOICES) != VOICE_NAMES:  # SynthConfig offers and checks timbres by these names, without importing numpy
    raise RuntimeError(f"config.VOICE_NAMES {VOICE_NAMES} does not list the voices {tuple(VOICES)}")


def get_voice(name: str) -> Voice:
    """The registered voice `name`; ConfigError naming the closest valid name otherwise."""
    if name in VOICES:
        return VOICES[name]
    raise unknown_name_error("timbre", name, list(VOICES))


# --- pitch names (PITCH_CLASSES, pitch_class_name and note_to_midi come from config) -----------------------


def midi_to_hz(midi: float, cents: float = 0.0, a4_hz: float = 440.0) -> float:
    """Equal-tempered frequency of MIDI note `midi`, shifted by `cents`."""
    return a4_hz * 2.0 ** ((midi - 69) / 12.0 + cents / 1200.0)


def partials(name: str, f0: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Band-limited partials voice `name` renders at `f0`: (frequencies Hz, amplitudes, decay_s or None)."""
    voice = get_voice(name)
    cutoff = CUTOFF_FRACTION * sample_rate
    k = np.arange(1, max(1, int(cutoff / f0)) + 1)
    ratios, amps, taus = voice.spectrum(f0, k)
    freqs = ratios * f0
    # Keep a partial only if its highest excursion stays under the cutoff and it is loud enough to matter.
    keep = (freqs * voice.excursion < cutoff) & (np.abs(amps) >= MIN_PARTIAL_AMP * np.max(np.abs(amps)))
    return freqs[keep], amps[keep], None if taus is None else taus[keep]


def render_note(name: str, f0: float, sample_rate: int, n_samples: int, gate_samples: int) -> np.ndarray:
    """One note of voice `name` at `f0` Hz, `n_samples` long, key released after `gate_samples` (float32)."""
    voice = get_voice(name)
    freqs, amps, taus = partials(name, f0, sample_rate)
    if freqs.size == 0:
        return np.zeros(n_samples, np.float32)
    if taus is None:
        x = _wavetable_voice(voice, f0, freqs / f0, amps, n_samples, sample_rate)
    else:
        x = _additive(freqs, amps, taus, n_samples, sample_rate)
    return _apply_envelope(x, voice, gate_samples, sample_rate)


# Phases are 32-bit fixed-point fractions of a cycle: integer arithmetic wraps them exactly and cheaply, and
# float32 sin/exp (many times faster than float64) stay precise on a phase that never grows past one cycle.
_CYCLE = 2.0**32
_TABLE_BITS = int(np.log2(TABLE_SIZE))
_FRAC_BITS = 32 - _TABLE_BITS


def _phase(freq_hz: float, n: int, sr: int) -> np.ndarray:
    increment = np.uint32(int(round(freq_hz / sr * _CYCLE)) % int(_CYCLE))
    return np.arange(n, dtype=np.uint32) * increment  # uint32 overflow is the wrap to [0, 1) cycle


def _wavetable_voice(voice: Voice, f0: float, harmonics: np.ndarray, amps: np.ndarray, n: int, sr: int):
    spec = np.zeros(TABLE_SIZE // 2 + 1, dtype=complex)
    spec[np.rint(harmonics).astype(int)] = -0.5j * TABLE_SIZE * amps  # irfft of -jAN/2 at bin k: A sin(k.)
    table = np.fft.irfft(spec, TABLE_SIZE).astype(np.float32)
    if not voice.vibrato_cents and not voice.chorus_cents:
        return _lookup(table, _phase(f0, n, sr))
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    ramp = np.minimum(t / np.float32(voice.vibrato_delay_s), 1.0)  # vibrato fades in, as a player's does
    out = np.zeros(n, np.float32)
    # (detune cents, vibrato rate factor, start phase in cycles): each player of the ensemble has their own
    # tuning and vibrato, so the copies drift against each other instead of beating periodically.
    copies = ((0.0, 1.0, 0.0), (voice.chorus_cents, 1.09, 0.37), (-voice.chorus_cents, 0.93, 0.71))
    for offset, rate, start_cycle in copies:
        cents = voice.vibrato_cents * ramp * np.sin(np.float32(2 * np.pi * voice.vibrato_hz * rate) * t
                                                    + np.float32(2 * np.pi * start_cycle))
        increments = np.rint(f0 * np.exp2((cents + offset) / 1200.0).astype(np.float64) * (_CYCLE / sr))
        start = int(start_cycle * _CYCLE)
        cycles = np.empty(n, np.uint64)
        cycles[0] = start
        np.cumsum(increments[:-1].astype(np.uint64), out=cycles[1:])
        cycles[1:] += np.uint64(start)
        out += _lookup(table, (cycles & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    return out / len(copies)


def _lookup(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Linearly interpolated `table` at fixed-point `phase`."""
    index = (phase >> np.uint32(_FRAC_BITS)).astype(np.intp)
    frac = (phase & np.uint32((1 << _FRAC_BITS) - 1)).astype(np.float32) * np.float32(2.0**-_FRAC_BITS)
    slope = np.diff(table, append=table[:1])  # the last slope wraps round to the table's start
    return np.take(table, index) + frac * np.take(slope, index)


def _additive(freqs: np.ndarray, amps: np.ndarray, taus: np.ndarray, n: int, sr: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    to_radians = np.float32(2 * np.pi / _CYCLE)
    out = np.zeros(n, np.float32)
    for f, a, tau in zip(freqs, amps, taus, strict=True):
        span = min(n, int(np.ceil(tau * _DECAY_SPAN * sr)))  # skip the part 60 dB down
        decay = np.exp(t[:span] * np.float32(-1.0 / tau))
        out[:span] += np.float32(a) * decay * np.sin(_phase(f, span, sr).astype(np.float32) * to_radians)
    return out


def _apply_envelope(x: np.ndarray, voice: Voice, gate: int, sr: int) -> np.ndarray:
    # Raised-cosine attack (no click) and an exponential fall after the key is released.
    n_attack = min(x.size, max(1, int(voice.attack_s * sr)))
    x[:n_attack] *= (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_attack, endpoint=False))).astype(np.float32)
    if gate < x.size:
        after = np.arange(x.size - gate, dtype=np.float32) / np.float32(sr)
        x[gate:] *= np.exp(after * np.float32(-_DECAY_SPAN / voice.release_s))
    return x


# --- drum kit and beat patterns --------------------------------------------------------------------------

DRUMS = ("kick", "snare", "hat", "click", "click_accent")


def render_drum(kind: str, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One drum hit (float64), synthesised from noise and swept sines."""
    lengths = {"kick": 0.35, "snare": 0.25, "hat": 0.08, "click": 0.03, "click_accent": 0.03}
    t = np.arange(int(lengths[kind] * sample_rate)) / sample_rate
    if kind == "kick":
        freq = 50.0 + 110.0 * np.exp(-t / 0.04)  # pitch drops as the skin relaxes
        body = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.exp(-t / 0.12)
        return body + 0.3 * rng.standard_normal(t.size) * np.exp(-t / 0.003)
    if kind == "snare":
        tone = (np.sin(2 * np.pi * 185 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)) * np.exp(-t / 0.05)
        rattle = np.diff(rng.standard_normal(t.size + 1)) * np.exp(-t / 0.07)  # first difference: high-pass
        return 0.5 * tone + 0.5 * rattle
    if kind == "hat":
        return 0.25 * np.diff(rng.standard_normal(t.size + 2), n=2) * np.exp(-t / 0.015)
    freq, level = (2000.0, 1.0) if kind == "click_accent" else (1000.0, 0.6)
    return level * np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.006)


@dataclass(frozen=True)
class BeatPattern:
    """A bar: `beats` beats of `steps_per_beat` steps; `hits[step]` lists (drum, velocity)."""

    beats: int
    steps_per_beat: int
    hits: dict[int, tuple[tuple[str, float], ...]]


_K, _S, _H = ("kick", 1.0), ("snare", 0.9), ("hat", 0.5)
BEAT_PATTERNS: dict[str, BeatPattern] = {
    "click": BeatPattern(4, 1, {0: (("click_accent", 1.0),), 1: (("click", 1.0),), 2: (("click", 1.0),),
                                3: (("click", 1.0),)}),
    "waltz": BeatPattern(3, 1, {0: (("click_accent", 1.0),), 1: (("click", 1.0),), 2: (("click", 1.0),)}),
    "rock": BeatPattern(4, 2, {0: (_K, _H), 1: (_H,), 2: (_S, _H), 3: (_H,), 4: (_K, _H), 5: (_H,),
                               6: (_S, _H), 7: (_H,)}),
}


def render_pattern(name: str, bpm: float, n_samples: int, sample_rate: int, onset_s: float,
                   rng: np.random.Generator) -> np.ndarray:
    """`n_samples` of beat pattern `name` at `bpm`, first downbeat at `onset_s` (float64)."""
    pattern = BEAT_PATTERNS[name]
    step_s = 60.0 / bpm / pattern.steps_per_beat
    sounds = {d: render_drum(d, sample_rate, rng) for d in DRUMS}  # one hit per drum keeps clips cheap
    out = np.zeros(n_samples)
    n_steps = int(np.floor((n_samples / sample_rate - onset_s) / step_s)) + 1
    for step in range(max(0, n_steps)):
        # Round each onset from its exact time (not by accumulating steps), so the tempo never drifts.
        start = int(round((onset_s + step * step_s) * sample_rate))
        for drum, velocity in pattern.hits.get(step % (pattern.beats * pattern.steps_per_beat), ()):
            hit = sounds[drum][: n_samples - start]
            out[start:start + hit.size] += velocity * hit
    return out
