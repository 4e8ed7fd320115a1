"""Device and dtype resolution, and a bf16 model feeding a bf16 store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_cli.errors import UsageError
from musicsae_cli.runtime import resolve_device, resolve_dtype, seed_everything


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_dtypes_and_seed():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("fp16") is torch.float16
    assert resolve_dtype("float32") is torch.float32
    with pytest.raises(UsageError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))


@pytest.mark.slow
def test_bf16_model_into_bf16_store(concept_set, tmp_path):
    from musicsae_cli.extract.audio import extract_audio
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.store import ActivationStore

    base = {"model": "tiny-musicgen", "device": "cpu", "hookpoints": "layers.2"}
    extract_audio(concept_set, tmp_path / "f32", ExtractConfig(**base, store_dtype="float32"))
    extract_audio(concept_set, tmp_path / "b16", ExtractConfig(**base, dtype="bf16", store_dtype="bfloat16"))
    a, b = ActivationStore.open(tmp_path / "f32"), ActivationStore.open(tmp_path / "b16")
    assert b.dtype == "bfloat16" and b.manifest["model"]["dtype"] == "bfloat16" and a.n_rows == b.n_rows
    x, y = (s.read_rows("layers.2", np.arange(s.n_rows)) for s in (a, b))
    # EnCodec runs in fp32 either way, so the codes agree and only the decoder's bf16 rounding remains
    rel = np.linalg.norm(x - y) / np.linalg.norm(x)
    assert 0 < rel < 0.02
