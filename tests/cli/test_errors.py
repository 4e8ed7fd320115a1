"""Failures of the machine, not of musicsae, as one-line errors with a hint and the right exit code (issue 12).

A missing local model folder, an unreachable hub, a full disk, an output folder that cannot be written, a row
limit of 0 and a checkpoint that does not fit. The hub is made unreachable inside each test (a refused local
port and an empty cache), so no test touches the network, with or without one.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

HUB = "facebook/musicgen-small"
FAST_S = 10.0  # transformers' own retries take about 40 s before failing (minutes with a filled cache)


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def no_hub(monkeypatch, tmp_path) -> Path:
    """The hub at a refused local port and an empty hub cache (returned); HF_HUB_OFFLINE unset."""
    import huggingface_hub.constants as hub

    dead = "http://127.0.0.1:9"  # the discard port: nothing listens, so connections are refused at once
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub, "HUGGINGFACE_CO_URL_TEMPLATE", hub.HUGGINGFACE_CO_URL_TEMPLATE.replace(hub.ENDPOINT, dead))
    monkeypatch.setattr(hub, "ENDPOINT", dead)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def _import_model_code() -> None:
    import transformers

    from musicsae_cli.models import musicgen  # noqa: F401

    transformers.MusicgenForConditionalGeneration  # noqa: B018  (transformers imports its modules on first use)


# ---- --model: a missing folder is not a hub failure; a hub id without network fails fast ----
@pytest.mark.parametrize("spelling", ["./no-such-model", "{tmp}/no-such-model", "~/no-such-musicsae-model",
                                      "models/musicgen/small"])
def test_missing_model_directory_is_named_as_such(runner, app, tmp_path, no_hub, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    name = spelling.format(tmp=tmp_path)
    _import_model_code()  # the bound below is on the failing, not on a cold import of torch on a loaded machine
    started = time.perf_counter()
    result = runner.invoke(app, ["extract", "--prompt", "jazz", "-o", str(tmp_path / "out"), "--model", name])
    assert result.exit_code == 2
    assert _one_line(result) == (f"error: no such model directory: {name} (hint: check the path; pass a directory "
                                 f"written by save_pretrained, a hub id such as {HUB}, or tiny-musicgen)")
    assert time.perf_counter() - started < FAST_S and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_org_name_with_a_local_org_folder_reads_as_a_path(runner, app, tmp_path, no_hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    result = runner.invoke(app, ["model", "hookpoints", "checkpoints/musicgen-small"])
    assert result.exit_code == 2
    assert _one_line(result) == ("error: no such model directory: checkpoints/musicgen-small (hint: a folder "
                                 "'checkpoints' exists here, so this reads as a path; run from another folder to "
                                 "use the hub id)")


def test_hub_id_without_network_fails_in_seconds(runner, app, tmp_path, no_hub):
    _import_model_code()
    started = time.perf_counter()
    result = runner.invoke(app, ["extract", "--prompt", "jazz", "-o", str(tmp_path / "out"), "--model", HUB])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2
    line = _one_line(result)  # no "Retrying in 1s" lines before it
    assert line.startswith(f"error: cannot load '{HUB}' from the Hugging Face hub: this machine is offline or the "
                           "id is wrong (ConnectError; not in the local cache either) (hint: save it where there "
                           "is network")
    assert "pass --model DIR" in line and "HF_HUB_OFFLINE=1" in line
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_hub_id_without_network_loads_a_cached_copy(runner, app, tiny_dir, no_hub):
    snapshot = no_hub / "models--facebook--musicgen-small" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_dir, snapshot)  # the cache layout huggingface_hub writes (files instead of blob links)
    (no_hub / "models--facebook--musicgen-small" / "refs").mkdir()
    (no_hub / "models--facebook--musicgen-small" / "refs" / "main").write_text("0" * 40)
    started = time.perf_counter()
    result = runner.invoke(app, ["model", "hookpoints", HUB, "--json"])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert "layers.3" in result.stdout and "Retrying" not in result.stderr
    assert "hub is unreachable; loading facebook/musicgen-small from the local cache" in result.stderr
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"


# ---- the disk: full, or not writable ----
def _failing_write(monkeypatch, exc: BaseException) -> None:
    """Make the last file `model save-tiny` writes (its manifest) fail with `exc`."""
    import musicsae_cli.artifacts as artifacts

    def write_json(path, *args, **kwargs):
        raise exc

    monkeypatch.setattr(artifacts, "write_json", write_json)


def test_disk_full_is_one_line_naming_the_file(runner, app, tmp_path, monkeypatch):
    target = tmp_path / "stage" / "manifest.json"
    _failing_write(monkeypatch, OSError(errno.ENOSPC, "No space left on device", str(target)))
    result = runner.invoke(app, ["model", "save-tiny", "-o", str(tmp_path / "tiny")])
    assert result.exit_code == 1
    assert _one_line(result) == (f"error: no space left on the device writing {target} (hint: free some space, or "
                                 "choose an output (-o) on a disk with more room; a resumable job continues where "
                                 "it stopped)")
    assert not (tmp_path / "tiny").exists() and not list(tmp_path.glob(".tiny*"))


def test_disk_full_from_a_library_without_errno(runner, app, tmp_path, monkeypatch):
    class SafetensorError(Exception):  # what safetensors' Rust writer raises
        pass

    _failing_write(monkeypatch, SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                                'message: "No space left on device" })'))
    result = runner.invoke(app, ["model", "save-tiny", "-o", str(tmp_path / "tiny")])
    assert result.exit_code == 1
    assert _one_line(result).startswith("error: no space left on the device (hint: free some space")


@pytest.mark.parametrize(("code", "why"), [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")])
def test_unwritable_output_is_one_line(runner, app, tmp_path, monkeypatch, code, why):
    target = tmp_path / "stage" / "manifest.json"
    exc = (PermissionError if code == errno.EACCES else OSError)(code, os.strerror(code), str(target))
    _failing_write(monkeypatch, exc)
    result = runner.invoke(app, ["model", "save-tiny", "-o", str(tmp_path / "tiny")])
    assert result.exit_code == 2
    assert _one_line(result) == (f"error: cannot write {target}: {why} (hint: choose an output folder (-o) you can "
                                 "write to)")
    assert not (tmp_path / "tiny").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into a 0o555 folder")
def test_read_only_folder_for_real(runner, app, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = runner.invoke(app, ["data", "synth", "-o", str(folder / "concepts"), "-c", "synth-small"])
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 2
    line = _one_line(result)
    assert line.startswith(f"error: cannot write {folder}") and "permission denied" in line
    assert list(folder.iterdir()) == []


# ---- row limits of 0 ----
@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """A store of 24 items x 8 frames, 8 wide, with a two-class label and groups."""
    from musicsae_cli.store import StoreWriter

    path = tmp_path_factory.mktemp("errors") / "store"
    rng = np.random.default_rng(0)
    with StoreWriter.create(path, {"layers.0": 8}, "float32", frame_rate=50.0,
                            model={"family": "synthetic", "id": "synthetic", "hidden_size": 8}) as w:
        for i in range(24):
            x = rng.normal(size=(8, 8)).astype(np.float32) + (i % 2)
            w.add_item(f"item{i:02d}", {"layers.0": x}, item_meta={"group": f"g{i // 2}",
                                                                   "genre": ["jazz", "rock"][i % 2]})
    return path


def test_separation_max_rows_0_is_a_config_error(runner, app, small_store, tmp_path):
    result = runner.invoke(app, ["analyze", "separation", str(small_store), "-l", "genre", "-o", str(tmp_path / "s"),
                                 "--max-rows", "0"])
    assert result.exit_code == 2 and _one_line(result).startswith("error: invalid value for 'max_rows'")
    assert not (tmp_path / "s").exists()


def test_max_rows_validators():
    from musicsae_cli.config import check_max_rows
    from musicsae_cli.errors import ConfigError

    assert check_max_rows(None) is None and check_max_rows(1) == 1
    with pytest.raises(ConfigError) as err:
        check_max_rows(0)
    assert err.value.message == "--max-rows must be at least 1 (got 0)"
    assert err.value.hint == "leave it out to use every row" and err.value.exit_code == 2


def test_probe_evaluate_max_rows_0_is_a_config_error(runner, app, small_store, tmp_path):
    trained = runner.invoke(app, ["probe", "train", str(small_store), "-o", str(tmp_path / "p"), "--label", "genre"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["probe", "evaluate", str(tmp_path / "p"), str(small_store), "-o",
                                 str(tmp_path / "e"), "--max-rows", "0"])
    assert result.exit_code == 2
    assert _one_line(result) == "error: --max-rows must be at least 1 (got 0) (hint: leave it out to use every row)"
    assert not (tmp_path / "e").exists()


def _train_args(store: Path, run: Path) -> list[str]:
    return ["sae", "train", str(store), "-o", str(run), "--steps", "12", "--batch-size", "16", "--k", "2",
            "--set", "checkpoint_every=5", "--set", "init_rows=64", "--set", "eval_every=100", "--json"]


@pytest.mark.slow
def test_sae_evaluate_max_rows_0_is_a_config_error(runner, app, small_store, tmp_path):
    trained = runner.invoke(app, _train_args(small_store, tmp_path / "run"))
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["sae", "evaluate", str(tmp_path / "run"), str(small_store), "--max-rows", "0"])
    assert result.exit_code == 2
    assert _one_line(result) == "error: --max-rows must be at least 1 (got 0) (hint: leave it out to use every row)"


# ---- a checkpoint that does not fit beside the previous one ----
Usage = namedtuple("Usage", "total used free")


@pytest.mark.slow
def test_checkpoint_without_room_is_one_line_and_the_run_resumes(runner, app, small_store, tmp_path, monkeypatch):
    import musicsae_cli.sae.checkpoint as checkpoint

    real, calls = checkpoint.shutil.disk_usage, {"n": 0}

    def fills_up(path):
        calls["n"] += 1  # room for the first checkpoint (step 5), then 1000 bytes
        return Usage(10**12, 10**12 - 1000, 10**12 if calls["n"] == 1 else 1000)

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", fills_up)
    run = tmp_path / "run"
    result = runner.invoke(app, _train_args(small_store, run))
    assert result.exit_code == 1
    line = _one_line(result)
    assert line.startswith(f"error: not enough space for the checkpoint of step 10 in {run}: it needs ")
    assert line.endswith(", 1000 B free; the checkpoint of step 5 is kept (hint: free some space on that disk and "
                         "rerun the same command (it resumes from step 5))")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)
    resumed = runner.invoke(app, _train_args(small_store, run))
    assert resumed.exit_code == 0, resumed.output
    import json

    assert json.loads(resumed.stdout)["resumed_from"] == 5
