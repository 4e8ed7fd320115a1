"""`analyze separation` against known answers: planted latents, a label with no signal, track leakage, bins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from musicsae_cli.analysis.config import SeparationConfig
from musicsae_cli.analysis.latent_stats import latent_stats
from musicsae_cli.analysis.separation import separation
from musicsae_cli.analysis.separation_data import stratified_sample

WIDTH = 96
CLASSES = ("C", "E", "G")


def write_latent_store(path: Path, n_items: int = 36, frames: int = 12, seed: int = 0, fingerprint: bool = False,
                       per_track: int = 2):
    """A CSR latent store: class c fires latents 3c..3c+2 on most frames; 5 random latents per frame; tempo drives
    latent 90's value. With `fingerprint`, the class signal is dropped and each track (group of 2 items) fires
    its own latent instead, and `track_label` depends on the track only (no signal a new track could show)."""
    from musicsae_cli.store import StoreWriter
    from musicsae_cli.store.csr import from_dense

    rng = np.random.default_rng(seed)
    with StoreWriter.create(path, {"layers.1.sae": WIDTH}, "float32", sparse=["layers.1.sae"], frame_rate=50.0,
                            model={"family": "musicgen", "id": "test/tiny"}) as w:
        for i in range(n_items):
            c, track = i % len(CLASSES), i // per_track
            tempo = float(rng.uniform(60, 180))
            x = np.zeros((frames, WIDTH), dtype=np.float32)
            for f in range(frames):
                x[f, rng.choice(np.arange(40, 80), size=5, replace=False)] = rng.exponential(1.0, 5)
            if fingerprint:
                x[:, 20 + track % 20] = 3.0 + rng.random(frames)
            else:
                fire = rng.random((frames, 3)) < 0.9
                x[:, 3 * c:3 * c + 3] = np.where(fire, 2.0 + rng.random((frames, 3)), 0.0)
            x[:, 90] = tempo / 60.0 + rng.normal(0, 0.05, frames)
            w.add_item(f"item{i:03d}", {"layers.1.sae": from_dense(x)},
                       item_meta={"group": f"track{track:03d}", "pitch_class": CLASSES[c], "tempo": tempo,
                                  "track_label": CLASSES[track % len(CLASSES)], "one": "x"})
    return path


@pytest.fixture(scope="module")
def latent_store(tmp_path_factory) -> Path:
    return write_latent_store(tmp_path_factory.mktemp("sep") / "latents")


FAST = dict(n_estimators=30, embed_max=120, silhouette_max=300, cv_max_rows=400)


@pytest.mark.smoke
def test_latent_stats_match_scikit_learn_loops():
    """Vectorised AUROC and MI equal per-column roc_auc_score / mutual_info_score, with ties and negatives."""
    from sklearn.metrics import mutual_info_score, roc_auc_score

    rng = np.random.default_rng(3)
    n, width, c, bins = 300, 12, 3, 4
    dense = np.round(rng.normal(0, 1, (n, width)), 1) * (rng.random((n, width)) < 0.4)  # ties, zeros, negatives
    dense[:, 0] = 0.0  # a dead column
    y = rng.integers(0, c, n)
    for x in (sp.csr_matrix(dense), dense):
        stats = latent_stats(x, y, c, bins)
        for j in range(width):
            col = dense[:, j]
            for k in range(c):
                assert stats["auroc"][j, k] == pytest.approx(roc_auc_score(y == k, col), abs=1e-12)
                assert stats["mean_in"][j, k] == pytest.approx(col[y == k].mean())
                assert stats["mean_out"][j, k] == pytest.approx(col[y != k].mean())
                assert stats["active_in"][j, k] == pytest.approx((col[y == k] != 0).mean())
            nz = col != 0
            level = np.zeros(n, dtype=np.int64)
            if nz.any():  # quantile level of each non-zero value by its tie-averaged rank
                from scipy.stats import rankdata

                ranks = rankdata(col[nz]) - 1
                level[nz] = 1 + np.minimum((ranks / nz.sum() * bins).astype(int), bins - 1)
            assert stats["mi_bits"][j] == pytest.approx(mutual_info_score(y, level) / np.log(2), abs=1e-12)
            assert stats["density"][j] == pytest.approx(nz.mean())


def test_stratified_sample_keeps_class_shares():
    codes = np.r_[np.zeros(900, int), np.ones(90, int), np.full(10, 2)]
    idx = stratified_sample(codes, 100, seed=0)
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(codes[idx]).tolist() == [89, 9, 2]  # proportional, small classes kept (at least 2)
    assert np.array_equal(stratified_sample(codes, 100, 0), idx)  # seeded
    assert stratified_sample(codes, 5000, 0).size == 1000


@pytest.mark.slow
def test_planted_latents_found_and_classified(latent_store, tmp_path):
    cfg = SeparationConfig(labels=["pitch_class", "tempo"], folds=3, **FAST)
    res = separation(latent_store, tmp_path / "out", cfg)
    pc = res["labels"]["pitch_class"]
    assert pc["task"] == "classification" and pc["classes"] == list(CLASSES)
    for ci, cls in enumerate(CLASSES):
        top = pc["latents"]["per_class"][cls]
        assert {r["latent"] for r in top["by_auroc"][:3]} == {3 * ci, 3 * ci + 1, 3 * ci + 2}
        assert {r["latent"] for r in top["by_mean_diff"][:3]} == {3 * ci, 3 * ci + 1, 3 * ci + 2}
        assert top["by_auroc"][0]["auroc"] > 0.9
    assert {r["latent"] for r in pc["latents"]["by_mi"][:9]} == set(range(9))
    cv = pc["cv"]["summary"]["classification"]
    assert cv["random_forest"]["balanced_accuracy"]["mean"] > 0.95
    assert cv["linear"]["balanced_accuracy"]["mean"] > 0.95
    assert cv["majority"]["balanced_accuracy"]["mean"] == pytest.approx(1 / 3)
    assert cv["linear_shuffled_labels"]["balanced_accuracy"]["mean"] < 0.6
    assert pc["silhouette"]["mean"] > 0.1 and pc["silhouette"]["share_above_0.1"] > 0.5
    # tempo is continuous: quantile bins for class measures (never raw floats), regression on the values
    tempo = res["labels"]["tempo"]
    assert tempo["task"] == "regression" and len(tempo["classes"]) == 4 and len(tempo["bin_edges"]) == 5
    assert all("-" in c for c in tempo["classes"])
    assert tempo["latents"]["by_mi"][0]["latent"] == 90
    assert tempo["cv"]["summary"]["regression"]["linear"]["r2"]["mean"] > 0.9  # latent 90 is linear in tempo
    # one informative latent of 96, sqrt(96) candidates per split: the forest finds it, less sharply
    assert tempo["cv"]["summary"]["regression"]["random_forest"]["r2"]["mean"] > 0.4
    assert tempo["cv"]["summary"]["regression"]["mean"]["r2"]["mean"] < 0.05
    out = tmp_path / "out"
    report = json.loads((out / "separation.json").read_text())
    assert report["seed"] == 0 and report["sampling"]["samples"] == 36 * 12
    assert report["labels"]["pitch_class"]["projections"]["samples"] == 120
    for name in ("tsne_pitch_class.png", "umap_pitch_class.png", "tsne_tempo.png", "cv_pitch_class.png",
                 "latents_pitch_class.csv", "latent_stats_tempo.npz", "projection_tempo.csv", "manifest.json",
                 "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    with np.load(out / "latent_stats_pitch_class.npz", allow_pickle=False) as z:
        assert z["auroc"].shape == (WIDTH, 3) and list(z["classes"]) == list(CLASSES)


@pytest.mark.smoke
@pytest.mark.slow
def test_grouped_folds_do_not_reward_track_leakage(tmp_path):
    """Each track fires its own latent and labels are random per track: frames of one track are trivially
    recognisable, so only folds split by track show the truth (chance level)."""
    store = write_latent_store(tmp_path / "leaky", n_items=60, fingerprint=True, seed=1, per_track=4)
    cfg = SeparationConfig(labels=["track_label"], folds=5, measures=["cv"], **FAST)
    grouped = separation(store, tmp_path / "grouped", cfg)["labels"]["track_label"]["cv"]["summary"]
    assert grouped["classification"]["random_forest"]["balanced_accuracy"]["mean"] < 0.6
    leaky = SeparationConfig(labels=["track_label"], folds=5, measures=["cv"], split_column="item_id", **FAST)
    by_item = separation(store, tmp_path / "by_item", leaky)["labels"]["track_label"]["cv"]["summary"]
    # items of one track land in different folds: the forest recognises the track, a leak grouped folds prevent
    assert by_item["classification"]["random_forest"]["balanced_accuracy"]["mean"] > 0.8


def test_item_pooling_and_where(latent_store, tmp_path):
    cfg = SeparationConfig(labels=["pitch_class"], pooling="mean", measures=["latents", "silhouette"],
                           where=["pitch_class in C,E"], **FAST)
    res = separation(latent_store, tmp_path / "o", cfg)
    assert res["sampling"]["samples"] == 24 and res["labels"]["pitch_class"]["classes"] == ["C", "E"]
    assert res["labels"]["pitch_class"]["latents"]["per_class"]["C"]["by_auroc"][0]["auroc"] == 1.0


@pytest.mark.smoke
def test_raw_activations_and_sae_on_the_fly(tiny_store, tmp_path):
    """No SAE: the raw hookpoint; with an SAE on an activation store: the same latents as a latent store."""
    from musicsae_cli.analysis.latents import open_features
    from musicsae_cli.plotting import capture
    from musicsae_cli.sae.encode import encode_store
    from musicsae_cli.sae.io import load_sae
    from tests.steering.conftest import make_sae

    with capture() as figures:
        raw = separation(tiny_store, tmp_path / "raw", SeparationConfig(labels=["concept"], hookpoint="layers.2",
                                                                       measures=["latents", "cv"], folds=2, **FAST))
    assert raw["features"]["kind"] == "activations" and raw["features"]["width"] == 64
    cv_figure = next(fig for path, fig in figures.items() if path.name == "cv_concept.png")
    assert "layers.2" in " ".join(cv_figure.get_suptitle().split())  # the title names the hookpoint
    sae_path = make_sae(tmp_path / "sae", tiny_store, arch="topk", d_sae=128, k=8)
    encode_store(load_sae(sae_path)[0], tiny_store, tmp_path / "lat", hookpoint="layers.2")
    fly = open_features(tiny_store, sae=sae_path)
    stored = open_features(tmp_path / "lat", sae=sae_path)
    assert fly.encode_on_the_fly and not stored.encode_on_the_fly and fly.hookpoint == "layers.2"
    rows = np.arange(0, fly.store.n_rows, 7)
    assert abs(fly.read(rows) - stored.read(rows)).max() < 1e-5


def _run(runner, app, *args):
    return runner.invoke(app, ["analyze", "separation", *map(str, args)])


@pytest.mark.slow
def test_cli_json_and_bad_input(runner, app, latent_store, tmp_path):
    out = tmp_path / "cli"
    fast = ["--set", "n_estimators=20", "--set", "measures=[latents, cv]", "--folds", "3"]
    ok = _run(runner, app, latent_store, "-l", "pitch_class", "-o", out, *fast, "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["labels"]["pitch_class"]["cv"]["folds"] == 3
    again = _run(runner, app, latent_store, "-l", "pitch_class", "-o", out, *fast)
    assert again.exit_code == 2 and "already exists" in again.stderr
    human = _run(runner, app, latent_store, "-l", "pitch_class", "-o", out, *fast, "--overwrite")
    assert human.exit_code == 0 and "top by AUROC" in human.stdout
    cases = [
        (["-l", "pitch_clas"], "no label column 'pitch_clas'"),  # names the closest column
        (["-l", "one"], "single class"),
        ([], "no label given"),
        (["-l", "pitch_class", "--folds", "30"], "needs at least 30 groups"),
        (["-l", "pitch_class", "--where", "item_id in " + ",".join(f"item{i:03d}" for i in range(12))],
         "occurs in only 4 group(s)"),
        (["-l", "pitch_class", "--hookpoint", "layers.9"], "not in the store"),
        (["-l", "pitch_class", "--where", "tempo>1000"], "no rows"),
    ]
    for extra, message in cases:
        bad = _run(runner, app, latent_store, "-o", tmp_path / "bad", *extra)
        assert bad.exit_code == 2, (extra, bad.output)
        assert message in bad.stderr, (extra, bad.stderr)
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("how", ["mean", "max"])
def test_item_pooling_equals_numpy_for_sparse_and_dense(how):
    from musicsae_cli.analysis.separation_data import _pool

    rng = np.random.default_rng(0)
    d = ((rng.random((50, 7)) < 0.3) * rng.normal(size=(50, 7))).astype(np.float32)  # negatives and zeros
    starts = np.array([0, 10, 11, 30])
    counts = np.diff(np.r_[starts, 50])
    ref = np.stack([getattr(np, how)(d[s:s + c], axis=0) for s, c in zip(starts, counts, strict=True)])
    pooled = _pool(sp.csr_matrix(d), starts, counts, how)
    assert sp.issparse(pooled)
    np.testing.assert_allclose(pooled.toarray(), ref, atol=1e-6)
    np.testing.assert_allclose(_pool(d, starts, counts, how), ref, atol=1e-6)


def test_grouped_folds_keep_every_class_on_each_training_side():
    """A greedy stratified group split can leave a class out of a training side; another seed is taken then."""
    from musicsae_cli.errors import InputError
    from musicsae_cli.probes.splits import grouped_folds

    y = np.repeat(np.arange(3), 8)  # 3 classes, each in 2 groups of 4 rows, sizes uneven across classes
    groups = np.repeat(np.arange(6), 4)
    for seed in range(30):
        splits, used = grouped_folds(y, groups, 2, seed, "concept")
        assert used >= seed and len(splits) == 2
        for train, test in splits:
            assert set(y[train]) == {0, 1, 2}
            assert not set(groups[train]) & set(groups[test])
    with pytest.raises(InputError, match="no 2-fold split by group keeps every class of 'concept'"):
        grouped_folds(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]), 2, 0, "concept")
