"""Steering edits for `adapter.intervene`: add a direction (absolute or relative to ||h||), or edit SAE latents
while keeping the SAE's reconstruction error. Each edit takes (h, ctx) and applies only at the positions its
schedule selects and to the rows of its generation stream.

Latent edits never replace h by the SAE reconstruction (that would add the SAE's reconstruction error to every
frame, which degrades the audio): h' = h + decode(f') - decode(f) = h + ((f' - f) @ W_dec) / norm_scale, summed
over the edited latents only, so h' = x_hat(f') + (h - x_hat(f)) and an edit that changes no latent returns h exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .config import LATENT_MODES, ScheduleConfig, SteeringConfig
from .directions import Direction


@dataclass(frozen=True)
class Schedule:
    """Which absolute sequence positions are steered, and with what fraction of the strength."""

    start: int = 0
    end: int | None = None
    every: int = 1
    ramp: int = 0

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> Schedule:
        return cls(cfg.start, cfg.end, cfg.every, cfg.ramp)

    def factor(self, position: int) -> float:
        """0 outside the schedule, else 1 (or the linear ramp's fraction)."""
        offset = position - self.start
        if offset < 0 or (self.end is not None and position >= self.end) or offset % self.every:
            return 0.0
        if self.ramp:
            return min(1.0, (offset // self.every + 1) / self.ramp)
        return 1.0

    def factors(self, ctx, device, dtype):
        """A python float when every position of the pass shares one factor, else a (1, seq, 1) tensor."""
        import torch

        if ctx.length == 1:
            return self.factor(ctx.start)
        fs = [self.factor(p) for p in ctx.positions]
        if all(f == fs[0] for f in fs):
            return fs[0]
        return torch.tensor(fs, device=device, dtype=dtype)[None, :, None]


class AddEdit:
    """h + a * v (mode add) or h + a * ||h|| * v (mode relative, v unit, per position), on scheduled positions."""

    needs_context = True

    def __init__(self, vector, strength: float, schedule: Schedule, stream: str, relative: bool):
        self.vector, self.strength = vector, float(strength)  # vector (d,) in the model's dtype and device
        self.schedule, self.stream, self.relative = schedule, stream, relative
        self.step = vector * self.strength  # (d,): computed once, not per generation step

    def __call__(self, h, ctx):
        f = self.schedule.factors(ctx, h.device, h.dtype)
        if isinstance(f, float) and f == 0.0:
            return h
        rows = ctx.rows(self.stream)
        x = h[rows]  # (rows, seq, d)
        delta = self.step * x.norm(dim=-1, keepdim=True) if self.relative else self.step
        delta = delta * f
        if rows == slice(None):
            return x + delta
        out = h.clone()
        out[rows] = x + delta
        return out


class LatentEdit:
    """Clamp, scale or zero SAE latents at one hookpoint, keeping the reconstruction error (see module doc)."""

    needs_context = True

    def __init__(self, sae, latents: list[int], op: str, values, schedule: Schedule, stream: str):
        import torch

        self.sae, self.op, self.schedule, self.stream = sae, op, schedule, stream
        self.latents = torch.as_tensor(latents, dtype=torch.long, device=sae.W_dec.device)
        self.values = torch.as_tensor(np.asarray(values, np.float32), device=sae.W_dec.device)  # (m,)
        norm_scale = getattr(sae, "norm_scale", None)
        scale = float(norm_scale) if norm_scale is not None else 1.0
        self.rows_dec = (sae.W_dec[self.latents].detach().float() / scale)  # (m, d): decode is affine in f
        # musicsae's SAEs read just the edited latents (SparseAutoencoder.latent_reader: their encoder columns, or
        # for TopK every pre-activation but no dense latent matrix); other SAEs (the dictionary baseline) encode
        reader = getattr(sae, "latent_reader", None)
        self.read = reader(self.latents) if reader is not None else None

    def latent_values(self, x):
        """Current values (n, m) of the edited latents for inputs x (n, d), with the SAE's inference rules."""
        if self.read is not None:
            return self.read(x)
        return self.sae.encode(x)[:, self.latents]

    def __call__(self, h, ctx):
        f = self.schedule.factors(ctx, h.device, self.rows_dec.dtype)
        if (isinstance(f, float) and f == 0.0) or self.latents.numel() == 0:
            return h
        rows = ctx.rows(self.stream)
        x = h[rows]
        lead, d = x.shape[:-1], x.shape[-1]
        cur = self.latent_values(x.reshape(-1, d).float())  # (n, m)
        if self.op == "clamp":
            new = self.values.expand_as(cur)
        elif self.op == "scale":
            new = cur * self.values
        else:
            new = cur.new_zeros(())
        change = ((new - cur).reshape(*lead, -1)) * f  # (rows, seq, m), scheduled
        delta = (change @ self.rows_dec).to(h.dtype)  # (rows, seq, d)
        if rows == slice(None):
            return x + delta
        out = h.clone()
        out[rows] = x + delta
        return out


class DimEdit:
    """h[d] := h[d] * scale[d] + bias[d] for a few dimensions d, on scheduled positions (the schedule's factor
    blends the change in)."""

    needs_context = True

    def __init__(self, dims: list[int], scale, bias, schedule: Schedule, stream: str, device=None, dtype=None):
        import torch

        self.dims = torch.as_tensor(dims, dtype=torch.long, device=device)
        self.scale = torch.as_tensor(np.asarray(scale, np.float32), device=device, dtype=dtype)  # (m,)
        self.bias = torch.as_tensor(np.asarray(bias, np.float32), device=device, dtype=dtype)  # (m,)
        self.schedule, self.stream = schedule, stream

    def __call__(self, h, ctx):
        f = self.schedule.factors(ctx, h.device, h.dtype)
        if isinstance(f, float) and f == 0.0:
            return h
        rows = ctx.rows(self.stream)
        out = h.clone()
        x = out[rows]  # (rows, seq, d)
        picked = x[..., self.dims]  # (rows, seq, m)
        x[..., self.dims] = picked + (picked * (self.scale - 1) + self.bias) * f
        out[rows] = x
        return out


class Chain:
    """Several edits at one hookpoint, applied in order."""

    needs_context = True

    def __init__(self, *edits):
        self.edits = edits

    def __call__(self, h, ctx):
        for edit in self.edits:
            h = edit(h, ctx)
        return h


def dim_edit(cfg: SteeringConfig, adapter) -> tuple[str, DimEdit, dict] | None:
    """The per-dimension controls as (hookpoint, edit, record), or None when none are set."""
    dims = cfg.dims
    if not dims.active:
        return None
    hp = dims.hookpoint or getattr(adapter, "latent_hookpoint", None)
    if hp is None:
        raise UsageError(f"model '{adapter.model_id}' has no latent hookpoint for --dim-bias/--dim-scale",
                         "name one with --set dims.hookpoint=HOOKPOINT")
    hp = adapter.resolve_hookpoints(hp)[0]
    width = adapter.hookpoint_widths.get(hp)
    index = sorted({*dims.bias, *dims.scale})
    bad = [d for d in index if d < 0 or (width is not None and d >= width)]
    if bad:
        raise UsageError(f"dimension {bad[0]} does not exist at {hp}, which has {width} dimensions",
                         f"use dimensions 0 to {width - 1}" if width else "check the dimension numbers")
    scale = [dims.scale.get(d, 1.0) for d in index]
    bias = [dims.bias.get(d, 0.0) for d in index]
    edit = DimEdit(index, scale, bias, Schedule.from_config(cfg.schedule), cfg.stream, adapter.device,
                   adapter.dtype)
    return hp, edit, {"hookpoint": hp, "bias": {str(d): b for d, b in zip(index, bias, strict=True)},
                      "scale": {str(d): a for d, a in zip(index, scale, strict=True)}}


@dataclass
class Steering:
    """The edits for adapter.intervene, and what they do (JSON-ready)."""

    edits: dict
    layers: list[str]
    strengths: list[float]
    record: dict


def layer_strengths(cfg: SteeringConfig, layers: list[str], scale: float = 1.0) -> list[float]:
    """One strength per layer (`strength` broadcast when it has one value), times `scale`."""
    if len(cfg.strength) not in (1, len(layers)):
        raise UsageError(f"{len(cfg.strength)} strengths for {len(layers)} layers ({', '.join(layers)})",
                         "give one strength per layer, or one for all")
    values = cfg.strength * len(layers) if len(cfg.strength) == 1 else cfg.strength
    return [float(v) * scale for v in values]


def steer_layers(cfg: SteeringConfig, adapter, direction: Direction) -> list[str]:
    """The hookpoints to steer: `layers`, or the direction's only hookpoint (the SAE's for latent modes)."""
    if cfg.mode in LATENT_MODES:
        if direction.sae is None:
            raise UsageError(f"mode {cfg.mode} edits SAE latents", "pass --sae RUN and --latent N[,M]")
        layers = adapter.resolve_hookpoints(cfg.layers) if cfg.layers else [direction.hookpoint]
        if layers != [direction.hookpoint]:
            raise UsageError(f"latent edits apply at the SAE's hookpoint {direction.hookpoint}, not "
                             f"{', '.join(layers)}", f"drop --hookpoint or pass --hookpoint {direction.hookpoint}")
        return layers
    if cfg.layers:
        return adapter.resolve_hookpoints(cfg.layers)
    if len(direction.hookpoints) == 1:
        return direction.hookpoints
    raise UsageError("choose the layers to steer with --hookpoint",
                     "the direction has " + (", ".join(direction.hookpoints) or "one vector for any layer"))


def build_steering(cfg: SteeringConfig, adapter, direction: Direction | None, scale: float = 1.0) -> Steering:
    """Edits for every steered layer, and the per-dimension controls; strength 0 layers get no hook at all (so
    steering at 0 is exactly plain). `direction` None: the per-dimension controls alone."""
    import torch

    dims = dim_edit(cfg, adapter)
    if direction is None:
        if dims is None:
            raise UsageError("nothing to steer with", "pass a direction (--probe, --sae, --contrast, --file) or "
                             "per-dimension controls (--dim-bias, --dim-scale)")
        hp, edit, record = dims
        return Steering({hp: edit}, [hp], [], {"layers": [hp], "strengths": [], "mode": "dims",
                                              "schedule": cfg.schedule.model_dump(), "stream": cfg.stream,
                                              "dims": record, "direction": {"kind": "dims"}})
    layers = steer_layers(cfg, adapter, direction)
    strengths = layer_strengths(cfg, layers, scale)
    schedule = Schedule.from_config(cfg.schedule)
    edits, norms = {}, {}
    for hp, a in zip(layers, strengths, strict=True):
        v = direction.at(hp).astype(np.float64)
        width = adapter.hookpoint_widths.get(hp)
        if width is not None and v.shape[0] != width:
            raise UsageError(f"the direction has width {v.shape[0]}, hookpoint {hp} is {width} wide",
                             "steer a hookpoint of the direction's width, or use a direction computed there")
        norms[hp] = float(np.linalg.norm(v))
        if cfg.mode in LATENT_MODES:
            if cfg.mode == "clamp":
                values = a * direction.latent_scales
            else:
                values = np.full(len(direction.latents), a, np.float32)
            edits[hp] = LatentEdit(direction.sae, direction.latents, cfg.mode, values, schedule, cfg.stream)
            continue
        if a == 0.0:
            continue
        if norms[hp] == 0.0:
            raise UsageError(f"the direction at {hp} is zero", "check the direction source")
        unit = cfg.mode == "relative" or cfg.normalize
        vec = v / norms[hp] if unit else v
        vector = torch.as_tensor(vec, dtype=adapter.dtype, device=adapter.device)
        edits[hp] = AddEdit(vector, a, schedule, cfg.stream, relative=cfg.mode == "relative")
    record = {"layers": layers, "strengths": strengths, "mode": cfg.mode,
              "normalize": cfg.normalize if cfg.mode == "add" else cfg.mode == "relative",
              "schedule": cfg.schedule.model_dump(), "stream": cfg.stream, "direction_norms": norms,
              "direction": direction.source}
    if dims is not None:  # the controls first, then the direction
        hp, edit, record["dims"] = dims
        edits[hp] = Chain(edit, edits[hp]) if hp in edits else edit
    return Steering(edits, layers, strengths, record)
