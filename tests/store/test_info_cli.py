"""`musicsae info` on activation stores, including incomplete and newer-version stores."""

from __future__ import annotations

import json

from musicsae_cli.store import FORMAT_VERSION

from .helpers import make_items, write_store


def test_info_describes_a_store(runner, app, store_path):
    result = runner.invoke(app, ["info", str(store_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "activation_store" and data["status"] == "complete"
    assert data["hookpoints"] == {"layers.0": 16, "layers.3": 8} and data["n_items"] == 12
    assert data["n_rows"] == sum(len(next(iter(i["acts"].values()))) for i in make_items())
    human = runner.invoke(app, ["info", str(store_path)])
    assert "hookpoints:" in human.stdout and "layers.3: 8" in human.stdout and "genre:" in human.stdout


def test_info_shows_incomplete_store_status(runner, app, tmp_path):
    from musicsae_cli.store import StoreWriter

    items = make_items(4)
    path = tmp_path / "s"
    try:
        with StoreWriter.create(path, {"layers.0": 16, "layers.3": 8}, "float16", shard_rows=1) as w:
            for item in items[:2]:
                w.add_item(**item)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    data = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
    assert data["status"] == "writing" and data["n_items"] >= 1


def test_info_refuses_newer_format_version(runner, app, tmp_path):
    path = write_store(tmp_path / "s", make_items(2))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    assert f"format version 99, newer than this musicsae supports ({FORMAT_VERSION})" in result.stderr
    assert "upgrade musicsae" in result.stderr and len(result.stderr.splitlines()) == 1


def test_verify_finds_truncated_deleted_and_corrupt_files(runner, app, tmp_path):
    """info trusts the manifest; info --verify reads every file and names what is broken (exit 1)."""
    import shutil

    import numpy as np
    import pytest

    from musicsae_cli.errors import StoreError
    from musicsae_cli.store import ActivationStore

    good = write_store(tmp_path / "good", make_items(6), shard_rows=20)
    ok = runner.invoke(app, ["info", str(good), "--verify", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["verify"]["ok"] is True
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    shards = sorted((bad / "shards").iterdir())
    act = shards[0] / "layers.3.npy"
    act.write_bytes(act.read_bytes()[:200])  # truncated
    (shards[1] / "meta.parquet").unlink()  # deleted
    plain = runner.invoke(app, ["info", str(bad), "--json"])  # reading the metadata finds the deleted file
    assert plain.exit_code == 1 and f"{shards[1] / 'meta.parquet'} is missing" in plain.stderr
    assert "info --verify" in plain.stderr
    result = runner.invoke(app, ["info", str(bad), "--verify"])
    assert result.exit_code == 1
    assert f"{act}: truncated or unreadable" in result.stdout and f"{shards[1] / 'meta.parquet'}: missing" in \
        result.stdout
    store = ActivationStore.open(bad)
    with pytest.raises(StoreError, match=f"activation file {act} is truncated") as err:
        store.read_rows("layers.3", np.arange(3))
    assert "info --verify" in err.value.hint
    with pytest.raises(StoreError, match=f"metadata file {shards[1] / 'meta.parquet'} is missing"):
        store.metadata()


def test_verify_an_sae_with_corrupt_weights(runner, app, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.sae.io import save_sae

    sae = SparseAutoencoder.create(SAESpec("topk", 8, 16, k=2), sample=torch.randn(32, 8), seed=0)
    (tmp_path / "sae").mkdir()
    save_sae(sae, tmp_path / "sae", hook_name="layers.0", model_name="m")
    assert runner.invoke(app, ["info", str(tmp_path / "sae"), "--verify"]).exit_code == 0
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    tensors["W_dec"][3, 2] = float("nan")
    save_file(tensors, str(weights))
    result = runner.invoke(app, ["info", str(tmp_path / "sae"), "--verify"])
    assert result.exit_code == 1 and "W_dec holds 1 non-finite values" in result.stdout
    weights.write_bytes(weights.read_bytes()[:100])
    result = runner.invoke(app, ["info", str(tmp_path / "sae"), "--verify"])
    assert result.exit_code == 1 and f"unreadable {weights}" in result.stdout
