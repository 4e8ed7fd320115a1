"""Row metadata: built-in and caller columns, labels missing in some items, schemas unified across shards."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.store import ActivationStore, StoreWriter

from .helpers import WIDTHS, make_items, write_store


def test_metadata_rows_in_store_order(store_path, items):
    store = ActivationStore.open(store_path)
    table = store.metadata()
    assert table.num_rows == store.n_rows == sum(len(i["acts"]["layers.0"]) for i in items)
    expected_ids = [i["item_id"] for i in items for _ in range(len(i["acts"]["layers.0"]))]
    assert table.column("item_id").to_pylist() == expected_ids
    first = items[0]
    n0 = len(first["acts"]["layers.0"])
    assert table.column("frame").to_pylist()[:n0] == list(range(n0))
    np.testing.assert_allclose(table.column("time_s").to_numpy()[:n0], np.arange(n0) / 50.0)
    assert table.column("stream").to_pylist()[:3] == ["cond", "uncond", "cond"]
    assert table.column("source_path").to_pylist()[0] == "audio/0.wav"
    assert store.metadata_columns["frame"] == "int32" and store.metadata_columns["bpm"] == "int64"
    assert store.metadata(["genre"]).column_names == ["genre"]
    with pytest.raises(InputError, match="unknown metadata column"):
        store.metadata(["nope"])


def test_heterogeneous_labels_across_shards(tmp_path):
    items = make_items(8)
    # Shard 0 (items 0-2) has no key column at all; bpm is int at first, then a float; genre None in some.
    for i, item in enumerate(items):
        if i >= 3:
            item["item_meta"]["key"] = None if i % 2 else f"key{i}"
        if i == 6:
            item["item_meta"]["bpm"] = 121.5
    store = ActivationStore.open(write_store(tmp_path / "s", items, shard_rows=1))  # one item per shard
    assert store.n_shards == 8
    first_schema = pq.read_schema(store.shards[0].path / "meta.parquet")
    assert "key" not in first_schema.names and first_schema.field("bpm").type == "int64"
    table = store.items()
    assert table.column("item_id").to_pylist() == [i["item_id"] for i in items]
    assert table.column("key").to_pylist() == [None, None, None, None, "key4", None, "key6", None]
    assert table.column("genre").to_pylist() == [i["item_meta"]["genre"] for i in items]
    assert table.column("bpm").type == "double"
    assert table.column("bpm").to_pylist() == [float(i["item_meta"]["bpm"]) for i in items]
    assert table.column("n_frames").to_pylist() == [len(i["acts"]["layers.0"]) for i in items]
    rows = store.metadata(["key"]).column("key").to_pylist()
    assert rows.count("key4") == len(items[4]["acts"]["layers.0"])
    assert set(store.item_columns) == {"source_path", "genre", "bpm", "group", "key"}


def test_writer_validates_items(tmp_path):
    acts = {name: np.zeros((4, w), np.float32) for name, w in WIDTHS.items()}
    with StoreWriter.create(tmp_path / "s", WIDTHS, "float16") as writer:
        assert writer.add_item("a", acts, item_meta={"bpm": 120})
        with pytest.raises(InputError, match="duplicate item id 'a'"):
            writer.add_item("a", acts)
        with pytest.raises(InputError, match="missing"):
            writer.add_item("b", {"layers.0": acts["layers.0"]})
        with pytest.raises(InputError, match=r"expected float \(n_frames, 8\)"):
            writer.add_item("b", {"layers.0": acts["layers.0"], "layers.3": np.zeros((4, 9), np.float32)})
        with pytest.raises(InputError, match="different frame counts"):
            writer.add_item("b", {"layers.0": acts["layers.0"], "layers.3": np.zeros((5, 8), np.float32)})
        with pytest.raises(InputError, match="holds int64 values, but this item gives string"):
            writer.add_item("b", acts, item_meta={"bpm": "fast"})
        with pytest.raises(InputError, match="reserved"):
            writer.add_item("b", acts, item_meta={"frame": 3})
        with pytest.raises(InputError, match="per-item in this store"):
            writer.add_item("b", acts, frame_meta={"bpm": np.arange(4)})
        with pytest.raises(InputError, match="shape"):
            writer.add_item("b", acts, frame_meta={"stream": ["cond"] * 3})
        empty = {name: np.zeros((0, w), np.float32) for name, w in WIDTHS.items()}
        assert writer.add_item("empty", empty) is False
        assert writer.add_item("b", acts, item_meta={"bpm": None}, time_s=np.arange(4) * 0.5)
    store = ActivationStore.open(tmp_path / "s")
    assert store.items().column("item_id").to_pylist() == ["a", "b"]  # failed and empty items left no trace
    assert store.metadata_columns["bpm"] == "int64"
    assert store.metadata(["time_s"]).column("time_s").to_pylist() == [None] * 4 + [0.0, 0.5, 1.0, 1.5]


def test_empty_store_reads_as_empty(tmp_path):
    StoreWriter.create(tmp_path / "s", {"h": 4}).close()
    store = ActivationStore.open(tmp_path / "s")
    assert (store.n_rows, store.n_items, store.n_shards) == (0, 0, 0)
    assert store.metadata().column_names == ["item_id", "frame", "time_s"] and store.metadata().num_rows == 0
    assert list(store.stream("h", 8)) == [] and store.select(["frame>1"]).size == 0
    table, acts = store.pool("h")
    assert table.num_rows == 0 and acts["h"].shape == (0, 4)
