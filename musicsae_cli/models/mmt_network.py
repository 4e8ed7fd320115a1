"""MMT's network in plain PyTorch (module and parameter names those of its checkpoints) and its hyperparameters.

MMT is a causal transformer decoder over events of six codes (type, beat, position, pitch, duration, instrument;
see mmt_events). An event's input vector is the sum of six field embeddings, plus a learned absolute position
embedding scaled by 1/sqrt(dim) (unless the model uses rotary position embeddings, or none); then `layers` pre-norm
blocks (LayerNorm -> causal multi-head self-attention with 64-dim heads, residual add; LayerNorm -> GELU
feed-forward of width 4*dim, residual add), a final LayerNorm and six output heads, one per field. With rotary
embeddings, the first 32 features of each head's queries, keys and values are rotated.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from . import mmt_events

DIM_HEAD = 64  # MMT's attention heads are always 64 wide: queries, keys and values are heads * 64
ROTARY_MIN_DIM = 32


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
