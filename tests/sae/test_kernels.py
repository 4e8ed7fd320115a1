"""Sparse kernels against dense autograd references: values and gradients."""

from __future__ import annotations

import pytest
import torch

from musicsae_cli.sae import kernels

B, D, F, K = 48, 12, 96, 5


def params(seed: int = 0, requires_grad: bool = True):
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(D, F, generator=gen) / 3, torch.randn(F, generator=gen) / 3,
               torch.randn(F, D, generator=gen), torch.randn(D, generator=gen)]
    return [t.requires_grad_(requires_grad) for t in tensors]


def grads_of(fn, tensors, weight):
    for t in tensors:
        t.grad = None
    out = fn()
    (out * weight).sum().backward()
    return out.detach(), [t.grad.clone() for t in tensors]


def dense_topk(x, W_enc, b_enc, W_dec, b_dec, k):
    pre = (x - b_dec) @ W_enc + b_enc
    idx = pre.topk(k, dim=1).indices
    f = torch.zeros_like(pre).scatter(1, idx, torch.relu(pre.gather(1, idx)))
    return f @ W_dec + b_dec


def sparse_topk(x, W_enc, b_enc, W_dec, b_dec, k):
    pre = kernels.encoder_preacts(x.detach() - b_dec.detach(), W_enc.detach(), b_enc.detach())
    sel = kernels.topk_selection(pre, k)
    values = torch.relu(kernels.selected_preacts(x, b_dec, W_enc, b_enc, pre, sel))
    return kernels.sparse_decode(values, sel, W_dec) + b_dec


def test_topk_values_and_gradients_match_dense_autograd():
    W_enc, b_enc, W_dec, b_dec = params()
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(1)).requires_grad_()
    weight = torch.randn(B, D)
    tensors = [x, W_enc, b_enc, W_dec, b_dec]
    ref, ref_grads = grads_of(lambda: dense_topk(x, W_enc, b_enc, W_dec, b_dec, K), tensors, weight)
    out, out_grads = grads_of(lambda: sparse_topk(x, W_enc, b_enc, W_dec, b_dec, K), tensors, weight)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(("x", "W_enc", "b_enc", "W_dec", "b_dec"), out_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
        assert a.shape == b.shape and a.dtype == torch.float32


def test_latent_sums_is_selection_transpose_times_table():
    gen = torch.Generator().manual_seed(2)
    pre = torch.randn(B, F, generator=gen)
    sel = kernels.topk_selection(pre, K)
    weights, table = torch.randn(sel.cols.numel(), generator=gen), torch.randn(B, D, generator=gen)
    dense = torch.zeros(B, F)
    dense[sel.rows, sel.cols] = weights
    torch.testing.assert_close(sel.latent_sums(weights, table), dense.T @ table, rtol=1e-5, atol=1e-5)


def test_batch_topk_selection_is_the_exact_batch_topk():
    gen = torch.Generator().manual_seed(3)
    for boost_row in (None, 0):  # row 0 owning most of the batch's top entries forces the exact fallback
        pre = torch.randn(B, F, generator=gen)
        if boost_row is not None:
            pre[boost_row] += 100.0
        sel = kernels.batch_topk_selection(pre, K)
        flat = pre.reshape(-1).topk(K * B).indices
        expected = set(zip((flat // F).tolist(), (flat % F).tolist(), strict=True))
        assert set(zip(sel.rows.tolist(), sel.cols.tolist(), strict=True)) == expected
        assert torch.equal(sel.crow[1:] - sel.crow[:-1], torch.bincount(sel.rows, minlength=B))
        assert torch.equal(sel.rows, torch.sort(sel.rows).values)  # CSR row order
        if boost_row is not None:
            assert int((sel.rows == boost_row).sum()) > 4 * K


def test_masked_topk_selection_uses_only_the_given_latents():
    gen = torch.Generator().manual_seed(4)
    pre = torch.randn(B, F, generator=gen)
    latents = torch.tensor([3, 10, 11, 50, 90])
    sel = kernels.masked_topk_selection(pre, latents, 2)
    assert set(sel.cols.tolist()) <= set(latents.tolist())
    chosen = sel.cols.view(B, 2)
    best = latents[pre[:, latents].topk(2, dim=1).indices].sort(dim=1).values
    assert torch.equal(chosen, best)


def test_sparse_decode_without_bias_matches_dense_for_aux_latents():
    W_enc, b_enc, W_dec, b_dec = params(5)
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(5))
    pre = kernels.encoder_preacts(x - b_dec.detach(), W_enc.detach(), b_enc.detach())
    latents = torch.arange(0, F, 7)
    sel = kernels.masked_topk_selection(pre, latents, 3)
    weight = torch.randn(B, D)
    tensors = [W_enc, b_enc, W_dec, b_dec]

    def ours():
        return kernels.sparse_decode(torch.relu(kernels.selected_preacts(x, b_dec, W_enc, b_enc, pre, sel)), sel,
                                     W_dec)

    def dense():
        full = (x - b_dec) @ W_enc + b_enc
        mask = torch.zeros(B, F, dtype=torch.bool)
        mask[sel.rows, sel.cols] = True
        return (torch.relu(full) * mask) @ W_dec

    out, g = grads_of(ours, tensors, weight)
    ref, g_ref = grads_of(dense, tensors, weight)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_matmul_in_bf16_with_fp32_decode_and_gradients():
    W_enc, b_enc, W_dec, b_dec = params(6)
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pre = kernels.encoder_preacts(x - b_dec.detach(), W_enc.detach(), b_enc.detach())
        sel = kernels.topk_selection(pre, K)
        values = kernels.selected_preacts(x, b_dec, W_enc, b_enc, pre, sel)
        out = kernels.sparse_decode(torch.relu(values), sel, W_dec) + b_dec
    assert pre.dtype == torch.bfloat16 and values.dtype == torch.float32 and out.dtype == torch.float32
    exact = ((x - b_dec) @ W_enc + b_enc)[sel.rows, sel.cols]
    torch.testing.assert_close(values, exact, rtol=2e-2, atol=2e-2)  # bf16 matmul rounding only
    fp32_sel = kernels.topk_selection((x - b_dec) @ W_enc + b_enc, K)
    same = (fp32_sel.cols.view(B, K) == sel.cols.view(B, K)).all(1)  # rows where bf16 rounding kept the same set
    assert same.float().mean() > 0.5
    torch.testing.assert_close(out[same], sparse_topk(x, W_enc, b_enc, W_dec, b_dec, K)[same], rtol=5e-2, atol=5e-2)
    out.sum().backward()
    for t in (W_enc, b_enc, W_dec, b_dec):
        assert t.grad.dtype == torch.float32 and torch.isfinite(t.grad).all()


def test_jumprelu_and_step_straight_through_gradients():
    pre = torch.tensor([[0.10, 0.52, 0.49, 0.90], [0.505, 0.0, 0.30, 0.70]], requires_grad=True)
    theta = torch.full((4,), 0.5, requires_grad=True)
    eps = 0.1
    out = kernels.jumprelu(pre, theta, eps)
    torch.testing.assert_close(out.detach(), pre.detach() * (pre.detach() > 0.5))
    out.sum().backward()
    # d/dtheta = -(theta / eps) * #{|z - theta| < eps / 2}; only columns 0 (0.505), 1 (0.52) and 2 (0.49) are near
    torch.testing.assert_close(theta.grad, torch.tensor([-5.0, -5.0, -5.0, 0.0]))
    torch.testing.assert_close(pre.grad, (pre.detach() > 0.5).float())
    theta.grad = None
    pre.grad = None
    kernels.step(pre, theta, eps).sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([-10.0, -10.0, -10.0, 0.0]))
    assert pre.grad is None or not pre.grad.any()


@pytest.mark.parametrize("k", [1, F])
def test_topk_extremes(k):
    W_enc, b_enc, W_dec, b_dec = params(7, requires_grad=False)
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(sparse_topk(x, W_enc, b_enc, W_dec, b_dec, k),
                               dense_topk(x, W_enc, b_enc, W_dec, b_dec, k), rtol=1e-5, atol=1e-5)
