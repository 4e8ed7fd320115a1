"""ReconstructionMetrics against numpy recomputations; DeadLatentTracker window semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicsae_cli.sae.metrics import DeadLatentTracker, ReconstructionMetrics

D_IN, D_SAE = 8, 20


def batches(x: np.ndarray, sizes=(7, 50, 1, 42)):
    start = 0
    for n in sizes:
        yield slice(start, start + n)
        start += n


def data(seed: int = 0, n: int = 100):
    rng = np.random.default_rng(seed)
    x = 1000.0 + rng.standard_normal((n, D_IN))  # a large mean: float32 single-pass formulas lose it
    x_hat = x + 0.3 * rng.standard_normal((n, D_IN))
    f = np.where(rng.random((n, D_SAE)) < 0.2, rng.random((n, D_SAE)), 0.0)
    f[:, :3] = 0.0  # three latents never fire
    return x, x_hat, f


def run(x, x_hat, f) -> dict:
    acc = ReconstructionMetrics(D_SAE)
    for s in batches(x):
        acc.update(torch.from_numpy(x[s]), torch.from_numpy(x_hat[s]), torch.from_numpy(f[s]))
    return acc.compute()


def test_explained_variance_is_zero_for_the_mean_and_one_for_perfect():
    x, _, f = data()
    mean = np.broadcast_to(x.mean(0), x.shape).copy()
    assert run(x, mean, f)["explained_variance"] == pytest.approx(0.0, abs=1e-9)
    assert run(x, x.copy(), f)["explained_variance"] == 1.0


def test_metrics_match_numpy():
    x, x_hat, f = data(1)
    m = run(x, x_hat, f)
    err = ((x - x_hat) ** 2).sum(1)
    ev = 1 - err.mean() / ((x - x.mean(0)) ** 2).sum(1).mean()
    assert m["explained_variance"] == pytest.approx(ev, rel=1e-9)
    assert m["mse"] == pytest.approx(err.mean() / D_IN, rel=1e-9)
    assert m["mse_per_row"] == pytest.approx(err.mean(), rel=1e-9)
    assert m["l0"] == pytest.approx((f != 0).sum(1).mean())
    density = (f != 0).mean(0)
    np.testing.assert_allclose(m["density"], density)
    assert m["dead_fraction"] == pytest.approx(3 / D_SAE) and m["n_dead"] == 3
    norms, norms_hat = np.linalg.norm(x, axis=1), np.linalg.norm(x_hat, axis=1)
    assert m["shrinkage"] == pytest.approx((norms_hat / norms).mean(), rel=1e-9)
    assert m["shrinkage_of_means"] == pytest.approx(norms_hat.mean() / norms.mean(), rel=1e-9)
    hist = m["density_histogram"]
    assert sum(hist["counts"]) == D_SAE - 3 and hist["never_fired"] == 3
    expected, _ = np.histogram(np.log10(density[density > 0]), bins=hist["log10_bin_edges"])
    assert hist["counts"] == expected.tolist()
    json.dumps({k: v for k, v in m.items() if k != "density"})


def test_shrinkage_of_a_half_scale_reconstruction():
    x, _, f = data(2)
    m = run(x, 0.5 * x, f)
    assert m["shrinkage"] == pytest.approx(0.5) and m["shrinkage_of_means"] == pytest.approx(0.5)


def test_sparse_and_count_updates_agree_with_dense():
    x, x_hat, f = data(3)
    dense = run(x, x_hat, f)
    k = 4
    ft = torch.from_numpy(f)
    values, indices = ft.topk(k, dim=1)
    f_k = torch.zeros_like(ft).scatter(1, indices, values)
    a, b, c = (ReconstructionMetrics(D_SAE) for _ in range(3))
    xt, xht = torch.from_numpy(x), torch.from_numpy(x_hat)
    a.update(xt, xht, f_k)
    b.update(xt, xht, values=values, indices=indices)
    c.update(xt, xht, fire_counts=(f_k != 0).sum(0), active_total=float((f_k != 0).sum()))
    ra, rb, rc = a.compute(), b.compute(), c.compute()
    for key in ("l0", "dead_fraction", "explained_variance"):
        assert ra[key] == rb[key] == rc[key]
    np.testing.assert_array_equal(ra["density"], rb["density"])
    assert ra["explained_variance"] == pytest.approx(dense["explained_variance"])
    with pytest.raises(TypeError):
        a.update(xt, xht)


def test_dead_latent_tracker_counts_tokens_since_firing():
    tracker = DeadLatentTracker(4, window_tokens=100)
    fired = torch.tensor([True, False, False, False])
    tracker.update(fired, 60)
    assert not tracker.dead_mask().any()
    tracker.update(torch.tensor([False, True, False, False]), 50)
    assert tracker.dead_mask().tolist() == [False, False, True, True]  # 110 > 100 tokens without firing
    assert tracker.since_fired.tolist() == [50, 0, 110, 110]
    state = tracker.state_dict()
    json.dumps({k: v for k, v in state.items() if k != "since_fired"})
    other = DeadLatentTracker(4, window_tokens=1)
    other.load_state_dict(state)
    assert torch.equal(other.since_fired, tracker.since_fired) and other.window_tokens == 100
    state["since_fired"][0] = 999  # the loaded state is a copy
    assert other.since_fired[0] == 50
