"""`musicsae sae train | encode | evaluate` and `info` on their outputs, from the command line."""

from __future__ import annotations

import json

import pytest


@pytest.mark.smoke
@pytest.mark.slow
def test_train_encode_evaluate(runner, app, tiny_store, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["sae", "train", str(tiny_store), "-o", str(run), "-c", "tiny", "--hookpoint",
                                 "layers.2", "--steps", "30", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["members"]["sae"]["l0"] > 0 and res["split"]["val_rows"] > 0
    assert (run / "cfg.json").is_file() and not (run / "sae").exists()  # one SAE: in the run folder itself
    run_info = json.loads(runner.invoke(app, ["info", str(run), "--json"]).stdout)
    assert run_info["kind"] == "sae_run" and run_info["status"] == "complete"
    assert run_info["sae"]["d_in"] == 64 and run_info["sae"]["d_sae"] == 512

    latents = tmp_path / "latents"
    enc = runner.invoke(app, ["sae", "encode", str(tiny_store), "--sae", str(run), "-o", str(latents), "--json",
                              "--device", "cpu"])
    assert enc.exit_code == 0, enc.output
    described = json.loads(runner.invoke(app, ["info", str(latents), "--json"]).stdout)
    assert described["hookpoints"] == {"layers.2.sae": 512} and described["n_rows"] == 6 * 75

    ev = runner.invoke(app, ["sae", "evaluate", str(run), str(tiny_store), "--json", "--device", "cpu",
                             "--downstream", "--max-items", "2"])
    assert ev.exit_code == 0, ev.output
    data = json.loads(ev.stdout)
    assert data["hookpoint"] == "layers.2" and data["rows"] == 450
    # explained variance recomputed independently with numpy over the same rows
    import numpy as np
    import torch

    from musicsae_cli.sae.io import load_sae
    from musicsae_cli.store import ActivationStore

    store = ActivationStore.open(tiny_store)
    x = store.read_rows("layers.2", np.arange(store.n_rows)).astype(np.float64)
    sae, _ = load_sae(run)
    with torch.no_grad():
        x_hat = sae(torch.from_numpy(x).float()).double().numpy()
    ev = 1 - ((x - x_hat) ** 2).sum(1).mean() / ((x ** 2).sum(1).mean() - (x.mean(0) ** 2).sum())
    assert abs(data["explained_variance"] - ev) < 1e-4
    assert set(data["downstream"]["fraction_loss_recovered"]) == {"zero_ablation", "mean_ablation"}


def test_sae_bad_input(runner, app, tiny_store, tmp_path):
    unknown = runner.invoke(app, ["sae", "train", str(tiny_store), "-o", str(tmp_path / "r"), "--architecture",
                                  "gated"])
    assert unknown.exit_code == 2 and "unknown SAE architecture 'gated'" in unknown.stderr
    preset = runner.invoke(app, ["sae", "train", str(tiny_store), "-o", str(tmp_path / "r"), "-c", "topkk"])
    assert preset.exit_code == 2 and "did you mean 'topk'" in preset.stderr
    several = runner.invoke(app, ["sae", "train", str(tiny_store), "-o", str(tmp_path / "r"), "-c", "tiny"])
    assert several.exit_code == 2 and "choose one with --hookpoint" in several.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_resume_alone_continues_with_the_saved_settings(runner, app, tiny_store, tmp_path, interrupt_on_call):
    """`sae train RUN --resume` needs no flag typed again; -o creates missing parent folders."""
    import musicsae_cli.sae.loop as loop

    run = tmp_path / "runs" / "deep" / "topk"  # runs/deep/ does not exist yet
    argv = ["sae", "train", str(tiny_store), "-o", str(run), "-c", "tiny", "--hookpoint", "layers.2", "--k", "8",
            "--steps", "40", "--device", "cpu", "--set", "checkpoint_every=10"]
    restore = interrupt_on_call(loop, "train_step", 25)
    killed = runner.invoke(app, argv)
    restore()
    assert killed.exit_code == 130, killed.output
    resumed = runner.invoke(app, ["sae", "train", str(run), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    res = json.loads(resumed.stdout)
    assert res["resumed_from"] == 20 and res["steps"] == 40 and res["out"] == str(run)
    from musicsae_cli.sae.io import load_sae

    sae, saved = load_sae(run)  # one SAE: in the run folder, not RUN/sae
    assert sae.spec.k == 8 and saved["hook_name"] == "layers.2"
    again = runner.invoke(app, ["sae", "train", str(run), "--resume"])
    assert again.exit_code == 2 and "nothing to resume" in again.stderr
    fresh = runner.invoke(app, ["sae", "train", str(tiny_store), "--resume"])
    assert fresh.exit_code == 2 and "nothing to resume" in fresh.stderr


@pytest.mark.slow
def test_encode_refuses_a_store_of_another_model(runner, app, tiny_store, tmp_path):
    """An SAE applied to another model's activations is refused unless --allow-other-model says it is deliberate."""
    import shutil

    run = tmp_path / "run"
    result = runner.invoke(app, ["sae", "train", str(tiny_store), "-o", str(run), "-c", "tiny", "--hookpoint",
                                 "layers.2", "--steps", "5", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    other = tmp_path / "other-store"  # the same activations, recorded as another model's (other weights)
    shutil.copytree(tiny_store, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["fingerprint"] = "0" * len(manifest["model"]["fingerprint"])
    (other / "manifest.json").write_text(json.dumps(manifest))
    refused = runner.invoke(app, ["sae", "encode", str(other), "--sae", str(run), "-o", str(tmp_path / "lat"),
                                  "--device", "cpu"])
    assert refused.exit_code != 0 and "other weights" in refused.output and "--allow-other-model" in refused.output
    assert not (tmp_path / "lat").exists()
    allowed = runner.invoke(app, ["sae", "encode", str(other), "--sae", str(run), "-o", str(tmp_path / "lat"),
                                  "--device", "cpu", "--allow-other-model"])
    assert allowed.exit_code == 0, allowed.output
