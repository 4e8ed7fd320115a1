"""CSR hookpoints: written from several input forms, read back dense or sparse, pooled, streamed, resumed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicsae_cli.errors import InputError, StoreError
from musicsae_cli.store import CSR, FORMAT_VERSION, ActivationStore, StoreWriter

from .helpers import WIDTHS, make_items, write_store

SPARSE_WIDTHS = {"layers.0": 16, "lat": 64}
REDUCE = {"mean": lambda x: x.mean(axis=0), "max": lambda x: x.max(axis=0), "last": lambda x: x[-1]}


def sparse_rows(rng, n: int, width: int = 64, k: int = 5) -> np.ndarray:
    """(n, width) float32 with at most k non-zeros per row (some rows empty), negative values included."""
    x = np.zeros((n, width), np.float32)
    for r in range(n):
        if rng.random() < 0.15:
            continue
        cols = rng.choice(width, size=int(rng.integers(1, k + 1)), replace=False)
        x[r, cols] = rng.standard_normal(cols.size).astype(np.float32) * 2
    return x


def as_input(x: np.ndarray, form: str):
    """`x` in one of the forms add_item accepts for a sparse hookpoint (unsorted columns for tuples)."""
    if form == "dense":
        return x
    rows, cols = np.nonzero(x)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=x.shape[0]))])
    if form == "csr":
        return CSR(indptr, cols.astype(np.int32), x[rows, cols], x.shape)
    order = np.lexsort((-cols, rows))  # columns descending within each row: the writer must sort them
    return indptr, cols[order].astype(np.int64), x[rows, cols][order]


def make_sparse_items(n_items: int = 10, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    forms = ["csr", "tuple", "dense"]
    items = []
    for i in range(n_items):
        n = int(rng.integers(2, 12))
        lat = sparse_rows(rng, n)
        items.append({
            "item_id": f"item{i:03d}",
            "dense_lat": lat,
            "acts": {"layers.0": rng.standard_normal((n, 16)).astype(np.float32), "lat": as_input(lat, forms[i % 3])},
            "item_meta": {"genre": ["rock", "jazz"][i % 2]},
            "frame_meta": {"stream": np.where(np.arange(n) % 2 == 0, "cond", "uncond")},
        })
    return items


def write_sparse(path, items, dtype: str = "float32", shard_rows: int = 25, kill_after: int | None = None):
    with StoreWriter.create(path, SPARSE_WIDTHS, dtype, frame_rate=50.0, shard_rows=shard_rows,
                            sparse=("lat",), resume=kill_after is None and path.exists()) as writer:
        for i, item in enumerate(items):
            if i == kill_after:
                raise KeyboardInterrupt
            if item["item_id"] not in writer.done_items:
                writer.add_item(**{k: v for k, v in item.items() if k != "dense_lat"})
    return path


@pytest.fixture
def items():
    return make_sparse_items()


@pytest.fixture
def store(tmp_path, items):
    return ActivationStore.open(write_sparse(tmp_path / "s", items))


def dense_source(items) -> np.ndarray:
    return np.concatenate([item["dense_lat"] for item in items])


def test_layout_and_manifest(store):
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["hookpoints"] == {"layers.0": {"width": 16}, "lat": {"width": 64, "format": "csr"}}
    assert store.n_shards > 2
    assert store.hookpoint_format("lat") == "csr" and store.hookpoint_format("layers.0") == "dense"
    assert store.is_sparse("lat") and not store.is_sparse("layers.0")
    names = sorted(p.name for p in store.shards[0].path.iterdir())
    assert names == ["lat.indices.npy", "lat.indptr.npy", "lat.values.npy", "layers.0.npy", "meta.parquet",
                     "shard.json"]
    indptr, indices, values = store.sparse_arrays("lat", 0)
    assert indptr.dtype == np.int64 and indices.dtype == np.int32 and values.dtype == np.float32
    assert indptr.shape == (store.shards[0].n_rows + 1,) and indptr[-1] == indices.size == values.size
    with pytest.raises(InputError, match="sparse"):
        store.array("lat", 0)


def test_dense_only_stores_keep_version_1(tmp_path):
    path = write_store(tmp_path / "d", make_items(2))
    assert json.loads((path / "manifest.json").read_text())["format_version"] == 1
    assert ActivationStore.open(path).formats == dict.fromkeys(WIDTHS, "dense")


def test_round_trip_dense_and_sparse(store, items):
    source = dense_source(items)
    assert store.n_rows == source.shape[0]
    rows = np.random.default_rng(1).permutation(store.n_rows)[:40]  # unsorted, across shards
    got = store.read_rows("lat", rows)
    assert got.dtype == np.float32 and got.shape == (40, 64)
    np.testing.assert_array_equal(got, source[rows])
    np.testing.assert_array_equal(store.read_rows("lat", np.arange(store.n_rows)), source)
    csr = store.read_rows_sparse("lat", rows)
    # Independent reference: the non-zeros of the dense source, row-major (canonical CSR).
    ref_rows, ref_cols = np.nonzero(source[rows])
    np.testing.assert_array_equal(csr.indptr, np.concatenate([[0], np.cumsum(np.bincount(ref_rows, minlength=40))]))
    np.testing.assert_array_equal(csr.indices, ref_cols)
    np.testing.assert_array_equal(csr.data, source[rows][ref_rows, ref_cols])
    assert csr.shape == (40, 64) and csr.data.dtype == np.float32
    np.testing.assert_array_equal(store.read_rows("layers.0", rows),
                                  np.concatenate([i["acts"]["layers.0"] for i in items])[rows])
    with pytest.raises(InputError, match="dense"):
        store.read_rows_sparse("layers.0", rows)


def test_matches_scipy(store, items):
    sparse = pytest.importorskip("scipy.sparse")
    source = dense_source(items)
    rows = np.array([5, 0, 17, 3, 3])
    ours, ref = store.read_rows_sparse("lat", rows).to_scipy(), sparse.csr_matrix(source[rows])
    for attr in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(ours, attr), getattr(ref, attr))
    # scipy input is accepted too.
    with StoreWriter.create(store.path.parent / "sp", {"lat": 64}, "float32", sparse=["lat"]) as writer:
        writer.add_item("a", {"lat": sparse.csr_matrix(source[:7])})
    np.testing.assert_array_equal(ActivationStore.open(store.path.parent / "sp").read_rows("lat", range(7)),
                                  source[:7])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_values(tmp_path, items, dtype):
    store = ActivationStore.open(write_sparse(tmp_path / "h", items, dtype=dtype))
    source = dense_source(items)
    got = store.read_rows("lat", np.arange(store.n_rows))
    if dtype == "float16":
        np.testing.assert_array_equal(got, source.astype(np.float16).astype(np.float32))
    else:
        np.testing.assert_allclose(got, source, rtol=2**-8)
        assert store.read_rows_sparse("lat", [0, 1], raw=True).data.dtype == np.uint16


@pytest.mark.parametrize("how", ["mean", "max", "last"])
def test_pool_matches_numpy_on_dense(store, items, how, monkeypatch):
    monkeypatch.setattr("musicsae_cli.store.pool.CHUNK_ROWS", 12)
    monkeypatch.setattr("musicsae_cli.store.pool.CHUNK_CELLS", 64 * 2)  # at most two items per chunk
    source = dense_source(items)
    rows = store.select("stream=uncond")
    table, acts = store.pool(["lat", "layers.0"], how, rows=rows)
    meta = store.metadata(["item_id"]).column("item_id").to_numpy(zero_copy_only=False)
    assert table.column("item_id").to_pylist() == [i["item_id"] for i in items]
    for k, item in enumerate(items):
        item_rows = rows[meta[rows] == item["item_id"]]
        assert acts["lat"].dtype == np.float32
        np.testing.assert_allclose(acts["lat"][k], REDUCE[how](source[item_rows]), rtol=1e-6, atol=1e-7)
    whole, pooled = store.pool("lat", how)
    want = np.stack([REDUCE[how](item["dense_lat"]) for item in items])
    np.testing.assert_allclose(pooled["lat"], want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("prefetch", [True, False])
def test_stream_sparse_and_dense_batches(store, items, prefetch):
    source = dense_source(items)
    options = {"buffer_rows": 16, "block_rows": 4, "seed": 3, "prefetch": prefetch}
    batches = list(store.stream(["lat", "layers.0"], 7, sparse=True, **options))
    rows = np.concatenate([b.rows for b in batches])
    np.testing.assert_array_equal(np.sort(rows), np.arange(store.n_rows))
    for b in batches:
        csr = b.acts["lat"]
        assert isinstance(csr, CSR) and csr.shape == (len(b), 64) and csr.data.dtype == np.float32
        np.testing.assert_array_equal(csr.toarray(), source[b.rows])
        assert isinstance(b.acts["layers.0"], np.ndarray)  # dense hookpoints stay dense
    dense = list(store.stream("lat", 7, **options))
    for a, b in zip(batches, dense, strict=True):
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(b.acts["lat"], source[b.rows])
    resumed = list(store.stream("lat", 7, sparse=True, start_batch=3, **options))
    np.testing.assert_array_equal(resumed[0].acts["lat"].toarray(), batches[3].acts["lat"].toarray())


def test_resume_after_kill_matches_one_go(tmp_path, items):
    path = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        write_sparse(path, items, kill_after=7)
    partial = ActivationStore.open(path, allow_incomplete=True)
    assert 0 < partial.n_items < 7
    with pytest.raises(StoreError, match="sparse hookpoints: store has lat, requested none"):
        StoreWriter.create(path, SPARSE_WIDTHS, "float32", frame_rate=50.0, resume=True)
    resumed = ActivationStore.open(write_sparse(path, items))
    one_go = ActivationStore.open(write_sparse(tmp_path / "one", items))
    assert (resumed.n_rows, resumed.n_items, resumed.n_shards) == (one_go.n_rows, one_go.n_items, one_go.n_shards)
    all_rows = np.arange(one_go.n_rows)
    np.testing.assert_array_equal(resumed.read_rows("lat", all_rows), one_go.read_rows("lat", all_rows))
    assert resumed.metadata().equals(one_go.metadata())


def test_describe_reports_format_and_nnz(store, items):
    info = store.describe()
    assert info["hookpoints"] == SPARSE_WIDTHS
    assert info["hookpoint_formats"] == {"layers.0": "dense", "lat": "csr"}
    nnz = int(np.count_nonzero(dense_source(items)))
    assert info["sparse"]["lat"] == {"nnz": nnz, "mean_nnz_per_row": round(nnz / store.n_rows, 3)}


def test_explicit_zeros_dropped_and_input_errors(tmp_path):
    with StoreWriter.create(tmp_path / "e", {"lat": 8, "d": 2}, "float32", sparse=["lat"]) as w:
        # Row 0 holds an explicit zero and unsorted columns, row 1 nothing.
        zeros = (np.array([0, 3, 3]), np.array([5, 4, 1]), np.array([0.0, 3.0, 2.0], np.float32))
        w.add_item("zeros", {"lat": zeros,
                             "d": np.ones((2, 2), np.float32)})
        bad = {
            "column indices must lie in \\[0, 8\\)": (np.array([0, 1]), np.array([8]), np.ones(1, np.float32)),
            "indptr must start at 0": (np.array([0, 2]), np.array([1]), np.ones(1, np.float32)),
            "same column twice": (np.array([0, 2]), np.array([3, 3]), np.ones(2, np.float32)),
            "expected a float dtype": (np.array([0, 1]), np.array([3]), np.ones(1, np.int64)),
            "expected float \\(n_frames, 8\\)": np.ones((1, 7), np.float32),
            "shape \\(1, 9\\)": CSR(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0, np.float32), (1, 9)),
        }
        for message, lat in bad.items():
            with pytest.raises(InputError, match=message):
                w.add_item("bad", {"lat": lat, "d": np.ones((1, 2), np.float32)})
        with pytest.raises(InputError, match="different frame counts"):
            w.add_item("bad", {"lat": np.zeros((3, 8), np.float32), "d": np.ones((1, 2), np.float32)})
    store = ActivationStore.open(tmp_path / "e")
    csr = store.read_rows_sparse("lat", [0, 1])
    assert csr.indptr.tolist() == [0, 2, 2] and csr.indices.tolist() == [1, 4] and csr.data.tolist() == [2.0, 3.0]
    with pytest.raises(InputError, match="not among the store's hookpoints"):
        StoreWriter.create(tmp_path / "x", {"a": 2}, sparse=["b"])
    with pytest.raises(InputError, match="collide on disk"):
        StoreWriter.create(tmp_path / "x", {"a": 2, "a.indptr": 3}, sparse=["a"])
