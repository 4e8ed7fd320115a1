"""stream(): each selected row once per epoch, shuffled, deterministic, and exactly resumable."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.store import ActivationStore, epoch_order

from .helpers import concat_acts, make_items, write_store

OPTIONS = {"buffer_rows": 64, "block_rows": 16}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    items = make_items(40, seed=3)
    path = write_store(tmp_path_factory.mktemp("stream") / "s", items, dtype="float16", shard_rows=70)
    return ActivationStore.open(path), items


def rows_of(batches) -> np.ndarray:
    return np.concatenate([b.rows for b in batches])


def test_every_row_once_shuffled_with_correct_values(big):
    store, items = big
    assert store.n_shards > 3 and store.n_rows > 5 * OPTIONS["buffer_rows"]
    batches = list(store.stream(["layers.0", "layers.3"], 24, **OPTIONS))
    rows = rows_of(batches)
    np.testing.assert_array_equal(np.sort(rows), np.arange(store.n_rows))
    assert not np.array_equal(rows, np.arange(store.n_rows))
    assert [len(b) for b in batches[:-1]] == [24] * (len(batches) - 1) and 0 < len(batches[-1]) <= 24
    assert [b.index for b in batches] == list(range(len(batches)))
    for name in ("layers.0", "layers.3"):
        source = concat_acts(items, name).astype(np.float16).astype(np.float32)
        acts = np.concatenate([b.acts[name] for b in batches])
        assert acts.dtype == np.float32
        np.testing.assert_array_equal(acts, source[rows])


def test_order_is_known_without_reading(big):
    store, _ = big
    rows = rows_of(store.stream("layers.0", 50, seed=7, epoch=2, **OPTIONS))
    np.testing.assert_array_equal(rows, epoch_order(store.n_rows, seed=7, epoch=2, **OPTIONS))


def test_deterministic_by_seed_and_epoch(big):
    store, _ = big
    a = rows_of(store.stream("layers.0", 32, seed=1, **OPTIONS))
    np.testing.assert_array_equal(a, rows_of(store.stream("layers.0", 32, seed=1, prefetch=False, **OPTIONS)))
    assert not np.array_equal(a, rows_of(store.stream("layers.0", 32, seed=2, **OPTIONS)))
    assert not np.array_equal(a, rows_of(store.stream("layers.0", 32, seed=1, epoch=1, **OPTIONS)))


@pytest.mark.parametrize("start_batch", [1, 3, 7, 13])
def test_start_batch_resumes_exactly(big, start_batch):
    store, _ = big
    full = list(store.stream(["layers.0", "layers.3"], 20, seed=5, epoch=1, **OPTIONS))
    resumed = list(store.stream(["layers.0", "layers.3"], 20, seed=5, epoch=1, start_batch=start_batch,
                                **OPTIONS))
    assert len(resumed) == len(full) - start_batch
    for a, b in zip(full[start_batch:], resumed, strict=True):
        assert a.index == b.index
        np.testing.assert_array_equal(a.rows, b.rows)
        for name in a.acts:
            np.testing.assert_array_equal(a.acts[name], b.acts[name])
    assert list(store.stream("layers.0", 20, start_batch=len(full), **OPTIONS)) == []


def test_filtered_rows_only(big):
    store, _ = big
    selected = store.select(["stream=cond", "genre in rock,pop"])
    assert 0 < selected.size < store.n_rows / 2
    batches = list(store.stream("layers.3", 16, rows=selected, seed=3, **OPTIONS))
    rows = rows_of(batches)
    np.testing.assert_array_equal(np.sort(rows), selected)
    assert not np.array_equal(rows, selected)
    np.testing.assert_array_equal(np.concatenate([b.acts["layers.3"] for b in batches]),
                                  store.read_rows("layers.3", rows))


def test_drop_last_unshuffled_and_raw(big):
    store, _ = big
    batches = list(store.stream("layers.0", 64, drop_last=True, **OPTIONS))
    assert len(batches) == store.n_rows // 64 and all(len(b) == 64 for b in batches)
    plain = rows_of(store.stream("layers.0", 64, shuffle=False, **OPTIONS))
    np.testing.assert_array_equal(plain, np.arange(store.n_rows))
    raw = next(iter(store.stream("layers.0", 8, raw=True, **OPTIONS)))
    assert raw.acts["layers.0"].dtype == np.float16


def test_stream_argument_errors(big):
    store, _ = big
    with pytest.raises(InputError, match="strictly increasing"):
        store.stream("layers.0", 8, rows=np.array([5, 2]))
    with pytest.raises(InputError, match="batch_size"):
        store.stream("layers.0", 0)
    with pytest.raises(InputError, match="hookpoint"):
        store.stream("nope", 8)
