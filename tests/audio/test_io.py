"""Audio I/O: formats, mix-down, channels, resampling, spans, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_cli.audio.io import audio_info, load_audio, peak_dbfs, resample, write_wav
from musicsae_cli.errors import AudioError
from tests.conftest import sine, write_audio


def _dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_formats_decode_to_the_same_tone(tmp_path, ext):
    path = write_audio(tmp_path / f"a.{ext}", sr=32000, seconds=1.0, freq=440.0)
    audio, sr = load_audio(path)
    assert sr == 32000 and audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 32000) < 3000  # lossy codecs pad a little
    assert abs(_dominant_hz(audio, sr) - 440.0) < 2.0


def test_mono_mixdown_and_keep_channels(tmp_path):
    path = write_audio(tmp_path / "st.wav", channels=2, sr=16000)
    stereo, _ = load_audio(path, mono=False)
    mono, _ = load_audio(path)
    assert stereo.shape == (2, 8000) and mono.shape == (8000,)
    np.testing.assert_allclose(mono, stereo.mean(axis=0), atol=1e-6)


def test_resample_keeps_pitch_and_length(tmp_path):
    path = write_audio(tmp_path / "r.wav", sr=44100, seconds=1.0, freq=1000.0)
    audio, sr = load_audio(path, sample_rate=32000)
    assert sr == 32000 and len(audio) == 32000
    assert abs(_dominant_hz(audio, sr) - 1000.0) < 2.0
    stereo = resample(np.stack([audio, audio]), 32000, 16000)
    assert stereo.shape == (2, 16000)


def test_offset_and_duration_seek(tmp_path):
    ramp = np.linspace(-1, 1, 16000, dtype=np.float32)
    path = write_audio(tmp_path / "ramp.wav", data=ramp, sr=8000)
    part, _ = load_audio(path, offset_s=0.5, duration_s=0.25)
    assert len(part) == 2000
    np.testing.assert_allclose(part, ramp[4000:6000], atol=1e-4)
    tail, _ = load_audio(path, offset_s=1.9)
    assert len(tail) == 800


def test_write_wav_roundtrip_and_no_temp_left(tmp_path):
    x = sine(seconds=0.25).astype(np.float32)
    path = write_wav(tmp_path / "out" / "x.wav", np.stack([x, -x]), 16000)
    back, _ = load_audio(path, mono=False)
    np.testing.assert_allclose(back[0], x, atol=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["x.wav"]
    assert audio_info(path).channels == 2 and peak_dbfs(np.zeros(4)) == float("-inf")


def test_missing_and_corrupt_files_raise_audio_error(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(junk)


def _float_wav(path, data, sr):
    """Float32 wav: the one common format that stores NaN and Inf as they are."""
    import soundfile as sf

    sf.write(str(path), data, sr, subtype="FLOAT")
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_an_audio_error_with_their_time(tmp_path, value):
    from musicsae_cli.audio.chunk import read_blocks

    x = sine(seconds=2.0, sr=8000, channels=2)  # (N, 2)
    x[12000, 1] = value  # 1.5 s, second channel only: a mono mix-down must not hide it
    path = _float_wav(tmp_path / "bad.wav", x, 8000)
    for kw in ({}, {"mono": False}, {"sample_rate": 16000}):
        with pytest.raises(AudioError) as err:
            load_audio(path, **kw)
        assert err.value.message == f"{path}: non-finite samples (NaN/Inf) at 1.50 s"
    # a span read reports the time in the file; a span without the bad sample reads fine
    with pytest.raises(AudioError, match=r"at 1\.50 s"):
        load_audio(path, offset_s=1.0, duration_s=0.75)
    clean, _ = load_audio(path, offset_s=0.0, duration_s=1.0)
    np.testing.assert_allclose(clean, x[:8000].mean(axis=1), atol=1e-6)
    # the streaming reader of `data chunk` says the same, whatever the block size
    for block in (1000, 1 << 18):
        with pytest.raises(AudioError, match=r"at 1\.50 s"):
            for _ in read_blocks(path, None, True, block=block):
                pass
