"""The `yue` family: causal language models over audio-codec tokens (YuE and any LLaMA-like LM with a token layout).

YuE (stage 1, `m-a-p/YuE-s1-7B-anneal-en-cot`; stage 2, `m-a-p/YuE-s2-1B-general`) is a LLaMA checkpoint loaded
with `AutoModelForCausalLM`. Its audio tokens are `audio_offset + k * codebook_size + code` for codebook k of its
codec (xcodec: 12 codebooks of 1024 codes, 50 frames per second, 16 kHz); text ids come first. Stage 1 reads and
writes codebook 0 only, the two tracks interleaved frame by frame (vocal, instrumental, vocal, ...: 100 tokens per
second) between the start-of-audio token and `<xcodec>` before them and the end-of-audio token after. The token
layout is a small config (`TokenLayout`): YuE's by default, any other through the model option `layout` or a
`musicsae_layout.json` beside the checkpoint.

Input: code files (capability `sequences`), `.npy` of shape (tracks, frames) or (tracks, codebooks, frames), or
`.npz` with one array per track name. Codebook 0 is what stage 1 reads; codes must lie in [0, codebook_size). With
the codec loaded (yue_codec: an X-Codec through transformers), audio goes in too: the stems of `data split` (one
file per track: vocals -> vocal, instrumental) or, for a one-track layout, audio files, encoded to those codes; and
generated codes come out as audio. With a text prompt (genre tags and lyrics; see yue_text) its ids come first,
laid out as YuE's stage 1 reads its first segment.
Teacher forcing feeds `[prompt ids] + prefix + interleaved codes + suffix` in one pass; the row of frame t of track
j is the residual stream at the position of that track's token of frame t (the hidden state after reading it), so
each item stores tracks x frames rows, frame-major, labelled `track`, with the store's `frame` the codec frame (each
frame once per track) at time frame / frame_rate.
Hookpoints `layers.N`: the output of decoder layer N (the residual stream, before the final norm).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UsageError
from .base import EditContext, ModelAdapter, Sequence
from .hookpoints import layer_index, layer_name, parse_hookpoints
from .yue_codec import Codec, find_codec, from_pretrained, load_codec
from .yue_layout import LAYOUT_FILE, SUFFIXES, TokenLayout, read_codes, read_layout
from .yue_settings import TokenSampling
from .yue_text import PromptTokenizer, find_tokenizer

TINY_NAME = "tiny-yue"
HUB_IDS = ("m-a-p/YuE-s1-7B-anneal-en-cot", "m-a-p/YuE-s2-1B-general")
POSITION_CONVENTION = ("row (frame t, track j) = the residual stream at the position of track j's token of frame "
                       "t in [prompt ids] + prefix + interleaved codes + suffix (the hidden state after reading that "
                       "token); rows are frame-major; time = frame / frame_rate")


class YueAdapter(ModelAdapter):
    """A causal LM over audio-codec tokens, read from code files (see the module doc)."""

    family = "yue"
    position_convention = POSITION_CONVENTION
    settings_model = TokenSampling
    capabilities = frozenset({"tokens", "sequences", "intervene", "generate"})
    sequence_suffixes = SUFFIXES

    def __init__(self, model, model_id: str, layout: TokenLayout, *, revision: str | None = None, device=None,
                 dtype=None, fingerprint: str | None = None, tokenizer: PromptTokenizer | None = None,
                 codec: Codec | None = None):
        import torch

        from ..audio.io import AUDIO_EXTENSIONS
        from .identity import weights_fingerprint

        self.model, self.model_id, self.layout, self.revision = model, model_id, layout, revision
        self.tokenizer, self.codec = tokenizer, codec
        self.text_prompts = tokenizer is not None  # prompts (genre, lyrics) need the tokenizer
        self.reads_stems = codec is not None  # audio in: one stem file per track, through the codec
        if codec is not None and len(layout.tracks) == 1:  # a one-track layout reads audio files as they are
            self.sequence_suffixes = SUFFIXES + tuple(AUDIO_EXTENSIONS)
        self._device = device or torch.device("cpu")
        self._dtype = dtype or torch.float32
        self.blocks = _decoder_layers(model)
        config = model.config
        self.hidden_size = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        self.max_positions = layout.max_positions or int(getattr(config, "max_position_embeddings", 0) or 0) or None
        self.fingerprint = fingerprint or weights_fingerprint(model)
        self._edits: dict = {}
        import inspect

        # transformers 5.2x renamed the KV cache argument past_key_values -> cache (the old name is deprecated)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        if self.vocab_size < layout.needs_vocab:
            raise UsageError(f"model '{model_id}' has a vocabulary of {self.vocab_size} ids, but the token layout "
                             f"needs {layout.needs_vocab} (audio ids from {layout.audio_offset}, {layout.codebooks} "
                             f"codebooks of {layout.codebook_size})", "check the checkpoint, or describe its "
                             f"tokens with the model option layout (or {LAYOUT_FILE} beside it)")
        reserved = min(layout.audio_offset, *layout.prefix, *layout.suffix)
        if tokenizer is not None and tokenizer.size > reserved:
            raise UsageError(f"tokenizer {tokenizer.source} has {tokenizer.size} pieces, overlapping the layout's "
                             f"special and audio ids from {reserved}", "pass the model's own text tokenizer")

    # ---- facts ----
    @property
    def device(self):
        return self._device

    @property
    def dtype(self):
        return self._dtype

    @property
    def sample_rate(self) -> int:
        return self.layout.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.layout.frame_rate

    @property
    def hookpoint_widths(self) -> dict[str, int]:
        return {layer_name(i): self.hidden_size for i in range(len(self.blocks))}

    def resolve_hookpoints(self, spec: str | list[str]) -> list[str]:
        return parse_hookpoints(spec, len(self.blocks))

    def n_frames(self, n_samples: int) -> int:
        return int(n_samples * self.frame_rate // self.sample_rate)

    def describe(self) -> dict:
        return {**super().describe(), "fingerprint": self.fingerprint, "hidden_size": self.hidden_size,
                "n_layers": len(self.blocks), "vocab_size": self.vocab_size, "layout": self.layout.model_dump(),
                "tracks": list(self.layout.tracks), "max_positions": self.max_positions,
                "tokenizer": self.tokenizer.describe() if self.tokenizer else None,
                "codec": self.codec.describe() if self.codec else None,
                "dtype": str(self.dtype).replace("torch.", "")}

    # ---- inputs ----
    def read_sequence(self, path, text: str | None = None, stems: dict | None = None) -> Sequence:
        """A code file as (tracks, frames) codes of the layout's codebook, with a row per frame per track, read
        after the ids of `text` (a YuE prompt) when given. With the codec: an item's `stems` (stem name -> audio
        file, one per track) or, for a one-track layout, an audio file, encoded to those codes."""
        from ..audio.io import AUDIO_EXTENSIONS

        source: dict = {}
        if stems is not None or Path(path).suffix.lower() in AUDIO_EXTENSIONS:
            codes, source = self.encode_stems(stems if stems is not None else {self.layout.tracks[0]: path})
        else:
            codes = read_codes(path, self.layout)
        prompt, meta = self.check_prompt(text)
        n_tracks, n_frames = codes.shape
        fixed = len(prompt) + len(self.layout.prefix) + len(self.layout.suffix)
        if self.max_positions and fixed + n_tracks * n_frames > self.max_positions:
            room = (self.max_positions - fixed) // n_tracks
            what = f"a {len(prompt)}-token prompt and " if prompt else ""
            raise InputError(f"{path}: {what}{n_frames} frames of {n_tracks} tracks make "
                             f"{fixed + n_tracks * n_frames} tokens, longer than the model's context of "
                             f"{self.max_positions}", f"cut the file to at most {room} frames")
        frames = np.repeat(np.arange(n_frames), n_tracks)
        tracks = np.tile(np.asarray(self.layout.tracks, dtype=object), n_frames)
        return Sequence(codes, n_tracks * n_frames, {"track": tracks.tolist()}, frames / self.frame_rate,
                        frames=frames, item_meta={"codec_frames": int(n_frames), **source, **meta},
                        text=text or None)

    def encode_stems(self, stems: dict) -> tuple[np.ndarray, dict]:
        """(tracks, frames) codes of an item's stem files through the codec: track t reads the stem named t (or
        t + "s": vocal <- vocals, as `data split` names them); stems are cut to the shortest. Also the stem file of
        each track, recorded with the item."""
        from ..audio.io import load_audio

        if self.codec is None:
            raise UsageError(f"model '{self.model_id}' reads audio through its codec, which is not loaded",
                             "pass the codec with --set model_options.codec=DIR (an X-Codec), or extract from "
                             "code files")
        chosen = {}
        for track in self.layout.tracks:
            name = next((n for n in (track, track + "s") if n in stems), None)
            if name is None:
                raise InputError(f"no stem for track {track} (stems: {', '.join(sorted(stems)) or 'none'})",
                                 "separate the audio with musicsae data split --two-stems vocals")
            chosen[track] = stems[name]
        audio = [load_audio(chosen[t], sample_rate=self.layout.sample_rate)[0] for t in self.layout.tracks]
        n = min(len(a) for a in audio)
        codes = self.codec.encode([a[:n] for a in audio])
        frames = min(len(c) for c in codes)
        if frames == 0:
            raise InputError(f"{chosen[self.layout.tracks[0]]}: too short for one codec frame",
                             f"give at least {1 / self.layout.frame_rate:g} s of audio")
        return np.stack([c[:frames] for c in codes]), {f"{t}_path": str(chosen[t]) for t in self.layout.tracks}

    def prompt_ids(self, text: str | None) -> tuple[list[int], dict]:
        """The ids before the layout's prefix for a prompt (none without one) and the facts recorded with it."""
        if not text:
            return [], {}
        if self.tokenizer is None:
            raise UsageError(f"model '{self.model_id}' has no text tokenizer, so it cannot read the prompt",
                             "pass YuE's tokenizer.model (mm_tokenizer_v0.2_hf) with --set "
                             "model_options.tokenizer=PATH, or put it beside the checkpoint")
        return self.tokenizer.prompt_ids(text)

    def check_prompt(self, text: str | None) -> tuple[list[int], dict]:
        """prompt_ids, refusing a prompt that leaves no room for a frame of every track in the context."""
        prompt, meta = self.prompt_ids(text)
        need = len(prompt) + len(self.layout.prefix) + len(self.layout.tracks) + len(self.layout.suffix)
        if prompt and self.max_positions and need > self.max_positions:
            raise UsageError(f"the prompt is {len(prompt)} tokens: with the layout's prefix, suffix and one frame "
                             f"it is longer than the model's context of {self.max_positions}",
                             "shorten the prompt (genre tags, lyrics)")
        return prompt, meta

    def input_ids(self, codes: np.ndarray, text: str | None = None) -> np.ndarray:
        """[prompt ids] + prefix + codes interleaved frame by frame (frame-major, tracks in order) + suffix."""
        body = self.layout.token(np.asarray(codes, dtype=np.int64)).T.reshape(-1)  # (frames * tracks,)
        return np.concatenate([np.asarray(self.prompt_ids(text)[0] + list(self.layout.prefix), np.int64), body,
                               np.asarray(self.layout.suffix, np.int64)])

    # ---- running ----
    def sequence_activations(self, sequences: list[Sequence], hookpoints: list[str]) -> list[dict[str, Any]]:
        return self.token_activations([s.tokens for s in sequences], hookpoints, [s.text for s in sequences])

    def token_activations(self, tokens, hookpoints, texts=None):
        """Per item of (tracks, frames) codes (after its prompt, if any), hookpoint -> (frames * tracks, d)
        float32 rows (frame-major)."""
        import torch

        names = self.resolve_hookpoints(list(hookpoints))
        texts = list(texts) if texts is not None else [None] * len(tokens)
        out = []
        for codes, text in zip(tokens, texts, strict=True):
            codes = np.asarray(codes)
            ids = torch.from_numpy(self.input_ids(codes, text))[None].to(self.device)
            start = int(ids.shape[1]) - codes.size - len(self.layout.suffix)
            rows = slice(start, start + codes.size)
            got = self._run(ids, names)
            out.append({n: got[n][0, rows].float() for n in names})
        return out

    def _run(self, ids, names: list[str]) -> dict:
        """One forward pass of input ids (B, T) with the active edits; {hookpoint: (B, T, d)} captured."""
        import torch

        from .hooks import scoped_hooks

        captured: dict = {}
        state = {"ctx": EditContext(start=0, length=int(ids.shape[1]), batch=int(ids.shape[0]))}
        regs = []
        for name, fn in self._edits.items():
            regs.append((self.blocks[layer_index(name)], "forward", edit_hook(fn, state), False))
        for name in names:
            regs.append((self.blocks[layer_index(name)], "forward", _capture_hook(name, captured), False))
        with torch.inference_mode(), scoped_hooks(regs):
            self.model(input_ids=ids, use_cache=False)
        return captured

    def generate(self, texts, duration_s, hookpoints, *, seed=0, streams="both", prompt_audio=None, settings=None):
        """Sample `duration_s` of codes per batch row after its prompt's ids (see yue_text; none for an empty
        prompt) and the layout's prefix, one token at a time with a KV cache, restricted to the audio ids of the
        layout's codebook; the tracks alternate frame by frame as in teacher forcing. Each generated token is fed
        once more, so its row is captured exactly as teacher forcing captures it. Rows with the same prompt are
        sampled together, groups one after another from one seeded generator. Returns tokens (B, tracks, frames)
        and acts {"main": {hookpoint: (B, tracks * frames, d)}}; with a codec that decodes, audio (B, 1, N) is the
        tracks' codes decoded and summed."""
        from .yue_generate import generate

        return generate(self, texts, duration_s, hookpoints, seed=seed, prompt_audio=prompt_audio, settings=settings)

    @contextmanager
    def intervene(self, edits: dict):
        """While active, layers.N's output h (batch, seq, d) is replaced by edits[name](h) (or fn(h, ctx) with
        `needs_context`; positions count from the first token fed, prefix included)."""
        expanded = {n: fn for key, fn in edits.items() for n in self.resolve_hookpoints(key)}
        previous, self._edits = self._edits, {**self._edits, **expanded}
        try:
            yield
        finally:
            self._edits = previous


def _decoder_layers(model) -> list:
    """The decoder layers of a causal LM: `model.model.layers` (LLaMA and kin), else the longest ModuleList."""
    import torch

    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers):
        return list(layers)
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise UsageError("the model has no decoder layers to hook", "load a LLaMA-like causal LM")
    return list(max(lists, key=len))


def first_output(output):
    return output[0] if isinstance(output, tuple) else output


def _capture_hook(name: str, captured: dict):
    def hook(module, args, output):
        captured[name] = first_output(output).detach()
    return hook


def edit_hook(fn, state: dict):
    """A forward hook applying edit `fn` to a layer's output, with state["ctx"] (the current pass's EditContext)
    when fn has `needs_context`."""
    takes_ctx = bool(getattr(fn, "needs_context", False))

    def hook(module, args, output):
        h = first_output(output)
        edited = fn(h, state["ctx"]) if takes_ctx else fn(h)
        return (edited, *output[1:]) if isinstance(output, tuple) else edited
    return hook


def claims(name: str) -> bool:
    """tiny-yue, YuE hub ids, and local folders holding a LLaMA-like checkpoint with a token layout file or YuE's
    vocabulary."""
    if name == TINY_NAME or str(name).startswith("m-a-p/YuE"):
        return True
    path = Path(str(name)).expanduser()
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return False
    if (path / LAYOUT_FILE).is_file():
        return True
    try:
        data = json.loads(config.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("model_type") == "llama" and int(data.get("vocab_size", 0)) >= TokenLayout().needs_vocab


def load(name: str, revision: str | None = None, device: str = "auto", dtype: str = "fp32", seed: int = 0,
         **options) -> YueAdapter:
    """tiny-yue (random weights), a save_pretrained folder or a hub id, with its token layout and prompt tokenizer
    (the option `tokenizer`, else tokenizer.model beside the checkpoint; tiny-yue has its own)."""
    from ..runtime import resolve_device, resolve_dtype
    from . import no_options
    from .identity import canonical_id

    options = dict(options)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    if name == TINY_NAME:
        from .tiny_yue import build_tiny_yue, tiny_tokenizer_bytes

        layout = read_layout(options, None)
        tokenizer_file = options.pop("tokenizer", None)
        no_options("yue", {k: v for k, v in options.items() if k != "codec"})
        model = build_tiny_yue(seed)
        model_id = TINY_NAME
        tokenizer = (PromptTokenizer.from_bytes(tiny_tokenizer_bytes(), "tiny-yue", layout.prompt_template,
                                                layout.segment_start) if tokenizer_file is None else None)
        codec_spec = options.pop("codec", None)
    else:
        path = Path(name).expanduser()
        folder = path if path.is_dir() else None
        layout = read_layout(options, folder)
        tokenizer_file = find_tokenizer(options.pop("tokenizer", None), folder)
        codec_spec = find_codec(options.pop("codec", None), folder)
        no_options("yue", options)
        model = _from_pretrained(name, revision, torch_dtype)
        model_id = canonical_id(name)
        tokenizer = None
    if tokenizer_file is not None:
        tokenizer = PromptTokenizer.from_file(tokenizer_file, layout.prompt_template, layout.segment_start)
    codec = load_codec(codec_spec, layout, torch_device) if codec_spec else None
    model.to(device=torch_device, dtype=torch_dtype).eval()
    return YueAdapter(model, model_id, layout, revision=revision, device=torch_device, dtype=torch_dtype,
                      tokenizer=tokenizer, codec=codec)


def _from_pretrained(name: str, revision: str | None, dtype):
    from transformers import AutoModelForCausalLM

    return from_pretrained(AutoModelForCausalLM, name, revision, "a causal LM",
                           ("pass a folder written by save_pretrained, a hub id, or tiny-yue",
                            f"pass a complete save_pretrained folder or a reachable hub id such as {HUB_IDS[0]}"),
                           dtype=dtype)


__all__ = ["TINY_NAME", "YueAdapter", "claims", "load"]
