"""Audio-prompt continuation in the adapter: the prompt leads the codes, teacher forcing reproduces both streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_cli.config import configs_dir, resolve_config
from musicsae_cli.errors import UsageError
from musicsae_cli.steering.config import SteerGenerateConfig, SteerSweepConfig

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)


def test_continuation_matches_teacher_forcing(tiny_adapter):
    t = np.arange(int(0.3 * 32000)) / 32000
    prompt = tiny_adapter.encode([(0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)])[0]  # (4, 15)
    texts = ["jazz piano", "rock drums"]
    gen = tiny_adapter.generate(texts, 0.6, ["layers.1", "layers.3"], seed=3, prompt_codes=prompt)
    assert gen.tokens.shape == (2, 4, 30) and gen.prompt_frames == 15
    np.testing.assert_array_equal(gen.tokens[:, :, :15], np.stack([prompt.numpy()] * 2))
    assert not np.array_equal(gen.tokens[0, :, 15:], gen.tokens[1, :, 15:])  # the continuations differ
    codes = [torch.from_numpy(c) for c in gen.tokens]
    for stream, stream_texts in (("cond", texts), ("uncond", [None, None])):
        forced = tiny_adapter.code_activations(codes, ["layers.1", "layers.3"], stream_texts)
        for b in range(2):
            for h in ("layers.1", "layers.3"):
                torch.testing.assert_close(forced[b][h], gen.acts[stream][h][b], rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="the audio prompt is 15 frames, not shorter than the 15 frames requested"):
        tiny_adapter.generate(texts, 0.3, [], prompt_codes=prompt)


def test_every_steer_preset_validates(monkeypatch):
    monkeypatch.delenv("MUSICSAE_CONFIG_DIR", raising=False)
    presets = sorted((configs_dir() / "steer").glob("*.yaml"))
    assert {"probe", "sae-latent", "sweep", "tiny"} <= {p.stem for p in presets}
    for path in presets:
        model = SteerSweepConfig if path.stem.startswith("sweep") else SteerGenerateConfig
        resolve_config(model, "steer", path.stem)
