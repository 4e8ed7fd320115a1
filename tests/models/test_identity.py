"""Models are what they are, not how their path was spelled: resolved ids and weight fingerprints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.models.identity import check_same_model, same_model
from musicsae_cli.models.musicgen import MusicGenAdapter


@pytest.fixture
def two_dirs(tmp_path, tiny_dir):
    """The same saved tiny MusicGen in a working folder, and a copy elsewhere."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_dir, work / "tiny")
    shutil.copytree(tiny_dir, tmp_path / "moved-tiny")
    return work


@pytest.mark.slow
def test_one_model_however_its_path_is_spelled(two_dirs, monkeypatch):
    monkeypatch.chdir(two_dirs)
    a = MusicGenAdapter.load("tiny", device="cpu").describe()
    b = MusicGenAdapter.load("./tiny/../tiny", device="cpu").describe()
    moved = MusicGenAdapter.load("../moved-tiny", device="cpu").describe()
    half = MusicGenAdapter.load("tiny", device="cpu", dtype="bf16").describe()
    assert a["id"] == b["id"] == str(two_dirs / "tiny") and moved["id"] != a["id"]
    assert a["fingerprint"] == b["fingerprint"] == moved["fingerprint"] == half["fingerprint"]
    assert same_model(moved, a) and same_model({"id": "tiny"}, a)  # an old record: the id, resolved
    check_same_model("the probe", moved, a, allow_other=False)  # a moved checkpoint is still that model


@pytest.mark.slow
def test_other_weights_under_the_same_name_are_refused(tmp_path, runner, app):
    from musicsae_cli.models.tiny import save_tiny_musicgen

    save_tiny_musicgen(tmp_path / "m", seed=0)
    first = MusicGenAdapter.load(str(tmp_path / "m"), device="cpu").describe()
    save_tiny_musicgen(tmp_path / "m", seed=1, overwrite=True)  # retrained in place: same path, other weights
    second = MusicGenAdapter.load(str(tmp_path / "m"), device="cpu").describe()
    assert first["id"] == second["id"] and first["fingerprint"] != second["fingerprint"]
    with pytest.raises(InputError, match=r"made with model '.*m', not the loaded model '.*m' \(other weights\)") \
            as err:
        check_same_model("the probe", first, second, allow_other=False)
    assert "--allow-other-model" in err.value.hint
    check_same_model("the probe", first, second, allow_other=True)
    with pytest.raises(InputError, match="width 32, the loaded model has 64"):
        check_same_model("the probe", {**first, "hidden_size": 32}, second, allow_other=True)  # never allowed


@pytest.mark.slow
def test_probe_trained_with_one_spelling_steers_with_another(two_dirs, concept_set, runner, app, monkeypatch):
    """The issue's case: extract and probe with --model tiny, then steer with --model ../work/tiny elsewhere."""
    monkeypatch.chdir(two_dirs)
    store = two_dirs / "store"
    args = ["extract", str(concept_set), "-c", "tiny", "--model", "tiny", "--hookpoint", "layers.1,layers.2",
            "-o", str(store), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    probes = runner.invoke(app, ["probe", "train", str(store), "-o", "probes", "--label", "concept", "-q"])
    assert probes.exit_code == 0, probes.output
    elsewhere = two_dirs / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    steered = runner.invoke(app, ["steer", "generate", "-c", "tiny", "--model", "../tiny", "--probe", "../probes",
                                  "--target", "notes", "--duration-s", "0.2", "-o", "out", "-q"])
    assert steered.exit_code == 0, steered.output
    evaluated = runner.invoke(app, ["probe", "evaluate", "../probes", "../store", "-o", "ev", "-q"])
    assert evaluated.exit_code == 0, evaluated.output


@pytest.mark.slow
def test_resume_from_another_working_directory(two_dirs, concept_set, monkeypatch, interrupt_on_call):
    """An interrupted extract resumes from another folder with its paths spelled relative to there."""
    from musicsae_cli.extract.audio import extract_audio
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.store import ActivationStore

    data = two_dirs / "data"
    shutil.copytree(concept_set, data)
    cfg = ExtractConfig(model="tiny", device="cpu", hookpoints="layers.1", batch_size=2, store_dtype="float32",
                        shard_mb=0.05)
    monkeypatch.chdir(two_dirs)
    adapter = MusicGenAdapter.load("tiny", device="cpu")
    interrupt_on_call(adapter, "audio_activations", 3)
    with pytest.raises(KeyboardInterrupt):
        extract_audio("data", "store", cfg, adapter=adapter)
    (two_dirs / "sub").mkdir()
    monkeypatch.chdir(two_dirs / "sub")
    again = MusicGenAdapter.load("../tiny", device="cpu")
    res = extract_audio("../data", "../store", cfg.model_copy(update={"model": "../tiny"}), adapter=again)
    assert 0 < res["windows_written"] < 6  # resumed, not refused as "other settings (source, model)"
    store = ActivationStore.open(two_dirs / "store")
    assert store.n_items == 6 and store.manifest["config"]["source"] == str(data)
    whole = extract_audio("../data", "../whole", cfg, adapter=again)
    rows = np.arange(store.n_rows)
    assert whole["store_rows"] == store.n_rows
    order = np.argsort(store.metadata(["item_id"]).column("item_id").to_numpy(zero_copy_only=False), kind="stable")
    ref = ActivationStore.open(two_dirs / "whole")
    ref_order = np.argsort(ref.metadata(["item_id"]).column("item_id").to_numpy(zero_copy_only=False), kind="stable")
    np.testing.assert_array_equal(store.read_rows("layers.1", rows[order]), ref.read_rows("layers.1", rows[ref_order]))
