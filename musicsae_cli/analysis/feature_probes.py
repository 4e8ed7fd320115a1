"""Probe directions nearest to SAE latents, for the feature dashboard's `--probe` option.

A trained probe set (`musicsae probe train`) holds, per hookpoint, one direction per class (classification) or
one direction (regression). Each selected latent's decoder row is compared with every probe direction at the
SAE's hookpoint by cosine similarity; probe sets with no direction there, or of another width, are skipped with a
note. Probe sets must come from the store's model unless other models are allowed.
"""

from __future__ import annotations

import numpy as np


def load_probes(paths: list[str], model: dict, allow_other_model: bool) -> list[dict]:
    """Probe sets to compare latents with; each must come from the store's model (unless allowed)."""
    from ..models.identity import check_same_model
    from ..probes.model import ProbeSet

    sets = [{"path": str(p), "set": ProbeSet.load(p)} for p in paths]
    for p in sets:
        check_same_model(f"the probes {p['path']}", p["set"].model, model, allow_other_model,
                         against="the store's model")
    return sets


def probe_neighbours(decoder: np.ndarray | None, hookpoint: str, latents: list[int],
                     probes: list[dict]) -> tuple[dict[int, list[dict]], list[str]]:
    """Per latent, every probe direction at `hookpoint` by cosine with its decoder row (largest first)."""
    if not probes:
        return {}, []
    notes, dirs = [], []
    for p in probes:
        ps = p["set"]
        if hookpoint not in ps.hookpoints:
            notes.append(f"probes {p['path']} ({ps.label}) have no direction at {hookpoint} "
                         f"(probed: {', '.join(ps.hookpoints)}); skipped")
            continue
        if ps.widths[hookpoint] != decoder.shape[1]:
            notes.append(f"probes {p['path']} ({ps.label}) expect width {ps.widths[hookpoint]} at {hookpoint}, "
                         f"the SAE decodes to {decoder.shape[1]}; skipped")
            continue
        classes = ps.classes if ps.task == "classification" else [None]
        for cls in classes:
            dirs.append(({"probe": p["path"], "label": ps.label, "class": cls}, ps.direction(hookpoint, cls)))
    if not dirs:
        return {}, notes
    mat = np.stack([d for _, d in dirs]).astype(np.float64)  # (P, d_in)
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    rows = decoder[np.asarray(latents)].astype(np.float64)  # (m, d_in)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    cos = rows @ mat.T  # (m, P)
    out = {}
    for i, latent in enumerate(latents):
        order = np.argsort(-cos[i], kind="stable")
        out[latent] = [{**dirs[p][0], "cosine": float(cos[i, p])} for p in order]
    return out, notes
