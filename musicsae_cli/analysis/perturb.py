"""Perturbations of whole excerpts behind one interface: name -> fn(audio, sr, setting, rng) -> audio.

Every perturbation acts on seconds of audio (never on 10 ms chunks). `pitch` and `gain`/`noise`/`identity` keep
the length (frame-aligned comparison); `tempo` changes it (pooled comparison).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ConfigError

Perturbation = Callable[[np.ndarray, int, float, np.random.Generator], np.ndarray]


def _identity(x: np.ndarray, sr: int, setting: float, rng: np.random.Generator) -> np.ndarray:
    return x.copy()


def _pitch(x: np.ndarray, sr: int, semitones: float, rng: np.random.Generator) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(x, sr=sr, n_steps=float(semitones)).astype(np.float32)


def _tempo(x: np.ndarray, sr: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    import librosa

    return librosa.effects.time_stretch(x, rate=float(rate)).astype(np.float32)


def _gain(x: np.ndarray, sr: int, db: float, rng: np.random.Generator) -> np.ndarray:
    return (x * 10.0 ** (float(db) / 20.0)).astype(np.float32)


def _noise(x: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(x.astype(np.float64) ** 2)) or 1e-12
    sigma = np.sqrt(power / 10.0 ** (float(snr_db) / 10.0))
    return (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)


def _positive(name: str, values: list[float]) -> None:
    bad = [v for v in values if not v > 0]
    if bad:
        raise ConfigError(f"{name} settings must be > 0, got {bad}", "tempo rates are stretch factors, e.g. 0.8, 1.25")


# name -> (function, what a setting means, validator of the settings)
REGISTRY: dict[str, tuple[Perturbation, str, Callable[[str, list[float]], None] | None]] = {
    "identity": (_identity, "ignored (control)", None),
    "pitch": (_pitch, "semitones", None),
    "tempo": (_tempo, "rate", _positive),
    "gain": (_gain, "dB", None),
    "noise": (_noise, "SNR dB", None),
}


def check_perturbations(spec: dict[str, list[float]]) -> None:
    """ConfigError for an unknown name, an empty settings list or an invalid setting (e.g. tempo rate <= 0)."""
    if not spec:
        raise ConfigError("no perturbations configured", f"e.g. --set 'perturbations={{pitch: [2]}}'; "
                                                          f"available: {', '.join(REGISTRY)}")
    for name, values in spec.items():
        if name not in REGISTRY:
            raise ConfigError(f"unknown perturbation '{name}'", f"available: {', '.join(REGISTRY)}")
        if not values:
            raise ConfigError(f"perturbation '{name}' has no settings", "give a list, e.g. [1, 2]")
        check = REGISTRY[name][2]
        if check is not None:
            check(name, values)


def perturb(name: str, audio: np.ndarray, sr: int, setting: float, rng: np.random.Generator) -> np.ndarray:
    """Apply perturbation `name` with `setting` to mono float32 audio at `sr`."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown perturbation '{name}'", f"available: {', '.join(REGISTRY)}")
    return REGISTRY[name][0](np.asarray(audio, dtype=np.float32), sr, setting, rng)


def unit(name: str) -> str:
    """What a setting of `name` means (for labels)."""
    return REGISTRY[name][1]
