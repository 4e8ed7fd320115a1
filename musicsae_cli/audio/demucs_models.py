"""Demucs models for `data split`: by name from the hub's safetensors copies, or from a local model repository.

A local repository has Demucs's own layout: single models `<signature>[-<sha256 prefix>].th` (or
`<signature>.safetensors`), bags of models `<name>.yaml` listing signatures. Every file is read weights-only:
.th packages through torch.load(weights_only=True) with only the Demucs model classes and Fraction allowed,
.safetensors after checking the class their metadata names. No pickled code ever runs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import InputError, MusicSAEError
from .io import short_error


def known_remote_models() -> list[str]:
    """Names of the bags Demucs knows how to fetch (its bundled remote list)."""
    from demucs.pretrained import REMOTE_ROOT

    return sorted(p.stem for p in Path(REMOTE_ROOT).glob("*.yaml"))


def local_models(repo: Path) -> list[str]:
    """The single models (signatures) and bags a local model repository holds."""
    from demucs.repo import AnyModelRepo, BagOnlyRepo, ModelLoadingError

    try:
        models = _safe_local_repo(repo)
        return sorted(AnyModelRepo(models, BagOnlyRepo(repo, models)).list_model())
    except ModelLoadingError as exc:
        raise InputError(f"model repository {repo}: {exc}", "keep one file per model signature") from exc


def _model_classes() -> list:
    """The Demucs model classes a model file may name (nothing else is ever constructed or unpickled)."""
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    return [Demucs, HDemucs, HTDemucs]


def _safe_local_repo(root: Path):
    """Demucs's local repository (`<sig>[-<sha>].th` models, `<name>.yaml` bags, also `<sig>.safetensors` as on
    the hub), loading every file without running pickled code: .th packages through torch.load(weights_only=True)
    with only the Demucs model classes and Fraction allowed, .safetensors after checking the class they name."""
    from demucs.repo import LocalRepo, ModelLoadingError, check_checksum
    from demucs.states import load_model

    class SafeLocalRepo(LocalRepo):
        def scan(self) -> None:
            super().scan()
            for file in self.root.iterdir():
                if file.suffix == ".safetensors":
                    if file.stem in self._models:
                        raise ModelLoadingError(f"Duplicate pre-trained model exist for signature {file.stem}. "
                                                "Please delete all but one.")
                    self._models[file.stem] = file

        def get_model(self, sig: str):
            file = self._models.get(sig)
            if file is None:
                raise ModelLoadingError(f"Could not find pre-trained model with signature {sig}.")
            if file.suffix == ".safetensors":
                return _load_safetensors(file)
            if sig in self._checksums:
                check_checksum(file, self._checksums[sig])
            return load_model(_weights_only_package(file))

    return SafeLocalRepo(root)


def _weights_only_package(path: Path) -> dict:
    """A Demucs .th package ({"klass", "args", "kwargs", "state"}) read with torch.load(weights_only=True)."""
    import fractions
    import pickle

    import torch

    allowed = [*_model_classes(), fractions.Fraction]
    try:
        with torch.serialization.safe_globals(allowed):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), short_error(exc))
        raise InputError(f"{path.name} holds more than model weights ({detail})",
                         "musicsae reads Demucs files weights-only; quantized (diffq) models are unsupported") from exc
    if not isinstance(package, dict) or package.get("klass") not in _model_classes():
        raise InputError(f"{path.name} is not a Demucs model package", "expected {klass, args, kwargs, state}")
    return package


def _load_safetensors(path: Path):
    """A model from a hub-layout .safetensors file, after checking the class its metadata names."""
    from demucs.hf import load_safetensors_model
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        klass = (fh.metadata() or {}).get("klass", "")
    allowed = {f"{c.__module__}.{c.__name__}" for c in _model_classes()}
    if klass not in allowed:
        raise InputError(f"{path.name} names model class {klass!r}", f"supported: {', '.join(sorted(allowed))}")
    return load_safetensors_model(path)


def load_separation_model(name: str, repo: str | os.PathLike | None = None):
    """A Demucs model or bag of models in eval mode: from a local repository, or from the hub's safetensors.

    Nothing is unpickled beyond weights: local .th files are read weights-only, and hub models come from the
    safetensors copies Demucs publishes (its legacy pickled downloads are not used).
    """
    from demucs.repo import AnyModelRepo, BagOnlyRepo, ModelLoadingError

    if repo is not None:
        repo = Path(repo).expanduser()
        if not repo.is_dir():
            raise InputError(f"model repository not found: {repo}", "pass the folder holding the .th/.yaml files")
        available = local_models(repo)
        if name not in available:
            raise InputError(f"no model '{name}' in {repo}",
                             f"available: {', '.join(available)}" if available else
                             "the folder holds no .th models or .yaml bags (see `musicsae model save-tiny-demucs`)")
    elif name.removeprefix("hf://").split("/")[-1] not in known_remote_models():
        raise InputError(f"unknown Demucs model '{name}'",
                         f"known models: {', '.join(known_remote_models())}; or pass --repo DIR for a local "
                         "model repository")
    try:
        if repo is not None:
            models = _safe_local_repo(repo)
            model = AnyModelRepo(models, BagOnlyRepo(repo, models)).get_model(name)
        else:
            from demucs.hf import get_hf_model

            model = get_hf_model(name.removeprefix("hf://"))
    except ModelLoadingError as exc:
        raise MusicSAEError(f"cannot load Demucs model '{name}': {exc}", "the model file may be corrupt") from exc
    except (OSError, ConnectionError, RuntimeError, ValueError) as exc:
        if repo is not None:
            raise MusicSAEError(f"cannot load Demucs model '{name}' from {repo}: {short_error(exc)}",
                                "the model file may be corrupt or from an incompatible Demucs") from exc
        raise MusicSAEError(f"cannot download Demucs model '{name}': {short_error(exc)}",
                            "offline? pass --repo DIR with a local model repository") from exc
    model.eval()
    return model


def describe_model(model, name: str, repo) -> dict:
    """What the manifest records about the model."""
    members = list(getattr(model, "models", [model]))
    return {"name": name, "repo": str(repo) if repo is not None else None, "class": type(members[0]).__name__,
            "bag_size": len(members) if hasattr(model, "models") else None, "sources": list(model.sources),
            "sample_rate": int(model.samplerate), "audio_channels": int(model.audio_channels),
            "segment_s": float(max_segment(model)) if math.isfinite(max_segment(model)) else None}


def max_segment(model) -> float:
    """The longest segment the model accepts (transformer models cannot go beyond their training length)."""
    from demucs.htdemucs import HTDemucs

    members = list(getattr(model, "models", [model]))
    limits = [float(m.segment) for m in members if isinstance(m, HTDemucs)]
    return min(limits) if limits else float("inf")
