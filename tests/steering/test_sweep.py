"""`steer sweep` end to end on the tiny model: CSV, plot and summary; the baseline scored independently."""

from __future__ import annotations

import csv
import json
import re

import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.probes import ProbeSet
from musicsae_cli.steering.config import SteerSweepConfig
from musicsae_cli.steering.sweep import steer_sweep


@pytest.mark.smoke
def test_sweep_cli_end_to_end(runner, app, tmp_path, concept_probe, tiny_adapter):
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["steer", "sweep", "-c", "sweep-tiny", "--probe", str(concept_probe), "--target",
                              "notes", "--duration", "0.4", "--layers", "layers.1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"strength 0: [01]\.\d\d \| 4: [01]\.\d\d \(random [01]\.\d\d\) \| 8: [01]\.\d\d "
                        r"\(random [01]\.\d\d\)", summary), summary
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
    assert len(manifest["steering"]["controls"]) == 2
    # the baseline row, scored independently: plain generation -> its codes, teacher-forced unconditionally
    probe = ProbeSet.load(concept_probe)
    plain = tiny_adapter.generate(["calm jazz piano"], 0.4, ["layers.1"], seed=1, top_k=50)
    acts = plain.acts["uncond"]["layers.1"][0].numpy()  # = unconditional teacher forcing of the same codes
    want = probe.predict_proba("layers.1", acts.mean(0, keepdims=True))[0, 0]
    (base,) = [r for r in rows if r["control"] == "none" and r["seed"] == "1"]
    assert float(base["target_prob"]) == pytest.approx(want, abs=1e-6)
    steered = [float(r["target_prob"]) for r in rows if r["control"] == "direction"]
    assert len(set(steered)) > 1  # the steering changed what the probe reads


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
