"""Steering fixtures: a probe built from a difference of means on the tiny store, tiny SAEs, a direction file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HP = "layers.2"


def concept_means(store_path: Path, hookpoint: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-item means of the 'notes' and 'tempos' items, averaged over items (plain numpy on the store rows)."""
    from musicsae_cli.store import ActivationStore

    store = ActivationStore.open(store_path)
    meta = store.metadata(["item_id", "concept"]).to_pydict()
    x = store.read_rows(hookpoint, np.arange(store.n_rows)).astype(np.float64)
    ids, concepts = np.asarray(meta["item_id"]), np.asarray(meta["concept"], dtype=object)
    out = []
    for value in ("notes", "tempos"):
        items = sorted(set(ids[concepts == value]))
        out.append(np.mean([x[ids == i].mean(0) for i in items], axis=0))
    return out[0], out[1]


def make_probe(directory: Path, store_path: Path, model: dict, hookpoints=("layers.1", "layers.2", "layers.3")):
    """A 'concept' ProbeSet (notes vs tempos) whose logit difference is the projection on the mean difference."""
    from musicsae_cli.probes import ProbeSet

    weights, biases, means = [], [], []
    for hp in hookpoints:
        a, b = concept_means(store_path, hp)
        v = (a - b) / np.linalg.norm(a - b) ** 2 * 4.0  # logit difference +-2 at the class means
        weights.append(np.stack([v / 2, -v / 2]))
        biases.append(np.zeros(2))
        means.append((a + b) / 2)
    d = len(means[0])
    directory.mkdir(parents=True, exist_ok=True)
    probe = ProbeSet(task="classification", label="concept", classes=["notes", "tempos"], hookpoints=list(hookpoints),
                     pooling="mean", model=model, weight=np.stack(weights), bias=np.stack(biases),
                     mean=np.stack(means), std=np.ones((len(hookpoints), d)))
    probe.save(directory)
    return directory


@pytest.fixture(scope="session")
def concept_probe(tmp_path_factory, tiny_store) -> Path:
    from musicsae_cli.store import ActivationStore

    model = ActivationStore.open(tiny_store).model
    return make_probe(tmp_path_factory.mktemp("probes") / "concept", tiny_store, model)


def make_sae(directory: Path, store_path: Path, arch: str = "relu", d_sae: int = 256, k: int | None = None,
             hookpoint: str = HP, model_name: str = "tiny-musicgen") -> Path:
    """A random-init SAE (normalisation from the store) saved through the real SAELens-format writer."""
    import torch

    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.sae.io import save_sae
    from musicsae_cli.store import ActivationStore

    store = ActivationStore.open(store_path)
    sample = torch.from_numpy(store.read_rows(hookpoint, np.arange(store.n_rows)))
    sae = SparseAutoencoder.create(SAESpec(arch=arch, d_in=sample.shape[1], d_sae=d_sae, k=k), sample, seed=0)
    directory.mkdir(parents=True)
    save_sae(sae, directory, hook_name=hookpoint, model_name=model_name)
    return directory


@pytest.fixture(scope="session")
def relu_sae(tmp_path_factory, tiny_store) -> Path:
    return make_sae(tmp_path_factory.mktemp("sae") / "relu", tiny_store)


@pytest.fixture(scope="session")
def topk_sae(tmp_path_factory, tiny_store) -> Path:
    return make_sae(tmp_path_factory.mktemp("sae") / "topk", tiny_store, arch="topk", k=16)


@pytest.fixture(scope="session")
def direction_file(tmp_path_factory) -> Path:
    """A random direction per layer of the tiny model ([4, 64] .npy: row i = layers.i)."""
    path = tmp_path_factory.mktemp("dirs") / "random.npy"
    np.save(path, np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32))
    return path
