"""Scoring steered clips by their pitch: a pitch tracker's median f0, and its shift in cents from the unsteered
clip of the same prompt or item and seed (the sweep's `score_f0`)."""

from __future__ import annotations

import math

import numpy as np

CONFIDENT = 0.5  # frames the tracker is at least this confident about carry the median


def cents(f0: float, reference: float) -> float:
    """1200 * log2(f0 / reference); NaN when either is not a positive frequency."""
    if not (f0 > 0 and reference > 0):  # NaN compares False
        return float("nan")
    return 1200.0 * math.log2(f0 / reference)


class PitchScorer:
    """A pitch-tracking model (a family whose outputs read as f0_hz and confidence), loaded once."""

    def __init__(self, model: str = "crepe-tiny", device: str = "auto"):
        from ..errors import UsageError
        from ..models import load_adapter

        self.model = model
        self.adapter = load_adapter(model, device=device)
        self.adapter.require("outputs", "scoring pitch (score_f0)")
        probe = self.adapter.read_outputs(self.adapter.outputs(np.zeros(self.adapter.sample_rate, np.float32)))
        if "f0_hz" not in probe:
            raise UsageError(f"model '{model}' does not read its outputs as pitch (it gives "
                             f"{', '.join(probe) or 'nothing'})", "set f0_model to crepe-tiny or crepe-full")

    def frames(self, audio: np.ndarray, sample_rate: int, skip_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(f0 in Hz (T,), confidence (T,)) of the tracker's frames of the mono mix of `audio` ((channels,
        samples) or (samples,)) after its first `skip_s` seconds; empty arrays for no audio."""
        from ..audio.io import resample

        x = np.asarray(audio, dtype=np.float32)
        x = x.mean(axis=0) if x.ndim > 1 else x
        x = x[int(round(skip_s * sample_rate)):]
        if sample_rate != self.adapter.sample_rate:
            x = resample(x, sample_rate, self.adapter.sample_rate)
        if x.size == 0:
            return np.zeros(0), np.zeros(0)
        read = self.adapter.read_outputs(self.adapter.outputs(x))
        return np.asarray(read["f0_hz"], np.float64), np.asarray(read["confidence"], np.float64)

    def median_f0(self, audio: np.ndarray, sample_rate: int, skip_s: float = 0.0) -> float:
        """The median f0 (Hz) of the frames the tracker is confident about (all frames when none is), of the mono
        mix of `audio` ((channels, samples) or (samples,)) after its first `skip_s` seconds; NaN for no frames."""
        return median_f0(*self.frames(audio, sample_rate, skip_s))

    def record(self) -> dict:
        return {"model": self.model, "fingerprint": getattr(self.adapter, "fingerprint", None),
                "confident": CONFIDENT, "f0": "median over frames with confidence >= confident (else all frames)",
                "cents": "1200 log2(f0 / f0 of the unsteered clip of the same prompt or item and seed)"}


def median_f0(f0: np.ndarray, confidence: np.ndarray) -> float:
    """The median f0 of the frames with confidence >= CONFIDENT (all frames when none is); NaN for no frames."""
    sure = f0[confidence >= CONFIDENT]
    chosen = sure if sure.size else f0
    return float(np.median(chosen)) if chosen.size else float("nan")


def _f0_stat(rows: list[dict]) -> dict:
    c = np.asarray([r["f0_cents"] for r in rows], dtype=np.float64)
    c = c[np.isfinite(c)]
    if not c.size:
        return {"cents_mean": None, "cents_std": None, "n": 0}
    return {"cents_mean": float(c.mean()), "cents_std": float(c.std()), "n": int(c.size)}


def summarize_f0(rows: list[dict], strengths: list[float]) -> tuple[list[dict], str]:
    """Per non-zero strength, the mean f0 shift in cents of the direction and of the random controls, and the line
    'f0 shift (cents) at 2: +310 (random +4) | 4: ...'."""
    stats, parts = [], []
    for s in sorted({float(x) for x in strengths if x != 0}):
        d = _f0_stat([r for r in rows if r["control"] == "direction" and r["strength"] == s])
        r_ = _f0_stat([r for r in rows if r["control"] == "random" and r["strength"] == s])
        stats.append({"strength": s, "direction": d, "random": r_})
        shown = f"{d['cents_mean']:+.0f}" if d["n"] else "n/a"
        random = f" (random {r_['cents_mean']:+.0f})" if r_["n"] else ""
        parts.append(f"{s:g}: {shown}{random}")
    return stats, "f0 shift (cents) at " + " | ".join(parts) if parts else ""
