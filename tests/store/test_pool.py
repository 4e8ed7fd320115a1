"""pool() against a numpy recomputation per item, and describe() for `musicsae info`."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.store import ActivationStore

from .helpers import WIDTHS, concat_acts, make_items, write_store

REDUCE = {"mean": lambda x: x.mean(axis=0), "max": lambda x: x.max(axis=0), "last": lambda x: x[-1]}


@pytest.mark.parametrize("how", ["mean", "max", "last"])
def test_pool_matches_numpy(store_path, items, how):
    store = ActivationStore.open(store_path)
    table, acts = store.pool(list(WIDTHS), how)
    assert table.column("item_id").to_pylist() == [i["item_id"] for i in items]
    assert table.column("genre").to_pylist() == [i["item_meta"]["genre"] for i in items]
    assert table.column("n_frames").to_pylist() == [len(i["acts"]["layers.0"]) for i in items]
    for name in WIDTHS:
        want = np.stack([REDUCE[how](i["acts"][name]) for i in items])
        assert acts[name].dtype == np.float32
        np.testing.assert_allclose(acts[name], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("how", ["mean", "max", "last"])
def test_pool_over_selected_rows(store_path, items, how, monkeypatch):
    monkeypatch.setattr("musicsae_cli.store.pool.CHUNK_ROWS", 20)  # several chunks per shard
    store = ActivationStore.open(store_path)
    rows = store.select(["stream=uncond", "genre!=jazz"])
    table, acts = store.pool("layers.3", how, rows=rows)
    meta = store.metadata(["item_id"]).column("item_id").to_numpy(zero_copy_only=False)
    source = concat_acts(items, "layers.3")
    kept = [i["item_id"] for i in items if i["item_meta"]["genre"] not in ("jazz", None)]
    assert table.column("item_id").to_pylist() == kept
    for k, item_id in enumerate(kept):
        item_rows = rows[meta[rows] == item_id]
        assert table.column("n_frames")[k].as_py() == item_rows.size
        np.testing.assert_allclose(acts["layers.3"][k], REDUCE[how](source[item_rows]), rtol=1e-6, atol=1e-6)


def test_pool_rejects_unknown_pooling(store_path):
    with pytest.raises(InputError, match="unknown pooling 'median'"):
        ActivationStore.open(store_path).pool("layers.0", "median")


def test_items_table(store_path, items):
    store = ActivationStore.open(store_path)
    table = store.items()
    starts = np.cumsum([0] + [len(i["acts"]["layers.0"]) for i in items])[:-1]
    assert table.column("row_start").to_pylist() == starts.tolist()
    shards = table.column("shard").to_pylist()
    assert shards[0] == 0 and shards[-1] == store.n_shards - 1 and shards == sorted(shards)


def test_describe(tmp_path):
    items = make_items(30)
    path = write_store(tmp_path / "s", items, dtype="bfloat16", position_convention="x")
    store = ActivationStore.open(path)
    info = store.describe()
    assert info["kind"] == "activation_store" and info["status"] == "complete"
    assert info["hookpoints"] == WIDTHS and info["dtype"] == "bfloat16"
    assert (info["n_rows"], info["n_items"], info["n_shards"]) == (store.n_rows, 30, store.n_shards)
    assert info["frame_rate"] == 50.0 and info["position_convention"] == "x"
    assert info["model"] == {"id": "test/model"}
    n_bytes = store.n_rows * sum(WIDTHS.values()) * 2
    assert info["size_bytes"] > n_bytes
    genre = info["labels"]["genre"]
    assert genre["missing"] == 7 and genre["distinct"] == 3
    assert list(genre["top"].items()) == [("jazz", 8), ("rock", 8), ("pop", 7)]
    assert next(iter(info["labels"]["stream"]["top"])) == "cond"
    assert "source_path" not in info["labels"]  # every value distinct: not a label
