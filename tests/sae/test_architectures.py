"""SparseAutoencoder: shapes, inference semantics, folding, optimiser hooks, losses, and learning a known dictionary."""

from __future__ import annotations

import math

import pytest
import torch

from musicsae_cli.errors import ConfigError
from musicsae_cli.sae.architectures import ARCHITECTURES, SAESpec, SparseAutoencoder, geometric_median

D_IN, D_SAE, K = 16, 64, 4


def spec(arch: str, **kw) -> SAESpec:
    return SAESpec(arch=arch, d_in=D_IN, d_sae=D_SAE, k=K if arch in ("topk", "batchtopk") else None, **kw)


def offset_data(n: int, seed: int = 0) -> torch.Tensor:
    """Activations with a large mean and scale, like a real layer (so normalisation matters)."""
    gen = torch.Generator().manual_seed(seed)
    return 5.0 + 3.0 * torch.randn(n, D_IN, generator=gen)


def dictionary_data(n_dirs: int = 32, active: int = 3, seed: int = 123):
    """x = offset + sparse positive combination of known unit directions + noise; returns (sampler, dirs)."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, D_IN, generator=gen)
    dirs /= dirs.norm(dim=1, keepdim=True)

    def sample(n: int) -> torch.Tensor:
        idx = torch.rand(n, n_dirs, generator=gen).argsort(dim=1)[:, :active]
        codes = torch.zeros(n, n_dirs).scatter_(1, idx, 1.0 + 2.0 * torch.rand(n, active, generator=gen))
        return 2.0 + codes @ dirs + 0.01 * torch.randn(n, D_IN, generator=gen)

    return sample, dirs


def trained_steps(sae: SparseAutoencoder, sample, steps: int, coef: float = 0.0, lr: float = 3e-3, batch: int = 256):
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for _ in range(steps):
        out = sae.training_loss(sample(batch), coef)
        out.loss.backward()
        sae.before_optimizer_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.after_optimizer_step()
    return sae


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_shapes(arch):
    sae = SparseAutoencoder.create(spec(arch), sample=offset_data(512))
    x = offset_data(10, seed=1)
    f = sae.encode(x)
    assert f.shape == (10, D_SAE) and sae.decode(f).shape == (10, D_IN) and sae(x).shape == (10, D_IN)
    assert sae.encode(x.view(2, 5, D_IN)).shape == (2, 5, D_SAE)
    out = sae.training_loss(x, 1e-3)
    assert out.loss.dim() == 0 and out.x_hat.shape == (10, D_IN) and out.fired.shape == (D_SAE,)
    assert out.fired.dtype == torch.bool and {"mse", "mse_row"} <= set(out.terms)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.terms.values())


def test_spec_validation_and_round_trip():
    s = spec("topk")
    assert SAESpec.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError, match="unknown SAE architecture"):
        SAESpec("gated", D_IN, D_SAE)
    with pytest.raises(ConfigError, match="k"):
        SAESpec("topk", D_IN, D_SAE)
    with pytest.raises(ConfigError, match="unknown SAE spec keys: kk"):
        SAESpec.from_dict({**s.to_dict(), "kk": 1})


def test_create_normalises_the_sample_and_ties_weights():
    x = offset_data(4096)
    sae = SparseAutoencoder.create(spec("topk"), sample=x, init_b_dec="mean")
    x_n = sae.normalise(x)
    assert x_n.mean(0).abs().max() < 1e-4
    assert x_n.pow(2).sum(1).mean() == pytest.approx(D_IN, rel=1e-4)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    assert not sae.b_enc.any()


def test_geometric_median_resists_outliers():
    gen = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(200, 3, generator=gen, dtype=torch.float64),
                        torch.full((20, 3), 1000.0, dtype=torch.float64)])
    assert points.mean(0).norm() > 50
    assert geometric_median(points).norm() < 0.5


def test_topk_keeps_exactly_k_and_sparse_paths_agree():
    sae = SparseAutoencoder.create(spec("topk"), sample=offset_data(512))
    x = offset_data(32, seed=2)
    f = sae.encode(x)
    assert ((f > 0).sum(1) == K).all()
    values, indices = sae.encode_sparse(x)
    assert values.shape == indices.shape == (32, K)
    torch.testing.assert_close(f.gather(1, indices), values)
    torch.testing.assert_close(sae.decode_sparse(values, indices), sae.decode(f), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), sae.decode(f), rtol=1e-5, atol=1e-5)
    assert SparseAutoencoder.create(spec("relu")).encode_sparse(x) is None


def test_batchtopk_trains_with_k_per_row_on_average_and_encodes_each_row_alone():
    sample, _ = dictionary_data()
    sae = SparseAutoencoder.create(spec("batchtopk"), sample=sample(1024))
    out = sae.training_loss(sample(128), 0.0)
    assert float(out.l0) == pytest.approx(K)  # k * B kept over the batch (all positive here)
    trained_steps(sae, sample, 20)
    assert (sae.threshold > 0).all() and (sae.threshold == sae.threshold[0]).all()
    x, other = sample(16), sample(64)
    alone = torch.cat([sae.encode(x[i:i + 1]) for i in range(16)])
    together = sae.encode(torch.cat([x, other]))[:16]
    assert torch.equal(together > 0, alone > 0)  # no row depends on the rest of the batch
    torch.testing.assert_close(together, alone)
    pre = sae.preacts(sae.normalise(x))
    torch.testing.assert_close(alone, pre * (pre > sae.threshold))


def test_batchtopk_calibrated_threshold_keeps_about_k_per_row():
    sample, _ = dictionary_data()
    sae = SparseAutoencoder.create(spec("batchtopk"), sample=sample(1024))
    trained_steps(sae, sample, 30)
    batches = [sample(128) for _ in range(8)]
    mins = []
    for x in batches:
        pre = sae.preacts(sae.normalise(x)).detach().reshape(-1)
        mins.append(pre.topk(K * 128).values.min())
    assert sae.calibrate_threshold(batches) == pytest.approx(float(torch.stack(mins).mean()), rel=1e-5)
    l0 = torch.cat([(sae.encode(x) > 0).sum(1) for x in batches]).float().mean()
    assert float(l0) == pytest.approx(K, rel=0.15)
    with pytest.raises(ValueError):
        SparseAutoencoder.create(spec("topk")).calibrate_threshold(batches)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fold_normalisation_keeps_outputs(arch):
    sample, _ = dictionary_data()
    sae = SparseAutoencoder.create(spec(arch), sample=5.0 * sample(1024))
    trained_steps(sae, lambda n: 5.0 * sample(n), 5, coef=1e-3)
    x = 5.0 * sample(64)
    before_f, before = sae.encode(x), sae(x)
    assert sae.norm_scale != 1.0 and sae.norm_mean.abs().max() > 1
    sae.fold_normalisation()
    assert float(sae.norm_scale) == 1.0 and not sae.norm_mean.any()
    torch.testing.assert_close(sae.encode(x), before_f, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sae(x), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu"])
def test_decoder_rows_stay_unit_norm_and_lose_parallel_gradient(arch):
    sae = SparseAutoencoder.create(spec(arch), sample=offset_data(512))
    sae.training_loss(offset_data(64, seed=3), 1e-3).loss.backward()
    sae.before_optimizer_step()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1) + 0.5)
    sae.after_optimizer_step()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))


def test_relu_keeps_decoder_norms_and_penalises_them():
    sae = SparseAutoencoder.create(spec("relu"), sample=offset_data(512))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.full((D_SAE,), 0.1))
    x = offset_data(64, seed=4)
    out = sae.training_loss(x, 2.0)
    f = sae.encode(x)
    penalty = (f * sae.W_dec.norm(dim=1)).sum(1).mean()
    torch.testing.assert_close(out.terms["sparsity"], penalty.detach())
    torch.testing.assert_close(out.loss.detach(), out.terms["mse"] + 2.0 * penalty.detach() / D_IN)
    sae.after_optimizer_step()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.full((D_SAE,), 0.1))


def _recovered(sae, dirs) -> float:
    w = sae.W_dec.detach()
    cos = (dirs @ (w / w.norm(dim=1, keepdim=True)).T).max(dim=1).values
    return float((cos > 0.9).float().mean())


@pytest.mark.slow
def test_topk_recovers_a_known_dictionary():
    sample, dirs = dictionary_data()
    sae = SparseAutoencoder.create(SAESpec("topk", D_IN, D_SAE, k=3), sample=sample(2048))
    assert _recovered(sae, dirs) < 0.2
    trained_steps(sae, sample, 300, lr=1e-2)
    assert _recovered(sae, dirs) >= 0.9


@pytest.mark.slow
def test_relu_recovers_a_known_dictionary():
    sample, dirs = dictionary_data()
    sae = SparseAutoencoder.create(spec("relu"), sample=sample(2048))
    trained_steps(sae, sample, 300, coef=3.0)
    assert _recovered(sae, dirs) >= 0.9


def test_auxk_uses_only_dead_latents_and_adds_b_dec_once():
    sample, _ = dictionary_data()
    sae = SparseAutoencoder.create(spec("topk"), sample=sample(512))
    with torch.no_grad():
        sae.b_dec.add_(3.0)  # a bias counted twice would now change the AuxK term a lot
    x = sample(64)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.arange(0, D_SAE, 4)] = True
    aux_k = 2

    def grads(coef):
        sae.zero_grad(set_to_none=True)
        out = sae.training_loss(x, 0.0, dead_mask=dead, auxk_coef=coef, auxk_k=aux_k)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in sae.named_parameters()}

    with_aux, g1 = grads(1.0)
    _, g0 = grads(0.0)
    diff_dec = (g1["W_dec"] - g0["W_dec"]).abs().sum(1)  # (d_sae,)
    diff_enc = (g1["W_encT"] - g0["W_encT"]).abs().sum(1)  # the TopK encoder is stored (d_sae, d_in)
    assert diff_dec[dead].sum() > 0 and diff_enc[dead].sum() > 0
    assert diff_dec[~dead].max() == 0 and diff_enc[~dead].max() == 0
    # independent recomputation: e = x_n - x_hat_n (b_dec once), e_hat = sum of top-aux dead relu(pre) W_dec rows
    with torch.no_grad():
        x_n = sae.normalise(x)
        e = x_n - (sae.encode_n(x_n) @ sae.W_dec + sae.b_dec)
        pre = sae.preacts(x_n)
        dead_idx = torch.nonzero(dead).flatten()
        top = pre[:, dead_idx].topk(aux_k, dim=1)
        f_aux = torch.zeros_like(pre).scatter(1, dead_idx[top.indices], torch.relu(top.values))
        e_hat = f_aux @ sae.W_dec
        expected = (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
        twice = (e - e_hat - sae.b_dec).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    assert float(with_aux.terms["auxk"]) == pytest.approx(float(expected), rel=1e-4)
    assert abs(float(twice) - float(expected)) > 0.1
    assert float(with_aux.loss.detach()) == pytest.approx(float(with_aux.terms["mse"] + expected), rel=1e-4)


def test_no_dead_latents_means_no_auxk():
    sae = SparseAutoencoder.create(spec("topk"), sample=offset_data(256))
    out = sae.training_loss(offset_data(32), 0.0, dead_mask=torch.zeros(D_SAE, dtype=torch.bool))
    assert float(out.terms["auxk"]) == 0.0
    torch.testing.assert_close(out.loss.detach(), out.terms["mse"])


def test_jumprelu_threshold_gets_a_gradient_from_the_l0_penalty():
    sae = SparseAutoencoder.create(spec("jumprelu", jumprelu_init_threshold=0.5, jumprelu_bandwidth=0.5),
                                   sample=offset_data(512))
    x = offset_data(128, seed=5)

    def threshold_grad(coef):
        sae.zero_grad(set_to_none=True)
        sae.training_loss(x, coef).loss.backward()
        return sae.log_threshold.grad.clone()

    g_pen = threshold_grad(1.0) - threshold_grad(0.0)
    assert (g_pen <= 1e-9).all() and (g_pen < 0).any()  # the L0 penalty pushes thresholds up
    assert threshold_grad(0.0).abs().sum() > 0  # and the reconstruction term reaches them too


def test_bf16_autocast_step_keeps_fp32_master_gradients():
    sample, _ = dictionary_data()
    for arch in ("topk", "relu"):
        sae = SparseAutoencoder.create(spec(arch), sample=sample(512))
        x = sample(64)
        ref = sae.training_loss(x, 1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sae.training_loss(x, 1.0)
        out.loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in sae.parameters())
        assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=0.05)


def test_resample_dead_reinitialises_only_dead_latents_and_their_adam_state():
    sample, _ = dictionary_data()
    sae = SparseAutoencoder.create(spec("relu"), sample=sample(512))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    trained_steps(sae, sample, 1)
    sae.training_loss(sample(64), 1.0).loss.backward()
    opt.step()
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    dead = torch.tensor([1, 5, 9])
    sae.resample_dead(dead, sample(256), opt)
    alive = torch.ones(D_SAE, dtype=torch.bool)
    alive[dead] = False
    assert torch.equal(sae.W_dec[alive], before["W_dec"][alive]) and torch.equal(sae.W_enc[:, alive],
                                                                                  before["W_enc"][:, alive])
    assert not torch.equal(sae.W_dec[dead], before["W_dec"][dead]) and not sae.b_enc[dead].any()
    assert not opt.state[sae.W_dec]["exp_avg"][dead].any() and opt.state[sae.W_dec]["exp_avg"][alive].any()
    assert not opt.state[sae.W_enc]["exp_avg_sq"][:, dead].any()
    live_norm = before["W_dec"][alive].norm(dim=1).mean()
    torch.testing.assert_close(sae.W_dec[dead].norm(dim=1), live_norm.expand(3))
    assert math.isfinite(float(sae.training_loss(sample(32), 1.0).loss.detach()))


# ---- the registry: one class per architecture, built from the spec ------------------------------------------------
def test_each_architecture_is_its_own_registered_class():
    from musicsae_cli.sae.architectures import architecture_class

    assert ARCHITECTURES == ("relu", "topk", "batchtopk", "jumprelu")
    classes = {arch: architecture_class(arch) for arch in ARCHITECTURES}
    assert len(set(classes.values())) == len(ARCHITECTURES)
    for arch, cls in classes.items():
        assert issubclass(cls, SparseAutoencoder) and cls.arch == arch
        assert type(SparseAutoencoder(spec(arch))) is cls and type(SparseAutoencoder.create(spec(arch))) is cls
        assert type(cls.create(spec(arch))) is cls
    with pytest.raises(ConfigError, match="use one of relu, topk, batchtopk, jumprelu"):
        architecture_class("gated")
    with pytest.raises(ConfigError, match="relu architecture"):
        classes["relu"](spec("topk"))  # a class builds only its own architecture


def test_a_new_architecture_is_one_class_and_one_registration(monkeypatch, tmp_path):
    """A registered subclass is accepted by SAESpec, built by SparseAutoencoder(spec), and saved and loaded."""
    from musicsae_cli.sae import architectures
    from musicsae_cli.sae.archs.relu import ReLUSAE
    from musicsae_cli.sae.io import load_sae, save_sae

    monkeypatch.setattr(architectures, "_REGISTRY", dict(architectures._REGISTRY))  # undone after the test

    class SquaredReLUSAE(ReLUSAE):
        saelens_reads = ()  # plain SAELens "standard" folders stay relu

        def activate(self, pre, latents=None):
            return torch.relu(pre).square()

        def train_activation(self, pre):
            f = torch.relu(pre).square()
            return f, (f * self.W_dec.norm(dim=1)).sum(1).mean()

    with pytest.raises(ConfigError, match="unknown SAE architecture"):
        SAESpec("relu2", D_IN, D_SAE)
    architectures.register_architecture("relu2", SquaredReLUSAE)
    assert architectures.ARCHITECTURES[-1] == "relu2"
    with pytest.raises(ConfigError, match="registered twice"):
        architectures.register_architecture("relu2", ReLUSAE)
    sae = trained_steps(SparseAutoencoder.create(spec("relu2"), sample=offset_data(256)), offset_data, 3, coef=1.0)
    assert type(sae) is SquaredReLUSAE
    x = offset_data(16, seed=7)
    torch.testing.assert_close(sae.encode(x), torch.relu(sae.preacts(sae.normalise(x))).square())
    save_sae(sae, tmp_path, hook_name="layers.1", model_name="m")
    loaded, cfg = load_sae(tmp_path)
    assert type(loaded) is SquaredReLUSAE and cfg["architecture"] == "standard"
    torch.testing.assert_close(loaded.encode(x), sae.encode(x).detach(), rtol=1e-4, atol=1e-4)


def test_latent_reader_matches_the_dense_encoding():
    """What steering's latent edits read: the values of a few latents, without a dense latent matrix."""
    sample, _ = dictionary_data()
    latents = torch.tensor([0, 3, 17, 40])
    for arch in ARCHITECTURES:
        sae = trained_steps(SparseAutoencoder.create(spec(arch), sample=sample(512)), sample, 5, coef=1e-3)
        x = sample(32)
        with torch.no_grad():
            torch.testing.assert_close(sae.latent_reader(latents)(x), sae.encode(x)[:, latents])
