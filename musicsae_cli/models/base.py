"""The interface every model family implements: facts every model states, and capabilities it may offer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CAPABILITIES = {
    "audio": "audio -> frame-aligned activations",
    "tokens": "token sequences -> activations",
    "loss": "a loss on its own inputs",
    "generate": "generation with capture",
    "intervene": "interventions at hookpoints",
    "outputs": "audio -> the model's own outputs",
    "sequences": "sequence files (codes, events) -> activations",
    "audio_embeddings": "audio -> the model's own audio embeddings (for distribution distances)",
    "text_adherence": "text adherence of generated tokens to their prompts",
    "concepts": "learned prompt concepts (textual inversion): new prompt tokens trained on audio",
}


@dataclass(frozen=True)
class EditContext:
    """Where an edited hookpoint output sits: the sequence positions of its time axis and the batch layout.

    Passed to edits that declare `needs_context = True` (see `contextual`). Positions count from the start of what
    the model was fed (the family's position convention maps them to frames). When a family runs several
    generation streams in one batch (`streams`, e.g. ("cond", "uncond")), rows [i*batch:(i+1)*batch] are
    streams[i]; with one stream or none every row is that stream.
    """

    start: int  # absolute position of h[:, 0]
    length: int  # positions in this pass: the whole input, or a prefill then 1 per generation step
    batch: int  # items per stream
    streams: tuple[str, ...] = ()  # the streams stacked along the batch, in order

    @property
    def positions(self) -> range:
        """Absolute positions of h[:, 0 .. length-1]."""
        return range(self.start, self.start + self.length)

    def rows(self, stream: str) -> slice:
        """Rows of `stream` (a name in `streams`, or "both"/"all" for every row)."""
        if stream in ("both", "all") or len(self.streams) < 2:
            return slice(None)
        if stream not in self.streams:
            raise ValueError(f"unknown stream {stream!r}; this pass holds {', '.join(self.streams)}")
        i = self.streams.index(stream)
        return slice(i * self.batch, (i + 1) * self.batch)


def contextual(fn: Callable) -> Callable:
    """Mark `fn(h, ctx)` as an edit that takes an EditContext as well as the hookpoint output."""
    fn.needs_context = True
    return fn


@dataclass
class GenerationOutput:
    """Generated audio with the activations captured while generating it."""

    audio: np.ndarray | None  # (B, C, N) float32 at the adapter's sample rate; None for a model without a codec
    tokens: np.ndarray | None  # (B, ..., T) the model's own discrete tokens, where it has them
    acts: dict[str, dict[str, Any]]  # stream -> hookpoint -> tensor (B, T, d), frame-aligned
    n_frames: int
    settings: dict = field(default_factory=dict)
    prompt_frames: int = 0  # leading frames of `tokens`/`audio` that came from an audio prompt
    lengths: list[int] | None = None  # each row's real length in `tokens` where rows end apart (the rest padding)
    row_frames: Any = None  # (T,) the frame of each captured row where rows are not one per frame (e.g. tracks)
    row_meta: dict[str, Any] = field(default_factory=dict)  # column -> (T,) labels of the captured rows


@dataclass
class Sequence:
    """One input file of a sequence model, read by the family (capability `sequences`): the model's own tokens,
    and what each stored row is (`frame_meta`: a column per row label, e.g. track or pitch; `time_s` where rows
    have a time)."""

    tokens: Any  # the family's own token array
    n_rows: int
    frame_meta: dict[str, Any] = field(default_factory=dict)  # column -> (n_rows,) values
    time_s: Any = None  # (n_rows,) seconds, or None
    frames: Any = None  # (n_rows,) the store's frame number of each row (default 0..n_rows-1)
    item_meta: dict[str, Any] = field(default_factory=dict)  # per-file facts recorded with the item
    text: str | None = None  # the text prompt the tokens are read after (families with text_prompts)


class ModelAdapter(ABC):
    """A model behind hookpoint names. Every adapter states its facts (rates, hookpoints); what else it can do is
    declared in `capabilities` (keys of CAPABILITIES) and asked for with `require`, which fails with one line
    naming what the family can do instead."""

    family: str = ""
    model_id: str = ""
    revision: str | None = None
    position_convention: str = ""
    capabilities: frozenset[str] = frozenset()
    settings_model: type | None = None  # the family's generation settings (a pydantic model), if it generates
    output_audio: bool = False  # its `outputs` are audio (channels, samples) at `sample_rate`
    input_channels: int = 1  # channels the model takes; musicsae feeds a mono mix, duplicated onto each of them
    latent_hookpoint: str | None = None  # an autoencoder's latent, where per-dimension controls apply by default
    noise_seed: int | None = None  # a model drawing random numbers in a pass seeds them with this (set it to vary)
    text_prompts: bool = True  # it reads text prompts (False: it generates, or reads audio, without one)

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
    def device(self):
        import torch

        return torch.device("cpu")

    @property
    def dtype(self):
        import torch

        return torch.float32

    @property
    @abstractmethod
    def hookpoint_widths(self) -> dict[str, int]:
        """Every hookpoint the model offers, with its width."""

    @abstractmethod
    def resolve_hookpoints(self, spec: str | list[str]) -> list[str]:
        """Expand a hookpoint spec (names, ranges, globs, `all`); UsageError before any work when invalid."""

    @abstractmethod
    def n_frames(self, n_samples: int) -> int:
        """Activation rows the model produces for `n_samples` of audio."""

    # ---- capabilities ----
    def can(self, capability: str) -> bool:
        """Whether this model offers `capability` (a key of CAPABILITIES)."""
        return capability in self.capabilities

    def require(self, capability: str, purpose: str) -> None:
        """UsageError unless the model offers `capability`; the message says what the family can do instead."""
        if capability in self.capabilities:
            return
        from ..errors import UsageError

        offered = ", ".join(CAPABILITIES[c] for c in CAPABILITIES if c in self.capabilities) or "nothing else"
        raise UsageError(f"{purpose} needs {CAPABILITIES[capability]}, which model '{self.model_id}' (family "
                         f"{self.family}) does not offer", f"it offers: {offered}")

    def audio_activations(self, audio: list[np.ndarray], hookpoints: list[str],
                          texts: list[str | None] | None = None) -> list[dict[str, Any]]:
        """Per item, hookpoint -> (n_frames, d) tensor for mono audio at `sample_rate` (frames aligned)."""
        self.require("audio", "reading audio")
        raise NotImplementedError

    def tokenize(self, audio: list[np.ndarray]) -> list:
        """The model's own token sequence for each mono item (capability `tokens`)."""
        self.require("tokens", "tokenizing audio")
        raise NotImplementedError

    def token_activations(self, tokens: list, hookpoints: list[str],
                          texts: list[str | None] | None = None) -> list[dict[str, Any]]:
        """Per item, hookpoint -> (n_frames, d) tensor for the model's own tokens (capability `tokens`)."""
        self.require("tokens", "reading token sequences")
        raise NotImplementedError

    sequence_suffixes: tuple[str, ...] = ()  # file suffixes `read_sequence` reads (capability `sequences`)
    reads_stems: bool = False  # `read_sequence` takes an item's stem files (a `data split` output) as its input

    def read_sequence(self, path, text: str | None = None, stems: dict | None = None) -> Sequence:
        """One sequence file (codes, events) as the model's tokens and row labels (capability `sequences`), read
        after the text prompt `text` where the family takes one (`text_prompts`); `stems` (stem name -> audio
        file, from `data split`) for a family that encodes an item's stems into its tokens (`reads_stems`)."""
        self.require("sequences", "reading sequence files")
        raise NotImplementedError

    def check_prompt(self, text: str | None) -> Any:
        """Refuse (UsageError) a text prompt this model cannot read before any input is read; families with text
        prompts override it."""
        from ..errors import UsageError

        if text and not self.text_prompts:
            raise UsageError(f"model '{self.model_id}' (family {self.family}) reads no text prompt as loaded",
                             "drop --text / --text-column; a family that reads prompts may need its tokenizer "
                             "(musicsae model families)")

    def sequence_activations(self, sequences: list[Sequence], hookpoints: list[str]) -> list[dict[str, Any]]:
        """Per sequence, hookpoint -> (n_rows, d) tensor, row i labelled by the sequence's frame_meta."""
        self.require("sequences", "reading sequence files")
        raise NotImplementedError

    def next_token_log_probs(self, tokens: list, texts: list[str | None] | None = None):
        """(log_probs (..., V), targets (...), mask (...)): the model's loss on its own inputs (capability
        `loss`); `mask` keeps the real targets."""
        self.require("loss", "a loss on the model's inputs")
        raise NotImplementedError

    def intervene(self, edits: dict[str, Callable]) -> AbstractContextManager[None]:
        """While active, each hookpoint's output h is replaced by edits[hookpoint](h) in every forward pass
        (teacher forcing and generation alike); captures see the edited value. Removed on exit.

        An edit with a truthy `needs_context` attribute (see `contextual`) is called as fn(h, EditContext)."""
        self.require("intervene", "editing hookpoints")
        raise NotImplementedError

    def outputs(self, audio: np.ndarray) -> np.ndarray:
        """The model's own output for one mono item at `sample_rate` (rows first), with any active edits applied
        (capability `outputs`)."""
        self.require("outputs", "reading the model's outputs")
        raise NotImplementedError

    def read_outputs(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named per-row readings of `outputs` the family knows how to take (e.g. f0 in Hz); {} by default."""
        return {}

    def generation_settings(self, settings: dict | None = None):
        """The family's generation settings from `settings` (defaults filled in); ConfigError for unknown keys."""
        self.require("generate", "generation")
        from ..config import validate

        return validate(self.settings_model, dict(settings or {}))

    def generate(self, texts: list[str | None], duration_s: float, hookpoints: list[str], *, seed: int = 0,
                 streams: str = "both", prompt_audio: np.ndarray | None = None, settings: dict | None = None) \
            -> GenerationOutput:
        """Generate audio for each prompt (None = unconditional), capturing the hookpoints at every generated
        frame; `prompt_audio` (mono, at `sample_rate`) is continued; `settings` are the family's own."""
        self.require("generate", "generation")
        raise NotImplementedError

    def audio_embeddings(self, audio: list[np.ndarray]) -> list[np.ndarray]:
        """Per mono item at `sample_rate`, the model's own audio representation as (frames, d) float32, for
        distribution distances between sets of clips (capability `audio_embeddings`)."""
        self.require("audio_embeddings", "audio embeddings")
        raise NotImplementedError

    def text_log_likelihood(self, tokens: list, texts: list[str | None]) -> np.ndarray:
        """(B,) text adherence of each item's generated tokens: the mean per token of log p(tokens | text) -
        log p(tokens | no text), by teacher forcing (capability `text_adherence`); NaN for an item without text."""
        self.require("text_adherence", "text adherence")
        raise NotImplementedError

    # ---- learned prompt concepts (capability `concepts`) ----
    def add_concepts(self, counts: dict[str, int]) -> dict[str, list[int]]:
        """Add prompt tokens for each concept (name -> number of tokens), so prompts may name it as `<name>`;
        returns name -> its token ids. Every existing weight stays as it is."""
        self.require("concepts", "learned prompt concepts")
        raise NotImplementedError

    def initial_concept_rows(self, n: int, noise: float, generator) -> Any:
        """(n, d) starting embeddings for new tokens: the vocabulary's mean plus `noise` x its std of noise."""
        self.require("concepts", "learned prompt concepts")
        raise NotImplementedError

    def concept_loss(self, tokens, texts: list[str], ids, rows) -> Any:
        """The model's training loss on tokens (B, ...) given prompts `texts`, with the embeddings of token ids
        `ids` taken from `rows` (n, d): a scalar differentiable in `rows` only."""
        self.require("concepts", "learned prompt concepts")
        raise NotImplementedError

    def set_concept_rows(self, ids: list[int], rows) -> None:
        """Write learned rows into the model's embeddings for use (generation, teacher forcing)."""
        self.require("concepts", "learned prompt concepts")
        raise NotImplementedError

    def concept_neighbours(self, rows, k: int = 5) -> list[list[tuple[str, float]]]:
        """The k vocabulary tokens nearest each row (cosine)."""
        self.require("concepts", "learned prompt concepts")
        raise NotImplementedError

    def tokenizer_fingerprint(self) -> str:
        """A hash of the text tokenizer's base vocabulary (learned concepts only fit the tokenizer they were
        learned with)."""
        self.require("concepts", "learned prompt concepts")
        raise NotImplementedError

    def describe(self) -> dict:
        """Model facts recorded in every store manifest."""
        return {"family": self.family, "id": self.model_id, "revision": self.revision,
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "n_hookpoints": len(self.hookpoint_widths)}
