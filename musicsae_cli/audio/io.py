"""Load any common audio format as float32, resample, mix down; write wav atomically.

soundfile (libsndfile) decodes wav/flac/ogg/mp3 and seeks, so offset/duration reads never decode the whole
file; soxr does the resampling. Arrays are channels-first: (C, N), or (N,) after a mono mix-down.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")


class NonFiniteAudioError(AudioError):
    """Decoded samples include NaN or +/-Inf (float files can hold them): bad input, like a corrupt file.

    `reason` is the message without the path, for the skipped-files lists that already name the file.
    """

    def __init__(self, path, seconds: float):
        self.reason = f"non-finite samples (NaN/Inf) at {seconds:.2f} s"
        super().__init__(f"{path}: {self.reason}", "re-export the audio without NaN/Inf samples, or leave the "
                                                   "file out")


def check_finite(frames: np.ndarray, path, sample_rate: int, first_frame: int = 0) -> None:
    """NonFiniteAudioError naming the time of the first NaN/Inf in `frames` (frames on axis 0, e.g. (N, C)).

    `first_frame` is the file position of frames[0], so the time is in the file's own seconds.
    """
    # a float64 sum is NaN/Inf exactly when some sample is (float32 magnitudes cannot overflow it): one pass,
    # no temporary array, for the common case of clean audio
    if frames.size == 0 or np.isfinite(np.sum(frames, dtype=np.float64)):
        return
    bad = ~np.isfinite(frames.reshape(frames.shape[0], -1)).all(axis=1)
    raise NonFiniteAudioError(path, (first_frame + int(np.argmax(bad))) / sample_rate)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of an audio file; AudioError when missing or undecodable."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}", "check the path (relative paths are resolved "
                         "against the manifest's folder)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises its own error types
        raise AudioError(f"cannot decode audio {path}: {short_error(exc)}", "is it a wav/flac/ogg/mp3 file?") from exc
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = True,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode `path` to float32; returns (audio, rate): (N,) when `mono`, else (C, N).

    `sample_rate` resamples (None keeps the file's rate); `offset_s`/`duration_s` select a span by seeking.
    NaN/Inf samples in the span read are bad input: NonFiniteAudioError (an AudioError), before any resampling
    spreads them.
    """
    import soundfile as sf

    info = audio_info(path)
    if offset_s < 0 or (duration_s is not None and duration_s < 0):
        raise AudioError(f"negative offset or duration for {path}", "use offset_s >= 0 and duration_s >= 0")
    start = int(round(offset_s * info.sample_rate))
    stop = info.frames if duration_s is None else min(info.frames, start + int(round(duration_s * info.sample_rate)))
    try:
        with sf.SoundFile(str(path)) as fh:
            if start:
                fh.seek(min(start, info.frames))
            data = fh.read(max(0, stop - start), dtype="float32", always_2d=True)  # (N, C)
    except Exception as exc:
        raise AudioError(f"cannot decode audio {path}: {short_error(exc)}",
                         "the file may be truncated or corrupt") from exc
    check_finite(data, path, info.sample_rate, start)
    audio = np.ascontiguousarray(data.T)  # (C, N)
    if mono:
        audio = audio.mean(axis=0)
    rate = info.sample_rate
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return audio, rate


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample (N,) or (C, N) float audio with soxr's high-quality filter."""
    import soxr

    if orig_sr == target_sr or audio.shape[-1] == 0:
        return audio.astype(np.float32, copy=False)
    if audio.ndim == 1:
        return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    # soxr takes (N, C)
    return np.ascontiguousarray(soxr.resample(audio.T, orig_sr, target_sr, quality="HQ").T, dtype=np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write (N,) or (C, N) float audio as wav, atomically (a crash never leaves a truncated file)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(audio, dtype=np.float32)
    data = data.T if data.ndim == 2 else data  # soundfile wants (N, C)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(data, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def skip_unusable(path, reason: str, strict: bool, skipped: list, error: AudioError | None = None) -> None:
    """An unusable file: with `strict` raise (the original `error` if given); else warn and list it in `skipped`.

    An `error` that carries a path-free `reason` (NonFiniteAudioError) is listed with that reason.
    """
    reason = getattr(error, "reason", None) or reason
    if strict:
        raise error or AudioError(f"{path}: {reason}", "fix or remove the file, or drop --strict to skip it")
    logging.getLogger("musicsae").warning("skipping %s: %s", path, reason)
    skipped.append((str(path), reason))


def peak_dbfs(audio: np.ndarray) -> float:
    """Peak level in dBFS (-inf for digital silence)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return float("-inf") if peak == 0.0 else 20.0 * float(np.log10(peak))


def short_error(exc: Exception) -> str:
    """The first line of an exception's message (or its type name)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
