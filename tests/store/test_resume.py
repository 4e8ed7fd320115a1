"""Crash safety: only committed shards survive a failure, and resuming finishes the same store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicsae_cli.errors import InputError, OutputExistsError, StoreError
from musicsae_cli.store import ActivationStore, StoreWriter, is_store

from .helpers import WIDTHS, make_items, write_store


class Killed(Exception):
    pass


def write_until_killed(path, items, kill_after: int, shard_rows: int = 30) -> None:
    """Write items with a writer that dies (an exception inside the with) after `kill_after` items."""
    with pytest.raises(Killed):
        with StoreWriter.create(path, WIDTHS, "float16", frame_rate=50.0, model={"id": "test/model"},
                                shard_rows=shard_rows) as writer:
            for i, item in enumerate(items):
                if i == kill_after:
                    raise Killed
                writer.add_item(**item)


def assert_same_store(a: ActivationStore, b: ActivationStore) -> None:
    assert (a.n_rows, a.n_items, a.n_shards) == (b.n_rows, b.n_items, b.n_shards)
    assert a.metadata().equals(b.metadata())
    for hookpoint in WIDTHS:
        rows = np.arange(a.n_rows)
        np.testing.assert_array_equal(a.read_rows(hookpoint, rows, raw=True),
                                      b.read_rows(hookpoint, rows, raw=True))


def test_kill_leaves_only_committed_shards_and_resume_completes(tmp_path):
    items = make_items(12)
    path = tmp_path / "s"
    write_until_killed(path, items, kill_after=7)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["status"] == "writing"
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore.open(path)
    partial = ActivationStore.open(path, allow_incomplete=True)
    committed = [item_id for shard in partial.shards for item_id in shard.items]
    assert 0 < len(committed) < 7  # the buffered tail of the 7 added items was not committed
    assert committed == [item["item_id"] for item in items[:len(committed)]]
    assert manifest["n_items"] == len(committed) and manifest["n_rows"] == partial.n_rows

    # A writer killed mid-commit leaves a .tmp-* shard: readers ignore it, resume deletes it.
    junk = path / "shards" / ".tmp-deadbeef"
    junk.mkdir()
    (junk / "layers.0.npy").write_bytes(b"half a file")
    assert ActivationStore.open(path, allow_incomplete=True).n_shards == partial.n_shards

    with StoreWriter.create(path, WIDTHS, "float16", frame_rate=50.0, model={"id": "test/model"},
                            shard_rows=30, resume=True) as writer:
        assert set(writer.done_items) == set(committed)
        assert not junk.exists()
        for item in items:
            if item["item_id"] not in writer.done_items:
                writer.add_item(**item)
    resumed = ActivationStore.open(path)
    one_go = ActivationStore.open(write_store(tmp_path / "one_go", items, dtype="float16", shard_rows=30))
    assert_same_store(resumed, one_go)


def test_resume_after_kill_between_commit_and_manifest(tmp_path):
    items = make_items(6)
    path = write_store(tmp_path / "s", items, shard_rows=20)
    manifest = json.loads((path / "manifest.json").read_text())
    # Pretend the writer died right after renaming its last shard: the manifest lags one commit behind.
    manifest.update(status="writing", n_shards=manifest["n_shards"] - 1, metadata_columns={})
    (path / "manifest.json").write_text(json.dumps(manifest))
    with StoreWriter.create(path, WIDTHS, "float32", frame_rate=50.0, resume=True) as writer:
        assert writer.n_items == 6
    store = ActivationStore.open(path)
    assert store.n_items == 6 and store.metadata_columns["genre"] == "string"


def test_resume_refuses_different_settings(tmp_path):
    path = tmp_path / "s"
    write_until_killed(path, make_items(4), kill_after=2, shard_rows=1)
    with pytest.raises(StoreError, match=r"dtype: store has float16, requested float32") as err:
        StoreWriter.create(path, WIDTHS, "float32", frame_rate=50.0, resume=True)
    assert "overwrite" in err.value.hint
    wrong = r"hookpoints: store has layers.0=16, layers.3=8, requested layers.0=16 \("
    with pytest.raises(StoreError, match=wrong):
        StoreWriter.create(path, {"layers.0": 16}, "float16", frame_rate=50.0, resume=True)


def test_resume_of_complete_store_has_nothing_to_do(store_path, items):
    n_shards = ActivationStore.open(store_path).n_shards
    with StoreWriter.create(store_path, WIDTHS, "float32", frame_rate=50.0, resume=True) as writer:
        assert set(writer.done_items) == {item["item_id"] for item in items}
    assert ActivationStore.open(store_path).n_shards == n_shards


def test_existing_output_rules(tmp_path, store_path):
    with pytest.raises(OutputExistsError):
        StoreWriter.create(store_path, WIDTHS, "float32")
    # overwrite replaces a store...
    with StoreWriter.create(store_path, {"x": 2}, "float32", overwrite=True) as writer:
        writer.add_item("only", {"x": np.ones((1, 2), np.float32)})
    assert ActivationStore.open(store_path).n_items == 1
    # ...and an empty directory, but never a folder that is not a store.
    (tmp_path / "empty").mkdir()
    StoreWriter.create(tmp_path / "empty", WIDTHS, overwrite=True).close()
    assert is_store(tmp_path / "empty")
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a musicsae activation store") as err:
        StoreWriter.create(other, WIDTHS, overwrite=True)
    assert err.value.hint and (other / "thesis.txt").exists()


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "s"
    write_until_killed(path, make_items(3), kill_after=2, shard_rows=1)
    with StoreWriter.create(path, WIDTHS, "float16", frame_rate=50.0, resume=True):
        with pytest.raises(StoreError, match="another writer"):
            StoreWriter.create(path, WIDTHS, "float16", frame_rate=50.0, resume=True)


def test_overwrite_keeps_the_old_store_until_the_new_one_is_complete(tmp_path, store_path, items):
    """Killed or failed mid-overwrite, the old store is intact; the same overwrite then resumes and replaces it."""
    before = ActivationStore.open(store_path)
    old_rows = before.n_rows
    old_acts = before.read_rows("layers.0", np.arange(old_rows))
    stage = store_path.parent / f".{store_path.name}.overwrite"
    writer = StoreWriter.create(store_path, WIDTHS, "float32", frame_rate=50.0, overwrite=True, shard_rows=1)
    assert writer.path == stage
    for item in make_items(3)[:2]:
        writer.add_item(item["item_id"], item["acts"])
    writer.flush()
    writer.abandon()  # what a kill leaves: the stage with two committed items
    after = ActivationStore.open(store_path)
    assert after.n_rows == old_rows and np.array_equal(after.read_rows("layers.0", np.arange(old_rows)), old_acts)
    assert after.status == "complete" and is_store(stage)
    with StoreWriter.create(store_path, WIDTHS, "float32", frame_rate=50.0, overwrite=True, resume=True) as w:
        assert set(w.done_items) == {"item000", "item001"}  # the interrupted overwrite resumes
        w.add_item("item002", make_items(3)[2]["acts"])
    ids = ActivationStore.open(store_path).items().column("item_id").to_pylist()
    assert ids == ["item000", "item001", "item002"]
    assert not stage.exists() and not list(store_path.parent.glob(f".{store_path.name}.old-*"))


def test_failed_overwrite_with_no_rows_leaves_the_old_store_and_no_stage(store_path):
    rows = ActivationStore.open(store_path).n_rows
    with pytest.raises(RuntimeError, match="model broke"):
        with StoreWriter.create(store_path, WIDTHS, "float32", frame_rate=50.0, overwrite=True):
            raise RuntimeError("model broke")
    assert ActivationStore.open(store_path).n_rows == rows
    assert not (store_path.parent / f".{store_path.name}.overwrite").exists()
