"""The `mmt` family: the Multitrack Music Transformer (MMT; Dong et al., ICASSP 2023) as an adapter, and its loader.

MMT reads events of six codes (type, beat, position, pitch, duration, instrument; see mmt_events). Its network is in
mmt_network, its checkpoints (best_model.pt with its train-args.json) are read by mmt_checkpoint, and its generation
is in mmt_generate (settings in mmt_settings).

Hookpoint `layers.{i}` is the residual stream after decoder block i (attention and feed-forward), (T, dim) per song.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, UsageError
from . import mmt_events
from .base import EditContext, ModelAdapter, Sequence
from .hookpoints import layer_index, layer_name, parse_hookpoints
from .hooks import StopForward, scoped_hooks
from .mmt_checkpoint import load_network
from .mmt_generate import MmtGeneration
from .mmt_network import MmtConfig, MmtNetwork
from .mmt_settings import EventSampling

POSITION_CONVENTION = (
    "row t is event t of the sequence fed (row 0 the start-of-song event): the residual stream at input position "
    "t, which has seen events 0..t (causal). Rows are events, not time frames: there is no frame rate; an event's "
    "musical time is in its labels (beat, position in 1/12 beat, time_s from the MIDI file's tempo map). Batch "
    "padding is never stored."
)


def load(name: str, revision: str | None = None, device: str = "auto", dtype: str = "fp32", seed: int = 0,
         **options) -> MmtAdapter:
    """An MMT checkpoint (a best_model.pt file, or a folder with it) as an adapter; options: MmtConfig fields.

    `seed` is accepted for the common loader signature; loading draws no random numbers."""
    from ..runtime import resolve_device, resolve_dtype
    from .identity import canonical_id, weights_fingerprint

    if revision:
        raise UsageError("MMT checkpoints are local files: --revision does not apply", "leave --revision out")
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    model, path, sources = load_network(name, **options)
    adapter = MmtAdapter(model, canonical_id(str(path)), fingerprint=weights_fingerprint(model), sources=sources)
    model.to(device=torch_device, dtype=torch_dtype)
    return adapter


# ---- the adapter ----
class MmtAdapter(MmtGeneration, ModelAdapter):
    """A loaded MMT network with hookpoints `layers.0 .. layers.{L-1}`; it reads MMT event codes (T, 6), not audio.

    Rates: it takes no audio, so `sample_rate`, `frame_rate` and `hop_length` are None (rows are events, not
    frames at a fixed rate) and `n_frames` is a UsageError; an event's time is in its labels (read_events)."""

    family = "mmt"
    position_convention = POSITION_CONVENTION
    capabilities = frozenset({"tokens", "sequences", "intervene", "generate"})
    sequence_suffixes = (".mid", ".midi", ".npy", ".csv")  # MIDI files, or MMT's own note lists
    settings_model = EventSampling
    text_prompts = False  # MMT is unconditional: a song starts from start-of-song (and optional instruments)

    def __init__(self, model: MmtNetwork, model_id: str, revision: str | None = None, *,
                 fingerprint: str | None = None, sources: dict | None = None):
        self.model = model.eval()
        self.config: MmtConfig = model.config
        self.model_id = model_id
        self.revision = revision
        self.fingerprint = fingerprint
        self.sources = dict(sources or {})

    # ---- facts ----
    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    @property
    def sample_rate(self):  # no audio: see the class docstring
        return None

    @property
    def frame_rate(self):  # rows are events, not frames
        return None

    @property
    def hop_length(self):
        return None

    def n_frames(self, n_samples: int) -> int:
        raise UsageError("MMT reads MIDI events, not audio: it has no frames", "read a MIDI file with read_events")

    @property
    def n_layers(self) -> int:
        return self.config.layers

    @property
    def n_tokens(self) -> tuple[int, ...]:
        return self.config.n_tokens

    @property
    def hookpoint_widths(self) -> dict[str, int]:
        return {layer_name(i): self.config.dim for i in range(self.n_layers)}

    def resolve_hookpoints(self, spec: str | list[str]) -> list[str]:
        return parse_hookpoints(spec, self.n_layers)

    def describe(self) -> dict:
        cfg = self.config
        return {**super().describe(), "fingerprint": self.fingerprint, "n_layers": cfg.layers, "hidden_size": cfg.dim,
                "config": asdict(cfg), "config_sources": self.sources, "n_tokens": list(cfg.n_tokens),
                "fields": list(mmt_events.FIELDS), "resolution": mmt_events.RESOLUTION, "symbolic": True,
                "dtype": str(self.dtype).replace("torch.", "")}

    # ---- inputs ----
    def read_events(self, path: str | Path, **kwargs) -> mmt_events.Events:
        """Events of a MIDI file or MMT note list, cut to this model's max_beat and max_seq_len (see mmt_events)."""
        kwargs.setdefault("max_beat", self.config.max_beat)
        kwargs.setdefault("max_seq_len", self.config.max_seq_len)
        return mmt_events.read_events(path, **kwargs)

    def read_sequence(self, path, text: str | None = None, stems: dict | None = None) -> Sequence:
        """A MIDI file or note list as MMT events, one stored row per event labelled with its musical facts (type,
        beat, position, pitch, pitch_class, octave, duration, instrument, program; a note's onset_beats and
        duration_beats, for piano rolls) at its onset time."""
        if text:
            raise UsageError("MMT is unconditional: it reads no text prompt", "drop --text / --text-column")
        events = self.read_events(path)
        labels = {k: np.asarray(v) for k, v in events.labels.items()}
        time_s = labels.pop("time_s", None)
        if time_s is not None and not np.isfinite(np.asarray(time_s, dtype=np.float64)).any():
            time_s = None  # a note list has no tempo map
        meta = {k: v.tolist() for k, v in labels.items()}
        if {"beat", "position", "duration", "type"} <= set(labels):  # note timing in beats, for piano rolls
            note = labels["type"] == "note"
            onset = labels["beat"] + labels["position"] / mmt_events.RESOLUTION
            meta["onset_beats"] = np.where(note, onset, np.nan).tolist()
            meta["duration_beats"] = np.where(note, labels["duration"] / mmt_events.RESOLUTION, np.nan).tolist()
        n_notes = int(np.sum(labels["type"] == "note")) if "type" in labels else len(events)
        return Sequence(events.codes, len(events), meta, time_s, item_meta={"events": len(events),
                                                                           "notes": n_notes})

    def sequence_activations(self, sequences, hookpoints):
        return self.token_activations([s.tokens for s in sequences], hookpoints)

    def tokenize(self, audio):
        raise UsageError("MMT reads MIDI, not audio", "turn a MIDI file into events with read_events(path).codes")

    def check_tokens(self, tokens) -> list[np.ndarray]:
        """Each item as (T, 6) int64 codes inside this model's vocabularies; InputError naming the first bad code."""
        items = []
        for i, t in enumerate(tokens):
            arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t
            arr = mmt_events.check_codes(arr, self.n_tokens, what=f"item {i}")
            if self.config.uses_abs_pos_emb and len(arr) > self.config.max_seq_len:
                raise InputError(f"item {i} has {len(arr)} events; the model reads at most {self.config.max_seq_len}",
                                 "read_events cuts songs to the model's max_seq_len")
            items.append(arr)
        if not items:
            raise UsageError("no token sequences given", "pass a list of (T, 6) code arrays")
        return items

    def batch(self, items: list[np.ndarray]):
        """(codes (B, T_max, 6) right-padded with zeros, mask (B, T_max), lengths) on the model's device."""
        lengths = [len(a) for a in items]
        codes = torch.zeros((len(items), max(lengths), 6), dtype=torch.long)
        for b, a in enumerate(items):
            codes[b, :len(a)] = torch.from_numpy(a)
        mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
        return codes.to(self.device), mask.to(self.device), lengths

    # ---- activations ----
    def token_activations(self, tokens, hookpoints, texts=None):
        """Per item, hookpoint -> (T, d) float32: row t is the residual stream after the block at event t."""
        if texts is not None and any(t is not None for t in texts):
            raise UsageError("MMT is unconditional: it takes no text", "leave texts out")
        hookpoints = self.resolve_hookpoints(hookpoints)
        codes, mask, lengths = self.batch(self.check_tokens(tokens))
        captured: dict[str, torch.Tensor] = {}
        deepest = max(layer_index(h) for h in hookpoints)
        blocks = self.model.block_outputs

        def hook_for(name: str, last: bool):
            def hook(module, args, output):
                captured[name] = output
                if last:
                    raise StopForward  # later blocks, the final norm and the heads are not needed
            return hook

        regs = [(blocks[layer_index(h)], "forward", hook_for(h, layer_index(h) == deepest), False) for h in hookpoints]
        with torch.inference_mode(), scoped_hooks(regs):
            try:
                self.model(codes, mask=mask)
            except StopForward:
                pass
        return [{h: captured[h][b, :n].float() for h in hookpoints} for b, n in enumerate(lengths)]

    def logits(self, tokens) -> list[list[torch.Tensor]]:
        """Per item, the six heads' logits [(T, n_tokens[f])] (float32), with any active edits applied."""
        codes, mask, lengths = self.batch(self.check_tokens(tokens))
        with torch.inference_mode():
            out = self.model(codes, mask=mask)
        return [[o[b, :n].float() for o in out] for b, n in enumerate(lengths)]

    @contextmanager
    def intervene(self, edits: dict):
        """Replace block outputs while active: edits maps a hookpoint to fn(h (batch, seq, d)) -> h, or to
        fn(h, ctx) when fn has `needs_context` (ctx: EditContext, positions = event indices); removed on exit."""
        names: dict[str, int] = {}
        for name in edits:
            resolved = self.resolve_hookpoints(name)  # unknown or out-of-range names fail here
            if len(resolved) != 1:
                raise UsageError(f"an edit needs one hookpoint, got '{name}'", "name each layer's edit separately")
            names[name] = layer_index(resolved[0])
        state: dict = {}

        def pre(module, args, kwargs):
            codes = args[0] if args else kwargs["codes"]
            state["ctx"] = EditContext(start=0, length=int(codes.shape[1]), batch=int(codes.shape[0]))

        def hook_for(fn):
            takes_ctx = bool(getattr(fn, "needs_context", False))

            def hook(module, args, output):
                return fn(output, state["ctx"]) if takes_ctx else fn(output)
            return hook

        blocks = self.model.block_outputs
        regs = [(self.model.net, "pre", pre, True)]
        regs += [(blocks[names[h]], "forward", hook_for(fn), False) for h, fn in edits.items()]
        with scoped_hooks(regs):
            yield
