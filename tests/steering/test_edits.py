"""Interventions with context on the tiny MusicGen, checked against clean teacher forcing of the same codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_cli.models.base import EditContext, contextual
from musicsae_cli.steering.edits import AddEdit, Schedule

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)

HOOKS = ["layers.0", "layers.1", "layers.2", "layers.3"]


def _unit(seed: int = 0) -> torch.Tensor:
    v = torch.from_numpy(np.random.default_rng(seed).standard_normal(64).astype(np.float32))
    return v / v.norm()


def _codes(adapter, seconds: float = 0.4):
    t = np.arange(int(seconds * adapter.sample_rate)) / adapter.sample_rate
    return adapter.encode([(0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)])


def _forced(adapter, gen, texts):
    """Clean (unsteered) teacher forcing of generated codes: (B, T, d) per hookpoint."""
    items = adapter.code_activations([torch.from_numpy(c) for c in gen.tokens], HOOKS, texts)
    return {h: torch.stack([it[h] for it in items]) for h in HOOKS}


def test_context_gives_positions_and_guidance_layout(tiny_adapter):
    seen = []
    edit = contextual(lambda h, ctx: seen.append((ctx, h.shape[0])) or h)
    with tiny_adapter.intervene({"layers.1": edit}):
        tiny_adapter.generate(["piano", "rock"], 0.1, [], seed=0)  # 5 frames, guided
    starts = sorted({c.start for c, _ in seen})
    assert starts == list(range(5 + 4))  # every position 0 .. n_frames + K - 1 is seen (the prefill maybe twice)
    assert all(c.streams == ("cond", "uncond") and c.batch == 2 and rows == 4 and c.length == 1 for c, rows in seen)
    assert seen[0][0].rows("cond") == slice(0, 2) and seen[0][0].rows("uncond") == slice(2, 4)
    seen.clear()
    with tiny_adapter.intervene({"layers.1": edit}):
        tiny_adapter.code_activations(_codes(tiny_adapter), ["layers.3"])
    (ctx, rows), = seen
    assert (ctx.start, ctx.length, ctx.batch, ctx.streams, rows) == (0, 21, 1, (), 1)
    assert ctx.rows("cond") == slice(None)  # without guidance every row is the one stream


@pytest.mark.parametrize("stream", ["both", "cond", "uncond"])
def test_generation_steered_at_layer_n_by_exactly_a_v(tiny_adapter, stream):
    a, v = 3.0, _unit()
    with tiny_adapter.intervene({"layers.2": AddEdit(v, a, Schedule(), stream, relative=False)}):
        gen = tiny_adapter.generate(["jazz piano", "rock"], 0.3, HOOKS, seed=1)
    for s, texts in (("cond", ["jazz piano", "rock"]), ("uncond", [None, None])):
        clean = _forced(tiny_adapter, gen, texts)  # the same tokens, no steering
        steered = stream in ("both", s)
        for h in ("layers.0", "layers.1"):  # upstream of the edit: untouched
            torch.testing.assert_close(gen.acts[s][h], clean[h], rtol=0, atol=1e-5)
        torch.testing.assert_close(gen.acts[s]["layers.2"], clean["layers.2"] + (a * v if steered else 0),
                                   rtol=0, atol=1e-5)
        diff3 = (gen.acts[s]["layers.3"] - clean["layers.3"]).abs().max()
        assert (diff3 > 1e-3) == steered  # downstream changes only in the steered stream


def test_every_n_schedule_and_ramp(tiny_adapter):
    codes = _codes(tiny_adapter)
    clean = tiny_adapter.code_activations(codes, HOOKS)[0]
    a, v, sched = 2.0, _unit(1), Schedule(start=3, end=17, every=4, ramp=2)
    with tiny_adapter.intervene({"layers.1": AddEdit(v, a, sched, "both", relative=False)}):
        out = tiny_adapter.code_activations(codes, HOOKS)[0]
    torch.testing.assert_close(out["layers.0"], clean["layers.0"], rtol=0, atol=0)
    diff = out["layers.1"] - clean["layers.1"]  # row t is decoder position t + 1
    expected = {3: 0.5, 7: 1.0, 11: 1.0, 15: 1.0}  # positions 3, 7, 11, 15; the ramp halves the first
    for t in range(diff.shape[0]):
        factor = expected.get(t + 1, 0.0)
        torch.testing.assert_close(diff[t], a * factor * v, rtol=0, atol=1e-5)
    assert [sched.factor(p) for p in (2, 3, 4, 7, 17, 19)] == [0.0, 0.5, 0.0, 1.0, 0.0, 0.0]


def test_relative_mode_scales_with_the_residual_norm(tiny_adapter):
    codes = _codes(tiny_adapter)
    clean = tiny_adapter.code_activations(codes, HOOKS)[0]["layers.2"]
    a, v = 0.25, _unit(2)
    with tiny_adapter.intervene({"layers.2": AddEdit(v, a, Schedule(), "both", relative=True)}):
        out = tiny_adapter.code_activations(codes, HOOKS)[0]["layers.2"]
    torch.testing.assert_close(out - clean, a * clean.norm(dim=-1, keepdim=True) * v, rtol=1e-4, atol=1e-5)
    # the model's residual norms hardly vary between positions: check the scaling on inputs whose norms do
    h = torch.randn(2, 5, 64) * torch.arange(1.0, 11.0).reshape(2, 5, 1)
    ctx = EditContext(start=0, length=5, batch=2)
    shift = AddEdit(v, a, Schedule(), "both", relative=True)(h, ctx) - h
    torch.testing.assert_close(shift, a * h.norm(dim=-1, keepdim=True) * v, rtol=1e-5, atol=1e-5)
    assert float(shift[1, 4].norm() / shift[0, 0].norm()) == pytest.approx(float(h[1, 4].norm() / h[0, 0].norm()))


@pytest.mark.slow
def test_zero_strength_is_bit_identical(tiny_adapter):
    plain = tiny_adapter.generate(["jazz piano"], 0.3, ["layers.3"], seed=4)
    edit = AddEdit(_unit(), 0.0, Schedule(), "cond", relative=False)  # the hook runs and adds 0 * v
    with tiny_adapter.intervene({"layers.1": edit, "layers.2": edit}):
        zero = tiny_adapter.generate(["jazz piano"], 0.3, ["layers.3"], seed=4)
    with tiny_adapter.intervene({"layers.2": AddEdit(_unit(), 2.0, Schedule(), "cond", relative=False)}):
        steered = tiny_adapter.generate(["jazz piano"], 0.3, ["layers.3"], seed=4)
    assert np.array_equal(plain.tokens, zero.tokens) and np.array_equal(plain.audio, zero.audio)
    assert torch.equal(plain.acts["cond"]["layers.3"], zero.acts["cond"]["layers.3"])
    assert not np.array_equal(plain.tokens, steered.tokens)  # the same path with a non-zero strength does steer
