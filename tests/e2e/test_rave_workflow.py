"""The RAVE research workflow end to end through the CLI (in-process), on the tiny RAVE-format TorchScript export.

save-tiny --family rave -> data synth (notes in three pitch classes, two octaves, two instruments; metronome and
rock patterns at two tempos; 1 s at 8 kHz, resampled to the model's 4096 Hz) -> extract every hookpoint of the .ts
-> a TopK SAE and the scikit-learn dictionary-learning baseline on encoder.3 -> sae encode / evaluate (with the
downstream re-synthesis distance) -> pitch-class probes -> sensitivity to pitch shift and time stretch ->
separation, feature dashboard (clips cut from the input audio) and a store comparison of two pitch classes.

Every command runs with --json; the assertions read both what it printed and what it wrote.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

SR_MODEL, RATIO, SR_AUDIO = 4096, 64, 8000
FRAME_RATE = SR_MODEL / RATIO  # 64 rows per second
CORE = ["pqmf", "encoder.0", "encoder.1", "encoder.2", "encoder.3", "latent"]
HOOK = "encoder.3"
PITCH_CLASSES = ["C", "E", "G"]
N_NOTES = 3 * 2 * 2 * 2  # pitch classes x octaves x instruments x variants
N_TEMPOS = 2 * 2 * 2  # tempos x patterns x variants
N_ITEMS = N_NOTES + N_TEMPOS
PNG = b"\x89PNG\r\n\x1a\n"


def cli(*args) -> dict:
    """Run one musicsae command with --json; fail with its output unless it exits 0; return what it printed.

    One OpenMP thread: torch's and scikit-learn's OpenMP runtimes live in this one process, and on a small
    machine their idle threads spin against each other (t-SNE's 1,000 short parallel steps slowed 50-fold)."""
    from threadpoolctl import threadpool_limits

    from musicsae_cli.commands.app import app

    argv = [str(a) for a in args] + ["--json", "-q"]
    with threadpool_limits(limits=1):
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, f"musicsae {' '.join(argv)} -> {result.exit_code}\n{result.output}"
    return json.loads(result.stdout)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def assert_png(path: Path) -> None:
    assert Path(path).read_bytes()[:8] == PNG, path


def assert_rave(model: dict, ts: Path) -> None:
    """A manifest's model record names the rave family and the export."""
    assert model["family"] == "rave" and Path(model["id"]) == ts, model
    assert model["sample_rate"] == SR_MODEL and model["encode_ratio"] == RATIO and model["fingerprint"]


def finite(*values) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict:
    """The model, the concept audio and the activation store of every hookpoint (shared by the steps)."""
    root = tmp_path_factory.mktemp("rave-workflow")
    ts = root / "tiny-rave" / "tiny_rave.ts"
    made = cli("model", "save-tiny", "--family", "rave", "-o", ts.parent)
    assert ts.is_file(), made
    ds = root / "concepts"
    synth = cli("data", "synth", "-o", ds, "--concepts", "notes,tempos", "--timbres", "sine,piano",
                "--sample-rate", SR_AUDIO, "--duration-s", 1, "--set", f"pitch_classes=[{','.join(PITCH_CLASSES)}]",
                "--set", "octaves=[3,4]", "--set", "tempos_bpm=[60,120]", "--set", "beat_patterns=[click,rock]",
                "--set", "variants=2", "--set", "max_per_concept=null")
    store = root / "store"
    extracted = cli("extract", ds, "-o", store, "-m", ts, "--hookpoint", "all", "--device", "cpu",
                    "--store-dtype", "float32")
    return {"root": root, "ts": ts, "ds": ds, "synth": synth, "store": store, "extract": extracted}


@pytest.fixture(scope="module")
def saes(w) -> dict:
    """A TopK SAE and the dictionary-learning baseline on encoder.3, and the TopK latents of the whole store."""
    root = w["root"]
    topk = cli("sae", "train", w["store"], "-o", root / "runs" / "topk", "--hookpoint", HOOK, "-c", "tiny",
               "--k", 4, "--steps", 120, "--device", "cpu")
    dl = cli("sae", "train", w["store"], "-o", root / "runs" / "dl", "--hookpoint", HOOK, "-c", "dictionary-learning",
             "--k", 4, "--batch-size", 256, "--device", "cpu")
    latents = cli("sae", "encode", w["store"], "--sae", root / "runs" / "topk", "-o", root / "latents")
    return {"topk": topk, "dl": dl, "encode": latents, "topk_run": root / "runs" / "topk",
            "dl_run": root / "runs" / "dl", "latents": root / "latents"}


def test_synth_and_extract_every_hookpoint(w):
    synth, ex = w["synth"], w["extract"]
    assert synth["items"] == N_ITEMS and synth["per_concept"] == {"notes": N_NOTES, "tempos": N_TEMPOS}
    rows = read_csv(w["ds"] / "manifest.csv")
    assert len(rows) == N_ITEMS and {r["pitch_class"] for r in rows if r["concept"] == "notes"} == set(PITCH_CLASSES)
    assert {float(r["bpm"]) for r in rows if r["concept"] == "tempos"} == {60.0, 120.0}
    assert {sf.info(str(w["ds"] / r["path"])).samplerate for r in rows} == {SR_AUDIO}

    hookpoints = ex["hookpoints"]
    assert set(CORE) <= set(hookpoints) and ex["skipped"] == []
    assert ex["store_items"] == N_ITEMS and ex["store_rows"] == N_ITEMS * int(FRAME_RATE)  # 1 s -> 64 rows each
    manifest = read_json(w["store"] / "manifest.json")
    assert_rave(manifest["model"], w["ts"])
    assert manifest["status"] == "complete" and manifest["frame_rate"] == FRAME_RATE
    assert list(manifest["hookpoints"]) == hookpoints
    assert manifest["model"]["hookpoints"]["pqmf"]["native_frame_rate"] == SR_MODEL / 4
    from musicsae_cli.store import ActivationStore

    st = ActivationStore.open(w["store"])
    assert st.n_rows == N_ITEMS * int(FRAME_RATE) and st.n_items == N_ITEMS
    for hp in CORE:
        x = st.read_rows(hp, np.arange(st.n_rows))
        assert x.shape == (st.n_rows, st.widths[hp]) and np.isfinite(x).all(), hp
        assert x.std() > 0, hp  # the audio reached every hookpoint


def test_sae_topk_and_dictionary_learning_encode_and_evaluate(w, saes):
    for name, arch in (("topk", "topk"), ("dl", "dictionary_learning")):
        run = saes[f"{name}_run"]
        cfg = read_json(run / "cfg.json")
        assert cfg["hook_name"] == HOOK and cfg["d_in"] == 8 and Path(cfg["model_name"]) == w["ts"]
        assert cfg["musicsae"]["spec"]["arch"] == arch
        assert_rave(cfg["musicsae"]["model"], w["ts"])
        metrics = saes[name]["members"]["sae"]
        assert finite(metrics["explained_variance"], metrics["mse"]) and metrics["l0"] <= 4
    assert read_json(saes["dl_run"] / "cfg.json")["saelens_loadable"] is False

    enc = saes["encode"]
    assert enc["rows"] == N_ITEMS * int(FRAME_RATE) and enc["latent_hookpoint"] == f"{HOOK}.sae"
    assert 0 < enc["mean_l0"] <= 4
    assert_rave(read_json(saes["latents"] / "manifest.json")["model"], w["ts"])

    for name in ("topk", "dl"):
        out = w["root"] / f"eval-{name}"
        ev = cli("sae", "evaluate", saes[f"{name}_run"], w["store"], "-o", out, "--downstream", "--max-items", 4,
                 "--device", "cpu")
        assert ev["n_rows"] == N_ITEMS * int(FRAME_RATE) and finite(ev["explained_variance"], ev["mse"])
        down = ev["downstream"]
        assert down["metric"] == "multiscale_spectral_distance" and down["items"] == 4
        dist = down["distance_to_clean"]
        assert finite(*dist.values()) and dist["sae_plus_error"] == pytest.approx(0.0, abs=1e-6)
        assert dist["zero_ablation"] > 0 and dist["sae"] < dist["zero_ablation"], dist
        assert finite(*down["fraction_recovered"].values())
        assert read_json(out / "evaluation.json")["downstream"] == down
        assert_rave(down["model"], w["ts"])  # the model the SAE was spliced into
        manifest = read_json(out / "manifest.json")
        assert_rave(manifest["model"], w["ts"])
        assert_rave(manifest["downstream_model"], w["ts"])
        # trained to reconstruct (8 dims, k = 4): the baseline's sparse-coding solve almost exactly
        assert ev["explained_variance"] > {"topk": 0.5, "dl": 0.8}[name], (name, ev["explained_variance"])


def test_probes_train_and_evaluate(w):
    out = w["root"] / "probes"
    trained = cli("probe", "train", w["store"], "-o", out, "-l", "pitch_class", "--where", "concept=notes",
                  "--folds", 2, "--set", "max_iter=50")
    assert trained["classes"] == PITCH_CLASSES and trained["split"]["samples"] == N_NOTES
    assert [layer["hookpoint"] for layer in trained["layers"]] == w["extract"]["hookpoints"]
    for layer in trained["layers"]:
        assert 0 <= layer["balanced_accuracy"] <= 1 and layer["baseline_balanced_accuracy"] == pytest.approx(1 / 3)
    assert_rave(read_json(out / "manifest.json")["model"], w["ts"])
    assert len(read_csv(out / "metrics.csv")) == len(trained["layers"])

    ev_out = w["root"] / "probes-eval"
    ev = cli("probe", "evaluate", out, w["store"], "-o", ev_out, "--where", "concept=notes")
    assert ev["labelled_samples"] == N_NOTES and ev["best"]["value"] > 1 / 3
    preds = read_csv(ev_out / "predictions.csv")
    assert len(preds) == N_NOTES * len(trained["layers"])
    for row in preds:
        p = [float(row[f"p_{c}"]) for c in PITCH_CLASSES]
        assert sum(p) == pytest.approx(1.0, abs=1e-4) and row["prediction"] in PITCH_CLASSES


def test_sensitivity_pitch_shift_and_time_stretch(w):
    out = w["root"] / "sensitivity"
    n_clips = 6
    res = cli("analyze", "sensitivity", w["ds"], "-o", out, "-c", "pitch-tempo", "-m", w["ts"], "--device", "cpu",
              "--max-items", n_clips, "--set", "excerpt_s=1.0", "--set", "n_bootstrap=100")
    hookpoints = res["hookpoints"]
    assert set(CORE) <= set(hookpoints) and res["n_clips"] == n_clips
    assert_rave(res["model"], w["ts"])
    assert_rave(read_json(out / "manifest.json")["model"], w["ts"])
    settings = {p: v["settings"] for p, v in res["perturbations"].items()}
    assert settings == {"identity": [0.0], "pitch": [-2.0, -1.0, 1.0, 2.0], "tempo": [0.8, 0.9, 1.1, 1.25]}

    summary = read_csv(out / "summary.csv")
    n_settings = sum(len(s) for s in settings.values())
    assert len(summary) == len(hookpoints) * n_settings
    for perturbation, values in settings.items():
        for value in values:
            rows = [r for r in summary if r["perturbation"] == perturbation and float(r["setting"]) == value]
            assert [r["hookpoint"] for r in rows] == hookpoints, (perturbation, value)  # one row per hookpoint
            for r in rows:
                assert int(r["n_clips"]) == n_clips
                assert finite(*(float(r[k]) for k in ("rel_change_mean", "rel_change_ci_low", "rel_change_ci_high",
                                                      "cos_distance_mean")))
                assert float(r["rel_change_ci_low"]) <= float(r["rel_change_mean"]) <= float(r["rel_change_ci_high"])
        assert_png(out / f"sensitivity_{perturbation}.png")  # the per-layer chart
    change = {(r["perturbation"], r["hookpoint"]): float(r["rel_change_mean"]) for r in summary}
    assert all(change[("identity", hp)] == pytest.approx(0.0, abs=1e-6) for hp in hookpoints)  # the control
    assert all(change[("pitch", hp)] > 1e-3 for hp in CORE)  # a shifted note moves every encoder layer
    assert len(read_csv(out / "per_clip.csv")) == n_clips * len(hookpoints) * n_settings


def test_separation_on_latents_and_on_the_store(w, saes):
    out = w["root"] / "separation"
    res = cli("analyze", "separation", saes["latents"], "-o", out, "-l", "pitch_class,concept", "-c", "tiny",
              "--set", "projections=[tsne]")
    assert res["features"]["hookpoint"] == f"{HOOK}.sae" and res["features"]["kind"] == "latents"
    assert_rave(res["model"], w["ts"])
    pc, concept = res["labels"]["pitch_class"], res["labels"]["concept"]
    assert pc["classes"] == PITCH_CLASSES and pc["samples"] == N_NOTES and pc["missing"] == N_TEMPOS
    assert -1 <= pc["silhouette"]["mean"] <= 1 and concept["silhouette"]["samples"] == N_ITEMS
    cv = concept["cv"]["summary"]["classification"]
    assert cv["random_forest"]["balanced_accuracy"]["mean"] > 0.8  # notes and drum patterns: easy to tell apart
    assert finite(pc["cv"]["summary"]["classification"]["random_forest"]["balanced_accuracy"]["mean"])
    projection = read_csv(out / "projection_pitch_class.csv")
    assert len(projection) == N_NOTES and all(finite(float(r["tsne_x"]), float(r["tsne_y"])) for r in projection)
    for name in ("tsne_pitch_class.png", "tsne_concept.png", "cv_pitch_class.png"):
        assert_png(out / name)
    with np.load(out / "latent_stats_pitch_class.npz", allow_pickle=False) as z:
        assert z["auroc"].shape == (saes["encode"]["d_sae"], 3)

    # raw activations of the PCA-ordered latent, pooled per item, embedded with UMAP
    raw = cli("analyze", "separation", w["store"], "--hookpoint", "latent", "-o", w["root"] / "separation-latent",
              "-l", "concept", "-c", "tiny", "--set", "projections=[umap]",
              "--set", "measures=[silhouette,projections]")
    assert raw["features"]["kind"] == "activations" and raw["features"]["width"] == 4
    assert raw["labels"]["concept"]["projections"]["samples"] == N_ITEMS
    assert_png(w["root"] / "separation-latent" / "umap_concept.png")


def test_feature_dashboard_clips_come_from_the_input_audio(w, saes):
    out = w["root"] / "dashboard"
    probes = w["root"] / "probes-dash"
    cli("probe", "train", w["store"], "-o", probes, "-l", "pitch_class", "--where", "concept=notes",
        "--hookpoint", HOOK, "--folds", 2, "--set", "max_iter=30")
    res = cli("analyze", "features", saes["latents"], "--sae", saes["topk_run"], "-c", "tiny", "-o", out,
              "--by", "pitch_class", "--top", 1, "--probe", probes)
    report = read_json(out / "features.json")
    latents = report["latents"]
    assert [la["latent"] for la in latents] == [la["latent"] for la in res["latents"]]
    assert res["model_hookpoint"] == HOOK and res["n_rows"] == N_ITEMS * int(FRAME_RATE) and latents
    assert res["audio"]["unavailable"] == 0 and res["audio"]["clips"] == sum(len(la["top_frames"]) for la in latents)
    assert (out / "index.html").is_file() and all((out / "latents" / f"{la['latent']}.html").is_file()
                                                  for la in latents)
    assert all(la["nearest_probe"]["class"] in PITCH_CLASSES for la in res["latents"])
    clip_s = 1.0  # the tiny preset
    for la in latents:
        for frame in la["top_frames"]:
            audio = frame["audio"]
            wav = out / audio["file"]
            info = sf.info(str(wav))
            assert info.format == "WAV" and info.samplerate == SR_AUDIO == audio["sample_rate"], info
            assert info.frames == round(audio["duration_s"] * SR_AUDIO) and audio["duration_s"] <= clip_s
            # the clip is the input audio around the frame (16-bit), not the model's 4096 Hz input
            clip, _ = sf.read(str(wav), dtype="float32")
            source, rate = sf.read(frame["source_path"], dtype="float32")
            start = round(audio["start_s"] * rate)
            np.testing.assert_allclose(clip, source[start:start + clip.size], atol=1e-4)
            assert audio["start_s"] <= frame["time_s"] <= audio["start_s"] + audio["duration_s"]
            assert_png(out / audio["spectrogram"]["file"])


def test_compare_two_pitch_classes(w):
    out = w["root"] / "compare"
    res = cli("analyze", "compare", w["store"], "-c", "compare-labels", "--label", "pitch_class", "--a", "C", "--b",
              "G", "--set", "n_permutations=100", "-o", out)
    assert_rave(res["model"], w["ts"])
    assert_rave(read_json(out / "manifest.json")["model"], w["ts"])
    assert res["n_a"] == res["n_b"] == N_NOTES // 3 and res["hookpoints"] == w["extract"]["hookpoints"]
    layers = read_csv(out / "layers.csv")
    assert [r["hookpoint"] for r in layers] == res["hookpoints"]
    for layer in res["layers"]:
        assert finite(layer["cos_ab_mean"]) and 0 < layer["p_value"] <= 1, layer
    from safetensors.numpy import load_file

    directions = load_file(str(out / "directions.safetensors"))
    widths = read_json(w["store"] / "manifest.json")["hookpoints"]
    for hp in CORE:
        assert directions[hp].shape == (widths[hp]["width"],) and np.isfinite(directions[hp]).all()
    assert_png(out / "compare.png")
