"""A tiny random-weight HTDemucs saved in Demucs's own local-repository layout, for tests and demos.

A single model is written as `<name>-<sha256 prefix>.th` holding {"klass", "args", "kwargs", "state"}; with
`bag_size` > 1 the members are `<name>-m<i>-<sha>.th` and `<name>.yaml` lists them as a bag of models. Both
load offline from that folder like downloaded models (`data split --repo`, which reads them weights-only). The
.th files are Demucs's torch-serialised packages (the format its repository holds), not a musicsae format.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import make_parents
from ..results import Result

SOURCES = ("drums", "bass", "other", "vocals")
TINY_DEMUCS_NAME = "tiny-htdemucs"
# Small enough to separate a few seconds of audio in well under a second on a CPU.
TINY_KWARGS = {"channels": 8, "depth": 3, "t_layers": 1, "nfft": 2048, "dconv_comp": 4, "segment": 2.0}


def build_tiny_demucs(seed: int = 0, sources=SOURCES, sample_rate: int = 44100, audio_channels: int = 2, **kwargs):
    """A random-weight HTDemucs with tiny dimensions (override any HTDemucs argument with kwargs), in eval mode."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # torch warns about zero-size tensors while initialising tiny layers
        warnings.simplefilter("ignore", UserWarning)
        model = HTDemucs(list(sources), audio_channels=audio_channels, samplerate=sample_rate,
                         **{**TINY_KWARGS, **kwargs})
    return model.eval()


def save_demucs_model(model, repo_dir: str | Path, signature: str) -> Path:
    """Save `model` into a local model repository as `<signature>-<sha256[:8]>.th` (replacing an older file of
    that signature, as a repository holds one per signature); returns the file."""
    from demucs.states import get_state, save_with_checksum

    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    for old in _files_of(repo_dir, [signature]):
        if old.suffix == ".th":
            old.unlink()
    args, kwargs = model._init_args_kwargs
    package = {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": get_state(model, None, half=False)}
    save_with_checksum(package, repo_dir / f"{signature}.th")
    (new,) = [f for f in _files_of(repo_dir, [signature]) if f.suffix == ".th"]
    return new


@dataclass(kw_only=True)
class TinyDemucs(Result):
    """A tiny HTDemucs (or bag of them) written into a model repository (`model save-tiny-demucs`)."""

    repo: str
    name: str
    files: list[str]
    bag_size: int
    parameters_per_model: int
    sources: list[str]
    sample_rate: int
    audio_channels: int

    def lines(self) -> list[str]:
        kind = f"bag of {self.bag_size}" if self.bag_size > 1 else "single model"
        return [f"{self.repo}: {self.name} ({kind}, {self.parameters_per_model:,} parameters per model, "
                f"stems {', '.join(self.sources)}, {self.sample_rate} Hz)", *self.files]


def save_tiny_demucs(repo_dir: str | Path, name: str = TINY_DEMUCS_NAME, seed: int = 0, bag_size: int = 1,
                     overwrite: bool = False, **kwargs) -> TinyDemucs:
    """Write a tiny HTDemucs (or a bag of `bag_size` of them) named `name` into the model repository `repo_dir`."""
    import yaml

    from ..artifacts import atomic_write_text
    from ..errors import InputError, OutputExistsError

    repo_dir = Path(repo_dir)
    if bag_size < 1:
        raise InputError(f"bag_size must be at least 1, got {bag_size}", "use 1 for a single model")
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid model name '{name}'", "use letters, digits, '-' and '_'")
    if repo_dir.exists() and not repo_dir.is_dir():
        raise InputError(f"not a folder: {repo_dir}", "pass a model repository folder")
    make_parents(repo_dir)
    members = [name] if bag_size == 1 else [f"{name}-m{i}" for i in range(bag_size)]
    owned = [name, *members, *_bag_members(repo_dir / f"{name}.yaml", name)]
    existing = _files_of(repo_dir, owned) if repo_dir.is_dir() else []
    if existing:
        if not overwrite:
            raise OutputExistsError(repo_dir / existing[0].name, f"model '{name}'")
        for f in existing:
            f.unlink()
    files, params = [], 0
    for i, sig in enumerate(members):
        model = build_tiny_demucs(seed + i, **kwargs)
        params = sum(p.numel() for p in model.parameters())
        files.append(save_demucs_model(model, repo_dir, sig))
    if bag_size > 1:
        bag = repo_dir / f"{name}.yaml"
        atomic_write_text(bag, yaml.safe_dump({"models": members}, sort_keys=False))
        files.append(bag)
    return TinyDemucs(repo=str(repo_dir), name=name, files=[f.name for f in files], bag_size=bag_size,
                      parameters_per_model=params, sources=list(model.sources), sample_rate=int(model.samplerate),
                      audio_channels=int(model.audio_channels))


def _files_of(repo_dir: Path, signatures: list[str]) -> list[Path]:
    """The files of a repository that belong to these model signatures or bag names."""
    out = []
    for f in sorted(repo_dir.iterdir()):
        if f.suffix == ".yaml" and f.stem in signatures:
            out.append(f)
        elif f.suffix == ".th" and (f.stem in signatures or f.stem.rsplit("-", 1)[0] in signatures):
            out.append(f)
    return out


def _bag_members(bag: Path, name: str) -> list[str]:
    """The members an earlier bag `name` was written with (`<name>-m<i>`), replaced along with it."""
    import yaml

    if not bag.is_file():
        return []
    try:
        listed = (yaml.safe_load(bag.read_text()) or {}).get("models", [])
    except (yaml.YAMLError, AttributeError):
        return []
    return [str(m) for m in listed if str(m).startswith(f"{name}-m")]
