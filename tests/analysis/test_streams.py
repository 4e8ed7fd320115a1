"""Stores with both guidance streams (issue 12, item 11): separation, features and compare read the cond rows
unless --where names a stream, say so on stderr and record it."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from musicsae_cli.analysis.compare import compare
from musicsae_cli.analysis.config import CompareConfig, FeaturesConfig, SeparationConfig
from musicsae_cli.analysis.features import analyze_features
from musicsae_cli.analysis.separation import separation

D, W, FRAMES, N_ITEMS = 8, 16, 4, 12
NOTE = "using stream=cond rows of a store with streams cond, uncond (pass --where stream=uncond for the other)"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Items as `extract --prompts` lays them out: FRAMES cond rows, then FRAMES uncond rows, per clip.

    The uncond rows are the cond ones scaled and shifted (dense) and fire other latents (CSR), so any row of the
    wrong stream shows in every number checked.
    """
    from musicsae_cli.store import StoreWriter
    from musicsae_cli.store.csr import from_dense

    rng = np.random.default_rng(0)
    means = rng.normal(size=(2, D)) * 2
    x = {"cond": [], "uncond": []}
    lat = {"cond": [], "uncond": []}
    path = tmp_path_factory.mktemp("streams") / "generated"
    with StoreWriter.create(path, {"layers.0": D, "layers.0.sae": W}, "float32", sparse=["layers.0.sae"],
                            frame_rate=50.0, model={"id": "test/model"}) as w:
        for i in range(N_ITEMS):
            cond = means[i % 2] + 0.3 * rng.normal(size=(FRAMES, D))
            x["cond"].append(cond)
            x["uncond"].append(3.0 * cond + 5.0)
            lc, lu = np.zeros((FRAMES, W)), np.zeros((FRAMES, W))
            lc[:, [i % 2, 2 + i % 3]] = rng.uniform(1, 2, (FRAMES, 2))
            lu[:, 8 + i % 4] = rng.uniform(1, 2, FRAMES)
            lu[: FRAMES // 2, 12] = 1.0
            lat["cond"].append(lc)
            lat["uncond"].append(lu)
            w.add_item(f"p{i:02d}-s0", {"layers.0": np.concatenate([cond, 3.0 * cond + 5.0]).astype(np.float32),
                                        "layers.0.sae": from_dense(np.concatenate([lc, lu]).astype(np.float32))},
                       item_meta={"genre": ["rock", "jazz"][i % 2], "group": f"p{i:02d}"},
                       frames=np.tile(np.arange(FRAMES), 2),
                       frame_meta={"stream": np.repeat(["cond", "uncond"], FRAMES)})
    return SimpleNamespace(path=path, x={k: np.stack(v) for k, v in x.items()},
                           lat={k: np.stack(v) for k, v in lat.items()})


def _said(caplog, stream) -> None:
    if stream is None:
        assert NOTE in caplog.text
    else:
        assert "using stream=" not in caplog.text


@pytest.mark.parametrize("stream", [None, "uncond"])
def test_separation_reads_one_stream(generated, tmp_path, caplog, stream):
    where = [] if stream is None else [f"stream={stream}"]
    cfg = SeparationConfig(labels=["genre"], hookpoint="layers.0", measures=["latents"], where=where, pooling="mean")
    with caplog.at_level(logging.INFO, logger="musicsae"):
        res = separation(generated.path, tmp_path / "sep", cfg)
    _said(caplog, stream)
    used = stream or "cond"
    assert res["sampling"]["rows_selected"] == N_ITEMS * FRAMES and res["sampling"]["samples"] == N_ITEMS
    report = json.loads((tmp_path / "sep" / "separation.json").read_text())
    manifest = json.loads((tmp_path / "sep" / "manifest.json").read_text())
    assert report["where"] == manifest["where"] == [f"stream={used}"]
    assert (report["stream"] or {}).get("stream") == (None if stream else "cond") == (manifest["stream"] or {}).get(
        "stream")
    # Mean pooling over the chosen rows only: every feature's per-class mean, from numpy.
    stats = np.load(tmp_path / "sep" / "latent_stats_genre.npz")
    pooled = generated.x[used].mean(axis=1)  # (items, D)
    genre = np.array(["rock", "jazz"] * (N_ITEMS // 2))
    classes = report["labels"]["genre"]["classes"]
    expected = np.stack([pooled[genre == c].mean(axis=0) for c in classes])
    np.testing.assert_allclose(stats["mean_in"], expected.T, rtol=1e-5, atol=1e-5)  # (features, classes)


@pytest.mark.parametrize("stream", [None, "uncond"])
@pytest.mark.slow
def test_features_reads_one_stream(generated, tmp_path, caplog, stream):
    where = [] if stream is None else [f"stream={stream}"]
    cfg = FeaturesConfig(hookpoint="layers.0.sae", n=4, top_k=2, where=where, labels=["genre"])
    with caplog.at_level(logging.INFO, logger="musicsae"):
        res = analyze_features(generated.path, tmp_path / "dash", cfg)
    _said(caplog, stream)
    used = stream or "cond"
    assert res["n_rows"] == N_ITEMS * FRAMES and res["where"] == [f"stream={used}"]
    saved = json.loads((tmp_path / "dash" / "features.json").read_text())
    counts = (generated.lat[used].reshape(-1, W) > 0).sum(axis=0)
    assert saved["active_counts"] == counts.tolist()
    manifest = json.loads((tmp_path / "dash" / "manifest.json").read_text())
    assert (manifest["stream"] or {}).get("stream") == (None if stream else "cond")


@pytest.mark.parametrize("stream", [None, "uncond"])
def test_compare_reads_one_stream(generated, tmp_path, caplog, stream):
    from safetensors.numpy import load_file

    where = [] if stream is None else [f"stream={stream}"]
    cfg = CompareConfig(label="genre", a="rock", b="jazz", n_permutations=0, where=where, hookpoints=["layers.0"])
    with caplog.at_level(logging.INFO, logger="musicsae"):
        res = compare(generated.path, tmp_path / "cmp", cfg)
    _said(caplog, stream)
    assert "pooled together" not in caplog.text
    used = stream or "cond"
    assert res["where"] == [f"stream={used}"] and res["n_a"] == res["n_b"] == N_ITEMS // 2
    pooled = generated.x[used].mean(axis=1)  # (items, D): each item's mean over the chosen stream's rows
    direction = pooled[0::2].mean(axis=0) - pooled[1::2].mean(axis=0)
    np.testing.assert_allclose(load_file(str(tmp_path / "cmp" / "directions.safetensors"))["layers.0"], direction,
                               rtol=1e-5, atol=1e-5)
    manifest = json.loads((tmp_path / "cmp" / "manifest.json").read_text())
    assert (manifest["stream"] or {}).get("stream") == (None if stream else "cond")


def test_a_contrast_of_the_streams_themselves_is_left_alone(generated, tmp_path, caplog):
    cfg = CompareConfig(label="stream", a="cond", b="uncond", n_permutations=0, hookpoints=["layers.0"])
    with caplog.at_level(logging.INFO, logger="musicsae"):
        res = compare(generated.path, tmp_path / "cmp", cfg)
    assert "using stream=" not in caplog.text and res["where"] == [] and res["n_a"] == N_ITEMS


def test_the_cli_says_which_stream(generated, tmp_path, runner, app):
    result = runner.invoke(app, ["analyze", "separation", str(generated.path), "--hookpoint", "layers.0", "-l",
                                 "genre", "-o", str(tmp_path / "sep"), "--set", "measures=[latents]", "--json"])
    assert result.exit_code == 0, result.output
    assert f"warning: {NOTE}" in result.stderr
    assert json.loads(result.stdout)["stream"]["stream"] == "cond"
