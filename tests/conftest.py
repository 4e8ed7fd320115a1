"""Shared fixtures: everything is built offline in tmp_path (synthesised audio, tiny arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner


def pytest_configure(config):
    config.addinivalue_line("markers", "retrain: retrains a shipped model from its recipe (4 minutes on 2 cores; "
                                       "`make test` runs it, `make test-retrain` runs only it)")


def sine(freq: float = 440.0, seconds: float = 0.5, sr: int = 16000, channels: int = 1, amp: float = 0.5):
    """A sine tone as (N,) or (N, C) float32, the layout soundfile writes."""
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1)


def write_audio(path: Path, data=None, sr: int = 16000, **kw) -> Path:
    """Write audio with soundfile (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), sine(sr=sr, **kw) if data is None else data, sr)
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """A folder of class subfolders: two genres, three short clips each, two clips per track."""
    root = tmp_path / "songs"
    for genre, base in (("jazz", 220.0), ("rock", 330.0)):
        for i in range(3):
            write_audio(root / genre / f"track{i // 2}_part{i % 2}.wav", freq=base * (1 + i / 10))
    return root


@pytest.fixture
def app():
    from musicsae_cli.commands.app import app

    return app


@pytest.fixture(scope="session")
def tiny_adapter():
    """The built-in tiny MusicGen (random weights), loaded once per session."""
    from musicsae_cli.models.musicgen import MusicGenAdapter

    return MusicGenAdapter.load("tiny-musicgen", device="cpu")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny MusicGen written with save_pretrained, for the real from_pretrained path."""
    from musicsae_cli.models.tiny import save_tiny_musicgen

    path = tmp_path_factory.mktemp("models") / "tiny-musicgen"
    save_tiny_musicgen(path)
    return path


@pytest.fixture(scope="session")
def concept_set(tmp_path_factory) -> Path:
    """A small synthesised concept dataset (notes and tempos, 1.5 s clips)."""
    from musicsae_cli.audio.concepts import make_concept_dataset
    from musicsae_cli.audio.synth import SynthConfig

    path = tmp_path_factory.mktemp("data") / "concepts"
    make_concept_dataset(path, SynthConfig(concepts=["notes", "tempos"], timbres=["sine", "piano"],
                                           max_per_concept=3, duration_s=1.5))
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, concept_set, tiny_adapter) -> Path:
    """The concept set extracted with the tiny MusicGen (all 4 layers, float32)."""
    from musicsae_cli.extract.audio import extract_audio
    from musicsae_cli.extract.config import ExtractConfig

    path = tmp_path_factory.mktemp("stores") / "tiny-store"
    extract_audio(concept_set, path, ExtractConfig(model="tiny-musicgen", device="cpu", store_dtype="float32"),
                  adapter=tiny_adapter)
    return path


@pytest.fixture
def interrupt_on_call(monkeypatch):
    """interrupt_on_call(obj, "name", n): obj.name raises KeyboardInterrupt on its n-th call (a Ctrl-C or a kill
    mid-run); returns a function that puts the real one back."""

    def install(obj, name: str, n: int):
        real, calls = getattr(obj, name), {"n": 0}

        def dies(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(obj, name, dies)
        return lambda: monkeypatch.setattr(obj, name, real)

    return install


class Stop(Exception):
    """Raised by stopping_after's trackers: a kill in the middle of a run."""


def stopping_after(task: str, n: int):
    """A progress factory that raises once `task` has advanced past `n` (a kill mid-training)."""
    from contextlib import contextmanager

    @contextmanager
    def factory(description, total=None):
        class Tracker:
            done = 0

            def advance(self, k=1):
                self.done += k
                if description == task and self.done > n:
                    raise Stop(description)
        yield Tracker()

    return factory


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that changes torch's thread count (to pin float rounding) must not change it for the tests after it:
    the built-in random models' weights would differ in their last bits from those of stores made before."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        if before is None:  # first imported by this test: torch's own default
            before = _default_threads()
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _default_threads() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face datasets built offline (tests/audio/test_hf_datasets.py, the README's examples)
SYNTHEORY_PROGRAMS = ((0, "Acoustic Grand Piano", "Piano"), (40, "Violin", "Strings"))


def audio_dataset(columns: dict, features: dict, audio_column: str = "audio"):
    """A datasets.Dataset whose `audio_column` ({bytes, path} dicts) has the Audio feature. Built as a plain struct
    and then cast: encoding through Audio itself needs torchcodec, which cannot be installed here."""
    from datasets import Audio, Dataset, Features, Value

    plain = Features({**features, audio_column: {"bytes": Value("binary"), "path": Value("string")}})
    return Dataset.from_dict(columns, features=plain).cast_column(audio_column, Audio())


def _note(midi: int, program: int, sr: int, seconds: float) -> np.ndarray:
    """A stereo note: harmonics whose weights differ by instrument (program)."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    weights = (1.0, 0.5, 0.25, 0.12) if program == 0 else (1.0, 0.8, 0.6, 0.4)
    x = sum(w * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, w in enumerate(weights) if f0 * (k + 1) < sr / 2)
    x = 0.3 * x / np.abs(x).max() * np.minimum(1.0, (seconds - t) * 20)  # a short release
    return np.stack([x, 0.8 * x], axis=1)


def syntheory_notes(octaves=(3, 4), programs=SYNTHEORY_PROGRAMS, sr: int = 44100, seconds: float = 0.5):
    """SynTheory's `notes` subset in miniature: its columns, WAV bytes in the audio column (44.1 kHz stereo)."""
    import io

    from datasets import Value

    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    cols = {k: [] for k in ("root_note_name", "root_note_pitch_class", "octave", "midi_note_val", "midi_program_num",
                            "midi_program_name", "midi_category", "audio")}
    for num, name, category in programs:
        for octave in octaves:
            for pc, note in enumerate(names):
                midi = 12 * (octave + 1) + pc
                buf = io.BytesIO()
                sf.write(buf, _note(midi, num, sr, seconds), sr, format="WAV", subtype="PCM_16")
                for key, value in (("root_note_name", note), ("root_note_pitch_class", pc), ("octave", octave),
                                   ("midi_note_val", midi), ("midi_program_num", num), ("midi_program_name", name),
                                   ("midi_category", category),
                                   ("audio", {"bytes": buf.getvalue(), "path": f"{note}{octave}_{num}.wav"})):
                    cols[key].append(value)
    features = {"root_note_name": Value("string"), "root_note_pitch_class": Value("int64"),
                "octave": Value("int64"), "midi_note_val": Value("int64"), "midi_program_num": Value("int64"),
                "midi_program_name": Value("string"), "midi_category": Value("string")}
    return audio_dataset(cols, features)


def build_syntheory_repo(root: Path, **kw) -> Path:
    """A local copy of a SynTheory-like dataset repository: README.md declaring the `notes` and `tempos` subsets,
    each a folder of Parquet files (the layout `huggingface-cli download` leaves)."""
    from datasets import Value

    repo = root / "syntheory"
    (repo / "notes").mkdir(parents=True, exist_ok=True)
    (repo / "tempos").mkdir(exist_ok=True)
    syntheory_notes(**kw).to_parquet(str(repo / "notes" / "train-00000-of-00001.parquet"))
    import io

    clicks = []
    for bpm in (60, 120):
        x = np.zeros(22050, np.float32)
        x[:: int(22050 * 60 / bpm)] = 0.8
        buf = io.BytesIO()
        sf.write(buf, x, 22050, format="WAV")
        clicks.append({"bytes": buf.getvalue(), "path": f"{bpm}.wav"})
    audio_dataset({"bpm": [60, 120], "click_config_name": ["woodblock", "woodblock"], "offset_time": [0.0, 0.0],
                   "audio": clicks},
                  {"bpm": Value("int64"), "click_config_name": Value("string"), "offset_time": Value("float64")}
                  ).to_parquet(str(repo / "tempos" / "train-00000-of-00001.parquet"))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: notes\n  data_files:\n  - split: train\n    path: notes/*.parquet\n"
        "- config_name: tempos\n  data_files:\n  - split: train\n    path: tempos/*.parquet\n---\n# SynTheory-like\n")
    return repo
