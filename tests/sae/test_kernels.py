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
    main, aux = kernels.select(x - b_dec.detach(), W_enc.detach(), b_enc.detach(), k)
    assert aux is None
    out, _ = kernels.sparse_step(x, b_dec, W_enc, b_enc, W_dec, main)
    return out + b_dec


def test_topk_values_and_gradients_match_dense_autograd():
    W_enc, b_enc, W_dec, b_dec = params()
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(1))
    weight = torch.randn(B, D)
    tensors = [W_enc, b_enc, W_dec, b_dec]
    ref, ref_grads = grads_of(lambda: dense_topk(x, W_enc, b_enc, W_dec, b_dec, K), tensors, weight)
    out, out_grads = grads_of(lambda: sparse_topk(x, W_enc, b_enc, W_dec, b_dec, K), tensors, weight)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(("W_enc", "b_enc", "W_dec", "b_dec"), out_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
        assert a.shape == b.shape and a.dtype == torch.float32


def test_latent_and_row_sums_are_selection_products(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    pre = torch.randn(B, F, generator=gen)
    sel = kernels.fixed_selection(pre.topk(K, dim=1).indices.sort(dim=1).values, F)
    weights, table = torch.randn(sel.cols.numel(), generator=gen), torch.randn(B, D, generator=gen)
    dense = torch.zeros(B, F)
    dense[sel.rows, sel.cols] = weights
    w_dec = torch.randn(F, D, generator=gen)
    for tile in (64, 5):  # untiled, and in column tiles (the last one narrower)
        monkeypatch.setattr(kernels, "TILE", tile)
        monkeypatch.setattr(kernels, "TILE_MIN_REUSE", 1)
        torch.testing.assert_close(sel.latent_sums(weights, table), dense.T @ table, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sel.row_sums(weights, w_dec), dense @ w_dec, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("density", [0.0, 2.0])  # sampled_addmm, blocked dense matmul
def test_sampled_dots_match_the_dense_product_at_the_entries(monkeypatch, density):
    monkeypatch.setattr(kernels, "DENSE_SAMPLED_DENSITY", density)
    monkeypatch.setattr(kernels, "BLOCK_BYTES", 1)  # 64-row blocks
    gen = torch.Generator().manual_seed(3)
    n = 150
    left, right = torch.randn(n, D, generator=gen), torch.randn(F, D, generator=gen)
    idx = torch.randn(n, F, generator=gen).topk(K, dim=1, sorted=False).indices  # columns unsorted in a row
    sel = kernels.fixed_selection(idx, F)
    torch.testing.assert_close(kernels.sampled_dots(sel, left, right), (left @ right.T)[sel.rows, sel.cols],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_bytes", [kernels.BLOCK_BYTES, 1])
def test_batch_topk_selection_is_the_exact_batch_topk(monkeypatch, block_bytes):
    monkeypatch.setattr(kernels, "BLOCK_BYTES", block_bytes)
    gen = torch.Generator().manual_seed(3)
    n = 150
    W_enc, b_enc = torch.randn(D, F, generator=gen), torch.randn(F, generator=gen)
    for boost_row in (None, 0):  # row 0 owning most of the batch's top entries forces the exact fallback
        x = torch.randn(n, D, generator=gen)
        if boost_row is not None:
            x[boost_row] *= 100.0
        pre = x @ W_enc + b_enc
        kept, _ = kernels.select(x, W_enc, b_enc, K, batch=True)
        sel = kept.sel
        flat = pre.reshape(-1).topk(K * n).indices
        expected = set(zip((flat // F).tolist(), (flat % F).tolist(), strict=True))
        assert set(zip(sel.rows.tolist(), sel.cols.tolist(), strict=True)) == expected
        torch.testing.assert_close(kept.pre, pre[sel.rows, sel.cols], rtol=1e-5, atol=1e-5)
        assert torch.equal(sel.crow[1:] - sel.crow[:-1], torch.bincount(sel.rows, minlength=n))
        assert torch.equal(sel.rows, torch.sort(sel.rows).values)  # CSR row order
        if boost_row is not None:
            assert int((sel.rows == boost_row).sum()) > 4 * K
        assert torch.equal(kernels.batch_topk_selection(pre, K).sel.cols, sel.cols)


def test_aux_selection_keeps_the_positive_top_dead_latents_in_row_blocks(monkeypatch):
    monkeypatch.setattr(kernels, "BLOCK_BYTES", 1)  # 64-row blocks
    gen = torch.Generator().manual_seed(4)
    n = 150
    W_enc, b_enc, x = torch.randn(D, F, generator=gen), torch.randn(F, generator=gen), torch.randn(n, D, generator=gen)
    dead = torch.tensor([3, 10, 11, 50, 90, 91, 95])
    main, aux = kernels.select(x, W_enc, b_enc, K, dead=dead, k_aux=3)
    pre = x @ W_enc + b_enc
    top = pre[:, dead].topk(3, dim=1)
    expected = {(r, int(dead[c])) for r in range(n) for c, v in zip(top.indices[r].tolist(), top.values[r].tolist(),
                                                                    strict=True) if v > 0}
    got = set(zip(aux.sel.rows.tolist(), dead[aux.sel.cols].tolist(), strict=True))
    assert got == expected and 0 < len(got) < 3 * n  # some rows lose entries to relu
    assert bool((aux.pre > 0).all()) and aux.sel.d_sae == dead.numel()
    torch.testing.assert_close(aux.pre, pre[aux.sel.rows, dead[aux.sel.cols]], rtol=1e-5, atol=1e-5)
    assert torch.equal(main.sel.cols.view(n, K), pre.topk(K, dim=1).indices.sort(dim=1).values)


def dense_auxk_loss(sae, x, dead_mask, k_aux, coef):
    """musicsae's TopK + AuxK loss written the straightforward way: dense tensors, plain autograd."""
    x_n = sae.normalise(x)
    pre = (x_n - sae.b_dec) @ sae.W_enc + sae.b_enc
    idx = pre.topk(sae.spec.k, dim=1).indices
    f = torch.zeros_like(pre).scatter(1, idx, torch.relu(pre.gather(1, idx)))
    err = x_n - (f @ sae.W_dec + sae.b_dec)
    residual = err.detach()
    top = pre.masked_fill(~dead_mask, float("-inf")).topk(k_aux, dim=1)
    e_hat = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values)) @ sae.W_dec
    auxk = (residual - e_hat).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum()
    return err.pow(2).sum(1).mean() / sae.spec.d_in + coef * auxk


@pytest.mark.parametrize("path", ["default", "tiled", "sampled", "blocks", "all_dead_kept"])
def test_auxk_step_gradients_equal_a_dense_reference(monkeypatch, path):
    """The whole TopK + AuxK training loss: loss and every parameter gradient against dense autograd, through
    each implementation path (column tiles, sampled or blocked-dense products, encoder row blocks)."""
    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder

    if path == "tiled":
        monkeypatch.setattr(kernels, "TILE", 5)
        monkeypatch.setattr(kernels, "TILE_MIN_REUSE", 1)
    if path == "sampled":
        monkeypatch.setattr(kernels, "DENSE_SAMPLED_DENSITY", 2.0)
    if path == "blocks":
        monkeypatch.setattr(kernels, "BLOCK_BYTES", 1)
    gen = torch.Generator().manual_seed(8)
    n, d_in, d_sae = 150, 12, 96
    x = torch.randn(n, d_in, generator=gen) * 2 + 1
    sae = SparseAutoencoder.create(SAESpec("topk", d_in, d_sae, k=4), sample=x, init_b_dec="mean")
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.5, generator=gen)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[torch.randperm(d_sae, generator=gen)[:24 if path != "all_dead_kept" else 5]] = True
    k_aux = 6 if path != "all_dead_kept" else 5
    coef = 0.5
    out = sae.training_loss(x, 0.0, dead_mask=dead, auxk_coef=coef, auxk_k=k_aux)
    out.loss.backward()
    ours = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad()
    ref = dense_auxk_loss(sae, x, dead, k_aux, coef)
    ref.backward()
    assert float(out.terms["auxk"]) > 0
    torch.testing.assert_close(out.loss.detach(), ref.detach(), rtol=1e-5, atol=1e-6)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)
        assert ours[name].abs().sum() > 0, name


def test_bf16_autocast_matmul_in_bf16_with_fp32_decode_and_gradients():
    W_enc, b_enc, W_dec, b_dec = params(6)
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        main, _ = kernels.select(x - b_dec.detach(), W_enc.detach(), b_enc.detach(), K)
        out, _ = kernels.sparse_step(x, b_dec, W_enc, b_enc, W_dec, main)
        out = out + b_dec
    assert main.pre.dtype == torch.float32 and out.dtype == torch.float32
    sel = main.sel
    exact = ((x - b_dec) @ W_enc + b_enc)[sel.rows, sel.cols]
    torch.testing.assert_close(main.pre, exact.detach(), rtol=2e-2, atol=2e-2)  # bf16 matmul rounding only
    fp32_sel, _ = kernels.select(x - b_dec.detach(), W_enc.detach(), b_enc.detach(), K)
    same = (fp32_sel.sel.cols.view(B, K) == sel.cols.view(B, K)).all(1)  # rows where bf16 kept the same set
    assert same.float().mean() > 0.5
    torch.testing.assert_close(out[same], sparse_topk(x, W_enc, b_enc, W_dec, b_dec, K)[same], rtol=5e-2, atol=5e-2)
    out.sum().backward()
    for t in (W_enc, b_enc, W_dec, b_dec):
        assert t.grad.dtype == torch.float32 and torch.isfinite(t.grad).all()


def test_encode_topk_in_row_blocks_equals_one_matmul(monkeypatch):
    W_enc, b_enc, _, _ = params(9, requires_grad=False)
    x = torch.randn(150, D, generator=torch.Generator().manual_seed(9))
    expected = torch.addmm(b_enc, x, W_enc).topk(K, dim=1)
    for block_bytes in (kernels.BLOCK_BYTES, 1):
        monkeypatch.setattr(kernels, "BLOCK_BYTES", block_bytes)
        values, indices = kernels.encode_topk(x, W_enc, b_enc, K)
        torch.testing.assert_close(values, expected.values)
        assert torch.equal(indices, expected.indices)


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
