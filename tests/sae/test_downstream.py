"""Downstream metrics: splicing into MusicGen, checked against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_cli.models.musicgen_loss import codebook_log_probs
from musicsae_cli.sae.downstream import downstream_metrics
from musicsae_cli.store import ActivationStore

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)


def test_codebook_ce_equals_the_models_own_loss(tiny_adapter):
    t = np.arange(16000) / 32000
    codes = tiny_adapter.encode([(0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)])
    lp, targets, mask = codebook_log_probs(tiny_adapter, codes)
    ours = -lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[mask].mean()
    k, n = 4, codes[0].shape[-1]
    assert int(mask.sum()) == k * n  # every code of every frame is a target exactly once
    seq = torch.cat([torch.full((1, k, 1), tiny_adapter.pad_id), codes[0][None]], -1).reshape(k, -1)
    _, delayed = tiny_adapter.model.decoder.build_delay_pattern_mask(seq, pad_token_id=tiny_adapter.pad_id,
                                                                     max_length=n + k)
    uncond = dict(tiny_adapter.model.get_unconditional_inputs(num_samples=1))
    uncond.pop("guidance_scale", None)
    labels = delayed.reshape(1, k, -1)[:, :, 1:].transpose(1, 2)  # transformers shifts labels right itself
    with torch.no_grad():
        theirs = tiny_adapter.model(**uncond, labels=labels).loss
    assert float(ours) == pytest.approx(float(theirs), abs=1e-5)


def test_identity_recovers_everything_and_error_term_is_a_noop(tiny_adapter, tiny_store):
    store = ActivationStore.open(tiny_store)
    res = downstream_metrics(torch.nn.Identity(), store, "layers.1", tiny_adapter, n_items=3)
    ce = res["ce"]
    assert ce["sae"] == pytest.approx(ce["clean"], abs=1e-6) and ce["sae_plus_error"] == pytest.approx(ce["clean"])
    assert res["kl_to_clean"]["sae_plus_error"] < 1e-8 and res["kl_to_clean"]["sae"] < 1e-8
    assert res["kl_to_clean"]["zero_ablation"] > 1e-6
    for value in res["fraction_loss_recovered"].values():
        assert value == pytest.approx(1.0, abs=1e-4)
    assert res["tokens"] == 3 * 4 * 75  # 3 items x 4 codebooks x 75 frames


def test_a_poor_reconstruction_recovers_less(tiny_adapter, tiny_store):
    store = ActivationStore.open(tiny_store)

    class Shrink(torch.nn.Module):
        def forward(self, x):
            return 0.3 * x

    res = downstream_metrics(Shrink(), store, "layers.1", tiny_adapter, n_items=2)
    assert res["kl_to_clean"]["sae"] > 1e-6
    assert res["kl_to_clean"]["sae_plus_error"] < 1e-8  # the error term restores the clean model exactly


@pytest.mark.parametrize("items", ["0", "-3"])
def test_evaluate_downstream_needs_at_least_one_item(runner, app, tiny_store, tmp_path, items):
    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.sae.io import save_sae

    store = ActivationStore.open(tiny_store)
    sample = torch.from_numpy(store.read_rows("layers.1", np.arange(store.n_rows)))
    (tmp_path / "sae").mkdir()
    save_sae(SparseAutoencoder.create(SAESpec("relu", 64, 128), sample, seed=0), tmp_path / "sae",
             hook_name="layers.1", model_name="tiny-musicgen")
    res = runner.invoke(app, ["sae", "evaluate", str(tmp_path / "sae"), str(tiny_store), "--device", "cpu",
                              "--downstream", "--max-items", items])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --max-items must be at least 1, got {items} (hint: ")
