"""What a model is, independent of how its path was spelled: a canonical id and a fingerprint of its weights.

Artefacts record the model they were made with (`describe()` of the adapter). Two records name the same model
when their fingerprints are equal, whatever the ids say (`--model tiny` and `--model ../tiny` are one model; a
moved or copied checkpoint too); records from before fingerprints fall back to comparing ids. The fingerprint is
taken from the weights as loaded in fp32, before the precision cast, so a bf16 run of a checkpoint is still that
checkpoint. A deliberate mismatch (the same network saved twice with different weights, say) is accepted with
`--allow-other-model` (config key `allow_other_model`) wherever musicsae checks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import InputError

ALLOW_FLAG = "--allow-other-model"
_SAMPLES = 1024  # values per tensor in the fingerprint: spread over the whole tensor


def canonical_id(name: str) -> str:
    """A local checkpoint folder by its resolved absolute path; hub ids and built-in names as they are."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def weights_fingerprint(module) -> str:
    """A short hash of every tensor's name, shape and a strided sample of its values (as float32)."""
    import numpy as np
    import torch

    digest = hashlib.blake2b(digest_size=12)
    digest.update(type(module).__name__.encode())
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            if flat.numel() == 0 or not (flat.is_floating_point() or flat.dtype in (torch.int32, torch.int64)):
                continue
            index = torch.from_numpy(np.linspace(0, flat.numel() - 1, min(flat.numel(), _SAMPLES)).astype(np.int64))
            digest.update(flat[index.to(flat.device)].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def same_model(recorded: dict | None, ours: dict) -> bool | None:
    """True/False when `recorded` (an artefact's model record) is/is not the model `ours`; None if unknowable."""
    recorded = recorded or {}
    if recorded.get("fingerprint") and ours.get("fingerprint"):
        return recorded["fingerprint"] == ours["fingerprint"]
    rid, oid = recorded.get("id"), ours.get("id")
    if not rid or not oid:
        return None  # a record without an id (hand-made stores, old artefacts) says nothing
    return canonical_id(str(rid)) == canonical_id(str(oid))


def check_same_model(what: str, recorded: dict | None, ours: dict, allow_other: bool, against: str = "the loaded "
                     "model") -> None:
    """InputError when `what` (a probe, SAE or store) was made with another model than `ours`.

    Widths and layer counts must always match; identity is checked unless `allow_other`.
    """
    recorded = recorded or {}
    for key, noun in (("hidden_size", "width"), ("n_layers", "layer count")):
        theirs, mine = recorded.get(key), ours.get(key)
        if theirs is not None and mine is not None and int(theirs) != int(mine):
            raise InputError(f"{what} was made on a model with {noun} {theirs}, {against} has {mine}",
                             f"use the model {what} was made with ({recorded.get('id')})")
    if allow_other or same_model(recorded, ours) is not False:
        return
    how = "other weights" if recorded.get("fingerprint") and ours.get("fingerprint") else "another id"
    raise InputError(f"{what} was made with model '{recorded.get('id')}', not {against} '{ours.get('id')}' "
                     f"({how})", f"use that model, or pass {ALLOW_FLAG} if the difference is deliberate")
