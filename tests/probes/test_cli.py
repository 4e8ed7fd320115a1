"""`musicsae probe train | evaluate` through the CLI on the tiny MusicGen store; presets; refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicsae_cli.config import configs_dir, list_presets, load_preset, validate
from musicsae_cli.probes.config import ProbeConfig


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory):
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    out = tmp_path_factory.mktemp("probe-cli") / "probes"
    result = CliRunner().invoke(app, ["probe", "train", str(tiny_store), "-o", str(out), "--label", "concept",
                                      "--json", "--set", "device=cpu", "--set", "test_fraction=0.3"])
    return out, _json(result)


@pytest.mark.smoke
def test_train_through_the_cli(trained, tiny_store):
    out, res = trained
    from musicsae_cli.store import ActivationStore

    store = ActivationStore.open(tiny_store)
    assert res["hookpoints"] == store.hookpoints and len(res["layers"]) == len(store.hookpoints)
    assert res["label"] == "concept" and len(res["classes"]) >= 2 and res["best"]["hookpoint"] in store.hookpoints
    for name in ("manifest.json", "probes.safetensors", "probes.npy", "config.yaml", "metrics.csv", "metrics.json",
                 "per_layer.png", "split.csv"):
        assert (out / name).is_file(), name
    npy = np.load(out / "probes.npy")
    assert npy.shape == (len(store.hookpoints), len(res["classes"]), store.widths["layers.0"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == store.model and manifest["label"] == "concept"


@pytest.mark.smoke
def test_evaluate_through_the_cli(trained, tiny_store, runner, app, tmp_path):
    out, train_res = trained
    res = _json(runner.invoke(app, ["probe", "evaluate", str(out), str(tiny_store), "-o", str(tmp_path / "ev"),
                                    "--json"]))
    assert res["samples"] == train_res["split"]["samples"] and res["labelled_samples"] == res["samples"]
    for probs in res["mean_probabilities"].values():
        assert set(probs) == set(train_res["classes"]) and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "ev" / "predictions.csv").is_file() and (tmp_path / "ev" / "metrics.json").is_file()
    lines = (tmp_path / "ev" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + res["samples"] * len(res["mean_probabilities"])


@pytest.mark.slow
def test_evaluate_refuses_another_models_store(trained, runner, app, tmp_path):
    from musicsae_cli.store import StoreWriter

    out, _ = trained
    probes_manifest = json.loads((out / "manifest.json").read_text())
    widths = probes_manifest["widths"]
    other = {**probes_manifest["model"], "id": "facebook/musicgen-small", "fingerprint": "0" * 24}
    with StoreWriter.create(tmp_path / "other", widths, "float32", model=other) as w:
        w.add_item("a", {hp: np.zeros((3, d), np.float32) for hp, d in widths.items()}, item_meta={"concept": "x"})
    result = runner.invoke(app, ["probe", "evaluate", str(out), str(tmp_path / "other"), "-o", str(tmp_path / "ev")])
    assert result.exit_code == 2
    assert "not the store's model 'facebook/musicgen-small' (other weights)" in result.stderr
    assert "--allow-other-model" in result.stderr and not (tmp_path / "ev").exists()
    allowed = runner.invoke(app, ["probe", "evaluate", str(out), str(tmp_path / "other"), "-o", str(tmp_path / "ev"),
                                  "--allow-other-model"])
    assert allowed.exit_code == 0, allowed.output
    narrow = {hp: d // 2 for hp, d in widths.items()}
    with StoreWriter.create(tmp_path / "narrow", narrow, "float32", model=probes_manifest["model"]) as w:
        w.add_item("a", {hp: np.zeros((3, d), np.float32) for hp, d in narrow.items()})
    result = runner.invoke(app, ["probe", "evaluate", str(out), str(tmp_path / "narrow"), "-o", str(tmp_path / "e")])
    assert result.exit_code == 2 and "wide in the store" in result.stderr


def test_train_cli_errors_and_dry_run(tiny_store, runner, app, tmp_path):
    result = runner.invoke(app, ["probe", "train", str(tiny_store), "-o", str(tmp_path / "p"), "--label", "concpt"])
    assert result.exit_code == 2 and "did you mean 'concept'" in result.stderr
    assert not (tmp_path / "p").exists()
    result = runner.invoke(app, ["probe", "train", str(tiny_store), "-o", str(tmp_path / "p"), "-l", "concept",
                                 "-l", "bpm"])  # a second label must not silently replace the first
    assert result.exit_code == 2 and "takes one label, got 2: concept, bpm" in result.stderr
    assert not (tmp_path / "p").exists()
    result = runner.invoke(app, ["probe", "train", str(tiny_store), "-o", str(tmp_path / "p"), "-c", "regression",
                                 "--hookpoint", "layers.0,layers.2", "--dry-run", "--json"])
    cfg = _json(result)
    assert cfg["task"] == "regression" and cfg["label"] == "bpm" and cfg["hookpoints"] == ["layers.0", "layers.2"]


def test_info_describes_probes(trained, runner, app):
    out, _ = trained
    res = _json(runner.invoke(app, ["info", str(out), "--json"]))
    assert res["kind"] == "probes" and res["label"] == "concept"


@pytest.mark.parametrize("preset", list_presets("probe"))
def test_every_probe_preset_validates(preset):
    assert (configs_dir() / "probe" / f"{preset}.yaml").is_file()
    validate(ProbeConfig, load_preset("probe", preset))


def test_presets_exist():
    assert {"default", "frame", "regression", "onehot-mse"} <= set(list_presets("probe"))
