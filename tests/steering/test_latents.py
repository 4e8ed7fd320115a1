"""SAE latent edits keep the reconstruction error: an edit that changes no latent is exactly a no-op."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_cli.sae.io import load_sae
from musicsae_cli.steering.config import DirectionConfig, SteeringConfig
from musicsae_cli.steering.directions import load_direction
from musicsae_cli.steering.edits import LatentEdit, Schedule, build_steering

from .conftest import HP

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)


def _codes(adapter, seconds: float = 0.4):
    t = np.arange(int(seconds * adapter.sample_rate)) / adapter.sample_rate
    return adapter.encode([(0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)])


def _most_active(sae, x: torch.Tensor, n: int = 1) -> list[int]:
    with torch.no_grad():
        return [int(i) for i in sae.encode(x).mean(0).argsort(descending=True)[:n]]


@pytest.mark.parametrize("sae_fixture", ["relu_sae", "topk_sae"])
@pytest.mark.slow
def test_no_op_latent_edits_are_bit_identical(tiny_adapter, sae_fixture, request):
    sae, _ = load_sae(request.getfixturevalue(sae_fixture))
    plain = tiny_adapter.generate(["jazz piano"], 0.3, [HP, "layers.3"], seed=2)
    x = plain.acts["cond"][HP][0]
    latents = _most_active(sae, x, 3)
    for latents_, op, values in (([], "zero", []), (latents, "scale", [1.0, 1.0, 1.0])):
        with tiny_adapter.intervene({HP: LatentEdit(sae, latents_, op, values, Schedule(), "both")}):
            same = tiny_adapter.generate(["jazz piano"], 0.3, [HP, "layers.3"], seed=2)
        assert np.array_equal(plain.tokens, same.tokens) and np.array_equal(plain.audio, same.audio)
        assert torch.equal(plain.acts["cond"]["layers.3"], same.acts["cond"]["layers.3"])


@pytest.mark.parametrize("sae_fixture", ["relu_sae", "topk_sae"])
def test_zeroing_a_latent_removes_exactly_its_decoder_contribution(tiny_adapter, sae_fixture, request):
    sae, _ = load_sae(request.getfixturevalue(sae_fixture))
    codes = _codes(tiny_adapter)
    clean = tiny_adapter.code_activations(codes, [HP, "layers.3"])[0]
    (i,) = _most_active(sae, clean[HP])
    with tiny_adapter.intervene({HP: LatentEdit(sae, [i], "zero", [0.0], Schedule(), "both")}):
        out = tiny_adapter.code_activations(codes, [HP, "layers.3"])[0]
    with torch.no_grad():
        f = sae.encode(clean[HP])  # (T, d_sae), the SAE's own inference
        f_edit = f.clone()
        f_edit[:, i] = 0
        expected = clean[HP] + sae.decode(f_edit) - sae.decode(f)  # reconstruction of the edit + the error term
        error_before = clean[HP] - sae.decode(f)
        error_after = out[HP] - sae.decode(f_edit)
    assert f[:, i].abs().max() > 0.1
    torch.testing.assert_close(out[HP], expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(error_after, error_before, rtol=0, atol=1e-4)  # the error term is kept
    assert (out["layers.3"] - clean["layers.3"]).abs().max() > 1e-3


def test_clamp_through_build_steering_with_a_schedule(tiny_adapter, relu_sae, tiny_store):
    cfg = SteeringConfig(direction=DirectionConfig(sae=str(relu_sae), latents=[5, 9], latent_scale="mean",
                                                   store=str(tiny_store)),
                         mode="clamp", strength=[3.0], schedule={"start": 4})
    direction = load_direction(cfg.direction, tiny_adapter)
    assert direction.latent_means.shape == (256,) and direction.latent_scales.shape == (2,)
    steering = build_steering(cfg, tiny_adapter, direction)
    assert list(steering.edits) == [HP]
    sae = direction.sae
    codes = _codes(tiny_adapter)
    clean = tiny_adapter.code_activations(codes, [HP])[0][HP]
    with tiny_adapter.intervene(steering.edits):
        out = tiny_adapter.code_activations(codes, [HP])[0][HP]
    with torch.no_grad():
        f = sae.encode(clean)
        f_clamped = f.clone()
        f_clamped[:, [5, 9]] = torch.from_numpy(3.0 * direction.latent_scales)
        expected = clean + sae.decode(f_clamped) - sae.decode(f)  # clamped reconstruction + the error term
    torch.testing.assert_close(out[:3], clean[:3], rtol=0, atol=0)  # rows 0..2 = positions 1..3, before start
    torch.testing.assert_close(out[3:], expected[3:], rtol=0, atol=1e-5)
    assert (out[3:] - clean[3:]).abs().max() > 1e-3
