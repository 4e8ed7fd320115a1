"""SAE training on 2 ranks (DDP over gloo, through the real torchrun launcher) against one process on the same
global batches: same weights to float rounding, a sweep included; a killed run resumes on one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from musicsae_cli.store import ActivationStore, StoreWriter
from tests.distributed.launch import kill_launch

pytestmark = pytest.mark.slow


def musicsae(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "musicsae_cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Sparse combinations of 48 directions in 32 dimensions (an SAE has something to find)."""
    path = tmp_path_factory.mktemp("sae-ranks") / "store"
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((48, 32)).astype(np.float32)
    with StoreWriter.create(path, {"h": 32, "g": 32}, "float32", shard_rows=640) as w:
        for i in range(40):
            codes = rng.random((64, 48)) * (rng.random((64, 48)) < 0.06)
            label = "up" if i % 2 else "down"
            h = (codes @ atoms).astype(np.float32) + (0.5 if label == "up" else -0.5)
            w.add_item(f"i{i:02d}", {"h": h, "g": np.tanh(h)}, item_meta={"group": f"g{i % 8}", "label": label})
    return path


def weights(run, member=None):
    folder = run if member is None else run / member
    return load_file(str(folder / "sae_weights.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=1e-4, err_msg=k)


COMMON = ["--hookpoint", "h", "--steps", "30", "--batch-size", "64", "--device", "cpu", "-q"]


@pytest.mark.smoke
def test_two_ranks_train_what_one_process_trains(store, tmp_path):
    for name, extra in (("topk", ["--architecture", "topk", "--k", "4"]),
                        ("sweep", ["--architecture", "relu", "--set", "sweep.l1_coefficient=[1,5]", "--set", "lr=0.01",
                                   "--set", "resample_dead=true", "--set", "resample_every=10", "--set",
                                   "dead_window_tokens=64"])):
        one, two = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
        res = musicsae("sae", "train", str(store), "-o", str(one), *COMMON, *extra)
        assert res.returncode == 0, res.stderr
        res = musicsae("sae", "train", str(store), "-o", str(two), *COMMON, *extra, "--nproc", "2")
        assert res.returncode == 0, res.stderr
        members = json.loads((one / "manifest.json").read_text())["members"]
        assert json.loads((two / "manifest.json").read_text())["members"] == members
        for m in members:
            assert_same(weights(one, None if len(members) == 1 else m), weights(two, None if len(members) == 1 else m))
        log1 = [json.loads(x) for x in (one / "train_log.jsonl").read_text().splitlines()]
        log2 = [json.loads(x) for x in (two / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log1] == [r["step"] for r in log2]
        for r1, r2 in zip(log1, log2, strict=True):  # the logged terms are averaged over the ranks
            assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-4)
        final1 = json.loads((one / "manifest.json").read_text())["final_metrics"]
        final2 = json.loads((two / "manifest.json").read_text())["final_metrics"]
        for m in members:  # evaluated on each rank's block of the rows, accumulators summed
            assert final1[m]["explained_variance"] == pytest.approx(final2[m]["explained_variance"], rel=1e-5)
            assert final1[m]["l0"] == pytest.approx(final2[m]["l0"], rel=1e-5)


def test_a_killed_run_resumes_on_one_process(store, tmp_path):
    reference = tmp_path / "ref"
    args = ["--architecture", "topk", "--k", "4", "--hookpoint", "h", "--steps", "400", "--batch-size", "64",
            "--device", "cpu", "-q", "--set", "checkpoint_every=20"]
    assert musicsae("sae", "train", str(store), "-o", str(reference), *args).returncode == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "musicsae_cli", "sae", "train", str(store), "-o", str(run), *args,
                             "--nproc", "2"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            state = run / "checkpoint" / "state.json"
            if state.is_file() and json.loads(state.read_text())["step"] >= 40:
                break
            time.sleep(0.05)
    finally:  # the whole launch, as a lost node: the agent and both ranks
        kill_launch(proc)
    assert json.loads((run / "manifest.json").read_text())["status"] != "complete", "finished before the kill"
    res = musicsae("sae", "train", str(run), "--resume", "--json")  # one process now, from rank 0's checkpoint
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["resumed_from"] >= 40
    assert_same(weights(reference), weights(run))


def test_a_batch_that_does_not_split_is_refused_by_rank_0(store, tmp_path):
    out = tmp_path / "odd"
    res = musicsae("sae", "train", str(store), "-o", str(out), "--hookpoint", "h", "--batch-size", "63",
                   "--steps", "2", "--device", "cpu", "--nproc", "2")
    assert res.returncode == 2 and not out.exists()
    assert res.stderr.strip().splitlines() == ["error: a batch of 63 rows does not split evenly over 2 processes "
                                               "(hint: choose --batch-size as a multiple of 2)"]


def test_encode_and_probes_on_two_ranks(store, tmp_path):
    """`sae encode --nproc 2`: each rank encodes a block of the items; the latent store equals the one-process one.
    `probe train --nproc 2`: the hookpoints are dealt out; the same probes' metrics come back in hookpoint order."""
    sae = tmp_path / "sae"
    assert musicsae("sae", "train", str(store), "-o", str(sae), *COMMON, "--architecture", "topk", "--k", "4"
                    ).returncode == 0
    for n in ("1", "2"):
        res = musicsae("sae", "encode", str(store), "--sae", str(sae), "-o", str(tmp_path / f"latents{n}"),
                       "--device", "cpu", "--nproc", n, "-q")
        assert res.returncode == 0, res.stderr
    one, two = ActivationStore.open(tmp_path / "latents1"), ActivationStore.open(tmp_path / "latents2")
    assert one.metadata().to_pylist() == two.metadata().to_pylist() and two.n_shards > 1
    rows = np.arange(one.n_rows)
    np.testing.assert_array_equal(one.read_rows("h.sae", rows), two.read_rows("h.sae", rows))
    assert not (tmp_path / "latents2" / "parts").exists()
    for n in ("1", "2"):
        res = musicsae("probe", "train", str(store), "-o", str(tmp_path / f"probes{n}"), "-l", "label", "--nproc", n,
                       "--json")
        assert res.returncode == 0, res.stderr
    m1 = json.loads((tmp_path / "probes1" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "probes2" / "metrics.json").read_text())
    layers1 = m1["layers"] if isinstance(m1, dict) else m1
    layers2 = m2["layers"] if isinstance(m2, dict) else m2
    assert [r["hookpoint"] for r in layers1] == [r["hookpoint"] for r in layers2] == ["h", "g"]
    for r1, r2 in zip(layers1, layers2, strict=True):
        assert r1["balanced_accuracy"] == pytest.approx(r2["balanced_accuracy"], abs=0.05)
        assert r1["balanced_accuracy"] > 0.9


def test_distribute_hookpoints_trains_each_hookpoint_on_its_own_rank(store, tmp_path):
    """--distribute-hookpoints: rank 0 trains h, rank 1 trains g, each alone; each run equals the one-process run
    of that hookpoint; rerunning keeps the finished runs."""
    out = tmp_path / "per-hookpoint"
    args = ["sae", "train", str(store), "-o", str(out), "--architecture", "topk", "--k", "4", "--steps", "20",
            "--batch-size", "64", "--device", "cpu", "--distribute-hookpoints"]
    res = musicsae(*args, "--nproc", "2", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["hookpoints"] == ["h", "g"] and summary["processes"] == 2
    for hp in ("h", "g"):
        single = tmp_path / f"single-{hp}"
        assert musicsae("sae", "train", str(store), "-o", str(single), "--hookpoint", hp, "--architecture", "topk",
                        "--k", "4", "--steps", "20", "--batch-size", "64", "--device", "cpu", "-q").returncode == 0
        assert_same(weights(single), weights(out / hp))
    again = musicsae(*args, "--hookpoint", "g", "--json")  # one process, one hookpoint: kept, not retrained
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["runs"]["g"]["kept"] is True
