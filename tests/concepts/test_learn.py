"""`concept learn` and `--concepts`: textual inversion on the built-in trained tiny MusicGen.

The concept audio is synthesised: a narrow concept (one organ note, eight renditions) whose codes a prompt can
explain, and a drum loop; they are laid out as a folder of concept subfolders, as a user would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import Stop, stopping_after

MODEL = "tiny-musicgen-trained"


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    return CliRunner().invoke(app, args)


def _one_line_error(res, *fragments: str) -> None:
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    for f in fragments:
        assert f in errors[0], errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from musicsae_cli.audio.io import write_wav
    from musicsae_cli.audio.synth import SynthConfig, plan, render

    root = tmp_path_factory.mktemp("concept-audio") / "audio"
    for name, cfg in {
        "organa": SynthConfig(concepts=["notes"], timbres=["organ"], pitch_classes=["A"], octaves=[3], variants=8,
                              duration_s=2.0, seed=3),
        "thump": SynthConfig(concepts=["tempos"], tempos_bpm=[120.0], beat_patterns=["rock"], variants=6,
                             duration_s=2.0, seed=4),
    }.items():
        (root / name).mkdir(parents=True)
        for i, row in enumerate(plan(cfg)):
            write_wav(root / name / f"{i:02d}.wav", render(row, cfg), cfg.sample_rate)
    return root


def _cfg(**over):
    from musicsae_cli.concepts.config import ConceptLearnConfig
    from musicsae_cli.config import resolve_config

    return resolve_config(ConceptLearnConfig, "concept", "tiny", [f"{k}={v}" for k, v in over.items()],
                          command="learn")


@pytest.fixture(scope="module")
def learned(data, tmp_path_factory):
    """(adapter the concepts were learned with, its weights before, result, output folder)."""
    from musicsae_cli.concepts.learn import learn
    from musicsae_cli.models import load_adapter

    adapter = load_adapter(MODEL, device="cpu")
    before = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    out = tmp_path_factory.mktemp("learned") / "concepts"
    result = learn(data, out, _cfg(), adapter=adapter)
    return adapter, before, result, out


@pytest.mark.slow
def test_validation_ce_drops_by_a_clear_margin(learned):
    _, _, result, _ = learned
    organ = result.concepts["organa"]
    assert organ["val_chunks"] >= 2 and organ["train_chunks"] >= 8
    # measured: 3.28 -> 2.94 nats per code in 60 steps (the model's own prompt "an organ playing A3": 2.99)
    assert organ["val_ce_after"] < organ["val_ce_before"] - 0.15, organ
    assert result.concepts["thump"]["val_ce_after"] < result.concepts["thump"]["val_ce_before"]


@pytest.mark.slow
def test_every_weight_but_the_new_rows_is_bit_identical(learned):
    adapter, before, _, _ = learned
    after = adapter.model.state_dict()
    assert before.keys() == after.keys()
    grown = 0
    for name, old in before.items():
        new = after[name]
        if new.shape != old.shape:  # the text embedding grew by the new tokens' rows
            grown += 1
            assert new.shape[1:] == old.shape[1:] and torch.equal(new[: old.shape[0]], old), name
        else:
            assert torch.equal(new, old), name
    assert grown >= 1


@pytest.mark.slow
def test_output_folder_and_cache_reuse(learned, data):
    from safetensors.torch import load_file

    from musicsae_cli.concepts.learn import learn

    _, _, result, out = learned
    rows = load_file(str(out / "embeddings.safetensors"))
    assert set(rows) == {"organa", "thump"} and rows["organa"].shape == (4, 32)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "concepts" and manifest["model_id"] == MODEL
    assert manifest["concepts"]["organa"]["token_names"] == [f"<organa_{i}>" for i in range(4)]
    assert (out / "validation.csv").is_file() and (out / "train_log.jsonl").is_file()
    assert result.cache == "encoded" and (out / "codes" / "codes.safetensors").is_file()
    copy = out.parent / "again"
    shutil.copytree(out, copy)
    again = learn(data, copy, _cfg(steps=2), overwrite=True)  # the codes of the finished run are reused
    assert again.cache == "reused"
    assert not any(p.name.startswith(".again") for p in out.parent.iterdir())




@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_rows(data, tmp_path):
    from safetensors.torch import load_file

    from musicsae_cli.concepts.learn import learn

    cfg = _cfg(steps=8, checkpoint_every=3, eval_every=4)
    learn(data, tmp_path / "whole", cfg)
    with pytest.raises(Stop):
        learn(data, tmp_path / "cut", cfg, progress=stopping_after("Learning concepts", 6))
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.partial").is_dir()
    resumed = learn(data, tmp_path / "cut", cfg)
    assert resumed.resumed
    a, b = (load_file(str(tmp_path / d / "embeddings.safetensors")) for d in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_prompt_without_concepts_generates_exactly_what_the_base_model_does(learned):
    from musicsae_cli.concepts.io import attach
    from musicsae_cli.models import load_adapter

    _, _, _, out = learned
    base = load_adapter(MODEL, device="cpu")
    with_concepts = load_adapter(MODEL, device="cpu")
    assert attach(with_concepts, out) == ["organa", "thump"]
    prompts = ["an organ playing A3", "a drum loop at 120 bpm"]
    a = base.generate(prompts, 0.5, [], seed=3)
    b = with_concepts.generate(prompts, 0.5, [], seed=3)
    assert all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for x, y in zip(a.tokens, b.tokens, strict=True))
    c = with_concepts.generate(["<organa>", "<thump> at 120 bpm"], 0.5, [], seed=3)  # and the concepts generate
    assert len(c.tokens) == 2


@pytest.mark.slow
def test_commands_take_concepts_in_prompts(learned, tmp_path):
    _, _, _, out = learned
    res = _cli(["extract", "-m", MODEL, "-c", "tiny", "--concepts", str(out), "--prompt", "<organa>",
                "--prompt", "an organ playing A3", "--duration-s", "1", "-o", str(tmp_path / "gen"), "-q"])
    assert res.exit_code == 0, res.output
    import numpy as np

    np.save(tmp_path / "dir.npy", np.random.default_rng(0).standard_normal(64).astype(np.float32))
    res = _cli(["steer", "generate", "-c", "tiny", "--model", MODEL, "--concepts", str(out), "--prompt",
                "<thump>", "--duration-s", "1", "--file", str(tmp_path / "dir.npy"), "--strength", "2",
                "-o", str(tmp_path / "steered"), "-q"])
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_a_learned_concept_is_compared_with_another_inside_the_model(learned, tmp_path):
    """analyze compare in prompt mode: clips generated from <organa> against clips from <thump>, layer by layer."""
    _, _, _, out = learned
    res = _cli(["analyze", "compare", "-c", "tiny", "--model", MODEL, "--concepts", str(out),
                "--prompt-a", "<organa>", "--prompt-a", "<organa> playing A3", "--prompt-b", "<thump>",
                "--prompt-b", "<thump> at 120 bpm", "-o", str(tmp_path / "cmp"), "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cmp" / "manifest.json").read_text())
    assert summary["kind"] and (tmp_path / "cmp" / "store").is_dir()


# ---- bad input: one line each, nothing written -----------------------------------------------------------------
@pytest.mark.slow
def test_unknown_concept_in_a_prompt_names_the_closest(learned, tmp_path):
    _, _, _, out = learned
    res = _cli(["extract", "-m", MODEL, "-c", "tiny", "--concepts", str(out), "--prompt", "<organ_a>",
                "--duration-s", "1", "-o", str(tmp_path / "gen")])
    _one_line_error(res, "<organ_a>", "not a learned concept", "did you mean <organa>")
    assert not (tmp_path / "gen").exists()


@pytest.mark.slow
def test_concepts_from_another_model_are_refused(learned, tmp_path):
    _, _, _, out = learned
    res = _cli(["extract", "-m", "tiny-musicgen", "-c", "tiny", "--concepts", str(out), "--prompt", "<organa>",
                "--duration-s", "1", "-o", str(tmp_path / "gen")])
    _one_line_error(res, "learned on tiny-musicgen-trained", "not on tiny-musicgen")
    assert not (tmp_path / "gen").exists()


def test_a_concept_name_that_is_already_a_token(data, tmp_path):
    src = tmp_path / "audio"
    shutil.copytree(data / "organa", src / "organ")  # "organ" is a word of the model's tokenizer
    res = _cli(["concept", "learn", str(src), "-o", str(tmp_path / "c"), "-c", "tiny"])
    _one_line_error(res, "'organ' is already a token")
    assert not (tmp_path / "c").exists() and not (tmp_path / ".c.partial").exists()


def test_clips_shorter_than_one_chunk(data, tmp_path):
    res = _cli(["concept", "learn", str(data), "-o", str(tmp_path / "c"), "-c", "tiny", "--chunk-s", "3"])
    _one_line_error(res, "has no clip of at least one chunk (3 s)")
    assert not (tmp_path / "c").exists()


def test_a_folder_without_concept_subfolders(data, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(data / "thump", flat)
    res = _cli(["concept", "learn", str(flat), "-o", str(tmp_path / "c"), "-c", "tiny"])
    _one_line_error(res, "no concept subfolders")


@pytest.mark.slow
def test_evaluate_reports_distances_against_controls_and_the_nearest_words(learned, tmp_path):
    import csv

    _, _, _, out = learned
    res = _cli(["concept", "evaluate", str(out), "-o", str(tmp_path / "eval"), "--samples", "6", "--device", "cpu",
                "-q"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "eval").iterdir()} >= {"report.json", "report.csv", "report.png"}
    with (tmp_path / "eval" / "report.csv").open() as fh:
        rows = {r["concept"]: r for r in csv.DictReader(fh)}
    organ = rows["organa"]
    # measured: learned 487, random tokens 1254, the training audio itself 20 (the floor)
    assert float(organ["fd_train_audio"]) < float(organ["fd_learned"]) < float(organ["fd_random"])
    assert organ["nearest"] and float(organ["val_ce_after"]) < float(organ["val_ce_before"])


def test_evaluate_refuses_a_folder_that_holds_no_concepts(tmp_path):
    (tmp_path / "x").mkdir()
    res = _cli(["concept", "evaluate", str(tmp_path / "x"), "-o", str(tmp_path / "eval")])
    _one_line_error(res, "not a musicsae artefact")
    assert not (tmp_path / "eval").exists()
