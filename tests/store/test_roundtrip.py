"""Activations come back as written: fp32 exactly, fp16 as numpy rounds, bf16 rounded to nearest even."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_cli.store import ActivationStore, StoreWriter, bf16_decode, bf16_encode

from .helpers import WIDTHS, concat_acts, make_items, write_store

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)


def reference_bf16(x: np.ndarray) -> np.ndarray:
    """Independent bf16 rounding: the nearer neighbouring bf16 value (compared in float64), ties to even."""
    x = np.asarray(x, dtype=np.float32).ravel()
    bits = x.view(np.uint32)
    lo_bits = bits & np.uint32(0xFFFF0000)
    hi_bits = lo_bits + np.uint32(0x10000)
    lo = lo_bits.view(np.float32).astype(np.float64)
    hi = hi_bits.view(np.float32).astype(np.float64)
    # Past the largest bf16 the upper neighbour is worth 2**128 (it encodes as inf), as IEEE rounding has it.
    hi = np.where(np.isinf(hi), np.sign(lo) * 2.0**128, hi)
    with np.errstate(over="ignore", invalid="ignore"):
        d_lo = np.abs(x.astype(np.float64) - lo)
        d_hi = np.abs(hi - x.astype(np.float64))
    lo_even = ((lo_bits >> 16) & 1) == 0
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & ~lo_even)
    return np.where(pick_hi, hi_bits, lo_bits).astype(np.uint32).view(np.float32)


def test_bf16_encode_matches_independent_rounding():
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.standard_normal(20000).astype(np.float32) * 10.0 ** rng.integers(-20, 20, 20000),
        # exact halfway cases: lower half 0x8000 with even and odd kept bits
        np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x00008000], dtype=np.uint32).view(np.float32),
        np.array([0.0, -0.0, 1.0, 3.0e38, np.float32(np.finfo(np.float32).max)], dtype=np.float32),
    ])
    got = bf16_decode(bf16_encode(x))
    np.testing.assert_array_equal(got.view(np.uint32), reference_bf16(x).view(np.uint32))
    assert np.isinf(got[-1])  # the largest float32 rounds up past the largest bf16


def test_bf16_keeps_nan_and_inf():
    x = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    got = bf16_decode(bf16_encode(x))
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_roundtrip_against_numpy_source(tmp_path, dtype):
    items = make_items(9)
    store = ActivationStore.open(write_store(tmp_path / "s", items, dtype=dtype, shard_rows=30))
    assert store.n_shards > 1 and store.dtype == dtype
    for hookpoint in WIDTHS:
        source = concat_acts(items, hookpoint)
        got = store.read_rows(hookpoint, np.arange(store.n_rows))
        assert got.dtype == np.float32 and got.shape == source.shape
        if dtype == "float32":
            np.testing.assert_array_equal(got, source)
        elif dtype == "float16":
            np.testing.assert_array_equal(got, source.astype(np.float16).astype(np.float32))
        else:
            np.testing.assert_array_equal(got, reference_bf16(source).reshape(source.shape))
            np.testing.assert_array_less(np.abs(got - source), np.abs(source) * 2.0**-8 + 1e-30)


@pytest.mark.parametrize(("dtype", "raw_dtype"), [("float16", np.float16), ("bfloat16", np.uint16)])
def test_raw_reads_and_memmap(tmp_path, dtype, raw_dtype):
    items = make_items(5)
    store = ActivationStore.open(write_store(tmp_path / "s", items, dtype=dtype, shard_rows=20))
    raw = store.read_rows("layers.3", np.arange(store.n_rows), raw=True)
    assert raw.dtype == raw_dtype
    mapped = np.concatenate([np.asarray(store.array("layers.3", k)) for k in range(store.n_shards)])
    np.testing.assert_array_equal(mapped, raw)


def test_read_rows_any_order_and_bounds(store_path, items):
    from musicsae_cli.errors import InputError

    store = ActivationStore.open(store_path)
    source = concat_acts(items, "layers.0")
    rows = np.array([store.n_rows - 1, 0, 57, 3, 3, 41])  # unsorted, repeated, across shards
    np.testing.assert_array_equal(store.read_rows("layers.0", rows), source[rows])
    with pytest.raises(InputError, match="row indices"):
        store.read_rows("layers.0", np.array([store.n_rows]))
    with pytest.raises(InputError, match="hookpoint 'layers.9'"):
        store.read_rows("layers.9", np.array([0]))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_storage_dtype_inputs_are_copied_not_converted(tmp_path, dtype):
    rng = np.random.default_rng(4)
    source = rng.standard_normal((6, 8)).astype(np.float32)
    given = bf16_encode(source) if dtype == "bfloat16" else source.astype(dtype)
    with StoreWriter.create(tmp_path / "s", {"h": 8}, dtype) as writer:
        writer.add_item("a", {"h": given})
        given[:] = 0  # the caller reuses its buffer before the shard is written
    got = ActivationStore.open(tmp_path / "s").read_rows("h", np.arange(6))
    want = bf16_decode(bf16_encode(source)) if dtype == "bfloat16" else source.astype(dtype).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_uint16_input_only_for_bfloat16(tmp_path):
    from musicsae_cli.errors import InputError

    with StoreWriter.create(tmp_path / "s", {"h": 8}, "float16") as writer:
        with pytest.raises(InputError, match="expected float"):
            writer.add_item("a", {"h": np.zeros((2, 8), np.uint16)})
