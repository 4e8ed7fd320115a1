"""Scoring generated clips with a probe, and the sweep's CSV, dose-response plot, summary line and saturation check.

A probe scoring clips far outside its training distribution gives probabilities pinned at 0 or 1 (the tiny demo
model's generated codes read by a probe trained on real audio score ~1e-55 at every strength). Probabilities are
therefore kept as log-probabilities until the end, every clip also gets the target's log-odds (logit) and the RMS
of the probe's standardised input (about 1 on the probe's training data), and `saturation` says when the
probabilities carry no dose-response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

POOLS = ("mean", "max", "last")
PINNED = 1e-6  # a probability within this of 0 or 1 is pinned: |log-odds| > log((1 - 1e-6) / 1e-6) = 13.8
PINNED_LOGIT = math.log((1 - PINNED) / PINNED)
SATURATED_SHARE = 0.9  # pinned for at least this share of the clips ...
FAR_RMS = 10.0  # standardised inputs with RMS above this (variance 100x the training data's) are far outside it


@dataclass
class ClipScores:
    """A batch of scored clips."""

    log_probs: np.ndarray  # (B, C) float64 log class probabilities (frame probes: log of the frame mean)
    input_rms: np.ndarray  # (B,) RMS of the probe's standardised inputs (x - mean) / std; ~1 on its training data

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)  # (B, C)

    def log_odds(self, c: int) -> np.ndarray:
        """(B,) log(p_c / (1 - p_c)), exact where p_c rounds to 0 or 1."""
        others = np.delete(self.log_probs, c, axis=1)  # (B, C-1)
        return self.log_probs[:, c] - np.logaddexp.reduce(others, axis=1)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)  # (n, C)
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)


def score_clips(adapter, probe, hookpoint: str, res, rescore_from: str = "audio") -> ClipScores:
    """Class log-probabilities of each generated clip, re-extracted without conditioning and pooled like the
    probe (frame probes: frame probabilities averaged); the frames of an audio prompt are left out."""
    return score_acts(probe, hookpoint, reextract(adapter, [hookpoint], res, rescore_from), res.prompt_frames)


def reextract(adapter, hookpoints: list[str], res, rescore_from: str = "audio") -> list[dict]:
    """Per generated clip, hookpoint -> (T, d) activations, re-extracted without conditioning from its audio (as
    extraction does) or its tokens, in one pass for all `hookpoints`."""
    if rescore_from == "audio" and (res.audio is None or not adapter.can("audio")):
        rescore_from = "codes"  # a model without a codec, or one that reads its codes only: its codes are what it made
    if rescore_from == "audio":  # what extraction does: the generated audio read back by the model
        return adapter.audio_activations([a.mean(axis=0) for a in res.audio], hookpoints)
    adapter.require("tokens", "rescoring from the generated tokens (rescore_from: codes)")
    lengths = res.lengths or [None] * len(res.tokens)  # rows that end apart: their padding is not read
    return adapter.token_activations([t if n is None else t[:n] for t, n in zip(res.tokens, lengths, strict=True)],
                                     hookpoints)


def score_acts(probe, hookpoint: str, acts: list[dict], prompt_frames: int = 0) -> ClipScores:
    """Class log-probabilities of re-extracted clips (`reextract`) by `probe` at `hookpoint`, pooled like the probe;
    the first `prompt_frames` frames (an audio prompt) are left out."""
    h = probe.index(hookpoint)
    log_probs, rms = [], []
    for item in acts:
        x = item[hookpoint][prompt_frames:].float().cpu().numpy()  # (T, d), generated frames only
        if x.shape[0] == 0:
            raise InputError("no generated frames to score", "generate more than the audio prompt")
        if probe.pooling in POOLS:
            x = {"mean": x.mean(0), "max": x.max(0), "last": x[-1]}[probe.pooling][None]  # (1, d)
        frame_lp = _log_softmax(probe.logits(hookpoint, x))  # (T or 1, C)
        log_probs.append(np.logaddexp.reduce(frame_lp, axis=0) - math.log(len(frame_lp)))  # log mean_t p_t
        d = x.shape[1]
        z = (x.astype(np.float64) - probe.mean[h, :d]) / probe.std[h, :d]  # (T or 1, d), as the probe standardises
        rms.append(float(np.sqrt(np.mean(z ** 2))))
    return ClipScores(np.stack(log_probs), np.asarray(rms))  # (B, C), (B,)


def format_prob(p: float | None, complement: float | None = None) -> str:
    """A probability that never prints as a flat 0.00 or 1.00: 0.37, 3.2e-55, 1-4.1e-07 (`complement` = 1 - p,
    computed without rounding p to 1 first)."""
    if p is None:
        return "n/a"
    if 0.01 <= p <= 0.99:
        return f"{p:.2f}"
    if p < 0.01:
        return f"{p:.2g}" if p > 0 else "<1e-308"
    q = 1 - p if complement is None else complement
    return f"1-{q:.2g}" if q > 0 else "1-<1e-308"


def _stat(rows: list[dict]) -> dict:
    p = np.asarray([r["target_prob"] for r in rows], dtype=np.float64)
    z = np.asarray([r["target_logit"] for r in rows], dtype=np.float64)
    if not p.size:
        return {"mean": None, "std": None, "n": 0, "logit_mean": None, "logit_std": None, "complement_mean": None}
    return {"mean": float(p.mean()), "std": float(p.std()), "n": int(p.size), "logit_mean": float(z.mean()),
            "logit_std": float(z.std()),
            "complement_mean": float(np.exp(-np.logaddexp(0.0, z)).mean())}  # mean of 1 - p = sigmoid(-logit)


def summarize(rows: list[dict], strengths: list[float]) -> tuple[list[dict], str]:
    """Per strength: the target probability and log-odds of the direction and of the random controls (mean, std,
    n); the line 'strength 0: 0.24 (logit -1.15) | 2: 0.51 (logit 0.04; random 0.25, logit -1.10) | ...'."""
    base = _stat([r for r in rows if r["control"] == "none"])
    stats = [{"strength": 0.0, "direction": base, "random": base}]
    parts = [f"strength 0: {_prob(base)} ({_logit(base)})"]
    for s in sorted({float(x) for x in strengths if x != 0}):
        d = _stat([r for r in rows if r["control"] == "direction" and r["strength"] == s])
        r_ = _stat([r for r in rows if r["control"] == "random" and r["strength"] == s])
        stats.append({"strength": s, "direction": d, "random": r_})
        random = f"; random {_prob(r_)}, {_logit(r_)}" if r_["n"] else ""
        parts.append(f"{s:g}: {_prob(d)} ({_logit(d)}{random})")
    return stats, " | ".join(parts)


def _prob(stat: dict) -> str:
    return format_prob(stat["mean"], stat["complement_mean"])


def _logit(stat: dict) -> str:
    return f"logit {stat['logit_mean']:.2f}" if stat["logit_mean"] is not None else "logit n/a"


def saturation(rows: list[dict], target: str) -> dict:
    """Whether the probe's target probability is pinned near 0 or 1 (within PINNED) for at least SATURATED_SHARE
    of the clips at strength 0 and at most strengths, so the probabilities show no dose-response."""
    counts = {}  # strength -> (pinned clips, clips)
    for r in rows:
        pinned, n = counts.get(float(r["strength"]), (0, 0))
        counts[float(r["strength"])] = (pinned + int(abs(r["target_logit"]) > PINNED_LOGIT), n + 1)
    share = {s: pinned / n for s, (pinned, n) in sorted(counts.items())}
    flat = [s for s, v in share.items() if v >= SATURATED_SHARE]
    rms = float(np.median([r["input_rms"] for r in rows])) if rows else None
    saturated = share.get(0.0, 0.0) >= SATURATED_SHARE and 2 * len(flat) > len(share)
    reason = None
    if saturated:
        pinned0, n0 = counts[0.0]
        reason = (f"P({target}) is within {PINNED:g} of 0 or 1 for {pinned0}/{n0} clips at strength 0 and for "
                  f">= {SATURATED_SHARE:.0%} of the clips at {len(flat)}/{len(share)} strengths; the probe's "
                  f"standardised inputs have median RMS {rms:.3g} (about 1 on its training data)"
                  + (", far outside its training distribution" if rms > FAR_RMS else ""))
    return {"saturated": saturated, "reason": reason, "pinned_share": {f"{s:g}": v for s, v in share.items()},
            "input_rms_median": rms}


def plot_dose_response(path: Path, stats: list[dict], title: str, chance: float | None = None,
                       logit: bool = False, run: str | None = None, n: str | None = None) -> None:
    """Target probability (on a fixed 0-1 axis) or, with `logit`, its log-odds vs strength: the direction, and
    the random controls' mean ± std; `run` (default: the output folder's name) and `n` go into the title."""
    from ..plotting import figure, output_name, style_axis
    from ..plotting import title as make_title

    xs = [s["strength"] for s in stats]
    if n is None and stats:
        n = f"n={stats[0]['direction']['n']} clips per strength"
    with figure(path, panel=(6.0, 3.8), title=make_title(title, run=run or output_name(Path(path).parent),
                                                          n=n)) as (_, (ax,)):
        for key, style, label in (("direction", "o-", "direction"), ("random", "s--", "random directions")):
            pts = [(x, s[key]) for x, s in zip(xs, stats, strict=True) if s[key]["n"]]
            if len(pts) < 2 and key == "random":
                continue
            mean = np.array([p["logit_mean" if logit else "mean"] for _, p in pts], dtype=np.float64)
            std = np.array([p["logit_std" if logit else "std"] for _, p in pts], dtype=np.float64)
            x = np.array([x for x, _ in pts])
            line, = ax.plot(x, mean, style, label=label, clip_on=False)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, label="_± std")
        if chance is not None:
            ax.axhline(math.log(chance / (1 - chance)) if logit else chance, color="grey", lw=0.8, ls=":",
                       label="chance")
        if logit:  # saturated probabilities would draw a flat line at 0 or 1
            ax.set_title("probabilities saturated near 0 or 1: log-odds shown")
            style_axis(ax, xlabel="steering strength", ylabel="target log-odds ln(p/(1-p))")
        else:
            style_axis(ax, xlabel="steering strength", ylabel="target probability", bounded=(0.0, 1.0))
