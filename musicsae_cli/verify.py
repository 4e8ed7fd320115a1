"""`musicsae info --verify`: read every file of an artefact instead of trusting its manifest."""

from __future__ import annotations

from pathlib import Path

from . import kinds
from .errors import MusicSAEError


def verify(path: str | Path) -> dict:
    """{"checked": what was read, "problems": one line per broken or missing file}; empty problems = intact."""
    path = Path(path)
    if (path / kinds.SAE_CONFIG).is_file():  # an SAE, a run of one SAE or a plain SAELens folder: its weights
        return _sae_report(path)
    from .artifacts import read_manifest

    try:
        manifest = read_manifest(path)
    except MusicSAEError as exc:
        return {"checked": "manifest", "problems": [exc.message]}
    return kinds.verify(path, manifest)


# ---- one function per kind of artefact, named in the kinds registry (musicsae_cli.kinds) --------------------------
def verify_files(path: Path, manifest: dict) -> dict:
    """Any artefact: the files its manifest lists are all there."""
    files = [f for f in manifest.get("files", []) if isinstance(f, str)]
    missing = [f"{path / f}: missing" for f in files if not (path / f).exists()]
    return {"checked": "manifest" + (f" and the {len(files)} files it lists" if files else ""), "problems": missing}


def verify_sae(path: Path, manifest: dict) -> dict:
    """An SAE: its config and weights load, with the right shapes and finite values (without its cfg.json: the
    files its manifest lists)."""
    return _sae_report(path) if (path / kinds.SAE_CONFIG).is_file() else verify_files(path, manifest)


def verify_run(path: Path, manifest: dict) -> dict:
    """An SAE training run: every member SAE, and that the run finished."""
    found = []
    for member in manifest.get("members", []):
        found += _sae_problems(path / member)
    if manifest.get("status") != "complete":
        found.append(f"the run is not finished (status {manifest.get('status')!r})")
    return {"checked": f"{len(manifest.get('members', []))} SAE(s) of the run", "problems": found}


def _sae_report(folder: Path) -> dict:
    return {"checked": "SAE weights and config", "problems": _sae_problems(folder)}


def _sae_problems(folder: Path) -> list[str]:
    """Problems of one SAE folder: unreadable config or weights, wrong shapes, non-finite values."""
    import torch

    from .sae.io import load_sae

    try:
        sae, _ = load_sae(folder)
    except MusicSAEError as exc:
        return [exc.message]
    bad = [f"{folder}: {name} holds {int((~torch.isfinite(t)).sum())} non-finite values"
           for name, t in sae.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    return bad
