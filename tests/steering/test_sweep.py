"""`steer sweep` end to end on the tiny model: CSV, plot and summary; the baseline scored independently."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.probes import ProbeSet
from musicsae_cli.steering.config import SteerSweepConfig
from musicsae_cli.steering.sweep import steer_sweep


@pytest.mark.smoke
@pytest.mark.slow
def test_sweep_cli_end_to_end(runner, app, tmp_path, concept_probe, tiny_adapter):
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["steer", "sweep", "-c", "sweep-tiny", "--probe", str(concept_probe), "--target",
                              "notes", "--duration-s", "0.4", "--hookpoint", "layers.1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = res.stdout.strip().splitlines()[-1]
    p, z = r"(?:0\.\d\d|\d\.\de-\d+|\d+e-\d+|1-\S+)", r"-?\d+\.\d\d"  # a probability, a logit
    assert re.fullmatch(rf"strength 0: {p} \(logit {z}\) \| 4: {p} \(logit {z}; random {p}, logit {z}\) \| "
                        rf"8: {p} \(logit {z}; random {p}, logit {z}\)", summary), summary
    assert "warning" not in res.stderr and "saturated" not in res.stdout  # this probe reads these clips fine
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 2 * (1 + 2 * (1 + 2))  # seeds x (baseline + strengths x (direction + 2 random))
    assert {r["control"] for r in rows} == {"none", "direction", "random"}
    assert set(rows[0]) >= {"strength", "seed", "prompt", "control", "target_prob", "p_notes", "p_tempos"}
    for r in rows:
        assert float(r["target_prob"]) == pytest.approx(float(r["p_notes"]))
        assert float(r["p_notes"]) + float(r["p_tempos"]) == pytest.approx(1.0)
    assert (out / "dose_response.png").stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"] == summary and manifest["score"]["hookpoint"] == "layers.1"
    assert manifest["saturated"] is False and manifest["saturation"]["reason"] is None
    assert len(manifest["steering"]["controls"]) == 2
    # the baseline row, scored independently: plain generation -> its codes, teacher-forced unconditionally
    probe = ProbeSet.load(concept_probe)
    plain = tiny_adapter.generate(["calm jazz piano"], 0.4, ["layers.1"], seed=1, top_k=50)
    acts = plain.acts["uncond"]["layers.1"][0].numpy()  # = unconditional teacher forcing of the same codes
    want = probe.predict_proba("layers.1", acts.mean(0, keepdims=True))[0, 0]
    (base,) = [r for r in rows if r["control"] == "none" and r["seed"] == "1"]
    assert float(base["target_prob"]) == pytest.approx(want, abs=1e-6)
    z = probe.logits("layers.1", acts.mean(0, keepdims=True))[0]
    assert float(base["target_logit"]) == pytest.approx(z[0] - z[1], abs=1e-4)  # log-odds of notes vs tempos
    steered = [float(r["target_prob"]) for r in rows if r["control"] == "direction"]
    assert len(set(steered)) > 1  # the steering changed what the probe reads


@pytest.mark.slow
def test_latent_sweep_uses_random_latents(tmp_path, relu_sae, concept_probe, tiny_adapter, tiny_store):
    cfg = SteerSweepConfig(model="tiny-musicgen", prompts=["piano"], duration_s=0.3, top_k=50, mode="clamp",
                           direction={"sae": str(relu_sae), "latents": [7], "latent_scale": "mean",
                                      "store": str(tiny_store)},
                           score_probe=str(concept_probe), score_target="tempos", strengths=[0, 5], seeds=[0],
                           random_controls=2, rescore_from="audio")
    res = steer_sweep(cfg, tmp_path / "latent", adapter=tiny_adapter)
    assert res["clips"] == 1 + 1 * (1 + 2) and res["score_hookpoint"] == "layers.2"
    controls = json.loads((tmp_path / "latent" / "manifest.json").read_text())["steering"]["controls"]
    picks = [c["latents"] for c in controls]
    assert all(len(p) == 1 and p != [7] for p in picks) and picks[0] != picks[1]
    bad = cfg.model_copy(update={"score_target": "drums"})
    with pytest.raises(InputError, match="'drums' is not a class of the concept probe"):
        steer_sweep(bad, tmp_path / "bad", adapter=tiny_adapter)
    assert not (tmp_path / "bad").exists()
    # the audio path: decoded audio -> EnCodec -> unconditional teacher forcing, mean-pooled like the probe
    plain = tiny_adapter.generate(["piano"], 0.3, [], seed=0, top_k=50)
    acts = tiny_adapter.audio_activations([plain.audio[0, 0]], ["layers.2"])[0]["layers.2"].numpy()
    want = ProbeSet.load(concept_probe).predict_proba("layers.2", acts.mean(0, keepdims=True))[0, 1]
    assert res["stats"][0]["direction"]["mean"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--seeds", "", "error: no sampling seeds to sweep (hint: "),
    ("--seeds", " , ", "error: no sampling seeds to sweep (hint: "),
    ("--strengths", "", "error: no strengths to sweep (hint: "),
])
def test_sweep_refuses_empty_lists(runner, app, tmp_path, concept_probe, flag, value, message):
    res = runner.invoke(app, ["steer", "sweep", "-c", "sweep-tiny", "--probe", str(concept_probe), "--target",
                              "notes", "--duration-s", "0.2", flag, value, "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_saturated_probe_is_flagged_and_the_summary_keeps_the_logits(runner, app, tmp_path, concept_probe,
                                                                     tiny_adapter):
    # the concept probe with a training std 1000x too small: every clip scores 1000x outside its training range,
    # as a probe trained on real audio does on the tiny model's generated codes (the demo sweep)
    probe = ProbeSet.load(concept_probe)
    probe.std = probe.std * 1e-3
    (tmp_path / "narrow").mkdir()
    probe.save(tmp_path / "narrow")
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["steer", "sweep", "-c", "sweep-tiny", "--file", str(_direction(tmp_path)),
                              "--score-probe", str(tmp_path / "narrow"), "--set", "score_target=notes",
                              "--duration-s", "0.4", "--hookpoint", "layers.1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "saturated" in warnings[0] and "logit" in warnings[0], res.stderr
    summary = res.stdout.strip().splitlines()
    assert any(line.startswith("saturated: ") for line in summary), res.stdout
    line = json.loads((out / "manifest.json").read_text())["summary"]
    probs = _probabilities(line)
    assert len(probs) == 5 and not {"0.00", "1.00"} & set(probs) and line.count("logit") == 5, line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["saturated"] is True and "1e-06 of 0 or 1" in manifest["saturation"]["reason"]
    assert manifest["saturation"]["input_rms_median"] > 10  # far outside the probe's training distribution
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    # the logits still differ between strengths, and each row's probability is the sigmoid of its log-odds
    logits = {float(r["target_logit"]) for r in rows}
    assert len(logits) > 1 and all(abs(v) > 13.8 for v in logits)
    for r in rows:
        z = float(r["target_logit"])
        assert float(r["target_prob"]) == pytest.approx(1 / (1 + np.exp(-z)), rel=1e-6, abs=1e-300)
    # an independent check of one baseline row: plain generation, its codes teacher-forced, pooled, scored
    plain = tiny_adapter.generate(["calm jazz piano"], 0.4, ["layers.1"], seed=0, top_k=50)
    acts = plain.acts["uncond"]["layers.1"][0].numpy().mean(0, keepdims=True)
    z = ProbeSet.load(tmp_path / "narrow").logits("layers.1", acts)[0]
    (base,) = [r for r in rows if r["control"] == "none" and r["seed"] == "0"]
    assert float(base["target_logit"]) == pytest.approx(z[0] - z[1], rel=1e-4)
    stats = manifest["stats"]
    assert [s["direction"]["logit_mean"] is not None for s in stats] == [True] * 3


def _probabilities(line: str) -> list[str]:
    """The probabilities printed in a summary line (direction and random controls)."""
    return re.findall(r"(?:^strength 0|\| [\d.]+): (\S+) \(", line) + re.findall(r"random (\S+),", line)


def _direction(tmp_path):
    path = tmp_path / "dir.npy"
    np.save(path, np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32))
    return path


def test_summary_and_saturation_rules_on_known_rows():
    from musicsae_cli.steering.report import format_prob, saturation, summarize

    def row(strength, control, z):
        return {"strength": strength, "control": control, "target_logit": z, "target_prob": 1 / (1 + np.exp(-z)),
                "input_rms": 1.5}

    pinned = [row(0.0, "none", -126.0), row(0.0, "none", -125.0), row(4.0, "direction", -113.0),
              row(4.0, "random", -125.5), row(8.0, "direction", -100.0), row(8.0, "random", -124.0)]
    stats, line = summarize(pinned, [0, 4, 8])
    p = lambda *z: f"{np.mean(1 / (1 + np.exp(-np.array(z)))):.2g}"  # noqa: E731
    assert line == (f"strength 0: {p(-126, -125)} (logit -125.50) | 4: {p(-113)} (logit -113.00; random "
                    f"{p(-125.5)}, logit -125.50) | 8: {p(-100)} (logit -100.00; random {p(-124)}, logit -124.00)")
    assert "e-55" in line and not {"0.00", "1.00"} & set(_probabilities(line))
    assert stats[1]["direction"]["logit_mean"] == -113.0 and stats[0]["direction"]["n"] == 2
    sat = saturation(pinned, "rock")
    assert sat["saturated"] and sat["reason"].startswith("P(rock) is within 1e-06 of 0 or 1 for 2/2 clips")
    assert "far outside" not in sat["reason"]  # inputs at RMS 1.5 look like the probe's training data
    # confident at strength 0 but moved by steering: informative, not saturated
    moving = pinned[:2] + [row(4.0, "direction", -3.0), row(4.0, "random", -125.0), row(8.0, "direction", 2.0),
                           row(8.0, "random", -3.0)]
    assert not saturation(moving, "rock")["saturated"]
    # near 1 the complement is printed, from the logit, never a flat 1.00
    stats, line = summarize([row(0.0, "none", 40.0)], [0])
    assert line == "strength 0: 1-4.2e-18 (logit 40.00)"
    assert [format_prob(p) for p in (0.0, 0.004, 0.5, 0.995)] == ["<1e-308", "0.004", "0.50", "1-0.005"]
