"""`steer generate`: the record reproduces the clips, zero strength is plain generation, audio prompts continue."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musicsae_cli.errors import UsageError
from musicsae_cli.steering.config import SteerGenerateConfig
from musicsae_cli.steering.generate import steer_generate

PROMPTS = ["calm jazz piano", "fast rock drums"]


def _codes(out) -> list[np.ndarray]:
    record = json.loads((out / "manifest.json").read_text())
    return [np.load(out / clip["codes"]) for clip in record["clips"]]


@pytest.mark.smoke
@pytest.mark.slow
def test_record_reproduces_the_clips(runner, app, tmp_path, direction_file, tiny_adapter):
    args = ["steer", "generate", "-c", "tiny", "--file", str(direction_file), "--duration-s", "0.4", "--stream", "cond",
            "--every", "2", "--seed", "5", "-q"]
    first = runner.invoke(app, [*args, "--strength", "6", "-o", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    record = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert record["kind"] == "steer_generate" and record["musicsae_version"]
    assert record["model"]["id"] == "tiny-musicgen" and "revision" in record["model"]
    assert record["prompts"] == PROMPTS and record["sampling"]["seed"] == 5 and record["sampling"]["top_k"] == 50
    steering = record["steering"]
    assert steering["layers"] == ["layers.2"] and steering["strengths"] == [6.0] and steering["stream"] == "cond"
    assert steering["schedule"]["every"] == 2 and steering["direction"]["kind"] == "file"
    assert steering["direction"]["sha256"] and steering["vectors_file"] == "directions.safetensors"
    assert [c["seed"] for c in record["clips"]] == [5, 5] and record["environment"]["torch"]
    wav, sr = sf.read(tmp_path / "a" / record["clips"][0]["wav"])
    assert sr == 32000 and wav.shape == (0.4 * 32000,)
    again = runner.invoke(app, ["steer", "generate", "-c", str(tmp_path / "a" / "config.yaml"), "-q",
                                "-o", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    for a, b in zip(_codes(tmp_path / "a"), _codes(tmp_path / "b"), strict=True):
        np.testing.assert_array_equal(a, b)
    plain = tiny_adapter.generate(PROMPTS, 0.4, [], seed=5, top_k=50)
    assert not np.array_equal(plain.tokens, np.stack(_codes(tmp_path / "a")))  # the steering did something
    zero = runner.invoke(app, [*args, "--strength", "0", "-o", str(tmp_path / "zero")])
    assert zero.exit_code == 0, zero.output
    np.testing.assert_array_equal(np.stack(_codes(tmp_path / "zero")), plain.tokens)  # strength 0 = plain


def test_cli_errors_are_one_line_and_leave_nothing(runner, app, tmp_path, direction_file):
    np.save(tmp_path / "wide.npy", np.ones(1024, np.float32))
    res = runner.invoke(app, ["steer", "generate", "-c", "tiny", "--file", str(tmp_path / "wide.npy"),
                              "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "error: the direction has width 1024, the model's widths are 64" in res.stderr
    res = runner.invoke(app, ["steer", "generate", "-c", "tiny", "--file", str(direction_file), "--hookpoint",
                              "layers.1-2", "--strength", "1,2,3", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "error: 3 strengths for 2 layers" in res.stderr
    res = runner.invoke(app, ["steer", "generate", "-c", "tiny", "--file", str(direction_file), "--contrast",
                              "a=b:c", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "several direction sources set: contrast, file" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.npy"]


@pytest.mark.smoke
def test_audio_prompt_is_continued(tiny_adapter, tmp_path, direction_file):
    t = np.arange(int(0.2 * 32000)) / 32000
    audio = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "prompt.wav", audio, 32000)
    cfg = SteerGenerateConfig(model="tiny-musicgen", audio=str(tmp_path / "prompt.wav"), duration_s=0.5,
                              direction={"file": str(direction_file)}, layers="layers.1", strength=[3.0])
    res = steer_generate(cfg, tmp_path / "cont", adapter=tiny_adapter)
    assert res["clips"] == 1
    record = json.loads((tmp_path / "cont" / "manifest.json").read_text())
    assert record["prompts"] == [None] and record["audio_prompt"]["frames"] == 10
    codes = _codes(tmp_path / "cont")[0]
    assert codes.shape == (4, 25)
    np.testing.assert_array_equal(codes[:, :10], tiny_adapter.encode([audio])[0].numpy())  # the prompt leads
    long = cfg.model_copy(update={"duration_s": 0.2})
    with pytest.raises(UsageError, match="the audio prompt is 0.20 s, not shorter than the requested duration 0.2 s"):
        steer_generate(long, tmp_path / "long", adapter=tiny_adapter)
    assert not (tmp_path / "long").exists()
