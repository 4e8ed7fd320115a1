"""encode_store: latents equal a direct computation, metadata is copied, filters, resume and refusals hold."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from musicsae_cli.errors import InputError, MusicSAEError, OutputExistsError
from musicsae_cli.sae.encode import encode_store
from musicsae_cli.store import CSR, ActivationStore, StoreWriter

D_IN, D_SAE, K = 12, 40, 3


class ReluSAE(torch.nn.Module):
    """Stand-in SAE: ReLU(x @ W + b), dense latents only."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.spec = SimpleNamespace(d_in=D_IN, d_sae=D_SAE)
        self.W = torch.nn.Parameter(torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5)
        self.b = torch.nn.Parameter(torch.randn(D_SAE, generator=g) * 0.3 - 0.3)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W + self.b)  # (B, d_sae)


class TopKSAE(ReluSAE):
    """Stand-in TopK SAE: keeps the K largest pre-activations (ReLU'd); offers encode_sparse."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.sparse_calls = 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = self.encode_sparse(x)
        return torch.zeros(x.shape[0], D_SAE).scatter(1, indices, values)

    def encode_sparse(self, x: torch.Tensor):
        self.sparse_calls += 1
        top = (x @ self.W + self.b).topk(K, dim=1)  # (B, K) values and indices, by value
        return torch.relu(top.values), top.indices


def dense_reference(sae, x: np.ndarray) -> np.ndarray:
    """The latents computed directly, in numpy float64 then float32 (independent of the encoder path)."""
    pre = x.astype(np.float64) @ sae.W.detach().numpy().astype(np.float64) + sae.b.detach().numpy()
    if isinstance(sae, TopKSAE):
        keep = np.argsort(-pre, axis=1, kind="stable")[:, :K]
        mask = np.zeros_like(pre, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=1)
        pre = np.where(mask, pre, 0.0)
    return np.maximum(pre, 0).astype(np.float32)


def make_source(path, n_items: int = 9, nan_at: tuple[int, int] | None = None, widths=None):
    """A float32 store of `n_items` items (4..15 frames) with per-item and per-frame labels, several shards."""
    rng = np.random.default_rng(5)
    widths = widths or {"layers.2": D_IN}
    with StoreWriter.create(path, widths, "float32", frame_rate=25.0, model={"id": "m"}, shard_rows=30,
                            position_convention="pos") as w:
        for i in range(n_items):
            n = int(rng.integers(4, 16))
            acts = {name: rng.standard_normal((n, width)).astype(np.float32) for name, width in widths.items()}
            if nan_at is not None and nan_at[0] == i:
                acts["layers.2"][nan_at[1], 3] = np.inf if i % 2 else np.nan
            w.add_item(f"clip{i}", acts, item_meta={"genre": ["rock", "jazz", None][i % 3], "bpm": 90 + i},
                       frame_meta={"stream": np.where(np.arange(n) % 3 == 0, "cond", "uncond"),
                                   "beat": np.arange(n) % 4})
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("enc") / "src")


@pytest.mark.parametrize("sae_cls", [ReluSAE, TopKSAE])
@pytest.mark.smoke
def test_latents_equal_direct_computation(tmp_path, source, sae_cls):
    sae = sae_cls()
    res = encode_store(sae, source, tmp_path / "lat", batch_size=7, sae_info={"id": "test-sae"})
    src, lat = ActivationStore.open(source), ActivationStore.open(tmp_path / "lat")
    assert lat.hookpoints == ["layers.2.sae"] and lat.is_sparse("layers.2.sae") and lat.widths["layers.2.sae"] == D_SAE
    rows = np.arange(src.n_rows)
    want = dense_reference(sae, src.read_rows("layers.2", rows))
    np.testing.assert_allclose(lat.read_rows("layers.2.sae", rows), want, rtol=1e-5, atol=1e-5)
    # The stored pattern is exactly the non-zero pattern of the reference (no explicit zeros).
    assert lat.read_rows_sparse("layers.2.sae", rows).nnz == np.count_nonzero(want)
    if sae_cls is TopKSAE:
        assert sae.sparse_calls > 0
    assert res["rows"] == src.n_rows == res["rows_encoded"] and res["items"] == src.n_items == 9
    assert res["mean_l0"] == pytest.approx(np.count_nonzero(want) / src.n_rows)
    assert res["dead_latents"] == int((~want.any(axis=0)).sum())
    # Metadata, layout settings and provenance are carried over.
    assert lat.metadata().equals(src.metadata().cast(lat.metadata().schema))
    assert lat.item_columns == src.item_columns and lat.frame_rate == 25.0 and lat.position_convention == "pos"
    assert lat.model == {"id": "m"} and lat.dtype == "float32"
    config = lat.manifest["config"]
    assert config["source_store"] == str(source.resolve()) and config["hookpoint"] == "layers.2"
    assert config["sae"] == {"id": "test-sae"}
    assert lat.describe()["sparse"]["layers.2.sae"]["mean_nnz_per_row"] == pytest.approx(res["mean_l0"], abs=1e-3)


def test_where_filter_and_float16(tmp_path, source):
    sae = ReluSAE(1)
    where = ["stream=cond", "genre in rock,jazz"]
    encode_store(sae, source, tmp_path / "lat", where=where, dtype="float16")
    src, lat = ActivationStore.open(source), ActivationStore.open(tmp_path / "lat")
    rows = src.select(where)
    assert lat.n_rows == rows.size and lat.dtype == "float16"
    want = dense_reference(sae, src.read_rows("layers.2", rows)).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(lat.read_rows("layers.2.sae", np.arange(lat.n_rows)), want, rtol=2e-3, atol=1e-3)
    src_meta = src.metadata().take(rows)
    for column in ("item_id", "frame", "time_s", "stream", "beat", "genre", "bpm"):
        assert lat.metadata([column]).column(0).to_pylist() == src_meta.column(column).to_pylist()


def test_several_hookpoints_need_a_choice(tmp_path):
    path = make_source(tmp_path / "two", n_items=2, widths={"layers.2": D_IN, "layers.5": 7})
    with pytest.raises(InputError, match="2 hookpoints") as err:
        encode_store(ReluSAE(), path, tmp_path / "lat")
    assert "layers.2, layers.5" in err.value.hint
    with pytest.raises(InputError, match=r"'layers.5' of .* has width 7, but the SAE expects d_in=12"):
        encode_store(ReluSAE(), path, tmp_path / "lat", hookpoint="layers.5")
    assert not (tmp_path / "lat").exists()
    encode_store(ReluSAE(), path, tmp_path / "lat", hookpoint="layers.2")


def test_nan_rows_are_reported(tmp_path):
    path = make_source(tmp_path / "nan", nan_at=(4, 2))
    src = ActivationStore.open(path)
    bad_row = int(src.select(["item_id=clip4"])[2])
    with pytest.raises(MusicSAEError, match=rf"non-finite .*row {bad_row} \(item 'clip4'\)"):
        encode_store(ReluSAE(), path, tmp_path / "lat", batch_size=5)
    assert not (tmp_path / "lat").exists()  # nothing was committed: the store it started is removed
    encode_store(ReluSAE(), path, tmp_path / "lat", where=["item_id!=clip4"])
    assert ActivationStore.open(tmp_path / "lat").n_items == 8


def test_existing_output_refused_and_resume(tmp_path, source, monkeypatch):
    sae = TopKSAE()
    out = tmp_path / "lat"
    one_go = encode_store(sae, source, tmp_path / "one")
    with pytest.raises(OutputExistsError):
        encode_store(sae, source, tmp_path / "one")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        encode_store(sae, source, tmp_path / "other")

    # Kill the run after a few items: committed shards stay, the rerun skips their items.
    from musicsae_cli.store import writer as writer_module

    real, calls = writer_module.StoreWriter.add_item, []

    def dying(self, item_id, *args, **kwargs):
        calls.append(item_id)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(self, item_id, *args, **kwargs)

    monkeypatch.setattr(writer_module.StoreWriter, "add_item", dying)
    with pytest.raises(KeyboardInterrupt):
        encode_store(sae, source, out, batch_size=8, shard_bytes=2000)
    monkeypatch.setattr(writer_module.StoreWriter, "add_item", real)
    committed = ActivationStore.open(out, allow_incomplete=True).n_items
    assert 0 < committed < 6
    with pytest.raises(InputError, match=r"other settings \(sae\)"):
        encode_store(sae, source, out, sae_info={"id": "another"})
    res = encode_store(sae, source, out, batch_size=3)
    assert res["items_resumed"] == committed and res["rows"] == one_go["rows"]
    assert res["rows_encoded"] < one_go["rows"]
    a, b = ActivationStore.open(out), ActivationStore.open(tmp_path / "one")
    rows = np.arange(a.n_rows)
    # Another batch size may change the last bit of a matmul, nothing more.
    np.testing.assert_allclose(a.read_rows("layers.2.sae", rows), b.read_rows("layers.2.sae", rows), rtol=1e-6)
    assert a.metadata().equals(b.metadata())
    assert (res["mean_l0"], res["dead_latents"]) == (one_go["mean_l0"], one_go["dead_latents"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["hookpoints"]["layers.2.sae"]["format"] == "csr"


def test_latent_store_reads_like_any_store(tmp_path, source):
    encode_store(TopKSAE(), source, tmp_path / "lat")
    lat = ActivationStore.open(tmp_path / "lat")
    table, pooled = lat.pool("layers.2.sae", "max")
    dense = lat.read_rows("layers.2.sae", np.arange(lat.n_rows))
    starts = table.column("n_frames").to_numpy().cumsum()
    np.testing.assert_array_equal(pooled["layers.2.sae"][-1], dense[starts[-2]:].max(axis=0))
    batch = next(iter(lat.stream("layers.2.sae", 16, sparse=True)))
    assert isinstance(batch.acts["layers.2.sae"], CSR)
    np.testing.assert_array_equal(batch.acts["layers.2.sae"].toarray(), dense[batch.rows])


def test_bad_arguments_leave_nothing(tmp_path, source):
    with pytest.raises(InputError, match="would replace its source"):
        encode_store(ReluSAE(), source, source, overwrite=True)
    with pytest.raises(InputError, match="no rows of .* match \\['genre=blues'\\]"):
        encode_store(ReluSAE(), source, tmp_path / "x", where="genre=blues")
    with pytest.raises(InputError, match="unsupported latent store dtype 'bfloat16'"):
        encode_store(ReluSAE(), source, tmp_path / "x", dtype="bfloat16")
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        encode_store(ReluSAE(), source, tmp_path / "x", precision="fp8")
    assert not (tmp_path / "x").exists() and ActivationStore.open(source).n_items == 9


def test_bf16_precision_encodes_a_real_sae_close_to_fp32(tmp_path, source):
    """A real TopK SAE through its row-block encoder: fp32 equals a numpy recomputation; bf16 autocast keeps
    nearly the same latents with bf16-sized value errors, and says so in the store's record."""
    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder

    src = ActivationStore.open(source)
    x = src.read_rows("layers.2", np.arange(src.n_rows))
    sae = SparseAutoencoder.create(SAESpec("topk", D_IN, D_SAE, k=K), sample=torch.from_numpy(x))
    encode_store(sae, source, tmp_path / "fp32", batch_size=16)
    encode_store(sae, source, tmp_path / "bf16", batch_size=16, precision="bf16")
    x_c = (x.astype(np.float64) - sae.norm_mean.numpy()) * float(sae.norm_scale) - sae.b_dec.detach().numpy()
    pre = x_c @ sae.W_enc.detach().numpy().astype(np.float64) + sae.b_enc.detach().numpy()
    keep = np.argsort(-pre, axis=1)[:, :K]
    want = np.zeros_like(pre)
    np.put_along_axis(want, keep, np.maximum(np.take_along_axis(pre, keep, axis=1), 0), axis=1)
    rows = np.arange(src.n_rows)
    fp32 = ActivationStore.open(tmp_path / "fp32").read_rows("layers.2.sae", rows)
    np.testing.assert_allclose(fp32, want, rtol=1e-4, atol=1e-4)
    bf16_store = ActivationStore.open(tmp_path / "bf16")
    bf16 = bf16_store.read_rows("layers.2.sae", rows)
    same = ((bf16 != 0) == (fp32 != 0)).all(axis=1)
    assert same.mean() > 0.8
    np.testing.assert_allclose(bf16[same], fp32[same], rtol=3e-2, atol=3e-2)
    assert bf16_store.manifest["config"]["precision"] == "bf16"
    assert "precision" not in ActivationStore.open(tmp_path / "fp32").manifest["config"]
