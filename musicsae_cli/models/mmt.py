"""The Multitrack Music Transformer (MMT; Dong et al., ICASSP 2023) behind the model-adapter interface.

MMT is a causal transformer decoder over events of six codes (type, beat, position, pitch, duration, instrument;
see mmt_events). An event's input vector is the sum of six field embeddings, plus a learned absolute position
embedding scaled by 1/sqrt(dim) (unless the model uses rotary position embeddings, or none); then `layers` pre-norm
blocks (LayerNorm -> causal multi-head self-attention with 64-dim heads, residual add; LayerNorm -> GELU
feed-forward of width 4*dim, residual add), a final LayerNorm and six output heads, one per field. With rotary
embeddings, the first 32 features of each head's queries, keys and values are rotated.

The network here is plain PyTorch whose parameter names are those of MMT's trained checkpoints (`best_model.pt`,
a state dict of the published training code, built on x-transformers 0.25), so a checkpoint loads strictly, with
torch.load(weights_only=True): no pickled code runs. Hyperparameters come from the `train-args.json` MMT's
training writes beside its `checkpoints/` folder when present; what it does not say is read off the weights'
shapes, and model options override both.

Hookpoint `layers.{i}` is the residual stream after decoder block i (attention and feed-forward), (T, dim) per song.

Generation (`MmtAdapter.generate`, settings in mmt_settings) samples songs event by event as MMT's own generation
does: each field from its own head, filtered to its most likely codes and divided by a temperature; event type and
beat never decrease; a song ends at its end-of-song event. `duration_s` becomes beats at a tempo (120 bpm by
default): a song also ends before its first note at or past that beat. Captured rows are teacher-forcing rows.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..errors import InputError, UsageError
from . import mmt_events
from .base import EditContext, GenerationOutput, ModelAdapter, Sequence
from .hookpoints import layer_index, layer_name, parse_hookpoints
from .hooks import StopForward, scoped_hooks
from .mmt_settings import EventSampling

CHECKPOINT = "best_model.pt"
TRAIN_ARGS = "train-args.json"
DIM_HEAD = 64  # MMT's attention heads are always 64 wide: queries, keys and values are heads * 64
ROTARY_MIN_DIM = 32
POSITION_CONVENTION = (
    "row t is event t of the sequence fed (row 0 the start-of-song event): the residual stream at input position "
    "t, which has seen events 0..t (causal). Rows are events, not time frames: there is no frame rate; an event's "
    "musical time is in its labels (beat, position in 1/12 beat, time_s from the MIDI file's tempo map). Batch "
    "padding is never stored."
)


@dataclass(frozen=True)
class MmtConfig:
    """Hyperparameters, named as MMT's train-args.json names them (`layers` is the depth; `rel_pos_emb` means
    rotary position embeddings). Defaults: MMT's training defaults."""

    dim: int = 512
    layers: int = 6
    heads: int = 8
    max_seq_len: int = 1024
    max_beat: int = 256
    abs_pos_emb: bool = True
    rel_pos_emb: bool = False

    @property
    def n_tokens(self) -> tuple[int, ...]:
        """Vocabulary of each field; the beat field holds beats 0 .. max_beat - 1 (codes 1 .. max_beat)."""
        n = list(mmt_events.N_TOKENS)
        n[mmt_events.FIELDS.index("beat")] = self.max_beat + 1
        return tuple(n)

    @property
    def uses_abs_pos_emb(self) -> bool:
        return self.abs_pos_emb and not self.rel_pos_emb  # rotary replaces the absolute embedding

    @property
    def rotary_dim(self) -> int:
        return max(DIM_HEAD // 2, ROTARY_MIN_DIM)


OPTION_NAMES = tuple(f.name for f in fields(MmtConfig))
_OPTIONS_HINT = ("dim, layers, heads, max_seq_len, max_beat are positive integers; abs_pos_emb, rel_pos_emb true or "
                 "false")


# ---- the network (module and parameter names follow MMT's checkpoints) ----
class _FieldEmbedding(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(n, dim)

    def forward(self, x):
        return self.emb(x)


class _PositionEmbedding(nn.Module):
    def __init__(self, max_seq_len: int, dim: int):
        super().__init__()
        self.scale = dim ** -0.5
        self.emb = nn.Embedding(max_seq_len, dim)

    def forward(self, n: int):
        return self.emb(torch.arange(n, device=self.emb.weight.device))[None] * self.scale


class _Rotary(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, n: int):
        t = torch.arange(n, device=self.inv_freq.device).type_as(self.inv_freq)
        freqs = torch.outer(t, self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)  # (n, rotary_dim)


def _rotate(t, freqs):
    """Rotate the first freqs.shape[-1] features of t (..., n, d) by position (halves swapped, first negated)."""
    r = freqs.shape[-1]
    head, rest = t[..., :r], t[..., r:]
    first, second = head.chunk(2, dim=-1)
    turned = torch.cat((-second, first), dim=-1)
    freqs = freqs.to(t.dtype)
    return torch.cat((head * freqs.cos() + turned * freqs.sin(), rest), dim=-1)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        inner = heads * DIM_HEAD
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x, mask=None, rotary=None):
        b, n, _ = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, DIM_HEAD).transpose(1, 2) for proj in (self.to_q, self.to_k,
                                                                                           self.to_v))
        if rotary is not None:
            q, k, v = (_rotate(t, rotary) for t in (q, k, v))
        dots = torch.matmul(q, k.transpose(-1, -2)) * DIM_HEAD ** -0.5
        lowest = -torch.finfo(dots.dtype).max
        if mask is not None:
            dots = dots.masked_fill(~(mask[:, None, :, None] & mask[:, None, None, :]), lowest)
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        dots = dots.masked_fill(future, lowest)
        attn = F.softmax(dots - dots.amax(dim=-1, keepdim=True).detach(), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, self.heads * DIM_HEAD)
        return self.to_out(out)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(nn.Sequential(nn.Linear(dim, inner), nn.GELU()), nn.Identity(), nn.Dropout(0.0),
                                 nn.Linear(inner, dim))

    def forward(self, x):
        return self.net(x)


class Residual(nn.Module):
    """The residual add after a sublayer: its output is the residual stream (hooks attach here)."""

    def forward(self, out, residual):
        return out + residual


class _AttentionLayers(nn.Module):
    """Alternating attention and feed-forward sublayers, each [norms [pre-norm, -, -], sublayer, residual]."""

    def __init__(self, cfg: MmtConfig):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(cfg.layers):
            for sub in (_SelfAttention(cfg.dim, cfg.heads), _FeedForward(cfg.dim)):
                self.layers.append(nn.ModuleList([nn.ModuleList([nn.LayerNorm(cfg.dim), None, None]), sub,
                                                  Residual()]))
        self.rotary_pos_emb = _Rotary(cfg.rotary_dim) if cfg.rel_pos_emb else None

    def forward(self, x, mask=None):
        rotary = self.rotary_pos_emb(x.shape[1]) if self.rotary_pos_emb is not None else None
        for norms, sub, residual in self.layers:
            h = norms[0](x)
            out = sub(h, mask=mask, rotary=rotary) if isinstance(sub, _SelfAttention) else sub(h)
            x = residual(out, x)
        return x


class _Decoder(nn.Module):
    def __init__(self, cfg: MmtConfig):
        super().__init__()
        self.token_emb = nn.ModuleList([_FieldEmbedding(n, cfg.dim) for n in cfg.n_tokens])
        self.pos_emb = _PositionEmbedding(cfg.max_seq_len, cfg.dim) if cfg.uses_abs_pos_emb else None
        self.emb_dropout = nn.Dropout(0.0)
        self.project_emb = nn.Identity()
        self.attn_layers = _AttentionLayers(cfg)
        self.norm = nn.LayerNorm(cfg.dim)
        self.to_logits = nn.ModuleList([nn.Linear(cfg.dim, n) for n in cfg.n_tokens])

    def forward(self, codes, mask=None):
        """Logits per field, [(B, T, n_tokens[f])], for codes (B, T, 6)."""
        x = sum(emb(codes[..., f]) for f, emb in enumerate(self.token_emb))
        if self.pos_emb is not None:
            x = x + self.pos_emb(codes.shape[1])
        x = self.project_emb(self.emb_dropout(x))
        x = self.norm(self.attn_layers(x, mask=mask))
        return [head(x) for head in self.to_logits]


class _Wrapper(nn.Module):
    def __init__(self, cfg: MmtConfig):
        super().__init__()
        self.net = _Decoder(cfg)


class MmtNetwork(nn.Module):
    """MMT's network; state-dict keys `decoder.net.*` as in its checkpoints."""

    def __init__(self, cfg: MmtConfig):
        super().__init__()
        self.config = cfg
        self.decoder = _Wrapper(cfg)

    @property
    def net(self) -> _Decoder:
        return self.decoder.net

    @property
    def block_outputs(self) -> list[Residual]:
        """The residual add ending decoder block i (its feed-forward sublayer), for i in 0..layers-1."""
        return [self.net.attn_layers.layers[2 * i + 1][2] for i in range(self.config.layers)]

    def forward(self, codes, mask=None):
        return self.net(codes, mask=mask)


def build(cfg: MmtConfig) -> MmtNetwork:
    return MmtNetwork(cfg).eval()


# ---- checkpoints ----
def find_checkpoint(name: str | Path) -> tuple[Path, Path | None]:
    """(the .pt state dict, its train-args.json or None) for a file, a folder holding best_model.pt, or an MMT
    experiment folder (train-args.json beside checkpoints/best_model.pt)."""
    path = Path(name).expanduser()
    if not path.exists():
        raise InputError(f"no such MMT checkpoint: {name}",
                         f"pass a {CHECKPOINT} file or the folder holding it (with its {TRAIN_ARGS})")
    if path.is_dir():
        found = [p for p in (path / CHECKPOINT, path / "checkpoints" / CHECKPOINT) if p.is_file()]
        if not found:
            raise InputError(f"{name} holds no {CHECKPOINT} (nor checkpoints/{CHECKPOINT})",
                             "pass the .pt file itself or the folder MMT's training wrote")
        path = found[0]
    args = [p for p in (path.parent / TRAIN_ARGS, path.parent.parent / TRAIN_ARGS) if p.is_file()]
    return path, (args[0] if args else None)


def claims(name: str) -> bool:
    """Whether `name` looks like an MMT checkpoint: a folder holding best_model.pt (or checkpoints/best_model.pt), or
    a .pt/.pth state dict named best_model.pt or with a train-args.json beside it or one folder up (a TorchScript
    archive, which holds code, never)."""
    path = Path(name).expanduser()
    try:
        if path.is_dir():
            return (path / CHECKPOINT).is_file() or (path / "checkpoints" / CHECKPOINT).is_file()
        if not path.is_file() or path.suffix.lower() not in (".pt", ".pth"):
            return False
        if path.name != CHECKPOINT and not any(p.is_file() for p in (path.parent / TRAIN_ARGS,
                                                                      path.parent.parent / TRAIN_ARGS)):
            return False
        return not _is_torchscript(path)
    except OSError:
        return False


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist())


def read_train_args(path: Path) -> dict:
    """The model hyperparameters in MMT's train-args.json (other keys, e.g. data paths, are ignored)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {type(exc).__name__}", "it should be the JSON MMT's training wrote") \
            from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object", "it should be the JSON MMT's training wrote")
    return _typed({k: data[k] for k in OPTION_NAMES if data.get(k) is not None}, str(path))


def _typed(values: dict, where: str) -> dict:
    out = {}
    for f in fields(MmtConfig):
        if f.name not in values:
            continue
        value = values[f.name]
        if f.type in ("bool", bool):
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                raise UsageError(f"{where}: {f.name} must be true or false, got {value!r}", _OPTIONS_HINT)
        else:
            if isinstance(value, bool) or not str(value).lstrip("-").isdigit() or int(value) < 1:
                raise UsageError(f"{where}: {f.name} must be a positive integer, got {value!r}", _OPTIONS_HINT)
            value = int(value)
        out[f.name] = value
    return out


def read_state_dict(path: Path) -> dict:
    """A checkpoint's tensors, read with weights_only=True; InputError when it is not a plain state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file at all
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InputError(f"cannot read {path} as a weights-only state dict ({type(exc).__name__}: {detail})",
                         "MMT checkpoints are torch.save(model.state_dict()); a pickled model object is not read")\
            from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a state dict of tensors", "pass MMT's best_model.pt")
    return state


def infer_config(state: dict) -> dict:
    """Hyperparameters the weights' shapes fix (dim, layers, heads, max_seq_len, max_beat, position embeddings)."""
    pre = "decoder.net."
    out: dict = {}
    emb = state.get(pre + "token_emb.0.emb.weight")
    if emb is not None and emb.ndim == 2:
        out["dim"] = int(emb.shape[1])
    blocks = {int(k[len(pre + "attn_layers.layers."):].split(".")[0]) for k in state
              if k.startswith(pre + "attn_layers.layers.")}
    if blocks:
        out["layers"] = (max(blocks) + 2) // 2
    q = state.get(pre + "attn_layers.layers.0.1.to_q.weight")
    if q is not None and q.ndim == 2 and q.shape[0] % DIM_HEAD == 0:
        out["heads"] = int(q.shape[0]) // DIM_HEAD
    beat = state.get(pre + "token_emb.1.emb.weight")
    if beat is not None and beat.ndim == 2:
        out["max_beat"] = int(beat.shape[0]) - 1
    pos = state.get(pre + "pos_emb.emb.weight")
    if pos is not None and pos.ndim == 2:
        out["max_seq_len"] = int(pos.shape[0])
    if any(k.startswith(pre) for k in state):
        out["rel_pos_emb"] = pre + "attn_layers.rotary_pos_emb.inv_freq" in state
        if not out["rel_pos_emb"]:
            out["abs_pos_emb"] = pos is not None
    return out


def _first(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def check_state_dict(model: MmtNetwork, state: dict, where: str) -> None:
    """InputError naming the first missing/unexpected keys or mismatched shapes before load_state_dict runs."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} keys ({_first(missing)})"] if missing else []) + \
                ([f"unexpected {len(unexpected)} keys ({_first(unexpected)})"] if unexpected else [])
        raise InputError(f"{where} does not match an MMT network: {'; '.join(parts)}",
                         f"pass MMT's {CHECKPOINT}; if it is one, its {TRAIN_ARGS} or the model options "
                         f"({', '.join(OPTION_NAMES)}) must describe it")
    n_tok = tuple(int(state[f"decoder.net.token_emb.{f}.emb.weight"].shape[0]) for f in range(6))
    expected = model.config.n_tokens
    for f in (0, 2, 3, 4, 5):
        if n_tok[f] != expected[f]:
            raise InputError(f"{where} was trained with another event encoding ({mmt_events.FIELDS[f]} vocabulary "
                             f"{n_tok[f]}, not {expected[f]})",
                             "musicsae reads MMT's encoding of 12 positions per beat and 32 known durations only")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise InputError(f"{where} has other shapes than the configured MMT network (checkpoint vs model): "
                         f"{_first(wrong, 3)}",
                         f"its {TRAIN_ARGS} or the model options ({', '.join(OPTION_NAMES)}) must match the weights")


def load_network(name: str | Path, **options) -> tuple[MmtNetwork, Path, dict]:
    """(network in fp32 on the CPU, checkpoint path, where each hyperparameter came from)."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise UsageError(f"model family mmt has no option {', '.join(unknown)}", f"options: {', '.join(OPTION_NAMES)}")
    path, args_path = find_checkpoint(name)
    state = read_state_dict(path)
    sources: dict[str, str] = {}
    values: dict = {}
    for layer, source in ((infer_config(state), "weights"), (read_train_args(args_path) if args_path else {},
                                                             str(args_path)),
                          (_typed(options, "model option"), "options")):
        values.update(layer)
        sources.update({k: source for k in layer})
    cfg = replace(MmtConfig(), **values)
    model = build(cfg)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model, path, {k: sources.get(k, "default") for k in OPTION_NAMES}


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
class MmtAdapter(ModelAdapter):
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

    # ---- generation ----
    def prompt_events(self, instruments: list[str] | tuple[str, ...] = ()) -> np.ndarray:
        """The events a generated song starts from, (P, 6): start-of-song alone, or with instruments start-of-song,
        one instrument event per instrument (in code order) and start-of-notes, as MMT's instrument-informed
        generation feeds the beginning of a real song."""
        rows = [[mmt_events.SOS, 0, 0, 0, 0, 0]]
        if instruments:
            codes = sorted({mmt_events.INSTRUMENTS.index(name) + 1 for name in instruments})
            rows += [[mmt_events.INSTRUMENT, 0, 0, 0, 0, c] for c in codes]
            rows.append([mmt_events.SON, 0, 0, 0, 0, 0])
        return np.asarray(rows, dtype=np.int64)

    def generate(self, texts, duration_s, hookpoints, *, seed=0, streams="both", prompt_audio=None, settings=None):
        """Sample one song per entry of `texts` (each None: MMT takes no text) from the prompt events (see
        `prompt_events`), one event per step, capturing `hookpoints` at every event.

        Each step feeds every row's whole sequence so far (MMT's songs are short; there is no cache) and draws the
        next event from the six heads at its last event: the type first (never below the row's highest type so
        far, never start-of-song), then each other field from its head (code 0, "none", excluded; the beat never
        below the row's latest beat); the event keeps the fields its type uses (a note all five, an instrument
        event its instrument, others none). Every field is filtered to its most likely codes (top_k, else
        MMT's ceil((1 - filter_threshold) * vocabulary)), divided by the temperature and drawn with a
        torch.Generator seeded by `seed`. A row ends at its end-of-song event (kept), before a note at beat >=
        ceil(duration_s * tempo_bpm / 60) (dropped: the song covers duration_s at that tempo), or at max_events
        events (at most max_seq_len); rows end independently, later rows of an ended row are zeros.

        Active edits (`intervene`) apply in every pass, with EditContext(start=0, length=events fed, batch=B): the
        positions teacher forcing gives. The rows are captured in a last pass over the finished songs, so
        acts[h][b, :n_b] equal token_activations(tokens[b, :n_b]) under the same edits. Returns tokens (B, T, 6)
        int64 (prompt included, zero-padded), acts {"main": {h: (B, T, d)}} aligned with them (padding rows 0),
        n_frames = T, prompt_frames = the prompt's events, and each row's length in `lengths` (also
        settings["lengths"], with why it ended in settings["stops"])."""
        if any(t is not None for t in texts):
            raise UsageError("MMT generates without text: it takes no text prompt",
                             "drop --prompt; to choose the instruments, pass --gen instruments=piano,violin")
        if prompt_audio is not None:
            raise UsageError("MMT reads MIDI events, not audio: it cannot continue an audio prompt",
                             "generate without --audio")
        try:
            seconds = float(duration_s)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not (math.isfinite(seconds) and seconds > 0):
            raise UsageError(f"duration_s must be a positive number of seconds, got {duration_s!r}",
                             "pass --duration-s, e.g. 10")
        s: EventSampling = self.generation_settings(settings)
        names = self.resolve_hookpoints(list(hookpoints)) if hookpoints else []
        batch = max(1, len(texts))
        prompt = torch.from_numpy(self.prompt_events(s.instruments))
        n_prompt = len(prompt)
        limit = min(s.max_events, self.config.max_seq_len)
        if n_prompt >= limit:
            raise UsageError(f"the prompt has {n_prompt} events, leaving no room under the limit of {limit} events",
                             "raise max_events or prompt fewer instruments")
        n_beats = max(1, math.ceil(seconds * s.tempo_bpm / 60 - 1e-9))  # beats 0 .. n_beats - 1
        device = self.device
        codes = torch.zeros((batch, limit, 6), dtype=torch.long, device=device)
        codes[:, :n_prompt] = prompt.to(device)
        lengths = torch.full((batch,), n_prompt, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        floor = {f: codes[:, :n_prompt, f].amax(1) for f in MONOTONIC}  # (B,) lowest code each may take next
        stops: list[str | None] = [None] * batch
        gen = torch.Generator(device=device).manual_seed(int(seed))
        rows = torch.arange(batch, device=device)
        captured: dict[str, torch.Tensor] = {}

        def capture(name: str):
            def hook(module, args, output):
                captured[name] = output
            return hook

        blocks = self.model.block_outputs
        regs = [(blocks[layer_index(h)], "forward", capture(h), False) for h in names]
        with torch.inference_mode(), scoped_hooks(regs):
            while True:
                if bool(done.all()) and not names:
                    break
                width = int(lengths.max())
                mask = torch.arange(width, device=device)[None] < lengths[:, None]
                heads = self.model(codes[:, :width], mask=mask)
                if bool(done.all()):
                    break  # this last pass read the finished songs: its captures are the rows
                last = [h[rows, lengths - 1].float() for h in heads]
                event = _sample_event(last, floor, s, gen)  # (B, 6)
                for b in torch.nonzero(~done).flatten().tolist():
                    kind, beat = int(event[b, 0]), int(event[b, 1])
                    if kind == mmt_events.NOTE and beat > n_beats:  # beat code = beat + 1
                        done[b], stops[b] = True, "duration"
                        continue
                    codes[b, lengths[b]] = event[b]
                    lengths[b] += 1
                    for f in MONOTONIC:
                        floor[f][b] = torch.maximum(floor[f][b], event[b, f])
                    if kind == mmt_events.EOS:
                        done[b], stops[b] = True, "end-of-song"
                    elif int(lengths[b]) >= limit:
                        done[b], stops[b] = True, "max_events"
        width = int(lengths.max())
        valid = (torch.arange(width, device=device)[None] < lengths[:, None])[..., None]
        acts = {h: (captured[h][:, :width].float() * valid).detach() for h in names}
        n = [int(v) for v in lengths.tolist()]
        record = {**s.model_dump(mode="json"), "seed": int(seed), "duration_s": seconds,
                  "beats": n_beats, "event_limit": limit, "prompt_events": n_prompt, "lengths": n, "stops": stops}
        return GenerationOutput(audio=None, tokens=codes[:, :width].cpu().numpy(), acts={"main": acts},
                                n_frames=width, settings=record, prompt_frames=n_prompt, lengths=n)


MONOTONIC = (mmt_events.FIELDS.index("type"), mmt_events.FIELDS.index("beat"))  # MMT's monotonicity_dim


def _keep(n: int, s: EventSampling) -> int:
    """How many of a field's n codes its filter keeps."""
    k = s.top_k if s.top_k else math.ceil((1 - s.filter_threshold) * n)
    return min(max(int(k), 1), n)


def _draw(logits: torch.Tensor, s: EventSampling, generator) -> torch.Tensor:
    """One code per row of (B, n) logits (disallowed codes at -inf): keep the most likely codes (exactly
    `_keep` of them, ties by index order of topk), divide by the temperature, draw."""
    k = _keep(logits.shape[-1], s)
    if k < logits.shape[-1]:
        top = logits.topk(k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
    probs = torch.softmax(logits / s.temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _sample_event(logits: list[torch.Tensor], floor: dict[int, torch.Tensor], s: EventSampling,
                  generator) -> torch.Tensor:
    """The next event (B, 6) from each field's logits at the last event: the type (not start-of-song, not below
    the row's floor), then every other field (not 0, the beat not below its floor), each drawn for every row; the
    fields an event type does not use are zeroed."""
    out = []
    for f, lg in enumerate(logits):
        lg = lg.clone()
        codes = torch.arange(lg.shape[-1], device=lg.device)[None]
        if f in floor:
            lg = lg.masked_fill(codes < floor[f][:, None], float("-inf"))
        lg[:, 0] = float("-inf")  # type: no second start-of-song (code 0); other fields: not "none"
        out.append(_draw(lg, s, generator))
    event = torch.stack(out, dim=1)
    kind = event[:, 0]
    event[:, 1:5] *= (kind == mmt_events.NOTE)[:, None]
    event[:, 5] *= ((kind == mmt_events.NOTE) | (kind == mmt_events.INSTRUMENT))
    return event
