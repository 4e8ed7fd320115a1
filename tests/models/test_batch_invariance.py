"""The batch size never changes what extraction stores (issue 12, item 8).

EnCodec run on a batch differs from EnCodec run on one item by about 1e-7, which flips near-tie codebook choices;
many windows of harmonic audio with noise have such ties. The codes must be identical at every batch size, and
the stored rows equal to float rounding (the decoder pass is batched, with right padding).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsae_cli.extract.audio import extract_audio
from musicsae_cli.extract.config import ExtractConfig
from musicsae_cli.store import ActivationStore

SR = 32000
HOOKS = "layers.0,layers.3"
ATOL = 1e-5  # the decoder's batched matmuls differ by about 2e-7 between batch sizes


def _melody(seconds: float, seed: int) -> np.ndarray:
    """A three-harmonic melody (a new note every 0.25 s) with a little noise: many near-tie codes."""
    rng = np.random.default_rng(seed)
    n, note = int(seconds * SR), SR // 4
    freqs = 110 * 2 ** (rng.integers(0, 36, -(-n // note)) / 12)
    phase = 2 * np.pi * np.cumsum(np.repeat(freqs, note)[:n]) / SR
    return (0.2 * sum(np.sin(h * phase) / h for h in (1, 2, 3)) + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def windows() -> list[np.ndarray]:
    """Twelve 1 s windows plus two of another length (so batches mix lengths, as the last windows of files do)."""
    return [_melody(1.0, s) for s in range(12)] + [_melody(0.62, 20 + s) for s in range(2)]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> str:
    """Three files of 4.3 s at the model's rate: 1 s windows, each file's last one shorter."""
    root = tmp_path_factory.mktemp("melodies")
    for s in range(3):
        sf.write(str(root / f"m{s}.wav"), _melody(4.3, 100 + s), SR)
    return str(root)


def cfg(**kw) -> ExtractConfig:
    return ExtractConfig(**{"model": "tiny-musicgen", "device": "cpu", "hookpoints": HOOKS, "window_s": 1.0,
                            "store_dtype": "float32", **kw})


def _in_batches(adapter, windows, size):
    return [c for i in range(0, len(windows), size) for c in adapter.encode(windows[i:i + size])]


@pytest.mark.slow
def test_codes_are_identical_at_every_batch_size(tiny_adapter, windows):
    encoder = tiny_adapter.model.audio_encoder
    with torch.inference_mode():  # reference: transformers' EnCodec on each window alone
        alone = [encoder.encode(torch.from_numpy(w)[None, None]).audio_codes[0, 0] for w in windows]
    for size in (1, 3, 4):
        codes = _in_batches(tiny_adapter, windows, size)
        assert len(codes) == len(alone)
        for i, (got, ref) in enumerate(zip(codes, alone, strict=True)):
            assert got.shape == ref.shape and torch.equal(got, ref), f"window {i} at batch size {size}"


def _rows_by_item(store: ActivationStore, hookpoint: str) -> dict[str, np.ndarray]:
    out = {}
    for item in store.items().to_pylist():
        rows = np.arange(item["row_start"], item["row_start"] + item["n_frames"])
        out[item["item_id"]] = store.read_rows(hookpoint, rows)
    return out


def _assert_same_store(a: ActivationStore, b: ActivationStore) -> None:
    assert a.n_items == b.n_items and a.n_rows == b.n_rows
    for hookpoint in HOOKS.split(","):
        rows_a, rows_b = _rows_by_item(a, hookpoint), _rows_by_item(b, hookpoint)
        assert sorted(rows_a) == sorted(rows_b)
        for item_id, x in rows_a.items():
            np.testing.assert_allclose(rows_b[item_id], x, rtol=0, atol=ATOL, err_msg=f"{item_id} {hookpoint}")


@pytest.fixture(scope="module")
def store_b1(tiny_adapter, audio_dir, tmp_path_factory) -> ActivationStore:
    out = tmp_path_factory.mktemp("b1") / "store"
    extract_audio(audio_dir, out, cfg(batch_size=1), adapter=tiny_adapter)
    return ActivationStore.open(out)


def test_stores_at_batch_sizes_1_and_4_are_equal_row_for_row(tiny_adapter, audio_dir, store_b1, tmp_path):
    extract_audio(audio_dir, tmp_path / "b4", cfg(batch_size=4), adapter=tiny_adapter)
    store_b4 = ActivationStore.open(tmp_path / "b4")
    assert store_b1.n_items == 15  # 3 files x 5 windows (4 of 1 s, one of 0.3 s)
    _assert_same_store(store_b1, store_b4)


@pytest.mark.slow
def test_resume_at_another_batch_size_equals_an_uninterrupted_run(tiny_adapter, audio_dir, store_b1, tmp_path,
                                                                  monkeypatch, interrupt_on_call):
    restore = interrupt_on_call(tiny_adapter, "audio_activations", 3)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):  # ~one item per shard, so the first batches commit
        extract_audio(audio_dir, part, cfg(batch_size=4, shard_mb=0.01), adapter=tiny_adapter)
    committed = ActivationStore.open(part, allow_incomplete=True).n_items
    restore()
    res = extract_audio(audio_dir, part, cfg(batch_size=3, shard_mb=0.01), adapter=tiny_adapter)
    assert 0 < committed < 15 and res["windows_written"] == 15 - committed
    _assert_same_store(store_b1, ActivationStore.open(part))
