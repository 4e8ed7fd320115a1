"""The trainable tiny EnCodec (models/tiny_codec.py): config, loss, codebook refits, exact resume, pitch scoring.

Everything is seeded and small (a few short clips, a few steps), so the file runs in seconds on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from musicsae_cli.models.tiny_codec import (
    CodecTrainer,
    codec_loss,
    estimate_f0,
    pitch_survival,
    refit_codebooks,
    tiny_codec_config,
)

SR = 32000


def _codec(seed: int = 0):
    from transformers import EncodecModel

    torch.manual_seed(seed)
    return EncodecModel(tiny_codec_config())


def _tones(freqs, seconds: float = 0.4, harmonics: int = 3) -> np.ndarray:
    """(N, samples) harmonic tones (1/h amplitudes) at freqs, peak 0.5."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.stack([sum(np.sin(2 * np.pi * h * f * t) / h for h in range(1, harmonics + 1)) for f in freqs])
    return (0.5 * x / np.abs(x).max(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k,size", [(4, 256), (4, 64), (2, 1024), (8, 128)])
def test_config_derives_the_number_of_codebooks(k, size):
    from transformers import EncodecModel

    cfg = tiny_codec_config(k, size)
    assert cfg.num_quantizers == k and cfg.codebook_size == size and cfg.frame_rate == 50
    assert cfg.chunk_length_s is None and cfg.sampling_rate == SR and cfg.audio_channels == 1
    if (k, size) == (4, 256):
        assert sum(p.numel() for p in EncodecModel(cfg).parameters()) < 1_500_000


@pytest.mark.slow
def test_loss_decreases_over_a_few_dozen_steps():
    torch.set_num_threads(1)
    codec = _codec()
    clips = torch.as_tensor(_tones([220.0, 330.0], seconds=0.2))
    trainer = CodecTrainer(codec, clips, seed=0, batch_size=2, lr=3e-3, autoencoder_steps=30)
    trainer.step()  # the data-dependent init runs at the first step
    with torch.no_grad():
        before, _ = codec_loss(codec, clips, quantized=False)
    for _ in range(30):
        stats = trainer.step()
    with torch.no_grad():
        after, parts = codec_loss(codec, clips, quantized=False)
    assert np.isfinite(stats["loss"]) and set(parts) >= {"stft", "wave_l1", "stft2048"}
    assert float(after) < 0.8 * float(before)


@pytest.mark.slow
def test_second_phase_fits_the_codebooks_once_and_trains_the_decoder_alone():
    """At the switch the codebooks are fitted to the encoder; after it the encoder and codebooks never change (the
    codes `encode` gives are final) while the decoder keeps learning on the quantised latent."""
    torch.set_num_threads(1)
    codec = _codec()
    clips = torch.as_tensor(_tones([196.0, 262.0, 440.0], seconds=0.3))
    trainer = CodecTrainer(codec, clips, seed=1, batch_size=2, lr=2e-3, autoencoder_steps=3, crop_samples=6400)
    for _ in range(3):
        trainer.step()
    random_book = codec.quantizer.layers[0].codebook.embed.clone()
    stats = trainer.step()  # the switch
    assert "codes_used" in stats and not torch.equal(codec.quantizer.layers[0].codebook.embed, random_book)
    frozen = {k: v.clone() for k, v in codec.state_dict().items() if k.startswith(("encoder.", "quantizer."))}
    decoder = {k: v.clone() for k, v in codec.state_dict().items() if k.startswith("decoder.")}
    for _ in range(3):
        trainer.step()
    state = codec.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert any(not torch.equal(state[k], v) for k, v in decoder.items())
    assert trainer.finish() is None  # already fitted: the decoder learned on these codebooks
    # the decoder's input in training is what the model's own encode -> decode pair feeds it
    from musicsae_cli.models.tiny_codec import quantized_latent

    codec.eval()
    with torch.no_grad():
        enc = codec.encode(clips[:, None])
        via_codes = codec.quantizer.decode(enc.audio_codes[0].transpose(0, 1))
        torch.testing.assert_close(quantized_latent(codec, codec.encoder(clips[:, None])), via_codes)


@pytest.mark.slow
def test_a_short_autoencoder_run_still_ends_with_fitted_codebooks():
    codec = _codec()
    clips = torch.as_tensor(_tones([220.0, 330.0], seconds=0.2))
    trainer = CodecTrainer(codec, clips, seed=0, batch_size=2, autoencoder_steps=5)
    trainer.step()
    random_book = codec.quantizer.layers[0].codebook.embed.clone()
    assert trainer.finish() is not None
    assert not torch.equal(codec.quantizer.layers[0].codebook.embed, random_book)


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    torch.set_num_threads(1)
    clips = torch.as_tensor(_tones([196.0, 262.0, 440.0], seconds=0.3))
    kw = dict(seed=3, batch_size=2, lr=2e-3, autoencoder_steps=3, crop_samples=6400)  # resumed after the switch
    straight = CodecTrainer(_codec(), clips, **kw)
    for _ in range(8):
        straight.step()

    first = CodecTrainer(_codec(), clips, **kw)
    for _ in range(4):
        first.step()
    save_file(first.state_dict(), str(tmp_path / "state.safetensors"))  # tensors only
    second = CodecTrainer(_codec(seed=99), clips, **kw)  # different init: everything must come from the state
    second.load_state_dict(load_file(str(tmp_path / "state.safetensors")))
    for _ in range(4):
        second.step()
    a, b = straight.codec.state_dict(), second.codec.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert second.step_count == 8


def test_refit_codebooks_survive_save_and_load(tmp_path):
    from transformers import EncodecModel

    codec = _codec().eval()
    clips = torch.as_tensor(_tones([110.0, 247.0, 523.0, 880.0]))
    info = refit_codebooks(codec, clips, torch.Generator().manual_seed(1))
    assert info["residual_after"][-1] < info["residual_before"][0]
    book = codec.quantizer.layers[0].codebook
    torch.testing.assert_close(book.embed_avg, book.embed * book.cluster_size[:, None])
    assert float(book.cluster_size.sum()) == info["frames"]

    codec.save_pretrained(tmp_path)
    loaded = EncodecModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        codes = codec.encode(clips[:, None]).audio_codes[0]  # (N, K, T)
        codes_loaded = loaded.encode(clips[:, None]).audio_codes[0]
        emb = codec.encoder(clips[:, None]).transpose(1, 2).numpy()  # (N, T, D)
    assert torch.equal(codes, codes_loaded)
    # independent residual nearest-neighbour search in numpy over the written codebooks
    residual = emb.astype(np.float64)
    for k, layer in enumerate(loaded.quantizer.layers):
        embed = layer.codebook.embed.numpy().astype(np.float64)
        idx = ((residual[..., None, :] - embed) ** 2).sum(-1).argmin(-1)  # (N, T)
        assert (idx == codes[:, k].numpy()).mean() > 0.99  # float32 vs float64 ties may differ rarely
        residual = residual - embed[codes[:, k].numpy()]


def test_refit_codebooks_keeps_entries_distinct_on_audio_with_repeated_frames():
    """Silence and steady tones give many identical encoder frames; equal codebook entries would tie for them, and
    which one a matrix product picks would depend on the thread count (other codes on another machine)."""
    codec = _codec().eval()
    tones = _tones([110.0, 220.0])
    clips = torch.as_tensor(np.concatenate([tones, np.zeros_like(tones)]))  # half the clips silent
    with torch.no_grad():
        refit_codebooks(codec, clips, torch.Generator().manual_seed(0))
    for layer in codec.quantizer.layers:
        embed = layer.codebook.embed.double()
        gaps = torch.cdist(embed, embed) + torch.diag(torch.full((len(embed),), float("inf"), dtype=embed.dtype))
        assert float(gaps.min()) > 0, "two codebook entries are equal"


def test_center_latent_keeps_the_codec_s_function_and_centres_its_latent():
    from musicsae_cli.models.tiny_codec import center_latent

    codec = _codec().eval()
    clips = torch.as_tensor(_tones([131.0, 262.0, 523.0]))
    last = codec.encoder.layers[-1].conv
    with torch.no_grad():
        last.bias += 40.0  # a large common offset, as training can leave
        before = codec.decoder(codec.encoder(clips[:, None]))
        removed = center_latent(codec, clips)
        latent = codec.encoder(clips[:, None])
        after = codec.decoder(latent)
    assert removed > 40.0
    assert float(latent.mean(dim=(0, 2)).abs().max()) < 1e-3 * removed
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))


@pytest.mark.slow
def test_pitch_of_raw_audio_matches_known_f0_and_an_independent_estimate():
    from musicsae_cli.audio.synth import SynthConfig, plan, render

    cfg = SynthConfig(concepts=["notes"], timbres=["sine", "piano", "organ", "pluck"], octaves=[3, 4, 5],
                      pitch_classes=["C", "F#", "A"], duration_s=1.0, seed=5)
    rows = plan(cfg)
    audio = np.stack([render(r, cfg) for r in rows])
    f0 = np.array([r["frequency_hz"] for r in rows])
    result = pitch_survival(None, audio, f0)
    assert result["input"]["median_abs_cents"] < 5 and result["input"]["within_50_cents"] == 1.0
    assert result["decoded"] == result["input"]

    # sines: the strongest bin of a long zero-padded FFT, independent of the harmonic-sum estimator
    sines = audio[[r["timbre"] == "sine" for r in rows]]
    spec = np.abs(np.fft.rfft(sines[:, 3200:] * np.hanning(sines.shape[1] - 3200), 1 << 20, axis=1))
    peak = spec.argmax(1) * SR / (1 << 20)
    cents = 1200 * np.log2(estimate_f0(sines[:, 3200:]) / peak)
    assert np.abs(cents).max() < 3


def test_pitch_estimate_sees_a_detuned_tone():
    audio = _tones([220.0 * 2 ** (100 / 1200), 440.0 * 2 ** (-300 / 1200)], seconds=1.0)
    result = pitch_survival(None, audio, np.array([220.0, 440.0]))
    assert 95 < result["input"]["median_abs_cents"] < 305 and result["input"]["within_50_cents"] == 0.0
