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
