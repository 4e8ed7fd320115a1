"""The shared figure style, checked on the real figures of the report functions (small synthetic inputs).

Every figure: a title naming the output (and hookpoint / SAE architecture where the caller knows them), axis
labels, a legend wherever more than one series is drawn, no offset / scientific multiplier on the tick labels;
bounded metrics on fixed axes; a constant series on a fixed, non-degenerate range instead of an auto-zoom.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from musicsae_cli import plotting
from musicsae_cli.plotting import capture, constant_range, output_name


def _title(fig) -> str:
    return " ".join(fig.get_suptitle().split())  # titles wrap to the figure's width


def _named(figs: dict, name: str):
    hits = [fig for path, fig in figs.items() if path.name == name]
    assert len(hits) == 1, (name, [p.name for p in figs])
    return hits[0]


def _data_axes(fig) -> list:
    """The axes that plot data (colorbars and hidden panels left out)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"
            and (ax.get_lines() or ax.collections or ax.patches or ax.images)]


def audit(fig) -> None:
    """The rules every figure follows."""
    fig.canvas.draw()  # tick labels and offset texts exist only once drawn
    assert _title(fig), "a title"
    for ax in _data_axes(fig):
        assert ax.get_xlabel() and ax.get_ylabel(), (ax.get_title(), "axis labels")
        labels = plotting.series_labels(ax)
        if len(labels) > 1:
            assert ax.get_legend() is not None or fig.legends, (ax.get_title(), labels, "a legend")
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_offset_text().get_text() == "", (ax.get_title(), "no offset / multiplier")


# ---------------------------------------------------------------------------------------------------------------
# the helpers
@pytest.mark.slow
def test_importing_the_modules_does_not_import_matplotlib():
    code = ("import sys, musicsae_cli.plotting, musicsae_cli.probes.report, musicsae_cli.sae.report, "
            "musicsae_cli.steering.report, musicsae_cli.analysis.features, musicsae_cli.analysis.sensitivity; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_constant_range():
    assert constant_range([0.1, 0.5, 0.9]) is None  # a real spread: left to the data
    lo, hi = constant_range([4.0, 4.0 + 1e-7, 4.0 - 2e-7])  # float noise around 4
    assert lo < 4.0 < hi and hi - lo == pytest.approx(0.8, rel=1e-3)
    assert constant_range([0.0, 0.0]) == (-1.0, 1.0)
    assert constant_range([1e-9, 3e-8], noise=1e-6, min_span=0.01, low=0.0) == pytest.approx((0.0, 0.01))
    assert constant_range([0.999, 0.999], high=1.0) == pytest.approx((1.0 - 0.1998, 1.0))  # kept under the bound
    assert constant_range([np.nan, np.inf]) is None


def test_output_name_of_a_staging_folder():
    assert output_name("/x/.probes-pitch.partial-1a2b3c4d") == "probes-pitch"
    assert output_name(Path("/x/.run.overwrite")) == "run"
    assert output_name("/x/my.run") == "my.run"


def test_title_names_what_is_known():
    assert plotting.title("curves", run="r", hookpoint="layers.2", architecture="topk", n="n=40") == \
        "curves\nr · layers.2 · topk SAE · n=40"
    assert plotting.title("curves") == "curves"


def test_style_axis_fixes_a_constant_series_and_drops_the_offset(tmp_path):
    with capture() as figs, plotting.figure(tmp_path / "c.png", ncols=2, title="t") as (_, (a, b)):
        a.plot([0, 1, 2], [1000.0001, 1000.0002, 1000.0001], label="x")
        plotting.style_axis(a, xlabel="step", ylabel="loss", unit="dB")
        b.plot([0, 1, 2], [1e-6, 3e-6, 2e-6], label="x")
        b.plot([0, 1, 2], [2e-6, 1e-6, 3e-6], label="y")
        plotting.style_axis(b, xlabel="step", ylabel="tiny", bounded=(0.0, None))
    fig = figs[tmp_path / "c.png"]
    audit(fig)
    assert a.get_ylabel() == "loss (dB)"
    assert a.get_ylim() == pytest.approx((900.00015, 1100.00015))  # not zoomed onto 1e-4 of float noise
    assert all("e" not in t.get_text() for t in b.get_yticklabels())  # plain values, no 1e-6 multiplier
    assert b.get_ylim()[0] == 0.0 and b.get_legend() is not None and a.get_legend() is None
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------------------------
# the real report figures
def _probe_table(task: str, n_layers: int = 4, folds: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for h in range(n_layers):
        row = {"hookpoint": f"layers.{h}", "layer": h}
        names = ("accuracy", "balanced_accuracy", "macro_f1") if task == "classification" else ("r2", "mae")
        for m in names:
            v = float(rng.uniform(0.4, 0.9)) if m != "mae" else float(rng.uniform(2, 5))
            row.update({m: v, f"control_{m}": v / 2, f"baseline_{m}": 0.33 if m != "r2" else 0.0})
            if folds:
                row.update({f"{m}_std": 0.05, f"control_{m}_std": 0.02, f"baseline_{m}_std": 0.0})
        rows.append(row)
    return rows


def test_probe_per_layer_plot(tmp_path):
    from musicsae_cli.probes.report import write_report

    out = tmp_path / ".probes-pitch.partial-0123abcd"  # a staging folder, as probe train writes into
    out.mkdir()
    summary = {"label": "pitch_class", "split": {"folds": 0, "samples": 200, "test_samples": 40, "test_groups": 8}}
    with capture() as figs:
        write_report(out, "classification", _probe_table("classification"), summary)
    fig = _named(figs, "per_layer.png")
    audit(fig)
    head = _title(fig)
    assert "pitch_class probe (classification)" in head and "probes-pitch" in head
    assert "n=40 test samples (8 groups)" in head
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_ylim() == (0.0, 1.0)  # accuracy, balanced accuracy, macro F1
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"layers.{h}" for h in range(4)]
    assert fig.legends and [t.get_text() for t in fig.legends[0].get_texts()] == [
        "probe", "shuffled-label control", "majority baseline"]
    assert json.loads((out / "metrics.json").read_text())["label"] == "pitch_class"


def test_probe_regression_and_kfold(tmp_path):
    from musicsae_cli.probes.report import write_report

    out = tmp_path / "bpm"
    out.mkdir()
    table = _probe_table("regression", folds=True)
    table[1]["r2"] = -3.0  # R² has no lower bound
    with capture() as figs:
        write_report(out, "regression", table, {"label": "bpm", "split": {"folds": 5, "samples": 200}})
    fig = _named(figs, "per_layer.png")
    audit(fig)
    assert "5-fold CV over 200 samples (about 40 test samples per fold)" in _title(fig)
    r2, mae = fig.axes
    assert r2.get_ylim()[1] == 1.0 and r2.get_ylim()[0] <= -3.0
    assert mae.get_ylabel() == "MAE (units of bpm)" and mae.get_ylim()[0] == 0.0
    assert r2.collections  # the spread over folds


def _sae_run(tmp_path: Path) -> Path:
    out = tmp_path / "sae-run"
    out.mkdir()
    with (out / "train_log.jsonl").open("w") as fh:
        for member in ("k4", "k8"):
            for step in range(0, 100, 10):
                k = 4 if member == "k4" else 8
                fh.write(json.dumps({"step": step, "member": member, "mse": 1.0 / (1 + step),
                                     "l0": k + 1e-7 * (step % 3),  # constant up to float noise
                                     "dead_fraction": 0.0}) + "\n")
    with (out / "eval_log.jsonl").open("w") as fh:
        for member in ("k4", "k8"):
            for step in (50, 100):
                fh.write(json.dumps({"step": step, "member": member, "explained_variance": 0.9 + step / 1e4}) + "\n")
    return out


@pytest.mark.slow
def test_sae_curves_and_density(tmp_path):
    from musicsae_cli.sae.report import write_report

    out = _sae_run(tmp_path)
    rng = np.random.default_rng(0)
    final = {m: {"explained_variance": 0.91, "density": rng.uniform(0, 0.2, 64).tolist()} for m in ("k4", "k8")}
    with capture() as figs:
        write_report(out, final, hookpoint="layers.2", architectures={"k4": "topk", "k8": "topk"})
    curves, density = _named(figs, "curves.png"), _named(figs, "density.png")
    for fig in (curves, density):
        audit(fig)
        head = _title(fig)
        assert "sae-run" in head and "layers.2" in head and "topk SAE" in head
    mse, l0, dead, ev = curves.axes
    assert l0.get_ylabel() == "L0 (active latents per row)"
    lo, hi = l0.get_ylim()  # k4 at 4 and k8 at 8: a real spread, from 0
    assert lo == 0.0 and hi >= 8
    assert dead.get_ylim() == (0.0, 1.0)  # constant 0, bounded
    assert ev.get_ylim()[1] == 1.0 and ev.get_xlabel() == "training step"
    assert [t.get_text() for t in curves.legends[0].get_texts()] == ["k4", "k8"]
    assert density.axes[0].get_legend() is not None


@pytest.mark.slow
def test_sae_constant_l0_gets_a_fixed_range(tmp_path):
    from musicsae_cli.sae.report import write_report

    out = _sae_run(tmp_path)
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if r["member"] == "k4"))
    with capture() as figs:
        write_report(out, {"k4": {"density": [0.1, 0.2]}}, hookpoint="layers.0", architectures={"k4": "topk"},
                     run="tiny")
    fig = _named(figs, "curves.png")
    audit(fig)
    l0 = fig.axes[1]
    lo, hi = l0.get_ylim()
    assert (lo, hi) == pytest.approx((3.6, 4.4), abs=1e-6)  # ±10% around k: no zoom onto 1e-7 of float noise
    assert not fig.legends  # one member: one series per panel
    assert _title(fig).startswith("SAE training curves tiny · layers.0 · topk SAE")


def test_steering_dose_response(tmp_path):
    from musicsae_cli.steering.report import plot_dose_response

    def stat(p, n=4):
        return {"mean": p, "std": 0.05, "n": n, "logit_mean": np.log(p / (1 - p)), "logit_std": 0.3,
                "complement_mean": 1 - p}

    stats = [{"strength": s, "direction": stat(0.2 + 0.1 * i), "random": stat(0.2)} for i, s in enumerate((0, 2, 4))]
    (tmp_path / "sweep").mkdir()
    with capture() as figs:
        plot_dose_response(tmp_path / "sweep" / "dose_response.png", stats, "genre=rock at layers.6; steering "
                           "layers.6 (add)", chance=0.25)
        plot_dose_response(tmp_path / "sweep" / "logit.png", stats, "genre=rock at layers.6", logit=True)
    prob, logit = _named(figs, "dose_response.png"), _named(figs, "logit.png")
    for fig in (prob, logit):
        audit(fig)
        assert "layers.6" in _title(fig) and "sweep" in _title(fig) and "n=4 clips per strength" in _title(fig)
    ax = prob.axes[0]
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_legend() is not None
    assert logit.axes[0].get_ylim() != (0.0, 1.0)


def test_sensitivity_plot_of_a_float_noise_control(tmp_path):
    from musicsae_cli.analysis.config import SensitivityConfig
    from musicsae_cli.analysis.sensitivity import _plot

    cfg = SensitivityConfig(perturbations={"identity": [0.0], "pitch": [-2.0, 2.0]}, ci=0.9)
    hps = ["layers.0", "layers.1", "layers.2"]
    summary = [{"perturbation": name, "setting": s, "hookpoint": hp, "layer": i, "n_clips": 6,
                **{f"{m}_{k}": (v * (i + 1) if name == "pitch" else 1e-8 * (i + 1))
                   for m, v in (("rel_change", 0.1 * abs(s)), ("cos_distance", 0.01 * abs(s)))
                   for k in ("mean", "ci_low", "ci_high")}}
               for name, settings in cfg.perturbations.items() for s in settings for i, hp in enumerate(hps)]
    stage = tmp_path / ".sens.partial-00000000"
    stage.mkdir()
    with capture() as figs:
        _plot(stage, summary, hps, cfg, 6)
    ident, pitch = _named(figs, "sensitivity_identity.png"), _named(figs, "sensitivity_pitch.png")
    for fig in (ident, pitch):
        audit(fig)
        assert "sens" in _title(fig) and "n=6 clips; mean and 90% bootstrap CI" in _title(fig)
    assert [ax.get_ylim() for ax in ident.axes] == [pytest.approx((0.0, 0.01))] * 2  # 1e-8 noise: fixed range
    assert [t.get_text() for t in pitch.legends[0].get_texts()] == ["-2 semitones", "2 semitones"]
    assert pitch.axes[0].get_ylim()[0] == 0.0 and pitch.axes[0].get_ylim()[1] >= 0.6


def test_compare_plot(tmp_path):
    from musicsae_cli.analysis.compare import _plot

    layers = [{"hookpoint": f"layers.{h}", "n_a": 12, "n_b": 10, "separation": 0.5 + h, "p_value": 0.01,
               **{f"{p}cos_{pair}_{k}": 0.95 + 0.01 * h for p in ("", "centred_") for pair in ("ab", "aa", "bb")
                  for k in ("mean",)},
               **{f"{p}cos_{pair}_std": 0.01 for p in ("", "centred_") for pair in ("ab", "aa", "bb")}}
              for h in range(3)]
    (tmp_path / "cmp").mkdir()
    with capture() as figs:
        _plot(tmp_path / "cmp" / "compare.png", layers, SimpleNamespace(label="genre", a="rock", b="jazz"))
    fig = _named(figs, "compare.png")
    audit(fig)
    assert "genre: rock (a) vs jazz (b)" in _title(fig) and "cmp" in _title(fig) and "n_a=12, n_b=10" in _title(fig)
    assert fig.axes[0].get_ylim()[1] == 1.0 and fig.axes[1].get_ylim()[1] == 1.0  # cosines: at most 1
    assert fig.axes[2].get_ylim()[0] == 0.0 and fig.legends


def test_separation_cv_and_projection(tmp_path):
    from musicsae_cli.analysis.separation_data import Label
    from musicsae_cli.analysis.separation_plots import _plot_embedding
    from musicsae_cli.analysis.separation_plots import plot_cv as _plot_cv

    def score(v):
        return {"mean": v, "std": 0.05}

    cv = {"folds": 5, "samples": 200, "split_column": "group",
          "summary": {"classification": {m: {"balanced_accuracy": score(v)} for m, v in
                                         (("random_forest", 0.8), ("linear", 0.7), ("linear_shuffled_labels", 0.3),
                                          ("majority", 0.25))},
                      "regression": {m: {"r2": score(v)} for m, v in (("random_forest", 0.4), ("mean", -0.01))}}}
    stage = tmp_path / ".sep.partial-00000000"
    stage.mkdir()
    label = Label("pitch", "classification", ["C", "D", "E"], np.zeros(30, np.int64), None, None, 0)
    with capture() as figs:
        assert _plot_cv(stage, "pitch", cv, hookpoint="layers.3") == ["cv_pitch.png"]
        rng = np.random.default_rng(0)
        _plot_embedding(stage / "tsne_pitch.png", rng.normal(size=(30, 2)), np.arange(30) % 3, None, label, "tsne",
                        30, 90)
    fig = _named(figs, "cv_pitch.png")
    audit(fig)
    assert "layers.3" in _title(fig) and "sep" in _title(fig)
    assert "5-fold CV grouped by group over 200 samples (about 40 test samples per fold)" in _title(fig)
    cls, reg = fig.axes
    assert cls.get_ylim() == (0.0, 1.0) and reg.get_ylim()[1] == 1.0
    emb = _named(figs, "tsne_pitch.png")
    audit(emb)
    assert emb.legends and "t-SNE of 30 samples" in _title(emb)


def test_feature_dashboard_plots(tmp_path):
    from musicsae_cli.analysis.feature_media import write_density_plot, write_histograms

    entries = [{"latent": 7, "density": 0.25, "histogram": {"counts": [5, 0, 3, 1], "edges": [0, 0.5, 1, 1.5, 2]}}]
    where = {"run": "dash", "hookpoint": "layers.2", "architecture": "jumprelu"}
    with capture() as figs:
        write_histograms(tmp_path, entries, where)
        write_density_plot(tmp_path, np.array([0, 3, 10, 40]), 100, where)
    for name in ("latent7.png", "density.png"):
        fig = _named(figs, name)
        audit(fig)
        assert "dash · layers.2 · jumprelu SAE" in _title(fig)
        assert fig.axes[0].get_ylim()[0] == 0.0 and fig.axes[0].get_ylabel().endswith("(count)")
    assert entries[0]["histogram"]["png"] == "plots/latent7.png"
