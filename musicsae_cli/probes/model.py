"""Saved linear probes: one probe per hookpoint, weights in safetensors, the common .npy layout beside them.

A probes directory::

    manifest.json        kind "probes", format_version, task "classification" | "regression", label, classes,
                         hookpoints, widths {hp: d}, pooling, model (the store's model dict), store, metrics
                         summary; regression adds target_mean and target_std (the target is standardised)
    probes.safetensors   weight (H, C, d), bias (H, C), mean (H, d), std (H, d), all float32
                         logits_h(x) = ((x - mean[h]) / std[h]) @ weight[h].T + bias[h]   (regression: C = 1)
    probes.npy           the common probe-weight layout [layers, classes, d]: weight / std (raw-space weights)
    config.yaml, metrics.csv, metrics.json, per_layer.png   (written by the training service)

No pickles: safetensors, JSON and a plain float32 .npy.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import MANIFEST_NAME, check_format_version, new_manifest, write_json
from ..errors import InputError, StoreError
from ..kinds import expect_kind, is_kind

KIND = "probes"
FORMAT_VERSION = 1
WEIGHTS_NAME = "probes.safetensors"
NPY_NAME = "probes.npy"
TASKS = ("classification", "regression")


@dataclass
class ProbeSet:
    """H linear probes (one per hookpoint) for one label, with the standardisation they were trained under."""

    task: str
    label: str
    classes: list[str]
    hookpoints: list[str]
    pooling: str
    model: dict
    weight: np.ndarray  # (H, C, d) float32, acts on standardised inputs (d: the widest hookpoint)
    bias: np.ndarray  # (H, C)
    mean: np.ndarray  # (H, d) training-part feature mean
    std: np.ndarray  # (H, d) training-part feature std (> 0)
    manifest: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32)
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.std = np.asarray(self.std, dtype=np.float32)
        h, c, d = self.weight.shape
        if self.task not in TASKS:
            raise InputError(f"unknown probe task {self.task!r}", "use classification or regression")
        if len(self.hookpoints) != h:
            raise StoreError(f"probes: {len(self.hookpoints)} hookpoints but weight has {h} rows",
                             "the probes folder is corrupt; retrain")
        if self.bias.shape != (h, c) or self.mean.shape != (h, d) or self.std.shape != (h, d):
            raise StoreError(f"probes: inconsistent shapes weight {self.weight.shape}, bias {self.bias.shape}, "
                             f"mean {self.mean.shape}, std {self.std.shape}", "the probes folder is corrupt; retrain")
        expected = 1 if self.task == "regression" else len(self.classes)
        if c != expected:
            raise StoreError(f"probes: weight has {c} outputs, expected {expected} for {self.task}",
                             "the probes folder is corrupt; retrain")

    # -- shape facts ---------------------------------------------------------------------------------------
    @property
    def widths(self) -> dict[str, int]:
        """Input width per hookpoint. Narrower hookpoints than the (H, C, d) tensor's d use its first columns (their
        features were zero-padded in training, so the remaining weights are zero)."""
        d = int(self.weight.shape[2])
        recorded = self.manifest.get("widths") or {}
        return {hp: int(recorded.get(hp, d)) for hp in self.hookpoints}

    @property
    def target_mean(self) -> float:
        return float(self.manifest.get("target_mean", 0.0))

    @property
    def target_std(self) -> float:
        return float(self.manifest.get("target_std", 1.0))

    def index(self, hookpoint: str) -> int:
        """Position of `hookpoint` in the probe set; InputError listing them otherwise."""
        if hookpoint not in self.hookpoints:
            close = difflib.get_close_matches(hookpoint, self.hookpoints, n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            raise InputError(f"no probe for hookpoint '{hookpoint}'",
                             guess + "probed hookpoints: " + ", ".join(self.hookpoints))
        return self.hookpoints.index(hookpoint)

    def class_index(self, name: str) -> int:
        """Row of class `name` in the weight; InputError naming the probe's classes otherwise."""
        if self.task != "classification":
            raise InputError(f"the {self.label} probe is a regression probe; it has no classes")
        if name in self.classes:
            return self.classes.index(name)
        close = difflib.get_close_matches(str(name), self.classes, n=1, cutoff=0.0)
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise InputError(f"'{name}' is not a class of the {self.label} probe",
                         guess + "classes: " + ", ".join(self.classes))

    # -- inference -----------------------------------------------------------------------------------------
    def logits(self, hookpoint: str, x: np.ndarray) -> np.ndarray:
        """(n, C) probe outputs for raw activations `x` (n, d) at `hookpoint`."""
        h = self.index(hookpoint)
        x = np.asarray(x, dtype=np.float32)
        d = self.widths[hookpoint]
        if x.ndim != 2 or x.shape[1] != d:
            raise InputError(f"activations at {hookpoint} have shape {x.shape}, the probe expects (n, {d})",
                             "probe activations of the model the probe was trained on")
        return ((x - self.mean[h, :d]) / self.std[h, :d]) @ self.weight[h, :, :d].T + self.bias[h]

    def predict_proba(self, hookpoint: str, x: np.ndarray) -> np.ndarray:
        """(n, C) softmax class probabilities (classification probes)."""
        if self.task != "classification":
            raise InputError("predict_proba needs a classification probe", "use predict() for regression")
        z = self.logits(hookpoint, x).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, hookpoint: str, x: np.ndarray) -> np.ndarray:
        """Class names (classification) or values in label units (regression), one per row of `x`."""
        z = self.logits(hookpoint, x)
        if self.task == "regression":
            return z[:, 0].astype(np.float64) * self.target_std + self.target_mean
        return np.asarray(self.classes, dtype=object)[z.argmax(axis=1)]

    def direction(self, hookpoint: str, cls: str | None = None) -> np.ndarray:
        """(d,) raw-activation-space direction: weight[h, c] / std[h] (regression: the single output)."""
        h = self.index(hookpoint)
        if self.task == "regression":
            c = 0
        else:
            if cls is None:
                raise InputError("a classification probe needs a class for its direction",
                                 "classes: " + ", ".join(self.classes))
            c = self.class_index(cls)
        d = self.widths[hookpoint]
        return (self.weight[h, c, :d] / self.std[h, :d]).astype(np.float32)

    def raw_weights(self) -> np.ndarray:
        """(H, C, d) raw-space weights, the common [layers, classes, d] probe-weight layout."""
        return (self.weight / self.std[:, None, :]).astype(np.float32)

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write manifest.json, probes.safetensors and probes.npy into the existing `directory`."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        if not directory.is_dir():
            raise InputError(f"probes output folder does not exist: {directory}",
                             "create it (a staged directory) first")
        tensors = {name: np.ascontiguousarray(getattr(self, name)) for name in ("weight", "bias", "mean", "std")}
        save_file(tensors, str(directory / WEIGHTS_NAME))
        np.save(directory / NPY_NAME, self.raw_weights(), allow_pickle=False)
        manifest = dict(self.manifest) if is_kind(self.manifest, KIND) else new_manifest(KIND, FORMAT_VERSION)
        manifest.update(task=self.task, label=self.label, classes=list(self.classes), hookpoints=list(self.hookpoints),
                        widths=self.widths, pooling=self.pooling, model=self.model,
                        files=sorted({*manifest.get("files", []), MANIFEST_NAME, WEIGHTS_NAME, NPY_NAME}))
        write_json(directory / MANIFEST_NAME, manifest)
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path) -> ProbeSet:
        """Read a probes directory; InputError if missing, StoreError if corrupt or from a newer musicsae."""
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_dir():
            raise InputError(f"probes folder not found: {path}", "pass a folder written by `musicsae probe train`")
        manifest = expect_kind(path, KIND, error=InputError)
        check_format_version(manifest, FORMAT_VERSION, f"probes {path}")
        weights_path = path / WEIGHTS_NAME
        if not weights_path.is_file():
            raise StoreError(f"no {WEIGHTS_NAME} in {path}", "the probes folder is incomplete; retrain")
        try:
            tensors = load_file(str(weights_path))
        except Exception as exc:  # safetensors raises several types for truncated/corrupt files
            raise StoreError(f"unreadable {weights_path}: {exc}", "the probes folder is corrupt; retrain") from exc
        missing = [k for k in ("weight", "bias", "mean", "std") if k not in tensors]
        if missing:
            raise StoreError(f"{weights_path} lacks {', '.join(missing)}", "the probes folder is corrupt; retrain")
        try:
            return cls(task=manifest["task"], label=manifest["label"], classes=list(manifest.get("classes") or []),
                       hookpoints=list(manifest["hookpoints"]), pooling=manifest.get("pooling", "mean"),
                       model=manifest.get("model") or {}, weight=tensors["weight"], bias=tensors["bias"],
                       mean=tensors["mean"], std=tensors["std"], manifest=manifest)
        except KeyError as exc:
            raise StoreError(f"probes manifest in {path} lacks {exc}", "the probes folder is corrupt; retrain") from exc
