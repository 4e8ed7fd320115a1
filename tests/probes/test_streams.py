"""Stores with both guidance streams (issue 12, item 11): probes use the cond rows unless --where names a stream."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest

from musicsae_cli.probes import ProbeSet
from musicsae_cli.probes.config import ProbeConfig
from musicsae_cli.probes.train import train_probes

from .conftest import write_stream_store

NOTE = "using stream=cond rows of a store with streams cond, uncond (pass --where stream=uncond for the other)"


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    return write_stream_store(tmp_path_factory.mktemp("streams") / "generated")


def _train_items(folder) -> np.ndarray:
    with (folder / "split.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([int(r["item_id"][4:6]) for r in rows if r["side"] == "train"])


@pytest.mark.parametrize("stream", [None, "uncond"])
def test_train_pools_one_stream(streams, tmp_path, caplog, stream):
    path, acts = streams
    where = [] if stream is None else [f"stream={stream}"]
    with caplog.at_level(logging.INFO, logger="musicsae"):
        res = train_probes(path, tmp_path / "p", ProbeConfig(label="genre", device="cpu", where=where))
    used = stream or "cond"
    assert res["split"]["samples"] == 20 and res["where"] == [f"stream={used}"]
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    if stream is None:
        assert NOTE in caplog.text and res["stream"]["stream"] == "cond" and manifest["stream"]["note"] == NOTE
    else:
        assert "using stream=" not in caplog.text and res["stream"] is None and manifest["stream"] is None
    # The standardisation is the mean/std of the pooled training items: numpy means over the chosen stream's rows.
    probes, train = ProbeSet.load(tmp_path / "p"), _train_items(tmp_path / "p")
    for h, hp in enumerate(probes.hookpoints):
        pooled = acts[used][hp][train].astype(np.float64).mean(axis=1)  # (n_train, D)
        np.testing.assert_allclose(probes.mean[h], pooled.mean(axis=0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(probes.std[h], pooled.std(axis=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stream", [None, "uncond"])
@pytest.mark.slow
def test_evaluate_pools_one_stream(streams, tmp_path, runner, app, stream):
    path, acts = streams
    train_probes(path, tmp_path / "p", ProbeConfig(label="genre", device="cpu", where=["stream=cond"]))
    args = ["probe", "evaluate", str(tmp_path / "p"), str(path), "-o", str(tmp_path / "ev"), "--json"]
    result = runner.invoke(app, args + ([] if stream is None else ["--where", f"stream={stream}"]))
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    used = stream or "cond"
    assert res["samples"] == 20
    manifest = json.loads((tmp_path / "ev" / "manifest.json").read_text())
    if stream is None:
        assert f"warning: {NOTE}" in result.stderr and res["stream"]["stream"] == "cond"
        assert manifest["stream"]["stream"] == "cond" and manifest["where"] == ["stream=cond"]
    else:
        assert "using stream=" not in result.stderr and res["stream"] is None
    # Predicted probabilities, recomputed: softmax of the probe on the numpy mean of each item's `used` rows.
    probes = ProbeSet.load(tmp_path / "p")
    with (tmp_path / "ev" / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for h, hp in enumerate(probes.hookpoints):
        pooled = acts[used][hp].astype(np.float64).mean(axis=1)  # (20, D): the pooled feature of every item
        z = ((pooled - probes.mean[h]) / probes.std[h]) @ probes.weight[h].T.astype(np.float64) + probes.bias[h]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        got = np.array([[float(r[f"p_{c}"]) for c in probes.classes] for r in rows if r["hookpoint"] == hp])
        assert [r["item_id"] for r in rows if r["hookpoint"] == hp] == [f"clip{i:02d}-s0" for i in range(20)]
        np.testing.assert_allclose(got, p, atol=1e-4)
