"""Downstream SAE metrics for models with outputs of their own (no loss): distance of the spliced model's output
to the clean output, on CREPE (pitch activations) and on audio outputs (a multi-scale spectral distance)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsae_cli.sae.downstream import multiscale_spectral_distance, output_metrics, relative_l2


def test_spectral_distance_of_a_gain_is_its_log():
    x = np.random.default_rng(0).normal(size=(1, 8000))
    assert multiscale_spectral_distance(x, x) == 0.0
    assert abs(multiscale_spectral_distance(2 * x, x) - np.log(2)) < 1e-3  # |log 2X - log X| = log 2 everywhere
    assert relative_l2(2 * x, x) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def crepe_store(tmp_path_factory):
    from musicsae_cli.extract.audio import extract_audio
    from musicsae_cli.extract.config import ExtractConfig

    root = tmp_path_factory.mktemp("crepe-downstream")
    (root / "notes").mkdir()
    t = np.arange(8000) / 16000
    for i, f in enumerate((220.0, 330.0, 440.0)):
        sf.write(str(root / "notes" / f"n{i}.wav"), (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
    extract_audio(root / "notes", root / "store", ExtractConfig(model="crepe-tiny", device="cpu",
                                                                hookpoints="block6", store_dtype="float32"))
    return root / "store"


class Shrink(torch.nn.Module):
    """A stand-in SAE that reconstructs 0.5 x its input: part of the signal lost."""

    def forward(self, x):
        return 0.5 * x


@pytest.mark.slow
def test_identity_recovers_everything_and_shrinking_part_of_it(crepe_store):
    from musicsae_cli.models import load_adapter
    from musicsae_cli.store import ActivationStore

    adapter = load_adapter("crepe-tiny", device="cpu")
    store = ActivationStore.open(crepe_store)
    ident = output_metrics(torch.nn.Identity(), store, "block6", adapter, n_items=3)
    assert ident["metric"] == "relative_l2" and ident["items"] == 3
    assert ident["distance_to_clean"]["sae"] == 0.0 and ident["distance_to_clean"]["sae_plus_error"] == 0.0
    assert ident["distance_to_clean"]["zero_ablation"] > 0.01
    assert ident["fraction_recovered"]["zero_ablation"] == 1.0
    shrink = output_metrics(Shrink(), store, "block6", adapter, n_items=3)
    assert shrink["distance_to_clean"]["sae_plus_error"] < 1e-6  # the error term makes the splice a no-op
    assert 0.0 < shrink["distance_to_clean"]["sae"] < shrink["distance_to_clean"]["zero_ablation"]
    assert 0.0 < shrink["fraction_recovered"]["zero_ablation"] < 1.0


def test_evaluation_names_the_model_spliced_into(crepe_store, tmp_path, caplog, monkeypatch):
    """`sae evaluate --downstream` records which model it re-ran (`-m` may differ from the store's), and warns when
    that is not the model whose activations the SAE was trained on."""
    import logging

    from musicsae_cli.artifacts import read_manifest
    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.sae.evaluate import evaluate_downstream, write_evaluation
    from musicsae_cli.sae.io import save_sae
    from musicsae_cli.store import ActivationStore

    store = ActivationStore.open(crepe_store)
    sample = torch.from_numpy(store.read_rows("block6", np.arange(store.n_rows)))
    (tmp_path / "sae").mkdir()
    save_sae(SparseAutoencoder.create(SAESpec("relu", sample.shape[1], 64), sample, seed=0), tmp_path / "sae",
             hook_name="block6", model_name="crepe-tiny", extra={"model": store.model})
    monkeypatch.setattr(logging.getLogger("musicsae"), "propagate", True)  # an earlier CLI run turns it off
    caplog.set_level(logging.WARNING, logger="musicsae")
    same = evaluate_downstream(tmp_path / "sae", crepe_store, "block6", n_items=1, device="cpu")
    assert same["model"]["family"] == "crepe" and same["model"]["fingerprint"] == store.model["fingerprint"]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    other = evaluate_downstream(tmp_path / "sae", crepe_store, "block6", model="crepe-tiny-random", n_items=1,
                                device="cpu")
    assert other["model"]["id"] == "crepe-tiny-random" and other["model"]["fingerprint"] != store.model["fingerprint"]
    assert any("trained on activations of model 'crepe-tiny' but is spliced into model 'crepe-tiny-random'"
               in r.getMessage() for r in caplog.records)
    write_evaluation(tmp_path / "eval", {"sae": str(tmp_path / "sae"), "store": str(crepe_store),
                                         "hookpoint": "block6", "downstream": other})
    manifest = read_manifest(tmp_path / "eval")
    assert manifest["model"]["id"] == "crepe-tiny" and manifest["downstream_model"]["id"] == "crepe-tiny-random"
