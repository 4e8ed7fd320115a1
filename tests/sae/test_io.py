"""SAE save/load: round trips, plain SAELens folders, refusals, describe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from musicsae_cli.errors import InputError, StoreError
from musicsae_cli.sae.architectures import ARCHITECTURES, SAESpec, SparseAutoencoder
from musicsae_cli.sae.io import describe_sae, load_sae, save_sae

D_IN, D_SAE, K = 12, 40, 3


def trained(arch: str) -> SparseAutoencoder:
    gen = torch.Generator().manual_seed(0)
    sample = 4.0 + 2.0 * torch.randn(512, D_IN, generator=gen)
    sae = SparseAutoencoder.create(SAESpec(arch, D_IN, D_SAE, k=K if "topk" in arch else None,
                                           jumprelu_init_threshold=0.3), sample=sample, seed=1)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(5):
        sae.training_loss(4.0 + 2.0 * torch.randn(64, D_IN, generator=gen), 1e-3).loss.backward()
        sae.before_optimizer_step()
        opt.step()
        opt.zero_grad()
        sae.after_optimizer_step()
    return sae


def inputs(n: int = 32) -> torch.Tensor:
    return 4.0 + 2.0 * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_round_trip_keeps_outputs_and_writes_saelens_files(arch, tmp_path):
    sae = trained(arch)
    density = torch.linspace(0, 0.5, D_SAE)
    save_sae(sae, tmp_path, hook_name="layers.7", model_name="facebook/musicgen-small",
             extra={"steps": 5, "store": "/data/store"}, density=density)
    assert sae.norm_scale != 1.0  # the caller's SAE is not folded in place
    loaded, cfg = load_sae(tmp_path)
    x = inputs()
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loaded(x), sae(x), rtol=1e-4, atol=1e-4)
    assert loaded.spec == sae.spec and not loaded.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "manifest.json", "sae_weights.safetensors",
                                                          "sparsity.safetensors"]
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(arch, arch)
    assert cfg["hook_name"] == "layers.7" and cfg["hook_layer"] == 7 and cfg["normalize_activations"] == "none"
    assert cfg["apply_b_dec_to_input"] is True and cfg["musicsae"]["steps"] == 5
    if arch == "topk":
        assert cfg["k"] == K and cfg["activation_fn_kwargs"] == {"k": K}
    weights = load_file(str(tmp_path / "sae_weights.safetensors"))
    expected = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if arch in ("jumprelu", "batchtopk") else set())
    assert set(weights) == expected and weights["W_enc"].shape == (D_IN, D_SAE)
    sparsity = load_file(str(tmp_path / "sparsity.safetensors"))["sparsity"]
    torch.testing.assert_close(sparsity, torch.log10(density + 1e-10).float())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "sae" and manifest["format_version"] == 1 and manifest["architecture"] == arch


def test_batchtopk_loads_as_a_plain_jumprelu_with_the_same_latents(tmp_path):
    sae = trained("batchtopk")
    save_sae(sae, tmp_path, hook_name="layers.1", model_name="m")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["musicsae"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "manifest.json").unlink()
    plain, _ = load_sae(tmp_path)
    assert plain.spec.arch == "jumprelu"
    x = inputs()
    torch.testing.assert_close(plain.encode(x), sae.encode(x), rtol=1e-4, atol=1e-4)


def saelens_reference(weights: dict, cfg: dict, x: np.ndarray) -> np.ndarray:
    """SAELens's forward pass written out in numpy."""
    w = {k: v.double().numpy() for k, v in weights.items()}
    sae_in = x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "jumprelu":
        f = np.maximum(pre, 0) * (pre > w["threshold"])
    else:
        f = _saelens_activation(pre, cfg)
    return f @ w["W_dec"] + w["b_dec"]


def _saelens_activation(pre: np.ndarray, cfg: dict) -> np.ndarray:
    """SAELens's TopK (k largest, then ReLU) or ReLU on the hidden pre-activations, in numpy."""
    if cfg["architecture"] == "topk" or cfg.get("activation_fn_str") == "topk":
        k = cfg.get("k") or cfg["activation_fn_kwargs"]["k"]
        f = np.zeros_like(pre)
        top = np.argsort(-pre, axis=1)[:, :k]
        np.put_along_axis(f, top, np.maximum(np.take_along_axis(pre, top, axis=1), 0), axis=1)
        return f
    return np.maximum(pre, 0)


CASES = {
    "standard-v5": {"architecture": "standard", "activation_fn_str": "relu", "hook_name": "blocks.3.hook_resid_post",
                    "hook_layer": 3, "model_name": "gpt2", "sae_lens_training_version": "3.0.0"},
    "topk-legacy": {"architecture": "standard", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4},
                    "hook_name": "h", "model_name": "m"},
    "topk-v6": {"architecture": "topk", "k": 5, "metadata": {"hook_name": "blocks.2.hook_resid_post",
                                                             "model_name": "m", "sae_lens_version": "6.5.0"}},
    "jumprelu-gemmascope": {"architecture": "jumprelu", "apply_b_dec_to_input": False, "hook_name": "h",
                            "model_name": "gemma", "normalize_activations": None},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_saelens_folder_loads_with_saelens_semantics(case, tmp_path):
    gen = torch.Generator().manual_seed(3)
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", **CASES[case]}
    weights = {"W_enc": torch.randn(D_IN, D_SAE, generator=gen), "b_enc": torch.randn(D_SAE, generator=gen) * 0.1,
               "W_dec": torch.randn(D_SAE, D_IN, generator=gen), "b_dec": torch.randn(D_IN, generator=gen)}
    if cfg["architecture"] == "jumprelu":
        weights["threshold"] = torch.rand(D_SAE, generator=gen)
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae, loaded_cfg = load_sae(tmp_path)
    x = torch.randn(16, D_IN, generator=gen)
    expected = saelens_reference(weights, cfg, x.double().numpy())
    np.testing.assert_allclose(sae(x).detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert loaded_cfg["hook_name"] == cfg.get("hook_name", cfg.get("metadata", {}).get("hook_name"))
    info = describe_sae(tmp_path)
    assert info["kind"] == "saelens" and info["d_sae"] == D_SAE and info["architecture"] == sae.spec.arch


def test_refusals(tmp_path):
    sae = trained("topk")
    save_sae(sae, tmp_path, hook_name="layers.0", model_name="m")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(StoreError, match="newer"):
        load_sae(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "kind": "activation_store"}))
    with pytest.raises(StoreError, match="not an SAE"):
        load_sae(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    weights = load_file(str(tmp_path / "sae_weights.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "W_dec"}, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(StoreError, match="W_dec"):
        load_sae(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["musicsae"]
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "expected_average_only_in"}))
    with pytest.raises(InputError, match="normalisation"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(InputError, match="gated"):
        load_sae(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_sae(tmp_path / "missing")


def test_no_pickles_and_describe(tmp_path):
    sae = trained("relu")
    density = torch.zeros(D_SAE)
    density[:30] = 0.01
    save_sae(sae, tmp_path, hook_name="layers.4", model_name="m", extra={"final_metrics": {"l0": 3.0}},
             density=density, config={"lr": 1e-3})
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin")]
    info = describe_sae(tmp_path)
    assert info["kind"] == "sae" and info["format_version"] == 1 and info["architecture"] == "relu"
    assert info["hook_name"] == "layers.4" and info["expansion_factor"] == D_SAE / D_IN
    assert info["final_metrics"] == {"l0": 3.0}
    assert info["density"]["dead_fraction"] == pytest.approx(10 / D_SAE)
    assert info["density"]["median_log10"] == pytest.approx(-2.0, abs=1e-4)
    json.dumps(info)
    assert json.loads((tmp_path / "manifest.json").read_text())["config"] == {"lr": 1e-3}


# ---- SAELens flags that change the math: honoured exactly, or refused --------------------------------------------
def saelens_rescaled(weights: dict, cfg: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SAELens's encode/decode with rescale_acts_by_decoder_norm=true, in numpy: (latents, reconstruction)."""
    w = {k: v.double().numpy() for k, v in weights.items()}
    norms = np.linalg.norm(w["W_dec"], axis=1)  # (d_sae,)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    f = _saelens_activation(pre * norms, cfg)  # hidden_pre * W_dec.norm(dim=-1), before the activation
    return f, (f / norms) @ w["W_dec"] + w["b_dec"]  # decode divides by the same norms before @ W_dec


RESCALED = {
    "standard": {"architecture": "standard", "activation_fn_str": "relu"},
    "topk-v6": {"architecture": "topk", "k": 4},
    "topk-legacy": {"architecture": "standard", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}},
}


@pytest.mark.parametrize("case", sorted(RESCALED))
def test_rescale_acts_by_decoder_norm_is_honoured(case, tmp_path):
    gen = torch.Generator().manual_seed(5)
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "hook_name": "h", "model_name": "m",
           "rescale_acts_by_decoder_norm": True, **RESCALED[case]}
    rows = torch.randn(D_SAE, D_IN, generator=gen)
    row_norms = 0.2 + 3.0 * torch.rand(D_SAE, 1, generator=gen)  # far from unit norm: the flag matters
    weights = {"W_enc": torch.randn(D_IN, D_SAE, generator=gen), "b_enc": torch.randn(D_SAE, generator=gen) * 0.3,
               "W_dec": rows / rows.norm(dim=1, keepdim=True) * row_norms, "b_dec": torch.randn(D_IN, generator=gen)}
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae, loaded_cfg = load_sae(tmp_path)
    x = torch.randn(24, D_IN, generator=gen)
    want_f, want_x_hat = saelens_rescaled(weights, cfg, x.double().numpy())
    with torch.no_grad():
        f = sae.encode(x)
        np.testing.assert_allclose(f.numpy(), want_f, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(sae.decode(f).numpy(), want_x_hat, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(sae(x).numpy(), want_x_hat, rtol=1e-4, atol=1e-4)
    assert np.abs(want_f - np.maximum((x.double().numpy() - weights["b_dec"].double().numpy())
                                      @ weights["W_enc"].double().numpy() + weights["b_enc"].double().numpy(),
                                      0)).max() > 0.1  # ignoring the flag would encode differently
    assert "rescale_acts_by_decoder_norm" in loaded_cfg["musicsae_folded"]
    assert describe_sae(tmp_path)["folded_on_load"] == ["rescale_acts_by_decoder_norm=true"]
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))  # the norms now live in the encoder
    assert load_file(str(tmp_path / "sae_weights.safetensors"))["W_dec"].equal(weights["W_dec"])  # file untouched


REFUSED = {
    "jumprelu-rescaled": ({"architecture": "jumprelu", "rescale_acts_by_decoder_norm": True},
                          "rescale_acts_by_decoder_norm"),
    "head-index": ({"architecture": "standard", "hook_head_index": 3}, "hook_head_index"),
    "head-index-v6": ({"architecture": "standard", "metadata": {"hook_head_index": 0}}, "hook_head_index"),
    "hook-z": ({"architecture": "topk", "k": 4, "reshape_activations": "hook_z"}, "reshape_activations"),
    "tanh-relu": ({"architecture": "standard", "activation_fn_str": "tanh-relu"}, "tanh-relu"),
    "layer-norm": ({"architecture": "standard", "normalize_activations": "layer_norm"}, "layer_norm"),
    "scaling-factor": ({"architecture": "standard", "finetuning_scaling_factor": True,
                        "scaling": ("scaling_factor", 2.0)}, "scaling factor"),
    "finetuning-scaling-factor": ({"architecture": "standard", "finetuning_scaling_factor": True,
                                   "scaling": ("finetuning_scaling_factor", 0.5)}, "scaling factor"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_saelens_flags_musicsae_does_not_implement_are_refused(case, tmp_path):
    extra, needle = REFUSED[case]
    extra = dict(extra)
    gen = torch.Generator().manual_seed(2)
    weights = {"W_enc": torch.randn(D_IN, D_SAE, generator=gen), "b_enc": torch.zeros(D_SAE),
               "W_dec": torch.randn(D_SAE, D_IN, generator=gen), "b_dec": torch.zeros(D_IN),
               "threshold": torch.rand(D_SAE, generator=gen)}
    scaling = extra.pop("scaling", None)
    if scaling is not None:
        weights[scaling[0]] = torch.full((D_SAE,), scaling[1])
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": D_IN, "d_sae": D_SAE, "hook_name": "h", **extra}))
    with pytest.raises(InputError, match=needle) as err:
        load_sae(tmp_path)
    assert "\n" not in str(err.value) and err.value.hint


# ---- which folders SAELens can load: the README's claim checked against the writers ------------------------------
SAELENS_KNOWN = {"standard", "gated", "jumprelu", "topk"}  # architectures SAELens's inference SAE classes load


def test_readme_names_exactly_the_saelens_loadable_architectures(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text("utf-8")
    section = readme.split("## Sparse autoencoders: `sae`", 1)[1].split("\n## ", 1)[0]
    (bullet,) = [b for b in section.split("\n- ") if b.startswith("**Format**")]
    bullet = " ".join(bullet.split())
    for arch in ARCHITECTURES:
        (tmp_path / arch).mkdir()
        save_sae(trained(arch), tmp_path / arch, hook_name="layers.1", model_name="m")
        written = json.loads((tmp_path / arch / "cfg.json").read_text())["architecture"]
        assert written in SAELENS_KNOWN
        assert f"`{arch}` (SAELens `{written}`" in bullet, (arch, written, bullet)
    assert "`dictionary_learning`" in bullet and "musicsae-only" in bullet
    assert "each SAE folder holds SAELens-compatible" not in section  # the old blanket claim


def test_dictionary_learning_folder_is_declared_musicsae_only(tmp_path):
    from sklearn.decomposition import sparse_encode

    from musicsae_cli.sae.dictionary import DictionarySAE, DictionarySpec, save_dictionary

    rng = np.random.default_rng(4)
    model = DictionarySAE(DictionarySpec(d_in=D_IN, d_sae=D_SAE, k=3))
    atoms = rng.standard_normal((D_SAE, D_IN))
    model.W_dec.copy_(torch.from_numpy(atoms / np.linalg.norm(atoms, axis=1, keepdims=True)).float())
    model.b_dec.copy_(torch.from_numpy(rng.standard_normal(D_IN)).float())
    save_dictionary(model, tmp_path, "layers.1", "m", {"steps": 1}, density=None)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] not in SAELENS_KNOWN
    assert cfg["saelens_loadable"] is False and "SAELens" in cfg["note"]
    info = describe_sae(tmp_path)
    assert info["saelens_loadable"] is False and info["saelens_architecture"] is None
    loaded, _ = load_sae(tmp_path)  # musicsae keeps loading it
    x = inputs(8)
    want = sparse_encode((x.double() - model.b_dec.double()).numpy(), model.W_dec.double().numpy(),
                         algorithm="omp", n_nonzero_coefs=3)
    np.testing.assert_allclose(loaded.encode(x).numpy(), want, rtol=1e-4, atol=1e-4)
    (tmp_path / "topk").mkdir()
    save_sae(trained("topk"), tmp_path / "topk", hook_name="layers.1", model_name="m")
    assert describe_sae(tmp_path / "topk")["saelens_loadable"] is True
