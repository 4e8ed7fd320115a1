"""`musicsae analyze compare`: known answers on a hand-built store, store and prompt mode through the CLI, and
every bad input refused with one line (exit 2) before anything is written."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from musicsae_cli.analysis.compare import compare, compare_sets, permutation_masks
from musicsae_cli.analysis.config import CompareConfig
from musicsae_cli.steering.config import DirectionConfig
from musicsae_cli.steering.directions import from_file, load_direction
from musicsae_cli.store import ActivationStore, StoreWriter

WIDTH = 24
N_PER_SET = 30
SHIFT = 8.0
FILES = {"compare.json", "layers.csv", "directions.safetensors", "compare.png", "manifest.json", "config.yaml"}


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Set a = base + SHIFT * u + noise at layers.0, set b = base + noise; layers.1 the same for both sets.

    Every item has 4 frames of unit noise around its mean (so item means carry noise of std 0.5); `base` is a
    large shared mean, which makes raw cosines close to 1 for every pair. A sparse latent hookpoint rides along.
    """
    rng = np.random.default_rng(3)
    base = rng.standard_normal(WIDTH) * 4
    u = rng.standard_normal(WIDTH)
    u /= np.linalg.norm(u)
    path = tmp_path_factory.mktemp("compare") / "store"
    items = {"a": {"layers.0": [], "layers.1": []}, "b": {"layers.0": [], "layers.1": []}}
    with StoreWriter.create(path, {"layers.0": WIDTH, "layers.1": WIDTH, "latents": 32}, "float32",
                            frame_rate=50.0, model={"id": "test/model"}, sparse=("latents",)) as writer:
        for i in range(N_PER_SET):
            for kind in ("b", "a") if i % 2 else ("a", "b"):  # interleaved in store order
                x0 = base + rng.standard_normal((4, WIDTH)) + (SHIFT * u if kind == "a" else 0.0)
                x1 = base + rng.standard_normal((4, WIDTH))
                lat = np.maximum(rng.standard_normal((4, 32)), 0.0)
                acts = {"layers.0": x0.astype(np.float32), "layers.1": x1.astype(np.float32),
                        "latents": lat.astype(np.float32)}
                writer.add_item(f"{kind}{i:02d}", acts, item_meta={"kind": kind, "group": f"g{i}"})
                items[kind]["layers.0"].append(acts["layers.0"].astype(np.float64).mean(0))
                items[kind]["layers.1"].append(acts["layers.1"].astype(np.float64).mean(0))
    pooled = {k: {hp: np.stack(v) for hp, v in d.items()} for k, d in items.items()}
    return SimpleNamespace(path=path, u=u, pooled=pooled)


@pytest.fixture(scope="module")
def shifted_result(shifted, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-out") / "cmp"
    cfg = CompareConfig(label="kind", a="a", b="b", n_permutations=200, seed=1)
    res = compare(shifted.path, out, cfg)
    return SimpleNamespace(res=res, out=out, rows={r["hookpoint"]: r for r in res["layers"]})


def _loop_mean_cos(xs, ys=None) -> float:
    """Mean cosine over every x-y pair (or every pair i<j of xs), by plain loops."""
    def cos(p, q):
        return float(np.dot(p, q) / (np.linalg.norm(p) * np.linalg.norm(q)))

    if ys is None:
        values = [cos(xs[i], xs[j]) for i in range(len(xs)) for j in range(i + 1, len(xs))]
    else:
        values = [cos(p, q) for p in xs for q in ys]
    return sum(values) / len(values)


@pytest.mark.slow
def test_shifted_layer_separates_and_the_direction_is_the_shift(shifted, shifted_result):
    r0, r1 = shifted_result.rows["layers.0"], shifted_result.rows["layers.1"]
    assert shifted_result.res["hookpoints"] == ["layers.0", "layers.1"]  # the CSR latents are left out
    assert (r0["n_a"], r0["n_b"]) == (N_PER_SET, N_PER_SET)
    # raw cosines are dominated by the shared base; centred ones show the shift
    assert min(r0["cos_aa_mean"], r0["cos_bb_mean"], r1["cos_ab_mean"]) > 0.8
    assert r0["centred_cos_ab_mean"] < min(r0["centred_cos_aa_mean"], r0["centred_cos_bb_mean"]) - 0.5
    assert r0["p_value"] == pytest.approx(1 / 201) and r0["permutation_exact"] is False
    # item means have noise std 0.5 per dimension: within-set RMS ~ sqrt(WIDTH / 4), so separation ~ SHIFT / that
    assert r0["separation"] == pytest.approx(SHIFT / math.sqrt(WIDTH / 4), rel=0.15)
    # the unshifted layer: nothing beyond chance, cross ~ within
    assert r1["p_value"] > 0.05
    within = (r1["centred_cos_aa_mean"] + r1["centred_cos_bb_mean"]) / 2
    assert abs(r1["centred_cos_ab_mean"] - within) < 0.05
    assert r1["separation"] < 0.5
    # the direction file: mean_a - mean_b, along the known shift, loadable by the steering code
    vectors = from_file(DirectionConfig(file=str(shifted_result.out / "directions.safetensors")), None).vectors
    assert set(vectors) == {"layers.0", "layers.1"}
    for hp in vectors:
        expected = shifted.pooled["a"][hp].mean(0) - shifted.pooled["b"][hp].mean(0)
        np.testing.assert_allclose(vectors[hp], expected, rtol=1e-5, atol=1e-5)
    d0 = vectors["layers.0"].astype(np.float64)
    assert d0 @ shifted.u / np.linalg.norm(d0) > 0.99
    assert np.linalg.norm(d0) == pytest.approx(SHIFT, rel=0.1)


@pytest.mark.slow
def test_numbers_match_an_independent_recomputation(shifted, shifted_result):
    xa, xb = shifted.pooled["a"]["layers.0"], shifted.pooled["b"]["layers.0"]
    row = shifted_result.rows["layers.0"]
    assert row["cos_ab_mean"] == pytest.approx(_loop_mean_cos(xa, xb), abs=1e-9)
    assert row["cos_aa_mean"] == pytest.approx(_loop_mean_cos(xa), abs=1e-9)
    assert row["cos_bb_mean"] == pytest.approx(_loop_mean_cos(xb), abs=1e-9)
    grand = np.concatenate([xa, xb]).mean(0)
    assert row["centred_cos_ab_mean"] == pytest.approx(_loop_mean_cos(xa - grand, xb - grand), abs=1e-6)
    assert row["centred_cos_aa_mean"] == pytest.approx(_loop_mean_cos(xa - grand), abs=1e-6)
    ma, mb = xa.mean(0), xb.mean(0)
    assert row["diff_norm"] == pytest.approx(float(np.linalg.norm(ma - mb)), rel=1e-6)
    assert row["cos_means"] == pytest.approx(float(ma @ mb / np.linalg.norm(ma) / np.linalg.norm(mb)), rel=1e-6)
    ss = sum(float(np.sum((x - x.mean(0)) ** 2)) for x in (xa, xb))
    assert row["within_rms"] == pytest.approx(math.sqrt(ss / (len(xa) + len(xb) - 2)), rel=1e-6)
    assert row["separation"] == pytest.approx(row["diff_norm"] / row["within_rms"], rel=1e-9)
    cross = [float(p @ q / np.linalg.norm(p) / np.linalg.norm(q)) for p in xa for q in xb]
    assert row["cos_ab_q50"] == pytest.approx(float(np.median(cross)), abs=1e-9)
    assert row["cos_ab_std"] == pytest.approx(float(np.std(cross)), abs=1e-9)


@pytest.mark.slow
def test_outputs_are_complete_and_self_describing(shifted_result):
    out = shifted_result.out
    assert {p.name for p in out.iterdir()} == FILES
    report = json.loads((out / "compare.json").read_text())
    assert report["items_a"] == [f"a{i:02d}" for i in range(N_PER_SET)] and len(report["items_b"]) == N_PER_SET
    assert report["seed"] == 1 and report["config"]["n_permutations"] == 200
    assert any("centred" in note for note in report["notes"])
    with open(out / "layers.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["hookpoint"] for r in rows] == ["layers.0", "layers.1"]
    assert float(rows[0]["p_value"]) == pytest.approx(shifted_result.rows["layers.0"]["p_value"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "compare" and manifest["n_a"] == N_PER_SET


@pytest.mark.slow
def test_frame_pooling_with_a_seeded_subsample(shifted, tmp_path):
    cfg = CompareConfig(label="kind", a="a", b="b", pooling="frame", max_samples=50, n_permutations=100,
                        hookpoints=["layers.0"])
    res = compare(shifted.path, tmp_path / "frames", cfg)
    (row,) = res["layers"]
    assert (res["n_a"], res["n_a_available"], res["n_b_available"]) == (50, 4 * N_PER_SET, 4 * N_PER_SET)
    assert row["p_value"] == pytest.approx(1 / 101) and any("frame pooling" in n for n in res["notes"])
    d = from_file(DirectionConfig(file=res["directions"]), None).vectors["layers.0"].astype(np.float64)
    assert d @ shifted.u / np.linalg.norm(d) > 0.95


def test_exact_permutation_test_of_small_sets():
    # 3 vs 3 samples have 20 splits: enumerated, and a perfect separation reaches p = 2/20 (the split and its mirror)
    masks, exact = permutation_masks(3, 3, 1000, seed=0)
    assert exact and masks.shape == (20, 6) and (masks.sum(1) == 3).all() and len({m.tobytes() for m in masks}) == 20
    rng = np.random.default_rng(0)
    xa, xb = rng.standard_normal((3, 5)) + 10, rng.standard_normal((3, 5))
    row, _ = compare_sets(xa, xb, masks, exact)
    assert row["p_value"] == pytest.approx(0.1) and row["n_permutations"] == 20
    random_masks, exact = permutation_masks(30, 30, 50, seed=0)
    assert not exact and random_masks.shape == (50, 60) and (random_masks.sum(1) == 30).all()


@pytest.mark.smoke
@pytest.mark.slow
def test_store_mode_cli_on_the_concept_store(runner, app, tiny_store, tiny_adapter, tmp_path):
    out = tmp_path / "cmp"
    args = ["analyze", "compare", str(tiny_store), "--contrast", "concept=notes:tempos", "-o", str(out),
            "--n-permutations", "100", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert (res["n_a"], res["n_b"], res["label"]) == (3, 3, "concept")
    assert res["hookpoints"] == ["layers.0", "layers.1", "layers.2", "layers.3"]
    assert all(r["permutation_exact"] and r["n_permutations"] == 20 for r in res["layers"])
    assert {p.name for p in out.iterdir()} == FILES
    # the file steers the tiny model: widths checked, vectors = mean(notes items) - mean(tempos items)
    direction = load_direction(DirectionConfig(file=str(out / "directions.safetensors")), tiny_adapter)
    store = ActivationStore.open(tiny_store)
    for hp in res["hookpoints"]:
        means = [store.pool(hp, "mean", rows=store.select([f"concept={v}"]))[1][hp].astype(np.float64).mean(0)
                 for v in ("notes", "tempos")]
        np.testing.assert_allclose(direction.at(hp), means[0] - means[1], rtol=1e-5, atol=1e-6)
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    human = runner.invoke(app, ["analyze", "compare", str(tiny_store), "--label", "concept", "--a", "notes", "--b",
                                "tempos", "-o", str(out), "--n-permutations", "0", "--overwrite"])
    assert human.exit_code == 0, human.output
    assert "layers.3:" in human.stdout and "directions.safetensors" in human.stdout and "p=n/a" in human.stdout


@pytest.mark.slow
def test_prompt_mode_cli_generates_both_sets_and_compares_the_cond_stream(runner, app, monkeypatch, tiny_adapter,
                                                                          tmp_path):
    import musicsae_cli.models as models

    monkeypatch.setattr(models, "load_adapter", lambda *a, **k: tiny_adapter)
    prompts_a = tmp_path / "a.txt"
    prompts_a.write_text("calm jazz piano\n\nslow jazz trio\n")
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["analyze", "compare", "--prompts-a", str(prompts_a), "--prompt-b", "fast rock drums",
                                 "--prompt-b", "loud rock guitar", "--model", "tiny-musicgen", "--device", "cpu",
                                 "--duration-s", "0.2", "--hookpoint", "layers.1,layers.3", "--set",
                                 "extract.top_k=50", "--set", "extract.store_dtype=float32", "-o", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["mode"] == "prompts" and (res["n_a"], res["n_b"]) == (2, 2)
    assert res["hookpoints"] == ["layers.1", "layers.3"] and "stream=cond" in res["where"]
    assert [p["text"] for p in res["prompts"]["a"]] == ["calm jazz piano", "slow jazz trio"]
    assert {p.name for p in out.iterdir()} == FILES | {"store"}
    store = ActivationStore.open(out / "store")
    assert store.hookpoints == ["layers.1", "layers.3"]
    assert set(store.metadata(["stream"]).column("stream").to_pylist()) == {"cond", "uncond"}
    vectors = from_file(DirectionConfig(file=str(out / "directions.safetensors")), None).vectors
    for hp in res["hookpoints"]:  # mean over the cond rows of each item, then over the items of each set
        means = [store.pool(hp, "mean", rows=store.select([f"set={s}", "stream=cond"]))[1][hp].mean(0)
                 for s in ("a", "b")]
        np.testing.assert_allclose(vectors[hp], means[0] - means[1], rtol=1e-5, atol=1e-6)
    report = json.loads((out / "compare.json").read_text())
    assert report["items_a"] == ["a-p0000-s0", "a-p0001-s0"] and report["items_b"][0] == "b-prompt000-s0"


@pytest.mark.parametrize("extra,message", [
    (["--label", "concpt", "--a", "notes", "--b", "tempos"], "no label column 'concpt' (hint: did you mean 'concept'"),
    (["--label", "concept", "--a", "nots", "--b", "tempos"], "values of concept: notes, tempos"),
    (["--label", "concept", "--a", "notes", "--b", "notes"], "same value"),
    (["--label", "pitch_class", "--a", "C", "--b", "D"], "has 1 item"),
    (["--label", "concept", "--a", "notes"], "missing: --b"),
    (["--contrast", "concept=notes"], "--contrast expects COL=a:b"),
    (["--contrast", "concept=notes:tempos", "--label", "concept"], "shorthand"),
    (["--contrast", "concept=notes:tempos", "--prompt-a", "x"], "not both"),
    (["--contrast", "concept=notes:tempos", "--hookpoint", "layer.9"], "hookpoint 'layer.9' is not in the store"),
])
@pytest.mark.slow
def test_bad_store_input_is_refused(runner, app, tiny_store, tmp_path, extra, message):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["analyze", "compare", str(tiny_store), "-o", str(out), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()  # progress lines of the steps before the check may precede it
    assert message in lines[-1] and lines[-1].startswith("error: ") and sum(x.startswith("error") for x in lines) == 1
    assert not out.exists()


@pytest.mark.slow
def test_sparse_hookpoints_are_refused(runner, app, shifted, tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["analyze", "compare", str(shifted.path), "--contrast", "kind=a:b", "--hookpoint",
                                 "latents", "-o", str(out)])
    assert result.exit_code == 2 and "sparse" in result.stderr and "layers.0, layers.1" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    ([], "nothing to compare"),
    (["--prompt-a", "jazz", "--prompt-a", "blues"], "set b has no prompts"),
    (["--prompt-a", "jazz", "--prompt-a", "blues", "--prompt-b", "rock"], "set b would have 1 generated clip"),
    (["--prompt-a", "jazz", "--prompt-b", "rock", "--label", "set"], "store-mode options given in prompt mode"),
    (["--prompts-a", "missing.txt", "--prompt-b", "rock"], "prompt file not found"),
])
def test_bad_prompt_input_is_refused_before_generating(runner, app, monkeypatch, tmp_path, args, message):
    import musicsae_cli.models as models

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded for bad input")

    monkeypatch.setattr(models, "load_adapter", no_model)
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["analyze", "compare", "-o", str(out), "--model", "tiny-musicgen", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not out.exists()


def test_existing_output_is_refused_before_generating(runner, app, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    result = runner.invoke(app, ["analyze", "compare", "--prompt-a", "a", "--prompt-a", "b", "--prompt-b", "c",
                                 "--prompt-b", "d", "--model", "tiny-musicgen", "-o", str(out)])
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert list(out.iterdir()) == []
