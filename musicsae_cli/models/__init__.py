"""Model families behind one interface, registered by name; heavy backends are imported only on load.

A family declares what its models can do (`capabilities`, keys of base.CAPABILITIES), the names it claims
(for `--model` without `--family`), its loader and, when it generates, its own generation settings. Generic code
loads a model with `load_adapter` and asks the adapter for a capability (`adapter.require`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from .base import CAPABILITIES, EditContext, GenerationOutput, ModelAdapter, contextual
from .reports import TinyModel


@dataclass(frozen=True)
class Family:
    """A registered model family."""

    name: str
    summary: str  # what models it covers, for help texts and `model families`
    loader: str  # "module:function" called as loader(name, revision=, device=, dtype=, seed=)
    capabilities: tuple[str, ...]
    claims: Callable[[str], bool]  # whether a --model value belongs to this family
    settings: str | None = None  # "module:Class" of its generation settings, if it generates
    examples: tuple[str, ...] = ()
    save_tiny: str | None = None  # "module:function" writing a tiny random model loadable by path, if it has one

    def load(self, name: str, **kwargs) -> ModelAdapter:
        module, _, attr = self.loader.partition(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)(name, **kwargs)

    def settings_model(self) -> type | None:
        return None if self.settings is None else _attr(self.settings)

    def describe(self) -> dict:
        """What `musicsae model families` shows."""
        model = self.settings_model()
        settings = {k: f.default for k, f in model.model_fields.items()} if model is not None else {}
        return {"name": self.name, "summary": self.summary, "capabilities": list(self.capabilities),
                "generation_settings": settings, "examples": list(self.examples),
                "save_tiny": self.save_tiny is not None}


def _attr(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


FAMILIES: dict[str, Family] = {}
DEFAULT_MODEL = "facebook/musicgen-small"  # what runs when no model is named
MODEL_HELP = ("A built-in name (tiny-musicgen, tiny-musicgen-trained, crepe-full, crepe-tiny, crepe-full-random, "
              "...), a hub id, a local model folder or file (.ts/.pt TorchScript, .pt2 torch.export), or "
              "py:package.module:factory (with --trust-code on the command line).")
# Model names the commands' help examples use: a hub id, its local copy, its preset, the built-in tiny model.
EXAMPLES = {"hub": DEFAULT_MODEL, "local": "./musicgen-small", "preset": "musicgen-small", "tiny": "tiny-musicgen",
            "trained": "tiny-musicgen-trained"}
TRUST_CODE: ContextVar[bool] = ContextVar("musicsae_trust_code", default=False)  # set by --trust-code only


def register(family: Family) -> Family:
    """Add a family (a later registration of the same name replaces the earlier one)."""
    FAMILIES[family.name] = family
    return family


def _is_crepe(name: str) -> bool:
    from .crepe_family import NAMES

    return name in NAMES


def _is_rave(name: str) -> bool:
    from .rave import claims

    return claims(name)


def _is_yue(name: str) -> bool:
    from .yue import claims

    return claims(name)


def _is_mmt(name: str) -> bool:
    path = Path(str(name)).expanduser()
    if not (path.is_dir() or path.suffix.lower() in (".pt", ".pth")):
        return False  # hub ids and built-in names: no need to load the family's code (and torch) to say no
    from .mmt_checkpoint import claims

    return claims(name)


def _is_torch(name: str) -> bool:
    from .torch_family import claims

    return claims(name)


register(Family("crepe", "CREPE pitch tracker with its trained weights (crepe-tiny, crepe-full) or a random twin "
                "(crepe-tiny-random, crepe-full-random); 16 kHz, 100 frames/s",
                "crepe_family:load", ("audio", "intervene", "outputs"), _is_crepe,
                examples=("crepe-full", "crepe-tiny", "crepe-full-random")))
register(Family("rave", "RAVE exports (torch.jit.save of ScriptedRAVE): encoder and decoder blocks, the PCA-ordered "
                "latent",
                "rave:load", ("audio", "intervene", "outputs"), _is_rave, examples=("rave_model.ts",),
                save_tiny="tiny_rave:save_tiny_rave"))
register(Family("mmt", "Multitrack Music Transformer checkpoints (best_model.pt, or its training folder): MIDI "
                "files or note lists as events, a row per event labelled with its musical facts",
                "mmt:load", ("tokens", "sequences", "intervene", "generate"), _is_mmt,
                settings="mmt_settings:EventSampling", save_tiny="tiny_mmt:save_tiny_mmt",
                examples=("exp/sod/ape", "best_model.pt")))
register(Family("torch", "any PyTorch audio model by layer path: a TorchScript file (.ts, .pt), a torch.export "
                "program (.pt2), or py:package.module:factory with --trust-code",
                "torch_family:load", ("audio", "intervene", "outputs"), _is_torch,
                examples=("model.ts", "model.pt2", "py:mypkg.models:build")))
register(Family("yue", "causal LMs over audio-codec tokens (YuE; any LLaMA-like LM with a token layout): read from "
                "code files or, with an X-Codec, audio stems, after a genre/lyrics prompt; a row per frame per "
                "track; hub ids m-a-p/YuE-*, a save_pretrained folder, or tiny-yue",
                "yue:load", ("tokens", "sequences", "intervene", "generate"), _is_yue,
                settings="yue_settings:TokenSampling", save_tiny="tiny_yue:save_tiny_yue_with_codec",
                examples=("m-a-p/YuE-s1-7B-anneal-en-cot", "tiny-yue")))
register(Family("musicgen", "MusicGen text-to-music (transformers): hub ids facebook/musicgen-*, a save_pretrained "
                "folder (e.g. one written by `model train-tiny`), tiny-musicgen (built in, random weights) or "
                "tiny-musicgen-trained (built in, trained on synthesised concepts)",
                "musicgen:load", ("audio", "tokens", "loss", "generate", "intervene", "audio_embeddings",
                                  "text_adherence", "concepts"), lambda name: True,
                settings="musicgen_settings:Sampling", save_tiny="tiny:save_tiny_musicgen",
                examples=(DEFAULT_MODEL, "tiny-musicgen")))


def family_of(name: str, family: str = "auto") -> Family:
    """The family that loads `name`: `family` when given, else the first registered family claiming it."""
    from ..errors import UsageError

    if family != "auto":
        if family not in FAMILIES:
            raise UsageError(f"unknown model family '{family}'", f"available: {', '.join(FAMILIES)}")
        return FAMILIES[family]
    for fam in FAMILIES.values():
        if fam.claims(name):
            return fam
    raise UsageError(f"no model family claims '{name}'", f"pass --family ({', '.join(FAMILIES)})")


def generation_setting_names() -> dict[str, str]:
    """Every registered family's generation setting names -> its family (for configs that accept them flat); a
    name several families share belongs to the default model's family first."""
    names: dict[str, str] = {}
    first = [f for f in FAMILIES.values() if DEFAULT_MODEL in f.examples]  # without loading any family's code
    for fam in [*first, *(f for f in FAMILIES.values() if f not in first)]:
        model = fam.settings_model()
        for key in getattr(model, "model_fields", {}):
            names.setdefault(key, fam.name)
    return names


def save_tiny(family: str | None, out, seed: int = 0, overwrite: bool = False) -> TinyModel:
    """Write the tiny random model of `family` (None: the default model's family), loadable with --model;
    UsageError naming the families that have one."""
    from ..errors import UsageError

    having = [f.name for f in FAMILIES.values() if f.save_tiny]
    fam = family_of("", family) if family else family_of(DEFAULT_MODEL)
    if fam.save_tiny is None:
        raise UsageError(f"model family {family} has no tiny model to write", f"families with one: {', '.join(having)}")
    return TinyModel(family=fam.name, **_attr(fam.save_tiny)(out, seed=seed, overwrite=overwrite))


def load_adapter(name: str, family: str = "auto", revision: str | None = None, device: str = "auto",
                 dtype: str = "fp32", seed: int = 0, options: dict | None = None) -> ModelAdapter:
    """Load `name` (a built-in model, a local directory or file, a hub id, or a trusted factory) as an adapter;
    `options` are the family's own (UsageError naming the family when it takes none)."""
    fam = family_of(str(name), family)
    adapter = fam.load(str(name), revision=revision, device=device, dtype=dtype, seed=seed, **(options or {}))
    adapter.family = fam.name
    adapter.capabilities = frozenset(fam.capabilities) & frozenset(adapter.capabilities or fam.capabilities)
    if adapter.settings_model is None:
        adapter.settings_model = fam.settings_model()
    return adapter


def no_options(family: str, options: dict) -> None:
    """UsageError when a family that takes no model options is given some."""
    if options:
        from ..errors import UsageError

        raise UsageError(f"model family {family} takes no model options (got {', '.join(sorted(options))})",
                         "remove model_options")


__all__ = ["CAPABILITIES", "DEFAULT_MODEL", "EXAMPLES", "FAMILIES", "MODEL_HELP", "TRUST_CODE", "EditContext",
           "Family", "GenerationOutput", "ModelAdapter", "contextual", "family_of", "generation_setting_names",
           "load_adapter", "no_options", "register", "save_tiny"]
