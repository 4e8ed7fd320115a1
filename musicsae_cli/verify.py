"""`musicsae info --verify`: read every file of an artefact instead of trusting its manifest."""

from __future__ import annotations

from pathlib import Path

from .errors import MusicSAEError


def verify(path: str | Path) -> dict:
    """{"checked": what was read, "problems": one line per broken or missing file}; empty problems = intact."""
    path = Path(path)
    if (path / "cfg.json").is_file():
        return {"checked": "SAE weights and config", "problems": _sae_problems(path)}
    from .artifacts import read_manifest

    try:
        manifest = read_manifest(path)
    except MusicSAEError as exc:
        return {"checked": "manifest", "problems": [exc.message]}
    kind = manifest.get("kind")
    if kind == "activation_store":
        from .store import ActivationStore
        from .store.verify import problems

        try:
            store = ActivationStore.open(path, allow_incomplete=True)
        except MusicSAEError as exc:
            return {"checked": "store manifest and shard indexes", "problems": [exc.message]}
        return {"checked": f"{store.n_shards} shards: indexes, metadata, every activation value",
                "problems": problems(store, deep=True)}
    if kind == "sae_run":
        found = []
        for member in manifest.get("members", []):
            found += _sae_problems(path / member)
        if manifest.get("status") != "complete":
            found.append(f"the run is not finished (status {manifest.get('status')!r})")
        return {"checked": f"{len(manifest.get('members', []))} SAE(s) of the run", "problems": found}
    files = [f for f in manifest.get("files", []) if isinstance(f, str)]
    missing = [f"{path / f}: missing" for f in files if not (path / f).exists()]
    return {"checked": "manifest" + (f" and the {len(files)} files it lists" if files else ""), "problems": missing}


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
