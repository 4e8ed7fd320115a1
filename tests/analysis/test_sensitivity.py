"""`analyze sensitivity`: identity control, ground-truth ordering, scale-free metrics, pooled tempo, CIs, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from musicsae_cli.analysis.config import SensitivityConfig
from musicsae_cli.analysis.perturb import perturb
from musicsae_cli.analysis.sensitivity import bootstrap_ci, layer_change, sensitivity
from musicsae_cli.config import resolve_config
from musicsae_cli.errors import ConfigError, InputError, OutputExistsError

PERTURBATIONS = {"identity": [0], "pitch": [2], "gain": [0.1], "tempo": [0.8]}


@pytest.fixture(scope="module")
def result(tmp_path_factory, concept_set, tiny_adapter):
    out = tmp_path_factory.mktemp("sens") / "out"
    cfg = SensitivityConfig(model="tiny-musicgen", device="cpu", excerpt_s=1.0, perturbations=PERTURBATIONS,
                            by="concept", n_bootstrap=200, batch_size=8)
    return out, sensitivity(concept_set, out, cfg, adapter=tiny_adapter)


def _rows(res, name):
    return [r for r in res["summary"] if r["perturbation"] == name]


@pytest.mark.slow
def test_identity_control_is_zero_at_every_layer(result):
    _, res = result
    rows = _rows(res, "identity")
    assert {r["hookpoint"] for r in rows} == set(res["hookpoints"]) and len(res["hookpoints"]) == 4
    for r in rows:
        assert r["rel_change_mean"] < 1e-6 and r["cos_distance_mean"] < 1e-6, r


@pytest.mark.slow
def test_pitch_shift_changes_more_than_identity_and_tiny_gain(result):
    _, res = result
    by_layer = {(r["perturbation"], r["hookpoint"]): r["rel_change_mean"] for r in res["summary"]}
    cos = {(r["perturbation"], r["hookpoint"]): r["cos_distance_mean"] for r in res["summary"]}
    for hp in res["hookpoints"]:
        # ground truth: 2 semitones of pitch shift >> 0.1 dB of gain > identity (0)
        assert by_layer[("pitch", hp)] > 3 * by_layer[("gain", hp)] > 0
        assert by_layer[("pitch", hp)] > by_layer[("identity", hp)] + 1e-3
        assert cos[("pitch", hp)] > cos[("gain", hp)]


@pytest.mark.slow
def test_tempo_uses_pooled_comparison_and_says_so(result):
    out, res = result
    assert all(r["comparison"] == "pooled" for r in _rows(res, "tempo"))
    assert all(r["comparison"] == "frames" for r in _rows(res, "pitch"))
    with open(out / "per_clip.csv") as fh:
        tempo = [r for r in csv.DictReader(fh) if r["perturbation"] == "tempo"]
    assert tempo and all(r["comparison"] == "pooled" for r in tempo)
    assert all(int(r["frames_perturbed"]) > int(r["frames_original"]) + 1 for r in tempo)  # rate 0.8 lengthens


@pytest.mark.slow
def test_confidence_intervals_contain_the_mean_and_by_values_are_reported(result):
    out, res = result
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by"] == "concept" and summary["by_column"] == "concept"
    assert summary["by_values"] == ["notes", "tempos"]
    assert all("group" not in r for r in summary["summary"])  # never the dataset's group (track) column
    values = {r["concept"] for r in summary["summary"]}
    assert values == {None, "notes", "tempos"}  # None: the rows over all clips
    for r in summary["summary"]:
        for m in ("rel_change", "cos_distance"):
            assert r[f"{m}_ci_low"] <= r[f"{m}_mean"] <= r[f"{m}_ci_high"]
    assert summary["seed"] == 0 and summary["config"]["perturbations"]["pitch"] == [2.0]
    assert len(summary["per_clip"]) == 6 * 4 * 4  # clips x settings x hookpoints
    assert all(r["concept"] in ("notes", "tempos") and "label" not in r for r in summary["per_clip"])
    pitch = [r for r in summary["summary"] if r["perturbation"] == "pitch" and r["concept"] is None]
    assert all(r["rel_change_ci_high"] > r["rel_change_ci_low"] for r in pitch)  # several clips: a real interval
    assert {r["concept"] for r in res["summary"]} == {None} and len(res["summary"]) == len(PERTURBATIONS) * 4
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert "group" not in rows[0] and {r["concept"] for r in rows} == {"", "notes", "tempos"}


def test_by_column_never_reuses_a_field_name():
    from musicsae_cli.analysis.sensitivity import by_column

    assert by_column(None) is None and by_column("concept") == "concept" and by_column("genre") == "genre"
    assert by_column("group") == "by_group" and by_column("hookpoint") == "by_hookpoint"
    assert by_column("label") == "by_label" and by_column("rel_change_mean") == "by_rel_change_mean"


@pytest.mark.slow
def test_breakdown_plot_per_perturbation(result):
    """With --by: one extra PNG per perturbation, a panel per setting, a line (with CI band) per value plus all
    clips, every panel on the same non-negative y range, titled with the output name."""
    from musicsae_cli.analysis.config import SensitivityConfig
    from musicsae_cli.analysis.sensitivity import _plot_by
    from musicsae_cli.plotting import capture

    out, res = result
    names = {p.name for p in out.iterdir()}
    assert {f"sensitivity_{n}_by_concept.png" for n in PERTURBATIONS} <= names
    summary = json.loads((out / "summary.json").read_text())
    cfg = SensitivityConfig(**summary["config"])
    stage = out.parent / ".out.partial-0123abcd"
    stage.mkdir(exist_ok=True)
    with capture() as figs:
        files = _plot_by(stage, summary["summary"], res["hookpoints"], cfg)
    assert files == [f"sensitivity_{n}_by_concept.png" for n in PERTURBATIONS]
    fig = figs[stage / "sensitivity_pitch_by_concept.png"]
    head = " ".join(fig.get_suptitle().split())  # the title wraps to the figure's width
    assert "sensitivity of tiny-musicgen to pitch by concept" in head and " out · " in head
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert [lab for lab in labels if not lab.startswith("_")] == ["concept=notes (n=3)", "concept=tempos (n=3)",
                                                                   "all clips (n=6)"]
    assert fig.legends and ax.get_ylim()[0] == 0.0
    notes = next(line for line in ax.get_lines() if line.get_label().startswith("concept=notes"))
    expect = [r["rel_change_mean"] for r in sorted(summary["summary"], key=lambda r: r["layer"])
              if r["perturbation"] == "pitch" and r["concept"] == "notes"]
    assert list(notes.get_ydata()) == pytest.approx(expect)
    ident = figs[stage / "sensitivity_identity_by_concept.png"].axes[0]
    assert ident.get_ylim() == pytest.approx((0.0, 0.01))  # float noise on a fixed range, not auto-zoomed


@pytest.mark.slow
def test_outputs_written(result):
    out, res = result
    names = {p.name for p in out.iterdir()}
    assert {"per_clip.csv", "summary.csv", "summary.json", "config.yaml", "manifest.json"} <= names
    assert {f"sensitivity_{n}.png" for n in PERTURBATIONS} <= names
    assert json.loads((out / "manifest.json").read_text())["kind"] == "sensitivity"
    with open(out / "per_clip.csv") as fh:
        assert "concept" in csv.DictReader(fh).fieldnames


@pytest.mark.slow
def test_relative_change_is_scale_free_and_matches_numpy(concept_set, tiny_adapter):
    from musicsae_cli.audio.io import load_audio
    from musicsae_cli.audio.manifest import load_dataset

    path = load_dataset(concept_set).rows[0]["path"]
    audio, _ = load_audio(path, sample_rate=tiny_adapter.sample_rate, duration_s=1.0)
    audio = audio[: len(audio) // tiny_adapter.hop_length * tiny_adapter.hop_length]
    shifted = perturb("pitch", audio, tiny_adapter.sample_rate, 2.0, np.random.default_rng(0))
    hp = "layers.2"
    a, b = (tiny_adapter.audio_activations([x], [hp])[0][hp].float().numpy().astype(np.float64)
            for x in (audio, shifted))
    rel, cosd, mode = layer_change(a, b)
    assert mode == "frames"
    expect_rel = np.mean(np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1))
    expect_cos = np.mean(1 - np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    assert rel == pytest.approx(expect_rel, rel=1e-9) and cosd == pytest.approx(expect_cos, rel=1e-6)
    assert layer_change(1000 * a, 1000 * b)[:2] == pytest.approx((rel, cosd), rel=1e-9)  # scale-free
    pooled = layer_change(a, np.concatenate([b, b]))  # frame counts differ -> pooled means
    assert pooled[2] == "pooled"
    pa, pb = a.mean(0), b.mean(0)
    assert pooled[0] == pytest.approx(np.linalg.norm(pb - pa) / np.linalg.norm(pa), rel=1e-9)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    x = np.random.default_rng(1).normal(1.0, 0.5, size=40)
    mean, lo, hi = bootstrap_ci(x, 1000, 0.95, seed=3)
    assert lo <= mean <= hi and mean == pytest.approx(x.mean())
    assert bootstrap_ci(x, 1000, 0.95, seed=3) == (mean, lo, hi)
    wide = bootstrap_ci(x[:5], 1000, 0.95, seed=3)
    assert wide[2] - wide[1] > hi - lo  # fewer clips, wider interval
    assert bootstrap_ci([2.0], 100, 0.95, 0) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("sets,pattern", [
    (["perturbations={tempo: [0.8, 0]}"], r"tempo settings must be > 0"),
    (["perturbations={tempo: [-1]}"], r"tempo settings must be > 0"),
    (["perturbations={reverb: [1]}"], r"unknown perturbation 'reverb'"),
    (["perturbations={pitch: []}"], r"no settings"),
])
def test_bad_perturbations_are_config_errors(sets, pattern):
    with pytest.raises(ConfigError, match=pattern):
        resolve_config(SensitivityConfig, "analyze", None, sets)


def test_missing_by_column_and_existing_output(tmp_path, concept_set, tiny_adapter):
    cfg = SensitivityConfig(model="tiny-musicgen", perturbations={"identity": [0]}, by="nope")
    with pytest.raises(InputError, match="no column 'nope'"):
        sensitivity(concept_set, tmp_path / "o", cfg, adapter=tiny_adapter)
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError):
        sensitivity(concept_set, tmp_path / "taken", cfg.model_copy(update={"by": None}), adapter=tiny_adapter)


def test_presets_resolve():
    cfg = resolve_config(SensitivityConfig, "analyze", "sensitivity-pitch-tempo")
    assert cfg.perturbations == {"identity": [0.0], "pitch": [-2.0, -1.0, 1.0, 2.0],
                                 "tempo": [0.8, 0.9, 1.1, 1.25]}
    assert resolve_config(SensitivityConfig, "analyze", "sensitivity-tiny").model == "tiny-musicgen"


@pytest.mark.slow
def test_non_finite_audio_is_skipped_and_listed_or_fails_with_strict(runner, app, tmp_path):
    """A clip with NaN/Inf samples is bad input: skipped and listed, the good clip after it analysed; with
    strict: true the command fails naming it."""
    import soundfile as sf

    src = tmp_path / "in"
    src.mkdir()
    t = np.arange(32000) / 32000
    good = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    bad = good.copy()
    bad[8000:8010] = np.nan
    sf.write(str(src / "a_nan.wav"), bad, 32000, subtype="FLOAT")
    sf.write(str(src / "b_good.wav"), good, 32000, subtype="FLOAT")
    preset = tmp_path / "sens.yaml"
    preset.write_text("model: tiny-musicgen\ndevice: cpu\nhookpoints: layers.3\nexcerpt_s: 1.0\nn_bootstrap: 10\n"
                      "perturbations:\n  identity: [0]\n  gain: [-6]\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", "sensitivity", str(src), "-o", str(out), "-c", str(preset), "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["skipped"] == [{"path": str(src / "a_nan.wav"), "reason": "non-finite samples (NaN/Inf) at 0.25 s"}]
    assert res["n_clips"] == 1
    with open(out / "per_clip.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["clip_id"] for r in rows} == {"b_good"} and all(np.isfinite(float(r["rel_change"])) for r in rows)
    assert [float(r["rel_change"]) for r in rows if r["perturbation"] == "identity"] == [0.0]
    result = runner.invoke(app, ["analyze", "sensitivity", str(src), "-o", str(tmp_path / "strict"), "-c",
                                 str(preset), "--set", "strict=true"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {src / 'a_nan.wav'}: non-finite samples (NaN/Inf) at 0.25 s")
    assert not (tmp_path / "strict").exists()
