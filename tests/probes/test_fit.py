"""The batched probe fit against an independent one: autograd + float64 L-BFGS on each probe alone."""

from __future__ import annotations

import numpy as np
import pytest


def _reference_fit(xs: np.ndarray, y: np.ndarray, loss: str, n_out: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """One probe on standardised features xs (n, d), minimising mean loss + lam/2 ||W||^2 with autograd."""
    import torch

    x = torch.from_numpy(xs).double()
    t = torch.from_numpy(y)
    w = torch.zeros(n_out, xs.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_out, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                            tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        z = x @ w.T + b
        if loss == "ce":
            fit = torch.nn.functional.cross_entropy(z, t.long())
        elif loss == "onehot_mse":
            fit = ((z - torch.nn.functional.one_hot(t.long(), n_out).double()) ** 2).mean()
        else:
            fit = ((z[:, 0] - t.double()) ** 2).mean()
        value = fit + 0.5 * lam * (w * w).sum()
        value.backward()
        return value

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


@pytest.mark.parametrize("loss,n_out", [("ce", 3), ("onehot_mse", 3), ("mse", 1)])
def test_each_batched_probe_equals_its_own_fit(loss, n_out):
    from musicsae_cli.probes.fit import fit_probes

    rng = np.random.default_rng(0)
    h, n, d, lam = 2, 60, 5, 1e-2
    x = rng.normal(size=(h, n, d)).astype(np.float32) * np.array([1.0, 3.0, 0.5, 2.0, 1.0], np.float32)
    if loss == "mse":
        targets = rng.normal(size=(2, n)).astype(np.float32)
    else:
        targets = rng.integers(0, n_out, size=(2, n))
    fitted = fit_probes(x, targets, n_out, loss, weight_decay=lam, max_iter=500, device="cpu")
    for k in range(2):  # the true targets and a second, independent variant (as the control is)
        for j in range(h):
            w, b = _reference_fit((x[j] - fitted.mean[j]) / fitted.std[j], targets[k], loss, n_out, lam)
            np.testing.assert_allclose(fitted.weight[k, j], w, atol=2e-3, rtol=2e-3)
            np.testing.assert_allclose(fitted.bias[k, j], b, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("loss,n_out", [("ce", 4), ("mse", 1)])
def test_blocks_of_real_widths_equal_the_zero_padded_problem(loss, n_out):
    """Hookpoints of different widths, zero-padded to the widest: fitting each block at its own width gives the
    probes of the padded problem (zero weights on the padding) and each one equals its own separate fit."""
    from musicsae_cli.probes.fit import fit_probes

    rng = np.random.default_rng(1)
    widths, n, lam = [6, 2, 6, 3], 80, 1e-2
    x = np.zeros((len(widths), n, max(widths)), np.float32)
    for j, w in enumerate(widths):
        x[j, :, :w] = rng.normal(size=(n, w)) * rng.uniform(0.5, 3.0, size=w)
    targets = (rng.normal(size=(2, n)).astype(np.float32) if loss == "mse"
               else rng.integers(0, n_out, size=(2, n)))
    padded = fit_probes(x, targets, n_out, loss, weight_decay=lam, max_iter=500)
    blocked = fit_probes(x, targets, n_out, loss, weight_decay=lam, max_iter=500, widths=widths)
    # the same optimum, up to where L-BFGS stops (its gradient tolerance)
    np.testing.assert_allclose(blocked.weight, padded.weight, atol=1e-3)
    np.testing.assert_allclose(blocked.bias, padded.bias, atol=1e-3)
    for j, w in enumerate(widths):
        assert not blocked.weight[:, j, :, w:].any()
        ref_w, ref_b = _reference_fit((x[j, :, :w] - blocked.mean[j, :w]) / blocked.std[j, :w], targets[0], loss,
                                      n_out, lam)
        np.testing.assert_allclose(blocked.weight[0, j, :, :w], ref_w, atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(blocked.bias[0, j], ref_b, atol=2e-3, rtol=2e-3)
    with pytest.raises(ValueError, match="do not fit"):
        fit_probes(x, targets, n_out, loss, widths=[6, 2])
