"""The interface every model family implements (MusicGen now; RAVE, token LMs, any module later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EditContext:
    """Where an edited block output sits: the decoder positions of its sequence axis and the batch layout.

    Passed to edits that declare `needs_context = True` (see `contextual`). During guided generation the batch
    is doubled: rows [:batch] are the conditional stream, rows [batch:] the unconditional one.
    """

    start: int  # absolute decoder position of h[:, 0], counted from what the decoder was fed (models/positions.py)
    length: int  # positions in this pass: the prefill, then 1 per generation step
    batch: int  # items per stream
    guided: bool  # classifier-free guidance doubled the batch

    @property
    def positions(self) -> range:
        """Absolute decoder positions of h[:, 0 .. length-1]."""
        return range(self.start, self.start + self.length)

    def rows(self, stream: str) -> slice:
        """Rows of `stream` ("cond", "uncond" or "both"); without guidance every row is the one stream."""
        if stream == "both" or not self.guided:
            return slice(None)
        if stream == "cond":
            return slice(0, self.batch)
        if stream == "uncond":
            return slice(self.batch, 2 * self.batch)
        raise ValueError(f"unknown stream {stream!r}")


def contextual(fn: Callable) -> Callable:
    """Mark `fn(h, ctx)` as an edit that takes an EditContext as well as the block output."""
    fn.needs_context = True
    return fn


@dataclass
class GenerationOutput:
    """Generated audio with the activations captured while generating it."""

    audio: np.ndarray  # (B, C, N) float32 at the adapter's sample rate
    codes: np.ndarray | None  # (B, K, T) token codes, where the model has them
    acts: dict[str, dict[str, Any]]  # stream ("cond"/"uncond") -> hookpoint -> tensor (B, T, d), frame-aligned
    n_frames: int
    settings: dict = field(default_factory=dict)
    prompt_frames: int = 0  # leading frames of `codes`/`audio` that came from an audio prompt


class ModelAdapter(ABC):
    """A model behind hookpoint names: audio in, frame-aligned activations out; generation with capture."""

    family: str = ""
    model_id: str = ""
    revision: str | None = None
    position_convention: str = ""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Audio sample rate the model expects (Hz)."""

    @property
    @abstractmethod
    def frame_rate(self) -> float:
        """Activation rows per second of audio."""

    @property
    def hop_length(self) -> int:
        """Audio samples per activation row."""
        return int(round(self.sample_rate / self.frame_rate))

    @property
    @abstractmethod
    def hookpoint_widths(self) -> dict[str, int]:
        """Every hookpoint the model offers, with its width."""

    @abstractmethod
    def resolve_hookpoints(self, spec: str | list[str]) -> list[str]:
        """Expand a hookpoint spec (names, ranges, `all`); UsageError before any work when invalid."""

    @abstractmethod
    def n_frames(self, n_samples: int) -> int:
        """Activation rows the model produces for `n_samples` of audio."""

    @abstractmethod
    def audio_activations(self, audio: list[np.ndarray], hookpoints: list[str],
                          texts: list[str | None] | None = None) -> list[dict[str, Any]]:
        """Per item, hookpoint -> (n_frames, d) tensor for mono audio at `sample_rate` (frames aligned)."""

    @abstractmethod
    def intervene(self, edits: dict[str, Callable]) -> AbstractContextManager[None]:
        """While active, each hookpoint's output h is replaced by edits[hookpoint](h) in every forward pass
        (teacher forcing and generation alike); captures see the edited value. Removed on exit.

        An edit with a truthy `needs_context` attribute (see `contextual`) is called as fn(h, EditContext)."""

    @abstractmethod
    def generate(self, texts: list[str | None], duration_s: float, hookpoints: list[str], **options) \
            -> GenerationOutput:
        """Generate audio for each prompt, capturing the hookpoints at every generated frame."""

    def describe(self) -> dict:
        """Model facts recorded in every store manifest."""
        return {"family": self.family, "id": self.model_id, "revision": self.revision,
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "n_hookpoints": len(self.hookpoint_widths)}
