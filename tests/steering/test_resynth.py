"""Steering a model that re-synthesises audio (a RAVE export): `steer generate --audio` with per-dimension latent
controls and directions at any hookpoint, and `steer sweep --audio` scored by a probe and by CREPE's f0.

Every steered clip is checked against the export run by hand (torch.jit.load of the same file, the edit applied to
its latent, the decoder's noise drawn from the same seed)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from musicsae_cli.commands.app import app
from musicsae_cli.models.tiny_rave import save_tiny_rave

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

SR, RATIO = 4096, 64


@pytest.fixture(scope="module")
def rave_ts(tmp_path_factory):
    return save_tiny_rave(tmp_path_factory.mktemp("rave") / "model", seed=1)["path"]


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    """Sine notes of two pitch classes (folders: the label), two items each, half a second."""
    root = tmp_path_factory.mktemp("notes")
    t = np.arange(SR // 2) / SR
    for label, hz in (("low", 220.0), ("high", 440.0)):
        (root / label).mkdir()
        for k in range(3):
            tone = 0.5 * np.sin(2 * np.pi * hz * (1 + 0.01 * k) * t)
            sf.write(str(root / label / f"n{k}.wav"), tone.astype(np.float32), SR, subtype="FLOAT")
    return root


def _run(*args, device: bool = True):
    result = CliRunner().invoke(app, [*map(str, args), *(["--device", "cpu"] if device else []), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _by_hand(rave_ts, path, edit):
    """decode(edit(encode(x))) of the export, with the decoder's noise from seed 0 (as the adapter draws it)."""
    module = torch.jit.load(str(rave_ts))
    x = torch.from_numpy(sf.read(str(path), dtype="float32")[0])[None, None]
    with torch.no_grad():
        torch.manual_seed(0)
        return module.decode(edit(module.encode(x)))[0, 0].numpy()


@pytest.mark.slow
def test_dim_bias_and_scale_resynthesis(rave_ts, notes, tmp_path):
    out = tmp_path / "dims"
    res = _run("steer", "generate", "-m", rave_ts, "--audio", notes / "low", "--dim-bias", "0=1.5",
               "--dim-scale", "2=-1", "-o", out)
    assert res["resynthesis"] and res["clips"] == 3 and res["mode"] == "dims" and res["layers"] == ["latent"]
    assert res["rel_change_mean"] > 1e-3

    def edit(z):
        z = z.clone()
        z[:, 0] += 1.5
        z[:, 2] *= -1
        return z

    steered, rate = sf.read(str(out / "clips" / "n0.wav"), dtype="float32")
    plain, _ = sf.read(str(out / "clips" / "n0.plain.wav"), dtype="float32")
    assert rate == SR and steered.shape == plain.shape == (SR // 2,)
    np.testing.assert_allclose(steered, _by_hand(rave_ts, notes / "low" / "n0.wav", edit), atol=2e-4)
    np.testing.assert_allclose(plain, _by_hand(rave_ts, notes / "low" / "n0.wav", lambda z: z), atol=2e-4)
    record = json.loads((out / "manifest.json").read_text())
    assert record["kind"] == "steer_resynthesis" and record["model"]["family"] == "rave"
    assert record["steering"]["dims"] == {"hookpoint": "latent", "bias": {"0": 1.5, "2": 0.0},
                                          "scale": {"0": 1.0, "2": -1.0}}
    assert {c["id"] for c in record["clips"]} == {"n0", "n1", "n2"} and all(len(c["source_sha256"]) == 64
                                                                          for c in record["clips"])
    # the record reproduces the clips
    again = _run("steer", "generate", "-c", out / "config.yaml", "-o", tmp_path / "again")
    assert again["clips"] == 3
    np.testing.assert_array_equal(sf.read(str(tmp_path / "again" / "clips" / "n0.wav"))[0],
                                  sf.read(str(out / "clips" / "n0.wav"))[0])


def test_direction_at_a_decoder_block_and_at_the_latent_with_dims(rave_ts, notes, tmp_path):
    v = np.zeros(8, np.float32)
    v[3] = 1.0
    np.save(tmp_path / "v.npy", v)
    res = _run("steer", "generate", "-m", rave_ts, "--audio", notes / "high" / "n1.wav", "--file", tmp_path / "v.npy",
               "--hookpoint", "decoder.1", "--strength", "3", "-o", tmp_path / "dec")
    assert res["layers"] == ["decoder.1"] and res["rel_change_mean"] > 1e-3
    # a latent direction and a latent bias together: the bias first, then the direction
    w = np.zeros(4, np.float32)
    w[1] = 1.0
    np.save(tmp_path / "w.npy", w)
    _run("steer", "generate", "-m", rave_ts, "--audio", notes / "high" / "n1.wav", "--file", tmp_path / "w.npy",
         "--hookpoint", "latent", "--strength", "2", "--dim-scale", "1=0", "-o", tmp_path / "both")

    def edit(z):
        z = z.clone()
        z[:, 1] = 0.0 + 2.0
        return z

    got = sf.read(str(tmp_path / "both" / "clips" / "n1.wav"), dtype="float32")[0]
    np.testing.assert_allclose(got, _by_hand(rave_ts, notes / "high" / "n1.wav", edit), atol=2e-4)


@pytest.mark.slow
def test_resynthesis_bad_input(rave_ts, notes, tmp_path):
    runner = CliRunner()
    cases = [
        (["--dim-bias", "0=1"], "re-synthesises audio", "--audio"),
        (["--audio", notes / "low", "--prompt", "a song", "--dim-bias", "0=1"], "takes no text prompts", "--prompt"),
        (["--audio", notes / "low", "--dim-bias", "9=1"], "dimension 9 does not exist at latent", "0 to 3"),
        (["--audio", notes / "low", "--dim-bias", "0:1"], "DIM=VALUE", None),
        (["--audio", notes / "low"], "no steering direction", "--dim-bias"),
    ]
    for args, message, hint in cases:
        out = tmp_path / "bad"
        result = runner.invoke(app, ["steer", "generate", "-m", str(rave_ts), *map(str, args), "-o", str(out),
                                     "--device", "cpu"])
        assert result.exit_code != 0 and message in result.output, result.output
        assert hint is None or hint in result.output, result.output
        assert not out.exists()
    short = tmp_path / "short.wav"
    sf.write(str(short), np.zeros(RATIO - 1, np.float32), SR)
    result = runner.invoke(app, ["steer", "generate", "-m", str(rave_ts), "--audio", str(short), "--dim-bias", "0=1",
                                 "-o", str(tmp_path / "short-out"), "--device", "cpu"])
    assert result.exit_code != 0 and "shorter than one frame" in result.output and not (tmp_path / "short-out").exists()


@pytest.mark.slow
def test_sweep_on_resynthesis_scored_by_probe_and_f0(rave_ts, notes, tmp_path):
    store, probes = tmp_path / "store", tmp_path / "probes"
    _run("extract", notes, "-o", store, "-m", rave_ts, "--hookpoint", "latent")
    _run("probe", "train", store, "-o", probes, "-l", "label", "--hookpoint", "latent", "--folds", "3", device=False)
    res = _run("steer", "sweep", "-m", rave_ts, "--audio", notes / "low", "--probe", probes, "--target", "high",
               "--strengths", "0,2", "--seeds", "0,1", "--controls", "1", "--score-f0", "-o", tmp_path / "sweep")
    n_items, conditions = 3, 1 + 2  # none; direction and one random control at strength 2
    assert res["clips"] == n_items * 2 * conditions and res["score_hookpoint"] == "latent"
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["item_id"] for r in rows} == {"n0", "n1", "n2"} and {r["control"] for r in rows} == {
        "none", "direction", "random"}
    for r in rows:
        assert 0.0 <= float(r["target_prob"]) <= 1.0 and float(r["f0_hz"]) > 0
        if r["control"] == "none":
            assert float(r["f0_cents"]) == 0.0
        else:
            assert np.isfinite(float(r["f0_cents"]))
    # seeds are paired: the unsteered clip of an item is scored the same whatever runs around it
    none = {(r["item_id"], r["seed"]): r["target_prob"] for r in rows if r["control"] == "none"}
    assert len(none) == n_items * 2
    stats = res["f0_stats"]
    assert [s["strength"] for s in stats] == [2.0] and stats[0]["direction"]["n"] == n_items * 2
    assert "f0 shift (cents) at 2:" in res["summary"]
    record = json.loads((tmp_path / "sweep" / "manifest.json").read_text())
    assert record["resynthesis"] and record["items"] == ["n0", "n1", "n2"] and record["score"]["f0"]["model"] == \
        "crepe-tiny"


def test_sweep_refuses_dims(rave_ts, notes, tmp_path):
    result = CliRunner().invoke(app, ["steer", "sweep", "-m", str(rave_ts), "--audio", str(notes), "--set",
                                      "dims.bias={0: 1}", "-o", str(tmp_path / "s"), "--device", "cpu"])
    assert result.exit_code != 0 and "per-dimension controls are fixed edits" in result.output
