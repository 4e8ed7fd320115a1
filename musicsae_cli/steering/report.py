"""Scoring generated clips with a probe, and the sweep's CSV, dose-response plot and summary line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

POOLS = ("mean", "max", "last")


def score_clips(adapter, probe, hookpoint: str, res, rescore_from: str = "audio") -> np.ndarray:
    """(B, C) class probabilities of each generated clip, re-extracted without conditioning and pooled like the
    probe (frame probes: frame probabilities averaged); the frames of an audio prompt are left out."""
    import torch

    if rescore_from == "audio":  # what extraction does: decoded audio -> EnCodec -> teacher forcing
        acts = adapter.audio_activations([a.mean(axis=0) for a in res.audio], [hookpoint])
    else:
        acts = adapter.code_activations([torch.from_numpy(c) for c in res.codes], [hookpoint])
    out = []
    for item in acts:
        x = item[hookpoint][res.prompt_frames:].float().cpu().numpy()  # (T, d), generated frames only
        if x.shape[0] == 0:
            raise InputError("no generated frames to score", "generate more than the audio prompt")
        if probe.pooling in POOLS:
            pooled = {"mean": x.mean(0), "max": x.max(0), "last": x[-1]}[probe.pooling]
            out.append(probe.predict_proba(hookpoint, pooled[None])[0])
        else:
            out.append(probe.predict_proba(hookpoint, x).mean(0))
    return np.stack(out)  # (B, C)




def _stat(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None, "n": int(v.size)}


def summarize(rows: list[dict], strengths: list[float]) -> tuple[list[dict], str]:
    """Per strength: the target probability of the direction and of the random controls (mean, std, n); the line
    'strength 0: 0.24 | 2: 0.51 (random 0.25) | ...'."""
    base = _stat([r["target_prob"] for r in rows if r["control"] == "none"])
    stats = [{"strength": 0.0, "direction": base, "random": base}]
    parts = [f"strength 0: {base['mean']:.2f}"]
    for s in sorted({float(x) for x in strengths if x != 0}):
        d = _stat([r["target_prob"] for r in rows if r["control"] == "direction" and r["strength"] == s])
        r_ = _stat([r["target_prob"] for r in rows if r["control"] == "random" and r["strength"] == s])
        stats.append({"strength": s, "direction": d, "random": r_})
        parts.append(f"{s:g}: {d['mean']:.2f}" + (f" (random {r_['mean']:.2f})" if r_["n"] else ""))
    return stats, " | ".join(parts)


def plot_dose_response(path: Path, stats: list[dict], title: str, chance: float | None = None) -> None:
    """Target probability vs strength: the direction, and the random controls' mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [s["strength"] for s in stats]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, style, label in (("direction", "o-", "direction"), ("random", "s--", "random directions")):
        pts = [(x, s[key]) for x, s in zip(xs, stats, strict=True) if s[key]["n"]]
        if len(pts) < 2 and key == "random":
            continue
        mean = np.array([p["mean"] for _, p in pts])
        std = np.array([p["std"] for _, p in pts])
        x = np.array([x for x, _ in pts])
        ax.plot(x, mean, style, label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("steering strength")
    ax.set_ylabel("target probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
