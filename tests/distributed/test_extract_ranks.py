"""Extraction on 2 ranks through the real torchrun launcher (gloo on CPU): the store equals a one-process store
item by item, a killed run resumes at another world size, and refusals are one line from rank 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from musicsae_cli.store import ActivationStore
from tests.distributed.launch import kill_launch

pytestmark = pytest.mark.slow


def musicsae(*args, env=None, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    """The CLI as a user runs it (a fresh interpreter: torchrun re-executes the command line)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "musicsae_cli", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("ranks") / "audio"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            sf.write(root / label / f"{i:02d}.wav", (0.1 * rng.standard_normal(32000 * (1 + i % 3))).astype(np.float32),
                     32000)
    return root


@pytest.fixture(scope="module")
def reference(audio):
    out = audio.parent / "one"
    res = musicsae("extract", str(audio), "-o", str(out), "-m", "tiny-musicgen", "--hookpoint", "all",
                   "--device", "cpu", "-q")
    assert res.returncode == 0, res.stderr
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """Same items, rows and metadata in the same order; activations equal to float16 rounding (the ranks batch
    the items differently)."""
    one, two = ActivationStore.open(a), ActivationStore.open(b)
    assert (one.n_items, one.n_rows) == (two.n_items, two.n_rows)
    columns = ["item_id", "frame", "time_s", "label", "source_item", "window"]
    assert one.metadata(columns).to_pylist() == two.metadata(columns).to_pylist()
    rows = np.arange(one.n_rows)
    for h in one.hookpoints:
        np.testing.assert_allclose(one.read_rows(h, rows).astype(np.float32),
                                   two.read_rows(h, rows).astype(np.float32), atol=2e-3, rtol=2e-3)


@pytest.mark.smoke
def test_two_ranks_write_the_store_one_process_writes(audio, reference, tmp_path):
    out = tmp_path / "two"
    res = musicsae("extract", str(audio), "-o", str(out), "-m", "tiny-musicgen", "--hookpoint", "all",
                   "--device", "cpu", "--nproc", "2", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)  # rank 0 alone prints: one JSON document
    assert summary["windows_written"] == 24 and summary["store_items"] == 24
    assert not (out / "parts").exists() and json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert_same_store(reference, out)
    # the same command again: refused in one line from rank 0, the store untouched
    again = musicsae("extract", str(audio), "-o", str(out), "-m", "tiny-musicgen", "--hookpoint", "all",
                     "--device", "cpu", "--nproc", "2")
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: activation store already exists: {out} (hint: pass --overwrite to replace it, or choose another "
        "path)"]


def test_a_killed_run_resumes_at_another_world_size(audio, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "musicsae_cli", "extract", str(audio), "-o", str(out), "-m", "tiny-musicgen",
           "--hookpoint", "all", "--device", "cpu", "--nproc", "2", "--batch-size", "1", "--set", "shard_mb=0.0001",
           "-q"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "parts" / "rank-00001" / "shards" / "00001").is_dir():
                break
            time.sleep(0.02)
    finally:  # the whole launch, as a lost node: the agent and both ranks
        kill_launch(proc)
    assert (out / "parts").is_dir(), "the run ended before it could be killed"
    assert json.loads((out / "manifest.json").read_text())["status"] == "writing"
    res = musicsae("extract", str(audio), "-o", str(out), "-m", "tiny-musicgen", "--hookpoint", "all",
                   "--device", "cpu", "--json")  # one process now
    assert res.returncode == 0, res.stderr
    assert 0 < json.loads(res.stdout)["windows_written"] < 24
    assert not (out / "parts").exists()
    one, two = ActivationStore.open(reference), ActivationStore.open(out)
    assert sorted(one.items()["item_id"].to_pylist()) == sorted(two.items()["item_id"].to_pylist())
    assert one.n_rows == two.n_rows


def test_refusals_are_one_line_from_rank_0(audio, tmp_path):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
              "musicsae_cli"]
    res = subprocess.run([*launch, "model", "families"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode != 0
    assert res.stderr.count("error: musicsae model families does not run under torchrun (2 processes)") == 1
    out = tmp_path / "nccl"
    res = musicsae("extract", str(audio), "-o", str(out), "-m", "tiny-musicgen", "--device", "cpu", "--nproc", "2",
                   env={"MUSICSAE_DIST_BACKEND": "nccl"})
    assert res.returncode == 2 and not out.exists()
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and "nccl backend was asked for" in errors[0]
    res = musicsae("extract", "--prompt", "x", "-o", str(out), "-m", "tiny-musicgen", "--nproc", "2")
    assert res.returncode == 2 and "runs in one process" in res.stderr and not out.exists()
