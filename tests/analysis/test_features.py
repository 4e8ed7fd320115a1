"""`musicsae analyze features` on a synthetic store whose answers are known.

The store: items of three pitch classes, each frame x = a * u_class + a weaker shared component + noise, with
source audio (seeded noise) per item; the hand-made SAE has one latent per class (encoder column = the class
direction, bias -0.5, so it fires exactly on that class's frames; decoder row = the class direction) and
random other latents. One item's audio file is missing. The first frame of every item also carries a
position direction that only POSITION_LATENT reads (a position feature: its top frames all sit at frame 0),
and only items 0 and 3 have an `instrument` label (missing elsewhere).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

HP = "layers.2"
D_IN, D_SAE = 16, 64
FRAME_RATE, SR = 10.0, 8000
CLASSES = ["C", "D", "E"]
CLASS_LATENT = {"C": 5, "D": 11, "E": 40}
N_ITEMS = 9
MISSING_ITEM = 7  # class D; its audio file does not exist
SOURCE_S = 4.0
POSITION_LATENT = 20  # fires only on frame 0 of each item
INSTRUMENT = {0: "flute", 3: "oboe"}  # the only items with an instrument label


def _item_class(i: int) -> str:
    return CLASSES[i % 3]


def _offset(i: int) -> float:
    return 0.4 * (i % 3)  # the item's first frame sits this far into its source file


def build_store(root: Path) -> dict:
    """The synthetic store, its source audio, the SAE, and the numpy ground truth."""
    import torch

    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.sae.io import save_sae
    from musicsae_cli.store import StoreWriter

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((D_IN, D_IN)))
    u = {c: q[:, k].astype(np.float32) for k, c in enumerate(CLASSES)}
    shared = q[:, 3].astype(np.float32)
    position = q[:, 4].astype(np.float32)
    xs, classes, items, paths, times = [], [], [], [], []
    with StoreWriter.create(root / "store", {HP: D_IN}, "float32", model={"name": "synthetic"},
                            frame_rate=FRAME_RATE, shard_rows=40) as w:
        for i in range(N_ITEMS):
            cls, n = _item_class(i), 12 + i
            a = 1.0 + rng.uniform(0, 1, n)
            if i == MISSING_ITEM:
                a[:2], a[2:] = 3.5, 1.0 + 0.2 * a[2:] / 2  # its first two frames lead latent D's top frames
            x = (a[:, None] * u[cls] + 0.3 * rng.uniform(0, 1, (n, 1)) * shared
                 + 0.05 * rng.standard_normal((n, D_IN))).astype(np.float32)
            x[0] += 0.9 * position
            src = root / "audio" / f"src{i}.wav"
            if i != MISSING_ITEM:
                src.parent.mkdir(exist_ok=True)
                sf.write(str(src), (0.2 * rng.standard_normal(int(SOURCE_S * SR))).astype(np.float32), SR,
                         subtype="FLOAT")
            t = _offset(i) + np.arange(n) / FRAME_RATE
            meta = {"source_path": str(src), "pitch_class": cls, "timbre": ["sine", "saw"][i % 2],
                    "bpm": float(100 + 10 * (i % 2)), "gain_db": float(rng.uniform(-6, 0)),
                    **({"instrument": INSTRUMENT[i]} if i in INSTRUMENT else {})}
            w.add_item(f"item{i}", {HP: x}, item_meta=meta, time_s=t)
            xs.append(x)
            classes += [cls] * n
            items += [f"item{i}"] * n
            paths += [str(src)] * n
            times.append(t)
    x = np.concatenate(xs)
    w_enc = (rng.standard_normal((D_IN, D_SAE)) / 2).astype(np.float32)
    b_enc = np.full(D_SAE, -0.4, np.float32)
    w_dec = rng.standard_normal((D_SAE, D_IN)).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    for c, j in CLASS_LATENT.items():
        w_enc[:, j], b_enc[j], w_dec[j] = u[c], -0.5, u[c]
    # the other latents never see the class (or position) directions, so each class latent is the only one tied
    # to its class and POSITION_LATENT the only one tied to frame 0
    others = [k for k in range(D_SAE) if k not in CLASS_LATENT.values()]
    basis = np.stack([*u.values(), position], axis=1)  # (d_in, 4)
    w_enc[:, others] -= basis @ (basis.T @ w_enc[:, others])
    w_enc[:, POSITION_LATENT], b_enc[POSITION_LATENT], w_dec[POSITION_LATENT] = position, -0.6, position
    sae = SparseAutoencoder(SAESpec(arch="relu", d_in=D_IN, d_sae=D_SAE))
    with torch.no_grad():
        sae.W_enc.copy_(torch.from_numpy(w_enc))
        sae.b_enc.copy_(torch.from_numpy(b_enc))
        sae.W_dec.copy_(torch.from_numpy(w_dec))
    (root / "sae").mkdir()
    save_sae(sae, root / "sae", hook_name=HP, model_name="synthetic")
    latents = np.maximum(x.astype(np.float64) @ w_enc + b_enc, 0.0)  # (n, d_sae) numpy ground truth
    return {"store": root / "store", "sae": root / "sae", "x": x, "latents": latents, "u": u, "w_dec": w_dec,
            "classes": np.asarray(classes), "items": np.asarray(items), "paths": np.asarray(paths),
            "times": np.concatenate(times)}


def make_probes(root: Path, u: dict, hookpoints=(HP,), name="pitch") -> Path:
    from musicsae_cli.probes import ProbeSet

    path = root / name
    path.mkdir()
    weight = np.stack([np.stack([u[c] for c in CLASSES])] * len(hookpoints))  # (H, 3, d)
    ProbeSet(task="classification", label="pitch_class", classes=list(CLASSES), hookpoints=list(hookpoints),
             pooling="mean", model={}, weight=weight, bias=np.zeros((len(hookpoints), 3)),
             mean=np.zeros((len(hookpoints), D_IN)), std=np.ones((len(hookpoints), D_IN))).save(path)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("features")
    data = build_store(root)
    data["probes"] = make_probes(root, data["u"])
    data["probes_other"] = make_probes(root, data["u"], hookpoints=("layers.0",), name="other")
    return data


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    return CliRunner().invoke(app, ["analyze", "features", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def dashboard(synth, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dash") / "features"
    latents = ",".join(str(CLASS_LATENT[c]) for c in CLASSES)
    res = _invoke([synth["store"], "--sae", synth["sae"], "-o", out, "--latent", latents, "--frames", 4,
                   "--duration-s", 1.0, "--probe", synth["probes"], "--probe", synth["probes_other"], "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


@pytest.mark.slow
def test_dashboard_matches_the_construction(synth, dashboard):
    out, res = dashboard
    feats = json.loads((out / "features.json").read_text())
    lat, classes = synth["latents"], synth["classes"]
    by = {e["latent"]: e for e in feats["latents"]}
    assert [e["latent"] for e in res["latents"]] == [CLASS_LATENT[c] for c in CLASSES]
    assert feats["n_rows"] == len(classes) and feats["width"] == D_SAE
    assert set(feats["label_columns"]) == {"pitch_class", "timbre", "bpm", "instrument"}  # gain_db: continuous
    for c, j in CLASS_LATENT.items():
        e, active = by[j], lat[:, j] > 0
        assert np.array_equal(active, classes == c)  # the latent fires exactly on its class
        assert e["n_active"] == int((classes == c).sum())
        assert e["density"] == pytest.approx(float(np.mean(classes == c)))
        assert e["mean_active"] == pytest.approx(lat[active, j].mean(), rel=1e-5)
        assert e["max"] == pytest.approx(lat[:, j].max(), rel=1e-5)
        assert sum(e["histogram"]["counts"]) == e["n_active"]
        expect = np.argsort(-lat[:, j], kind="stable")[:4]
        assert [f["row"] for f in e["top_frames"]] == expect.tolist()
        assert [f["value"] for f in e["top_frames"]] == pytest.approx(lat[expect, j].tolist(), rel=1e-5)
        assert {f["labels"]["pitch_class"] for f in e["top_frames"]} == {c}
        cooc = {r["value"]: r for r in e["cooccurrence"]["pitch_class"]}
        assert cooc[c]["lift"] == pytest.approx(1 / np.mean(classes == c)) and cooc[c]["lift"] > 1
        assert all(cooc[o]["lift"] == 0 and cooc[o]["n_active"] == 0 for o in CLASSES if o != c)
        assert e["top_labels"][0] == {"column": "pitch_class", "value": c, "lift": cooc[c]["lift"], "p_active": 1.0}
        nearest = e["probes"][0]
        assert (nearest["label"], nearest["class"]) == ("pitch_class", c)
        assert nearest["cosine"] == pytest.approx(1.0, abs=1e-5)
        assert all(abs(p["cosine"]) < 1e-5 for p in e["probes"][1:])
    assert any("layers.0" in note and "skipped" in note for note in feats["probe_notes"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "feature_dashboard" and manifest["latents"] == [5, 11, 40]
    assert all((out / f).is_file() for f in manifest["files"])
    assert (out / "config.yaml").is_file() and feats["config"]["top_k"] == 4 and feats["seed"] == 0


@pytest.mark.slow
def test_audio_clips_come_from_the_right_file_and_time(synth, dashboard):
    out, _ = dashboard
    feats = json.loads((out / "features.json").read_text())
    seen_missing = 0
    for e in feats["latents"]:
        for f in e["top_frames"]:
            i = int(f["item_id"][len("item"):])
            assert f["source_path"] == str(synth["store"].parent / "audio" / f"src{i}.wav")
            assert f["time_s"] == pytest.approx(_offset(i) + f["frame"] / FRAME_RATE)
            if i == MISSING_ITEM:
                assert f["audio"]["file"] is None and "not found" in f["audio"]["reason"]
                seen_missing += 1
                continue
            clip, sr = sf.read(str(out / f["audio"]["file"]), dtype="float32")
            src, _ = sf.read(f["source_path"], dtype="float32")
            centre = f["time_s"] + 0.5 / FRAME_RATE
            start = min(max(0.0, centre - 0.5), SOURCE_S - 1.0)
            assert sr == SR and len(clip) == SR  # 1 s at the file's rate
            assert f["audio"]["start_s"] == pytest.approx(start)
            assert f["audio"]["frame_offset_s"] == pytest.approx(centre - start)
            s0 = int(round(start * SR))
            np.testing.assert_allclose(clip, src[s0:s0 + len(clip)], atol=1e-4)  # 16-bit PCM of the same samples
    assert seen_missing == 2  # latent D's two strongest frames: their audio is unavailable, the run still passed
    page = (out / "latents" / f"{CLASS_LATENT['D']}.html").read_text()
    assert page.count("audio unavailable: audio file not found") == 2 and page.count("<audio ") == 2


@pytest.mark.slow
def test_position_feature_is_flagged_with_marked_spectrograms(synth, tmp_path):
    """POSITION_LATENT's top frames all sit at frame 0: flagged in features.json, index.html and its page; every
    clip gets a spectrogram PNG with the frame marked where it sits in the clip."""
    from musicsae_cli.plotting import capture

    lat = synth["latents"]
    assert np.flatnonzero(lat[:, POSITION_LATENT] > 0).size == N_ITEMS  # one frame per item ...
    frame0 = np.r_[0, np.cumsum([12 + i for i in range(N_ITEMS)])[:-1]]
    assert set(np.flatnonzero(lat[:, POSITION_LATENT] > 0)) == set(frame0)  # ... its first
    out = tmp_path / "out"
    with capture() as figs:
        res = _invoke([synth["store"], "--sae", synth["sae"], "-o", out, "--latents", f"{POSITION_LATENT},5",
                       "--top-k", 4, "--clip-s", 1.0, "--json"])
    assert res.exit_code == 0, res.output
    feats = json.loads((out / "features.json").read_text())
    pos, cls = feats["latents"]
    assert (pos["position_feature"], pos["position_frame"]) == (True, 0)
    assert (cls["position_feature"], cls["position_frame"]) == (False, None)
    reported = json.loads(res.stdout)
    assert [e["position_frame"] for e in reported["latents"]] == [0, None]
    from musicsae_cli.analysis.feature_results import FeatureDashboard

    human = FeatureDashboard(**{k: v for k, v in reported.items() if k != "command"}).lines()
    assert [line.endswith("position feature (every top frame at frame 0)") for line in human[3:5]] == [True, False]
    index = (out / "index.html").read_text()
    assert index.count('class="flag position-flag"') == 1 and "position feature: frame 0" in index
    assert 'id="position-feature"' in (out / "latents" / f"{POSITION_LATENT}.html").read_text()
    assert 'id="position-feature"' not in (out / "latents" / "5.html").read_text()

    for e in feats["latents"]:
        for f in e["top_frames"]:
            a = f["audio"]
            if not a["file"]:
                assert "spectrogram" not in a
                continue
            spec = a["spectrogram"]
            assert (out / spec["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            this = spec["marks"][0]
            assert this["this_frame"] and this["rank"] == f["rank"]
            assert this["centre_s"] == pytest.approx(a["frame_offset_s"], abs=1e-6)
            assert this["end_s"] - this["start_s"] == pytest.approx(1 / FRAME_RATE)
            fig = next(fg for path, fg in figs.items() if path.name == Path(spec["file"]).name)
            ax = fig.axes[0]
            assert ax.get_xlabel() == "time in clip (s)" and ax.get_ylabel() == "frequency (kHz)"
            assert ax.get_ylim() == pytest.approx((0.0, SR / 2000))
            bands = sorted(p.get_x() for p in ax.patches)
            assert this["start_s"] == pytest.approx(min(bands, key=lambda b: abs(b - this["start_s"])), abs=1e-6)
            page = (out / "latents" / f"{e['latent']}.html").read_text()
            assert f'src="../{spec["file"]}"' in page


def test_spectrogram_of_a_sine_peaks_at_its_frequency():
    from musicsae_cli.analysis.feature_media import spectrogram_db

    t = np.arange(SR) / SR
    db, times, freqs = spectrogram_db(np.sin(2 * np.pi * 1000 * t), SR)
    assert db.shape == (freqs.size, times.size) and db.max() == pytest.approx(0.0)
    assert db.min() >= -80.0 and abs(freqs[np.argmax(db.mean(axis=1))] - 1000) <= freqs[1]
    assert times[0] > 0 and times[-1] < 1.0
    silent, _, _ = spectrogram_db(np.zeros(100), SR)  # shorter than a window, and silent: floor only
    assert np.all(silent == -80.0)


@pytest.mark.slow
def test_pages_list_informative_labels_and_hide_empty_columns(dashboard):
    """Co-occurring values are listed only with lift >= min_lift on >= min_lift_frames active frames (all of
    them stay in features.json with a `listed` flag); label columns missing on every top frame are hidden."""
    out, _ = dashboard
    feats = json.loads((out / "features.json").read_text())
    assert feats["min_lift"] == 1.5 and feats["min_lift_frames"] == 3
    by = {e["latent"]: e for e in feats["latents"]}
    c, d = by[CLASS_LATENT["C"]], by[CLASS_LATENT["D"]]
    for e in feats["latents"]:
        for rows in e["cooccurrence"].values():
            for r in rows:
                assert r["listed"] == (r["lift"] is not None and r["lift"] >= 1.5 and r["n_active"] >= 3)
    listed = {(col, r["value"]) for col, rows in c["cooccurrence"].items() for r in rows if r["listed"]}
    assert listed == {("pitch_class", "C"), ("instrument", "flute"), ("instrument", "oboe")}
    assert len(c["cooccurrence"]["timbre"]) == 2  # every value kept in features.json
    page = (out / "latents" / f"{CLASS_LATENT['C']}.html").read_text()
    assert 'data-value="C"' in page and 'data-value="D"' not in page and 'data-column="timbre"' not in page
    assert re.search(r'id="no-lift">No value with lift &ge; 1.5 on at least 3 active frames: timbre, bpm', page)
    # instrument is known only for items 0 and 3: hidden where no top frame comes from them (D's page)
    for e in feats["latents"]:
        has = any(int(f["item_id"][len("item"):]) in INSTRUMENT for f in e["top_frames"])
        assert e["label_columns_shown"] == ["pitch_class", "timbre", "bpm", *(["instrument"] if has else [])]
    assert "instrument" not in d["label_columns_shown"]
    page_d = (out / "latents" / f"{CLASS_LATENT['D']}.html").read_text()
    head = re.search(r'<table id="top-frames">\n(<tr>.*?</tr>)', page_d).group(1)
    assert re.findall(r"<th>(.*?)</th>", head)[:2] == ["clip", "spectrogram"]  # audio first
    assert "<th>instrument</th>" not in head and "<th>pitch_class</th>" in head
    assert 'id="hidden-labels">Not shown (missing on every top frame): instrument.' in page_d
    assert f"{feats['run']} &middot; {HP} &middot; relu SAE" in page_d and feats["architecture"] == "relu"


@pytest.mark.slow
def test_selection_rules(synth, tmp_path):
    lat = synth["latents"]
    count = (lat > 0).sum(axis=0)
    base = [synth["store"], "--sae", synth["sae"], "--frames", 1, "--duration-s", 0.5, "--json"]

    res = _invoke([*base, "-o", tmp_path / "density"])
    assert res.exit_code == 0, res.output
    order = np.lexsort((np.arange(D_SAE), -count))
    expect = [int(j) for j in order[:16] if count[j] > 0]
    assert [e["latent"] for e in json.loads(res.stdout)["latents"]] == expect

    res = _invoke([*base, "-o", tmp_path / "label", "--by", "pitch_class", "--top", 1])
    assert res.exit_code == 0, res.output
    feats = json.loads((tmp_path / "label" / "features.json").read_text())
    assert [e["latent"] for e in feats["latents"]] == [CLASS_LATENT[c] for c in CLASSES]
    assert [e["selected_for"][0]["value"] for e in feats["latents"]] == CLASSES
    assert feats["selection"]["rule"] == "label" and feats["selection"]["by_label"] == "pitch_class"

    picks = []
    for name in ("random1", "random2"):
        res = _invoke([*base, "-o", tmp_path / name, "--select", "random", "--top", 4, "--seed", 3])
        assert res.exit_code == 0, res.output
        picks.append([e["latent"] for e in json.loads(res.stdout)["latents"]])
    assert picks[0] == picks[1] and len(picks[0]) == 4 and all(count[j] > 0 for j in picks[0])
    assert json.loads((tmp_path / "random1" / "features.json").read_text())["selection"]["seed"] == 3


@pytest.mark.slow
def test_item_view_matches_numpy(synth, tmp_path):
    res = _invoke([synth["store"], "--sae", synth["sae"], "-o", tmp_path / "item", "--item", "item3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    rows = np.flatnonzero(synth["items"] == "item3")
    lat = synth["latents"][rows]
    assert data["mode"] == "item" and data["n_frames"] == rows.size == len(data["frames"])
    for i, frame in enumerate(data["frames"]):
        nz = np.flatnonzero(lat[i] > 0)
        top = nz[np.lexsort((nz, -lat[i, nz]))][:5]
        assert [x["latent"] for x in frame["latents"]] == top.tolist()
        assert [x["value"] for x in frame["latents"]] == pytest.approx(lat[i, top].tolist(), rel=1e-5)
        assert frame["frame"] == i and frame["time_s"] == pytest.approx(_offset(3) + i / FRAME_RATE)
    assert data["heatmap_latents"][0] == CLASS_LATENT["C"]  # item3 is a C item
    csv_lines = (tmp_path / "item" / "items" / "item3.csv").read_text().strip().splitlines()
    assert csv_lines[0] == "item_id,frame,time_s,latent,value" and len(csv_lines) - 1 == int((lat > 0).sum())
    png = tmp_path / "item" / "items" / "item3.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    human = _invoke([synth["store"], "--sae", synth["sae"], "-o", tmp_path / "item2", "--item", "item3"])
    assert human.exit_code == 0 and "frame     0: 5 (" in human.stdout


@pytest.mark.slow
def test_latent_store_reads_the_stored_latents(synth, tmp_path):
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    enc = CliRunner().invoke(app, ["sae", "encode", str(synth["store"]), "--sae", str(synth["sae"]), "-o",
                                   str(tmp_path / "latents"), "--device", "cpu"])
    assert enc.exit_code == 0, enc.output
    res = _invoke([tmp_path / "latents", "-o", tmp_path / "out", "--latent", CLASS_LATENT["E"], "--json"])
    assert res.exit_code == 0, res.output
    e = json.loads(res.stdout)["latents"][0]
    assert e["density"] == pytest.approx(float(np.mean(synth["classes"] == "E")))
    no_sae = _invoke([tmp_path / "latents", "-o", tmp_path / "out2", "--probe", synth["probes"]])
    assert no_sae.exit_code == 2 and "need an SAE" in no_sae.stderr


@pytest.mark.parametrize(("extra", "message"), [
    (["--latent", "99999"], "latent 99999 is out of range: the SAE has 64 features"),
    (["--by", "pitchclass"], "did you mean 'pitch_class'"),
    (["--item", "item-3"], "did you mean 'item3'"),
    (["--latent", "1", "--select", "density", "--top", "3"], "choose one latent selection"),
    (["--label", "gain_db", "--set", "max_label_values=4"], "more than max_label_values=4"),
])
@pytest.mark.slow
def test_bad_input_is_refused(synth, tmp_path, extra, message):
    out = tmp_path / "out"
    res = _invoke([synth["store"], "--sae", synth["sae"], "-o", out, *extra])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and not out.exists()


@pytest.mark.slow
def test_raw_activations_and_existing_output_are_refused(synth, tmp_path):
    raw = _invoke([synth["store"], "-o", tmp_path / "raw"])
    assert raw.exit_code == 2 and "not SAE latents" in raw.stderr
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = _invoke([synth["store"], "--sae", synth["sae"], "-o", out, "--select", "density", "--top", 2])
    assert res.exit_code == 2 and "already exists" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_tiny_preset_on_the_concept_store(tiny_store, tmp_path):
    """The features-tiny preset on real extracted audio: clips cut from the concept files at their rate."""
    import torch

    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.sae.io import save_sae
    from musicsae_cli.store import ActivationStore

    store = ActivationStore.open(tiny_store)
    sample = torch.from_numpy(store.read_rows(HP, np.arange(store.n_rows)))
    sae = SparseAutoencoder.create(SAESpec(arch="topk", d_in=sample.shape[1], d_sae=128, k=8), sample, seed=0)
    (tmp_path / "sae").mkdir()
    save_sae(sae, tmp_path / "sae", hook_name=HP, model_name="tiny-musicgen")
    res = _invoke([tiny_store, "--sae", tmp_path / "sae", "-o", tmp_path / "out", "-c", "features-tiny", "--json"])
    assert res.exit_code == 0, res.output
    feats = json.loads((tmp_path / "out" / "features.json").read_text())
    assert len(feats["latents"]) == 4 and "concept" in feats["label_columns"]
    for e in feats["latents"]:
        assert len(e["top_frames"]) == 4
        for f in e["top_frames"]:
            clip, sr = sf.read(str(tmp_path / "out" / f["audio"]["file"]))
            assert sr == sf.info(f["source_path"]).samplerate and len(clip) == sr  # 1 s
        assert sum(r["n_active"] for r in e["cooccurrence"]["concept"]) == e["n_active"]


# ---------------------------------------------------------------------------------------------------------------
# the pages in a real browser
def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not on PATH and CI is set: install it (apt-get install chromium) so the "
                        "dashboard rendering test runs")
        pytest.skip("chromium is not on PATH (apt-get install chromium): the dashboard rendering test needs it")
    return path


def _browser(chromium: str, tmp_path: Path, page: Path, *extra: str) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *extra,
           page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_pages_render_and_audio_decodes_in_chromium(dashboard, tmp_path):
    chromium = _chromium()
    out, _ = dashboard
    index = _browser(chromium, tmp_path, out / "index.html", "--dump-dom")
    assert index.count('class="latent-row"') == 3
    links = re.findall(r'(?:href|src)="([^"#]+)"', index)
    assert {f"latents/{j}.html" for j in CLASS_LATENT.values()} <= set(links)
    assert all((out / link).is_file() for link in links), links
    assert "http://" not in index and "https://" not in index

    page = out / "latents" / f"{CLASS_LATENT['C']}.html"
    dom = _browser(chromium, tmp_path, page, "--dump-dom")
    assert dom.count('class="top-frame"') == 4 and 'data-value="C"' in dom
    for link in re.findall(r'(?:href|src)="([^"#]+)"', dom):
        assert (page.parent / link).resolve().is_file(), link
    decoded = re.findall(r'data-decoded-duration="([0-9.]+)"', dom)
    assert len(decoded) == 4 and all(abs(float(d) - 1.0) < 0.01 for d in decoded), dom[-3000:]
    assert dom.count(">1.00 s</span>") == 4 and 'data-error="1"' not in dom

    # at 1400 px wide: no horizontal scrolling, every audio player inside the viewport, the spectrograms loaded
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    measured = copy / "latents" / page.name
    measured.write_text(measured.read_text().replace("</body>", f"<script>{MEASURE}</script>\n</body>"))
    dom = _browser(chromium, tmp_path, measured, "--window-size=1400,900", "--dump-dom")
    m = {k: v for k, v in re.findall(r'data-(scroll-width|inner-width|audio-boxes|wrap-overflow|specs-loaded)="'
                                     r'([^"]*)"', dom)}
    assert int(m["inner-width"]) == 1400, m  # the viewport really is 1400 px wide
    assert int(m["scroll-width"]) <= 1400 and int(m["wrap-overflow"]) <= 0, m
    boxes = [tuple(map(float, b.split(","))) for b in m["audio-boxes"].split(";")]
    assert len(boxes) == 4 and all(0 <= left < right <= 1400 for left, right in boxes), m
    assert m["specs-loaded"] == "4", m

    shot_dir = Path(os.environ.get("MUSICSAE_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = shot_dir / "dashboard-1400.png"
    _browser(chromium, tmp_path, page, f"--screenshot={shot}", "--window-size=1400,900")
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (900, 1400)
    assert img.std() > 10 and (img < 128).mean() > 0.01  # text, tables, the spectrograms: not a blank page


# Run in a copy of a latent page: writes layout measurements into the DOM for --dump-dom to read.
MEASURE = """
window.addEventListener('load', function () {
  var d = document.documentElement, boxes = [], loaded = 0;
  document.querySelectorAll('audio').forEach(function (a) {
    var b = a.getBoundingClientRect(); boxes.push(b.left + ',' + b.right);
  });
  document.querySelectorAll('img.spec').forEach(function (i) { if (i.complete && i.naturalWidth > 0) loaded++; });
  var wrap = document.getElementById('top-frames').parentElement;
  d.setAttribute('data-scroll-width', d.scrollWidth);
  d.setAttribute('data-inner-width', window.innerWidth);
  d.setAttribute('data-audio-boxes', boxes.join(';'));
  d.setAttribute('data-wrap-overflow', wrap.scrollWidth - wrap.clientWidth);
  d.setAttribute('data-specs-loaded', loaded);
});
"""
