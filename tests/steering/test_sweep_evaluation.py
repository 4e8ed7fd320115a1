"""The sweep's evaluation end to end on the tiny model: judges, Frechet distance, text adherence, the summary and
slope tables, checked against independent recomputations; the judges' refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from musicsae_cli.probes import ProbeSet

SWEEP = ["steer", "sweep", "-c", "sweep-tiny", "--target", "notes", "--duration-s", "1", "--hookpoint", "layers.2",
         "--strengths", "0,4,8", "--seeds", "0,1", "--controls", "2", "--resamples", "500"]


def _rows(path):
    return list(csv.DictReader(path.open()))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, concept_probe, concept_set):
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    out = tmp_path_factory.mktemp("eval") / "sweep"
    res = CliRunner().invoke(app, [*SWEEP, "--probe", str(concept_probe), "--judge-probe", str(concept_probe),
                                   "--judge-data", str(concept_set), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out, res


@pytest.mark.slow
def test_outputs_and_manifest(evaluated):
    out, res = evaluated
    for name in ("sweep.csv", "dose_response.png", "evaluation.csv", "slopes.csv", "evaluation.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "evaluation.png").stat().st_size > 5000
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"evaluation.csv", "slopes.csv", "evaluation.png"} <= set(manifest["files"])
    judges = manifest["judges"]
    assert judges["probe"]["hookpoint"] in ("layers.1", "layers.3")  # never the steered layers.2
    assert judges["data"]["label"] == "concept" and judges["data"]["items"] == 6
    assert 0.0 <= judges["data"]["cv_accuracy"] <= 1.0 and judges["data"]["cv_folds"] >= 2
    assert judges["frechet"].startswith("audio embeddings") and judges["text_adherence"].startswith("mean log p")
    ev = manifest["evaluation"]
    assert ev["primary"] == "judge_data_prob" and ev["units"] == 2 and ev["resamples"] == 500
    assert set(ev["scores"]) >= {"target_prob", "target_logit", "judge_probe_prob", "judge_data_prob", "frechet",
                                 "text_adherence"}
    timing = manifest["timing"]
    assert all(timing[f"{k}_s"] > 0 for k in ("generation", "reextraction", "scoring", "embedding"))
    assert timing["total_s"] >= timing["generation_s"] + timing["reextraction_s"]
    # the printed line names the primary judge's slope against random, with its p-values
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("judge_data_prob slope ")]
    assert "vs random" in line and "p_boot" in line and "p_rank" in line and line == ev["summary"]
    assert "time: generation" in res.stdout and "data judge: cross-validated accuracy " in res.stdout
    rows = _rows(out / "sweep.csv")
    assert set(rows[0]) >= {"target_prob", "target_logit", "input_rms", "p_notes", "judge_probe_prob",
                            "judge_data_prob", "text_adherence"}
    table = _rows(out / "evaluation.csv")
    scores, conds = {r["score"] for r in table}, {r["condition"] for r in table}
    assert conds == {"direction", "random0", "random1", "random"} and "frechet" in scores
    assert len(table) == len(scores) * len(conds) * 3  # condition x strength x score
    slope_rows = _rows(out / "slopes.csv")
    assert len(slope_rows) == len(scores) * len(conds)


@pytest.mark.slow
def test_table_numbers_against_the_clips(evaluated):
    out, _ = evaluated
    rows, table = _rows(out / "sweep.csv"), _rows(out / "evaluation.csv")
    slopes = {(r["condition"], r["score"]): r for r in _rows(out / "slopes.csv")}
    for score in ("target_logit", "judge_probe_prob", "judge_data_prob", "text_adherence"):
        means = []
        for s in (0.0, 4.0, 8.0):
            kind = "none" if s == 0 else "direction"
            clips = [float(r[score]) for r in rows if r["control"] == kind and float(r["strength"]) == s]
            (got,) = [r for r in table if r["score"] == score and r["condition"] == "direction"
                      and float(r["strength"]) == s]
            assert float(got["mean"]) == pytest.approx(np.mean(clips), rel=1e-9, abs=1e-12)
            assert int(got["n"]) == 2 and float(got["ci_low"]) <= float(got["mean"]) + 1e-12
            assert float(got["ci_high"]) >= float(got["mean"]) - 1e-12
            means.append(np.mean(clips))
        want = np.polyfit([0.0, 4.0, 8.0], means, 1)[0]
        assert float(slopes[("direction", score)]["slope"]) == pytest.approx(want, rel=1e-9, abs=1e-12)
        # the random condition: per clip the mean over both controls, then over units
        rand = [np.mean([float(r[score]) for r in rows if r["control"] == "random" and float(r["strength"]) == s])
                if s else np.mean([float(r[score]) for r in rows if r["control"] == "none"]) for s in (0, 4, 8)]
        want = np.polyfit([0.0, 4.0, 8.0], rand, 1)[0]
        assert float(slopes[("random", score)]["slope"]) == pytest.approx(want, rel=1e-9, abs=1e-12)
        p_rank = float(slopes[("direction", score)]["p_rank"])
        rs = [float(slopes[(f"random{i}", score)]["slope"]) for i in range(2)]
        assert p_rank == pytest.approx((1 + sum(r >= float(slopes[("direction", score)]["slope"]) for r in rs)) / 3)


@pytest.mark.slow
def test_judges_and_frechet_recomputed(evaluated, tiny_adapter, concept_probe, concept_set):
    """The baseline clips regenerated and scored independently: the judge probe on the codes, the data judge by a
    scikit-learn fit of our own."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from musicsae_cli.audio.io import load_audio
    from musicsae_cli.audio.manifest import load_dataset

    out, _ = evaluated
    manifest = json.loads((out / "manifest.json").read_text())
    rows = _rows(out / "sweep.csv")
    plain = [tiny_adapter.generate(["calm jazz piano"], 1.0, [], seed=s, settings={"top_k": 50}) for s in (0, 1)]
    # judge probe: the codes teacher-forced without text at the judge's hookpoint, mean-pooled
    hp = manifest["judges"]["probe"]["hookpoint"]
    probe = ProbeSet.load(concept_probe)
    for s, res in zip((0, 1), plain, strict=True):
        acts = tiny_adapter.token_activations([res.tokens[0]], [hp])[0][hp].numpy()
        want = probe.predict_proba(hp, acts.mean(0, keepdims=True))[0, 0]
        (base,) = [r for r in rows if r["control"] == "none" and r["seed"] == str(s)]
        assert float(base["judge_probe_prob"]) == pytest.approx(want, abs=1e-6)
    # data judge: our own fit on the concept audio's pooled embeddings
    data = load_dataset(concept_set)
    x = np.stack([tiny_adapter.audio_embeddings([load_audio(r["path"], sample_rate=tiny_adapter.sample_rate)[0]])[0]
                  .mean(0) for r in data.rows])
    y = [r["concept"] for r in data.rows]
    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)).fit(x, y)
    emb = [tiny_adapter.audio_embeddings([res.audio[0, 0]])[0] for res in plain]
    for s, e in zip((0, 1), emb, strict=True):
        lp = clf.predict_log_proba(e.mean(0, keepdims=True).astype(np.float64))[0]
        notes = list(clf.classes_).index("notes")
        (base,) = [r for r in rows if r["control"] == "none" and r["seed"] == str(s)]
        assert float(base["judge_data_prob"]) == pytest.approx(np.exp(lp[notes]), abs=1e-6)
        assert float(base["judge_data_logit"]) == pytest.approx(lp[notes] - lp[1 - notes], rel=1e-4)
    # the Frechet distance: none between the unsteered clips and themselves (its numbers: test_evaluation.py; the
    # tiny model's random decoder renders nearly the same sound for any codes, so its distances are ~0 here)
    fd = [r for r in _rows(out / "evaluation.csv") if r["score"] == "frechet"]
    assert all(float(r["mean"]) == 0.0 for r in fd if float(r["strength"]) == 0.0)
    assert all(float(r["mean"]) >= 0.0 and int(r["n"]) > 0 for r in fd)


def test_judge_refuses_a_steered_layer(runner, app, tmp_path, concept_probe):
    out = tmp_path / "bad"
    res = runner.invoke(app, [*SWEEP, "--probe", str(concept_probe), "--judge-probe", str(concept_probe),
                              "--judge-hookpoint", "layers.2", "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "the judge hookpoint layers.2 is a steered layer" in lines[0], res.stderr
    assert "layers.1, layers.3" in lines[0] and not out.exists()
    # every probed hookpoint steered: no default judge hookpoint either
    res = runner.invoke(app, [*SWEEP[:9], "layers.1-3", *SWEEP[10:], "--probe", str(concept_probe),
                              "--judge-probe", str(concept_probe), "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "every hookpoint of the judge probe" in lines[0] and not out.exists()


def test_judge_data_without_the_label_column(runner, app, tmp_path, concept_probe, concept_set):
    out = tmp_path / "bad"
    res = runner.invoke(app, [*SWEEP, "--probe", str(concept_probe), "--judge-data", str(concept_set),
                              "--judge-label", "genre", "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the judge data {concept_set} has no label column "
                                                   "'genre' (hint: its labels: "), res.stderr
    assert "--judge-label" in lines[0] and not out.exists()


@pytest.mark.slow
def test_f0_target_score(runner, app, tmp_path, concept_probe, tiny_adapter):
    """With score_f0 and a pitch-class target, each clip's share of confident CREPE frames at that pitch class,
    recomputed here from CREPE's frames with numpy."""
    from musicsae_cli.steering.pitch import CONFIDENT, PitchScorer

    out = tmp_path / "f0"
    res = runner.invoke(app, [*SWEEP, "--controls", "1", "--probe", str(concept_probe), "--score-f0", "--set",
                              "f0_target=B", "--set", "frechet=false", "-o", str(out)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["judges"]["f0"]["target"] == "B" and manifest["judges"]["frechet"] == "off (frechet: false)"
    assert manifest["evaluation"]["primary"] == "f0_target" and "f0_target slope" in res.stdout
    rows = _rows(out / "sweep.csv")
    scorer = PitchScorer("crepe-tiny", "cpu")
    for s in (0, 1):
        plain = tiny_adapter.generate(["calm jazz piano"], 1.0, [], seed=s, settings={"top_k": 50})
        f0, conf = scorer.frames(plain.audio[0], tiny_adapter.sample_rate)
        sure = f0[conf >= CONFIDENT]
        midi = np.rint(69 + 12 * np.log2(sure / 440.0)).astype(int)
        want = np.mean(midi % 12 == 11) if sure.size else np.nan
        (base,) = [r for r in rows if r["control"] == "none" and r["seed"] == str(s)]
        got = float(base["f0_target"])
        assert got == pytest.approx(want, abs=1e-9) and got > 0  # the tiny model's decoder hums near B6
    res = runner.invoke(app, [*SWEEP, "--probe", str(concept_probe), "--score-f0", "--set", "f0_target=H",
                              "-o", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "f0_target 'H' is not a pitch class" in res.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_resynthesis_records_what_is_not_available(tmp_path):
    """A model that re-synthesises audio without text (a tiny RAVE export): no text adherence, no audio embeddings
    (so no Frechet distance), each recorded with its reason; the rest is evaluated."""
    import soundfile as sf

    from musicsae_cli.models import load_adapter
    from musicsae_cli.models.tiny_rave import save_tiny_rave
    from musicsae_cli.probes import ProbeSet
    from musicsae_cli.steering.config import SteerSweepConfig
    from musicsae_cli.steering.sweep import steer_sweep

    model = save_tiny_rave(tmp_path / "rave", seed=1)["path"]
    adapter = load_adapter(str(model), device="cpu")
    (tmp_path / "audio").mkdir()
    t = np.arange(adapter.sample_rate // 2) / adapter.sample_rate
    for k in range(2):
        sf.write(str(tmp_path / "audio" / f"n{k}.wav"), (0.5 * np.sin(2 * np.pi * 220 * (1 + k / 50) * t))
                 .astype(np.float32), adapter.sample_rate, subtype="FLOAT")
    d = adapter.hookpoint_widths["latent"]
    rng = np.random.default_rng(0)
    (tmp_path / "probe").mkdir()
    ProbeSet(task="classification", label="label", classes=["low", "high"], hookpoints=["latent"], pooling="mean",
             model=adapter.describe(), weight=rng.standard_normal((1, 2, d)), bias=np.zeros((1, 2)),
             mean=np.zeros((1, d)), std=np.ones((1, d))).save(tmp_path / "probe")
    np.savez(tmp_path / "dir.npz", latent=rng.standard_normal(d).astype(np.float32))
    cfg = SteerSweepConfig(model=str(model), device="cpu", audio=str(tmp_path / "audio"),
                           direction={"file": str(tmp_path / "dir.npz")}, score_probe=str(tmp_path / "probe"),
                           score_target="high", strengths=[0, 2], seeds=[0, 1], random_controls=1, resamples=50)
    res = steer_sweep(cfg, tmp_path / "sweep", adapter=adapter)
    judges = res["judges"]
    assert judges["text_adherence"] == "the model re-synthesises audio without text prompts"
    assert judges["frechet"].endswith("does not offer it") and judges["probe"] is None and judges["data"] is None
    manifest = json.loads((tmp_path / "sweep" / "manifest.json").read_text())
    assert manifest["evaluation"]["scores"] == ["target_prob", "target_logit"]
    assert manifest["evaluation"]["units"] == 4 and res["primary_score"] == "target_prob"
