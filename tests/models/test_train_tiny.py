"""`model train-tiny`: a tiny MusicGen trained from scratch, its resumable training and its bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Stop as _Stop
from tests.conftest import stopping_after as _stopping_after

FAST = ["-c", "fast"]


def _train(runner, app, out: Path, *args: str):
    return runner.invoke(app, ["model", "train-tiny", str(out), *FAST, *args])


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny MusicGen trained with the `fast` preset through the CLI (seconds)."""
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    out = tmp_path_factory.mktemp("train-tiny") / "tiny"
    res = CliRunner().invoke(app, ["model", "train-tiny", str(out), *FAST, "--json"])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_cli_writes_a_checkpoint_and_reports(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "manifest.json", "config.yaml"} <= names
    assert not any(n.endswith(".bin") or n.endswith(".pt") for n in names)  # weights only as safetensors
    assert _siblings(trained) == []  # no .partial checkpoint or stage left behind
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["kind"] == "model" and manifest["family"] == "musicgen"
    training = manifest["training"]
    assert training["clips"]["train"] + training["clips"]["val"] == sum(training["data"]["per_concept"].values())
    assert set(training["pitch_survival"]) == {"input", "random_codec", "trained_codec"}
    assert training["pitch_survival"]["input"]["median_abs_cents"] < 10  # the synthesised notes are in tune
    assert set(training["seconds"]) == {"codec", "encoding", "decoder"}
    assert manifest["config"]["decoder"]["steps"] == 12  # the preset's, recorded


@pytest.mark.slow
def test_val_ce_matches_an_independent_computation(trained):
    """The reported validation CE, recomputed from the saved model through musicsae's own teacher forcing."""
    import torch

    from musicsae_cli.audio.synth import plan, render
    from musicsae_cli.models import load_adapter
    from musicsae_cli.models.musicgen_loss import codebook_log_probs
    from musicsae_cli.models.tiny_train_config import TrainTinyConfig
    from musicsae_cli.models.tiny_train_data import prompt_of

    manifest = json.loads((trained / "manifest.json").read_text())
    cfg = TrainTinyConfig.model_validate(manifest["config"])
    synth = cfg.synth.model_copy(update={"sample_rate": 32000})
    val = set(manifest["training"]["data"]["val_items"])
    rows = [r for r in plan(synth) if r["item_id"] in val]
    adapter = load_adapter(str(trained), device="cpu")
    codes = adapter.encode([render(r, synth) for r in rows])
    log_probs, targets, mask = codebook_log_probs(adapter, codes, [prompt_of(r) for r in rows])
    nll = -log_probs.gather(-1, targets[..., None])[..., 0]  # (B, K, S)
    ce = float((nll * mask).sum() / mask.sum())
    assert ce == pytest.approx(manifest["training"]["val_ce"], abs=1e-4)
    assert torch.isfinite(log_probs).all()
    # and the random model's CE sits near ln(codebook size), as a model that knows nothing should
    assert abs(manifest["training"]["random_val_ce"] - math.log(adapter.model.decoder.config.vocab_size)) < 0.3


@pytest.mark.slow
def test_saved_folder_loads_like_a_hub_checkpoint(trained):
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    from musicsae_cli.models import load_adapter

    model = MusicgenForConditionalGeneration.from_pretrained(str(trained))
    processor = AutoProcessor.from_pretrained(str(trained))
    assert model.decoder.config.num_codebooks == model.audio_encoder.config.num_quantizers
    assert model.decoder.config.vocab_size == model.audio_encoder.config.codebook_size
    ids = processor(text=["calm jazz piano", "a piano playing C4"], padding=True)["input_ids"]
    assert processor.tokenizer.unk_token_id not in {i for row in ids for i in row}
    adapter = load_adapter(str(trained), device="cpu")
    assert adapter.family == "musicgen" and adapter.n_layers == 4


@pytest.mark.parametrize("task,n", [("Training decoder", 7), ("Training codec", 3), ("Training codec", 7)])
@pytest.mark.slow
def test_resumed_run_ends_with_the_same_weights(tmp_path, task, n):
    from safetensors.torch import load_file

    from musicsae_cli.config import resolve_config
    from musicsae_cli.models.tiny_train import train_tiny
    from musicsae_cli.models.tiny_train_config import TrainTinyConfig

    cfg = resolve_config(TrainTinyConfig, "model", "fast", ["codec.steps=6", "checkpoint_every=2"],
                         command="train-tiny")
    whole = train_tiny(tmp_path / "whole", cfg)
    with pytest.raises(_Stop):
        train_tiny(tmp_path / "cut", cfg, progress=_stopping_after(task, n))
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.partial" / "state").is_dir()
    resumed = train_tiny(tmp_path / "cut", cfg)
    assert resumed.resumed and not whole.resumed
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "cut"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert resumed.val_ce == whole.val_ce and resumed.pitch_survival == whole.pitch_survival
    assert not (tmp_path / ".cut.partial").exists()


@pytest.mark.slow
def test_interrupted_run_with_other_settings_is_refused(tmp_path, runner, app):
    from musicsae_cli.config import resolve_config
    from musicsae_cli.models.tiny_train import train_tiny
    from musicsae_cli.models.tiny_train_config import TrainTinyConfig

    cfg = resolve_config(TrainTinyConfig, "model", "fast", None, command="train-tiny")
    with pytest.raises(_Stop):
        train_tiny(tmp_path / "cut", cfg, progress=_stopping_after("Training decoder", 6))
    res = _train(runner, app, tmp_path / "cut", "--seed", "3")
    assert res.exit_code == 2 and "interrupted train-tiny run with other settings (seed)" in res.output
    assert (tmp_path / ".cut.partial" / "state").is_dir()  # nothing lost
    assert _train(runner, app, tmp_path / "cut", "--seed", "3", "--overwrite").exit_code == 0


def _one_line_error(res, *fragments: str) -> None:
    assert res.exit_code == 2, res.output
    err = [line for line in res.output.splitlines() if line.strip()]
    assert len(err) <= 2 and err[0].startswith("error:"), res.output  # the message, then at most its hint
    for fragment in fragments:
        assert fragment in res.output, res.output


@pytest.mark.parametrize("sets,fragment", [
    (["decoder.num_codebooks=2"], "decoder.num_codebooks 2 does not match the codec's 4 quantizers"),
    (["decoder.vocab_size=32"], "decoder.vocab_size 32 does not match the codec's codebook size 256"),
    (["synth.max_per_concept=1"], "has a single clip (or group): none can be held out"),
])
def test_bad_configs_fail_in_one_line_and_write_nothing(runner, app, tmp_path, sets, fragment):
    out = tmp_path / "m"
    res = _train(runner, app, out, *(a for s in sets for a in ("--set", s)))
    _one_line_error(res, fragment)
    assert list(tmp_path.iterdir()) == []


def test_data_without_concept_labels(runner, app, tmp_path):
    from musicsae_cli.audio.io import write_wav

    for label in ("a", "b"):
        for i in range(2):
            write_wav(tmp_path / "songs" / label / f"{i}.wav", np.sin(np.arange(32000) * 0.05).astype(np.float32),
                      32000)
    res = _train(runner, app, tmp_path / "m", "--data", str(tmp_path / "songs"))
    _one_line_error(res, "has no concept labels to build prompts from")
    assert not (tmp_path / "m").exists() and _siblings(tmp_path / "m") == []


@pytest.mark.slow
def test_data_folder_from_data_synth(runner, app, tmp_path):
    data = tmp_path / "concepts"
    assert runner.invoke(app, ["data", "synth", "-o", str(data), "-c", "tiny"]).exit_code == 0
    res = _train(runner, app, tmp_path / "m", "--data", str(data), "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["clips"]["train"] + result["clips"]["val"] == 10  # 5 concepts x 2 clips


@pytest.mark.slow
def test_existing_output_needs_overwrite_and_foreign_folders_are_never_replaced(runner, app, trained, tmp_path):
    before = (trained / "model.safetensors").read_bytes()
    _one_line_error(_train(runner, app, trained), "already exists")
    assert (trained / "model.safetensors").read_bytes() == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    _one_line_error(_train(runner, app, foreign, "--overwrite"), "not a musicsae output")
    assert (foreign / "notes.txt").read_text() == "keep me" and _siblings(foreign) == []
