"""The kinds of musicsae artefacts, in one registry: what each output folder's manifest.json calls itself, which
command makes it, and how to open, describe (`musicsae info`) and verify (`musicsae info --verify`) it.

Every folder musicsae writes holds a manifest.json whose "kind" says what it is ("activation_store", "sae",
"probes", "patch", ...). Code that needs one kind reads the manifest with :func:`expect_kind`, which refuses any
other kind with a message naming both and a hint naming the command that makes the expected one.

Importing this module is cheap (no torch, numpy or pyarrow): a kind names its functions as "module:attribute"
paths inside musicsae_cli, imported on first use.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import read_manifest
from .errors import MusicSAEError, StoreError

SAE_CONFIG = "cfg.json"  # the config that makes a folder an SAE (SAELens' layout)
WRONG_KIND_MESSAGE = "{path} is a musicsae {kind!r} artefact, not {noun}"  # the message of expect_kind, by default


@dataclass(frozen=True)
class Kind:
    """One kind of artefact."""

    names: tuple[str, ...]  # as written in manifests' "kind"; the first is what musicsae writes now
    description: str  # one line, for users
    made_by: str  # the command that makes it, e.g. "musicsae probe train"
    noun: str  # how a wrong-kind error names it: "... artefact, not <noun>"
    hint: str = "pass the folder written by `{made_by}`"  # the hint of a wrong-kind error
    open: str | None = None  # "module:attribute" called as open(path): what commands read it with
    describe: str | None = None  # called as describe(path, manifest) -> dict: what `musicsae info` shows
    verify: str | None = None  # called as verify(path, manifest) -> {"checked", "problems"}: `info --verify`

    @property
    def name(self) -> str:
        return self.names[0]

    def wrong_kind_hint(self) -> str:
        return self.hint.format(made_by=self.made_by)

    def opener(self) -> Callable | None:
        return _attr(self.open)

    def describer(self) -> Callable[[Path, dict], dict]:
        """Its describe function; the manifest's record (see describe.describe_record) when it names none."""
        return _attr(self.describe or GENERIC_DESCRIBE)

    def verifier(self) -> Callable[[Path, dict], dict]:
        """Its verify function; a check of the files its manifest lists (verify.verify_files) when it names none."""
        return _attr(self.verify or GENERIC_VERIFY)


GENERIC_DESCRIBE = "describe:describe_record"
GENERIC_VERIFY = "verify:verify_files"


def _attr(ref: str | None):
    """The object `ref` ("module:attr.attr", module relative to musicsae_cli) names, imported now."""
    if ref is None:
        return None
    module, _, path = ref.partition(":")
    obj: Any = importlib.import_module(f"{__package__}.{module}")
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add `kind` under each of its names; a name another kind already holds is refused."""
    for name in kind.names:
        if _KINDS.get(name, kind) != kind:
            raise ValueError(f"artefact kind {name!r} is registered twice")
    for name in kind.names:
        _KINDS[name] = kind
    return kind


def get(name: str | None) -> Kind | None:
    """The kind a manifest's "kind" names, or None for a name no kind registers."""
    return _KINDS.get(name) if isinstance(name, str) else None


def kind(name: str) -> Kind:
    """The registered kind `name` (KeyError for a name no kind registers: a mistake in musicsae itself)."""
    return _KINDS[name]


def all_kinds() -> list[Kind]:
    """Every registered kind, once each, in registration order."""
    return list(dict.fromkeys(_KINDS.values()))


def of(manifest: dict | None) -> Kind | None:
    """The kind of an artefact from its manifest (None: no manifest, or a kind this musicsae does not know)."""
    return None if manifest is None else get(manifest.get("kind"))


def is_kind(manifest: dict | None, *names: str) -> bool:
    """Whether `manifest` is that of one of the kinds `names` (any name a kind is registered under counts)."""
    found = of(manifest)
    return found is not None and any(found is kind(name) for name in names)


def expect_kind(directory: str | os.PathLike, *names: str, manifest: dict | None = None,
                error: type[MusicSAEError] = StoreError, message: str = WRONG_KIND_MESSAGE,
                hint: str | None = None) -> dict:
    """The manifest of `directory` (read here unless given) when its kind is one of `names`.

    Otherwise `error` with `message` (formatted with path, kind: the manifest's, and noun: the first expected
    kind's) and `hint` (default: the first expected kind's, naming the command that makes it). A missing or
    unreadable manifest raises read_manifest's StoreError.
    """
    if manifest is None:
        manifest = read_manifest(directory)
    if is_kind(manifest, *names):
        return manifest
    expected = kind(names[0])
    raise error(message.format(path=directory, kind=manifest.get("kind"), noun=expected.noun),
                expected.wrong_kind_hint() if hint is None else hint)


def describe(path: Path, manifest: dict) -> dict:
    """What `musicsae info` shows for the artefact at `path` with `manifest`."""
    found = of(manifest)
    return (found.describer() if found else _attr(GENERIC_DESCRIBE))(path, manifest)


def verify(path: Path, manifest: dict) -> dict:
    """What `musicsae info --verify` finds broken in the artefact at `path` with `manifest`."""
    found = of(manifest)
    return (found.verifier() if found else _attr(GENERIC_VERIFY))(path, manifest)


# ---- the kinds musicsae writes ------------------------------------------------------------------------------------
ACTIVATION_STORE = register(Kind(
    ("activation_store",), "a model's activations at some hookpoints over a dataset, in shards, with metadata",
    made_by="musicsae extract", noun="an activation store",
    open="store:ActivationStore.open", describe="describe:describe_store", verify="store.verify:verify_store"))
SAE = register(Kind(
    ("sae",), "a sparse autoencoder in SAELens' layout (cfg.json and weights)",
    made_by="musicsae sae train", noun="an SAE", hint="pass an SAE folder (a training run holds one per member)",
    open="sae.io:load_sae", describe="describe:describe_sae_folder", verify="verify:verify_sae"))
SAE_RUN = register(Kind(
    ("sae_run",), "an SAE training run: its logs, checkpoints and the SAE (or the sweep's SAEs) it trained",
    made_by="musicsae sae train", noun="an SAE training run", hint="pass an SAE training run",
    open="sae.train:sae_dir",  # the SAE folder inside a finished run (a sweep's: the member named)
    describe="describe:describe_run", verify="verify:verify_run"))
PROBES = register(Kind(
    ("probes",), "linear probes for one label, one per hookpoint",
    made_by="musicsae probe train", noun="probes", hint="pass a folder written by `{made_by}`",
    open="probes.model:ProbeSet.load", describe="describe:describe_probes"))
DATASET = register(Kind(
    ("dataset",), "audio files with a checked manifest.csv (item ids, groups, labels)",
    made_by="musicsae data synth, data split, data chunk or data index", noun="a dataset",
    describe="describe:describe_dataset"))
CONCEPTS = register(Kind(
    ("concepts",), "learned concept embeddings (textual inversion) for one model",
    made_by="musicsae concept learn", noun="learned concepts", hint="pass the folder `{made_by}` wrote",
    open="concepts.io:read_concepts"))

# Outputs that `musicsae info` shows as their manifest records them, and --verify checks for the files they list.
# (name in manifests, what it is, the command that makes it, how an error names it)
_RECORDS = [
    ("sae_evaluation", "reconstruction metrics of an SAE on a store", "musicsae sae evaluate", "an SAE evaluation"),
    ("probe_evaluation", "saved probes applied to another store: predictions and per-layer metrics",
     "musicsae probe evaluate", "a probe evaluation"),
    ("manifest", "the record `musicsae data index` keeps beside a manifest file it writes", "musicsae data index",
     "a manifest record"),
    ("model", "a tiny model built offline for tests and demos, loadable by path",
     "musicsae model save-tiny or model train-tiny", "a model"),
    ("concept-codes", "the codes cache of `concept learn`: its concept audio's chunks, encoded once",
     "musicsae concept learn", "cached concept codes"),
    ("concept-report", "whether learned concepts generate their audio", "musicsae concept evaluate",
     "a concept report"),
    ("sensitivity", "how much each hookpoint's activations change when a musical property of the input changes",
     "musicsae analyze sensitivity", "a sensitivity analysis"),
    ("patch", "activation patching and ablation per hookpoint between paired inputs", "musicsae analyze patch",
     "a patching analysis"),
    ("compare", "whether two sets of items look different inside the model, per layer", "musicsae analyze compare",
     "a comparison"),
    ("separation", "how well raw activations or SAE latents separate labelled concepts",
     "musicsae analyze separation", "a separation analysis"),
    ("feature_dashboard", "what each SAE latent responds to: HTML pages with audio, or an item view",
     "musicsae analyze features", "a feature dashboard"),
    ("steer_generate", "audio generated with and without steering", "musicsae steer generate", "steered generations"),
    ("steer_resynthesis", "input audio re-synthesised by a model with and without steering",
     "musicsae steer generate --audio", "steered re-syntheses"),
    ("steer_sweep", "dose-response of one steering direction, scored by a probe, against random controls",
     "musicsae steer sweep", "a steering sweep"),
    ("steer_audio", "a model run over audio with and without a steering edit, its outputs compared",
     "musicsae steer audio", "steered audio"),
]
for _name, _description, _made_by, _noun in _RECORDS:
    register(Kind((_name,), _description, made_by=_made_by, noun=_noun))
