"""`steer audio`: edits at a hookpoint read off the model's own outputs, for any model that has outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes" / "A"
    folder.mkdir(parents=True)
    t = np.arange(8000) / 16000
    for i, f in enumerate((220.0, 440.0)):
        sf.write(str(folder / f"n{i}.wav"), (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
    return tmp_path / "notes"


@pytest.fixture
def vector(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.random.default_rng(0).normal(size=32).astype(np.float32))  # crepe-tiny block5 is 32 wide
    return path


def test_strength_zero_changes_nothing_and_a_push_moves_crepe(runner, app, notes, vector, tmp_path):
    base = ["steer", "audio", str(notes), "-m", "crepe-tiny", "--file", str(vector), "--hookpoint", "block5",
            "--device", "cpu"]
    res = runner.invoke(app, [*base, "--strength", "0", "-o", str(tmp_path / "zero"), "--json"])
    assert res.exit_code == 0, res.output
    zero = json.loads(res.stdout)
    assert zero["rel_change_mean"] == 0.0 and zero["items"] == 2
    assert zero["f0_hz_plain_mean"] == zero["f0_hz_steered_mean"]
    res = runner.invoke(app, [*base, "--strength", "20", "-o", str(tmp_path / "push"), "--json"])
    assert res.exit_code == 0, res.output
    push = json.loads(res.stdout)
    assert push["rel_change_mean"] > 0.05
    saved = np.load(tmp_path / "push" / "outputs" / "A" / "n1.npz")
    assert saved["plain"].shape == saved["steered"].shape == (50, 360)
    # the plain outputs are the network's own: CREPE reads 440 Hz off the second note
    from musicsae_cli.models import crepe

    f0, _ = crepe.decode(saved["plain"])
    assert abs(np.median(f0) - 440.0) < 440.0 * 0.01


def test_a_model_without_outputs_is_one_line(runner, app, notes, vector, tmp_path):
    res = runner.invoke(app, ["steer", "audio", str(notes), "-m", "tiny-musicgen", "--file", str(vector),
                              "-o", str(tmp_path / "x")])
    assert res.exit_code != 0 and "audio -> the model's own outputs" in res.output
    assert not (tmp_path / "x").exists()
