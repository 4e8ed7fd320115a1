"""ProbeSet: the saved format (safetensors + the common [layers, classes, d] .npy), round trips, raw-space
directions, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicsae_cli.errors import InputError, StoreError
from musicsae_cli.probes import ProbeSet

H, C, D = 3, 4, 8
CLASSES = ["classical", "electronic", "jazz", "rock"]


def _probes(task: str = "classification") -> ProbeSet:
    rng = np.random.default_rng(0)
    c = C if task == "classification" else 1
    return ProbeSet(task, "genre" if c > 1 else "bpm", CLASSES if c > 1 else [], ["layers.0", "layers.1", "layers.2"],
                    "mean", {"id": "m", "hidden_size": D}, rng.normal(size=(H, c, D)), rng.normal(size=(H, c)),
                    rng.normal(size=(H, D)), rng.uniform(0.5, 2.0, size=(H, D)),
                    manifest={"target_mean": 120.0, "target_std": 10.0} if c == 1 else {})


def test_round_trip_and_npy_export(tmp_path):
    p = _probes()
    p.save(tmp_path)
    q = ProbeSet.load(tmp_path)
    for name in ("weight", "bias", "mean", "std"):
        np.testing.assert_array_equal(getattr(p, name), getattr(q, name))
    assert (q.task, q.label, q.classes, q.hookpoints, q.pooling, q.model) == \
        (p.task, p.label, p.classes, p.hookpoints, p.pooling, p.model)
    layout = np.load(tmp_path / "probes.npy", allow_pickle=False)
    assert layout.shape == (H, C, D) and layout.dtype == np.float32
    np.testing.assert_allclose(layout, p.weight / p.std[:, None, :], rtol=1e-6)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "probes" and manifest["format_version"] == 1 and manifest["widths"]["layers.1"] == D


def test_logits_and_direction_are_raw_space():
    p = _probes()
    x = np.random.default_rng(1).normal(size=(5, D)).astype(np.float32)
    expected = ((x - p.mean[1]) / p.std[1]) @ p.weight[1].T + p.bias[1]
    np.testing.assert_allclose(p.logits("layers.1", x), expected, rtol=1e-5, atol=1e-5)
    proba = p.predict_proba("layers.1", x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(p.predict("layers.1", x)) == [CLASSES[i] for i in expected.argmax(axis=1)]
    # A step along the raw-space direction changes the class logit by exactly its squared norm (raw space).
    direction = p.direction("layers.1", "jazz")
    np.testing.assert_allclose(direction, p.weight[1, 2] / p.std[1], rtol=1e-6)
    step = p.logits("layers.1", x + direction)[:, 2] - p.logits("layers.1", x)[:, 2]
    np.testing.assert_allclose(step, direction @ direction, rtol=1e-4)


def test_regression_predictions_are_in_label_units():
    p = _probes("regression")
    x = np.zeros((2, D), dtype=np.float32)
    z = p.logits("layers.0", x)[:, 0]
    np.testing.assert_allclose(p.predict("layers.0", x), z * 10.0 + 120.0, rtol=1e-6)
    assert p.direction("layers.0").shape == (D,)


def test_unknown_class_and_hookpoint_name_the_options():
    p = _probes()
    with pytest.raises(InputError, match=r"'jaz' is not a class of the genre probe.*did you mean 'jazz'.*"
                                         r"classical, electronic, jazz, rock"):
        p.class_index("jaz")
    with pytest.raises(InputError, match="no probe for hookpoint 'layers.7'"):
        p.direction("layers.7", "jazz")
    with pytest.raises(InputError, match="needs a class"):
        p.direction("layers.0")


def test_load_refuses_missing_newer_and_corrupt(tmp_path):
    with pytest.raises(InputError, match="probes folder not found"):
        ProbeSet.load(tmp_path / "nope")
    p = _probes()
    p.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(StoreError, match="newer than this musicsae supports"):
        ProbeSet.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "probes.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(StoreError, match="unreadable"):
        ProbeSet.load(tmp_path)
