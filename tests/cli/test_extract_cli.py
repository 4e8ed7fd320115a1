"""`musicsae extract` and `musicsae model` from the command line."""

from __future__ import annotations

import json

import pytest


def test_extract_audio_then_info(runner, app, concept_set, tmp_path):
    out = tmp_path / "store"
    result = runner.invoke(app, ["extract", str(concept_set), "-o", str(out), "-c", "tiny", "--hookpoint", "layers.-1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["hookpoints"] == ["layers.3"] and res["windows_written"] == 6
    info = json.loads(runner.invoke(app, ["info", str(out), "--json"]).stdout)
    assert info["model"]["id"] == "tiny-musicgen" and info["hookpoints"] == {"layers.3": 64}
    assert info["labels"]["concept"]["top"] == {"notes": 3, "tempos": 3}
    assert "model: tiny-musicgen" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_extract_from_saved_model_and_prompts(runner, app, tiny_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("jazz piano\nrock drums\n")
    out = tmp_path / "gen"
    result = runner.invoke(app, ["extract", "--prompts", str(prompts), "-o", str(out), "--model", str(tiny_dir),
                                 "--device", "cpu", "--duration-s", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["clips_written"] == 2 and (out / "generated" / "p0001-s0.wav").is_file()


def test_extract_usage_errors(runner, app, concept_set, tmp_path):
    both = runner.invoke(app, ["extract", str(concept_set), "--prompt", "x", "-o", str(tmp_path / "s")])
    assert both.exit_code == 2 and "either SOURCE" in both.stderr
    neither = runner.invoke(app, ["extract", "-o", str(tmp_path / "s")])
    assert neither.exit_code == 2
    layer = runner.invoke(app, ["extract", str(concept_set), "-o", str(tmp_path / "s"), "-c", "tiny",
                                "--hookpoint", "layers.30"])
    assert layer.exit_code == 2 and layer.stderr.strip() == (
        "error: hookpoint 'layers.30' is out of range: the model has 4 layers (hint: valid: layers.0 .. layers.3, "
        "ranges like layers.0-3, layers.-1, or all)")
    not_model = runner.invoke(app, ["extract", str(concept_set), "-o", str(tmp_path / "s"), "--model",
                                    str(concept_set)])
    assert not_model.exit_code == 2 and "is not a MusicGen checkpoint (no config.json)" in not_model.stderr
    assert not (tmp_path / "s").exists()


def test_extract_dry_run_shows_preset(runner, app, tmp_path):
    result = runner.invoke(app, ["extract", "x", "-o", str(tmp_path / "s"), "-c", "musicgen-medium", "--dry-run",
                                 "--json"])
    data = json.loads(result.stdout)
    assert data["model"] == "facebook/musicgen-medium" and data["batch_size"] == 4 and data["window_s"] == 10.0


@pytest.mark.slow
def test_model_save_tiny_and_hookpoints(runner, app, tmp_path):
    out = tmp_path / "tiny"
    result = runner.invoke(app, ["model", "save-tiny", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))  # no pickles
    again = runner.invoke(app, ["model", "save-tiny", "-o", str(out)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    hooks = runner.invoke(app, ["model", "hookpoints", str(out)])
    assert hooks.stdout.splitlines() == [f"layers.{i}\t64" for i in range(4)]
