"""Direction sources against independent computations, and the errors a wrong input must give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_cli.errors import InputError, UsageError
from musicsae_cli.probes import ProbeSet
from musicsae_cli.sae.io import load_sae
from musicsae_cli.steering.config import DirectionConfig, SteeringConfig
from musicsae_cli.steering.directions import load_direction
from musicsae_cli.steering.edits import build_steering

from .conftest import HP, concept_means, make_probe


@pytest.mark.parametrize("pooling", ["item", "frame"])
def test_difference_of_means_equals_numpy(tiny_adapter, tiny_store, pooling):
    from musicsae_cli.store import ActivationStore

    cfg = DirectionConfig(store=str(tiny_store), contrast="concept=notes:tempos", pooling=pooling)
    direction = load_direction(cfg, tiny_adapter)
    assert direction.hookpoints == ["layers.0", "layers.1", "layers.2", "layers.3"]
    store = ActivationStore.open(tiny_store)
    concept = np.asarray(store.metadata(["concept"]).column("concept").to_pylist(), dtype=object)
    for hp in direction.hookpoints:
        if pooling == "item":
            a, b = concept_means(tiny_store, hp)
        else:
            x = store.read_rows(hp, np.arange(store.n_rows)).astype(np.float64)
            a, b = x[concept == "notes"].mean(0), x[concept == "tempos"].mean(0)
        np.testing.assert_allclose(direction.at(hp), a - b, rtol=1e-5, atol=1e-6)
    assert direction.source == {"kind": "contrast", "store": str(tiny_store), "label": "concept", "positive": "notes",
                                "negative": "tempos", "where": [], "pooling": pooling}
    with pytest.raises(InputError, match="no store rows with concept=chords.*values of concept: notes, tempos"):
        load_direction(DirectionConfig(store=str(tiny_store), contrast="concept=chords:notes"), tiny_adapter)
    with pytest.raises(InputError, match="the store has no label 'genre'"):
        load_direction(DirectionConfig(store=str(tiny_store), contrast="genre=a:b"), tiny_adapter)


def test_probe_direction_per_layer(tiny_adapter, concept_probe):
    direction = load_direction(DirectionConfig(probe=str(concept_probe), target="tempos"), tiny_adapter)
    probe = ProbeSet.load(concept_probe)
    assert direction.hookpoints == probe.hookpoints
    for i, hp in enumerate(probe.hookpoints):
        np.testing.assert_array_equal(direction.at(hp), probe.weight[i, 1] / probe.std[i])
    with pytest.raises(InputError, match="'rock' is not a class of the concept probe.*classes: notes, tempos"):
        load_direction(DirectionConfig(probe=str(concept_probe), target="rock"), tiny_adapter)


def test_probe_from_another_model_is_refused(tiny_adapter, tiny_store, tmp_path):
    other = {"id": "facebook/musicgen-small", "hidden_size": 64, "n_layers": 4}
    path = make_probe(tmp_path / "other", tiny_store, other, hookpoints=("layers.2",))
    with pytest.raises(InputError, match="made with model 'facebook/musicgen-small', not the loaded model "
                                         "'tiny-musicgen' \\(another id\\)"):
        load_direction(DirectionConfig(probe=str(path), target="notes"), tiny_adapter)
    assert load_direction(DirectionConfig(probe=str(path), target="notes"), tiny_adapter, allow_mismatch=True)
    wide = ProbeSet.load(path)
    wide.model = {"id": "tiny-musicgen", "hidden_size": 1024}
    wide.save(path)
    with pytest.raises(InputError, match="model with width 1024, the loaded model has 64"):
        load_direction(DirectionConfig(probe=str(path), target="notes"), tiny_adapter, allow_mismatch=True)


def test_sae_direction_is_the_scaled_decoder_rows(tiny_adapter, relu_sae):
    sae, _ = load_sae(relu_sae)
    direction = load_direction(DirectionConfig(sae=str(relu_sae), latents=[3, 17], latent_scale=2.5), tiny_adapter)
    with torch.no_grad():
        want = 2.5 * (sae.W_dec[3] + sae.W_dec[17]).numpy()
    assert direction.hookpoints == [HP]
    np.testing.assert_allclose(direction.at(HP), want, rtol=1e-6, atol=1e-7)
    with pytest.raises(UsageError, match="latent 999 is out of range: the SAE has 256 latents"):
        load_direction(DirectionConfig(sae=str(relu_sae), latents=[999]), tiny_adapter)


def test_direction_files(tiny_adapter, tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    layout = rng.standard_normal((4, 3, 64)).astype(np.float32)  # the common [layers, classes, d] probe-weight layout
    np.save(tmp_path / "probes.npy", layout)
    d = load_direction(DirectionConfig(file=str(tmp_path / "probes.npy"), target="2"), tiny_adapter)
    np.testing.assert_array_equal(d.at("layers.3"), layout[3, 2])  # row i is layers.i: no index shift
    with pytest.raises(UsageError, match=r"\[layers, classes, d\].*--target \(0 .. 2\)"):
        load_direction(DirectionConfig(file=str(tmp_path / "probes.npy")), tiny_adapter)
    one = rng.standard_normal(64).astype(np.float32)
    save_file({"layers.1": one}, str(tmp_path / "d.safetensors"))
    d = load_direction(DirectionConfig(file=str(tmp_path / "d.safetensors")), tiny_adapter)
    assert d.hookpoints == ["layers.1"]
    with pytest.raises(InputError, match="the direction has no vector for layers.2.*it has layers.1"):
        build_steering(SteeringConfig(layers="layers.2"), tiny_adapter, d)


def test_width_mismatch_names_both_widths(tiny_adapter, tmp_path):
    np.save(tmp_path / "wide.npy", np.ones((4, 1024), np.float32))
    with pytest.raises(InputError, match="the direction at layers.0 has width 1024, the model's width at layers.0 "
                                         "is 64"):
        load_direction(DirectionConfig(file=str(tmp_path / "wide.npy")), tiny_adapter)
    np.save(tmp_path / "one.npy", np.ones(32, np.float32))
    with pytest.raises(InputError, match="the direction has width 32, the model's widths are 64"):
        load_direction(DirectionConfig(file=str(tmp_path / "one.npy")), tiny_adapter)


def test_strengths_must_match_layers(tiny_adapter, direction_file):
    d = load_direction(DirectionConfig(file=str(direction_file)), tiny_adapter)
    with pytest.raises(UsageError, match=r"3 strengths for 2 layers \(layers.1, layers.2\).*one strength per layer"):
        build_steering(SteeringConfig(layers="layers.1-2", strength="0.5,0.3,0.2"), tiny_adapter, d)
    steering = build_steering(SteeringConfig(layers="layers.1,layers.3", strength=[2.0]), tiny_adapter, d)
    assert steering.layers == ["layers.1", "layers.3"] and steering.strengths == [2.0, 2.0]  # one broadcasts
    steering = build_steering(SteeringConfig(layers="layers.1-2", strength=[1.0, 0.0]), tiny_adapter, d)
    assert list(steering.edits) == ["layers.1"]  # a layer at strength 0 gets no hook
    with pytest.raises(UsageError, match="choose the layers to steer with --hookpoint"):
        build_steering(SteeringConfig(), tiny_adapter, d)
    with pytest.raises(UsageError, match="out of range"):
        build_steering(SteeringConfig(layers="layers.4"), tiny_adapter, d)
