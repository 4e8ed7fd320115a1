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
