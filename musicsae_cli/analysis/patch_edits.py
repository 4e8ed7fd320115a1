"""The edits `analyze patch` runs: recording a hookpoint, and replacing (part of) it from another run or a constant.

What is replaced is a subspace of the hookpoint's output, in the (batch, rows, width) view every family's edits see:

  full       the whole activation
  direction  the component along one unit direction u per hookpoint: h' = h + (c - h.u) u, everything orthogonal
             to u kept (c: the source's component, 0, or the mean's)
  latents    a set S of an SAE's latents: h' = h + decode(f') - decode(f), f = encode(h) and f' = f with f_S set
             (from the source's latents, 0, or their mean), so the SAE's reconstruction error stays in h'

A `PatchEdit` replaces batch row j of a pass with its own source, so several patched runs (one per hookpoint,
time window) share one forward pass; recorded sources are replayed call by call (the k-th call of the patched
run gets the k-th call of the recorded run), so any family with the intervene capability is patched alike. A
window restricts the edit to a span of the input's positions; the rest of the row is left as it is.

`Subspaces` picks the subspace of each hookpoint from the config (the probe's direction depends on the pair's
class), and `Statistics` holds the means over the pairs that mean ablations and difference-of-means directions use.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, UsageError
from .config import PatchConfig
from .patch_metric import load_sae_checked


class Unbatched(Exception):
    """A pass did not put all patched runs on its batch axis: the family ran `seen` copies of the input per pass."""

    def __init__(self, hookpoint: str, seen: int):
        super().__init__(hookpoint)
        self.seen = seen


class Recorder:
    """An identity edit that keeps each call's output (batch row 0) and the positions it covers."""

    needs_context = True

    def __init__(self):
        self.calls: list = []
        self.end = 0  # positions seen: the input's length in the family's positions

    def __call__(self, h, ctx):
        self.calls.append(h[:1].detach().clone())
        self.end = max(self.end, ctx.start + ctx.length)
        return h


class Full:
    """Replace the whole activation."""

    name = "full"

    def values(self, h):
        return h

    def set(self, h, values):
        return values.to(dtype=h.dtype, device=h.device).expand_as(h)


class Direction:
    """Replace the component along a unit direction (one per hookpoint, or per hookpoint and probe class)."""

    name = "direction"

    def __init__(self, u):
        import torch

        u = torch.as_tensor(np.asarray(u, np.float64)).double()
        norm = float(u.norm())
        if not np.isfinite(norm) or norm == 0:
            raise InputError("a patching direction is zero", "use a probe class or pairs whose means differ")
        self.u = u / norm

    def values(self, h):
        return h.double() @ self.u.to(h.device)  # (..., rows)

    def set(self, h, values):
        u = self.u.to(h.device)
        c = values.to(device=h.device, dtype=torch_double()).expand(h.shape[:-1])
        return (h.double() + (c - h.double() @ u)[..., None] * u).to(h.dtype)


class Latents:
    """Replace a set of SAE latents, keeping the reconstruction error."""

    name = "latents"

    def __init__(self, sae, latents: list[int]):
        self.sae, self.latents = sae, list(latents)

    def _encode(self, h):
        import torch

        with torch.no_grad():
            return self.sae.encode(h.reshape(-1, h.shape[-1]).float()).reshape(*h.shape[:-1], -1)

    def values(self, h):
        return self._encode(h)[..., self.latents].double()

    def set(self, h, values):
        import torch

        f = self._encode(h)
        new = f.clone()
        new[..., self.latents] = values.to(device=f.device, dtype=f.dtype).expand(*f.shape[:-1], len(self.latents))
        with torch.no_grad():
            delta = self.sae.decode(new) - self.sae.decode(f)
        return (h.float() + delta.reshape(h.shape).to(h.device)).to(h.dtype)


def torch_double():
    import torch

    return torch.float64


class Source:
    """Where a patched row's values come from: a recorded run (call by call) or a constant (None = zero)."""

    def __init__(self, calls: list | None = None, constant=None):
        self.calls, self.constant = calls, constant


class PatchEdit:
    """At one hookpoint: for each batch row j in `rows`, set its subspace to its source's (within its window)."""

    needs_context = True

    def __init__(self, hookpoint: str, subspace, rows: dict, batch: int):
        self.hookpoint, self.subspace, self.rows, self.batch, self.i = hookpoint, subspace, rows, batch, 0

    def __call__(self, h, ctx):
        import torch

        if h.shape[0] != self.batch:
            raise Unbatched(self.hookpoint, int(h.shape[0]))
        out = h.clone()
        for j, (source, window) in self.rows.items():
            row = h[j:j + 1]
            if source.calls is not None:
                if self.i >= len(source.calls) or source.calls[self.i].shape[1:] != row.shape[1:]:
                    got = tuple(source.calls[self.i].shape) if self.i < len(source.calls) else "nothing"
                    raise InputError(f"the runs of a pair differ at {self.hookpoint}: recorded {got}, patching "
                                     f"{tuple(row.shape)}", "give pairs of equal length (or length: crop)")
                values = self.subspace.values(source.calls[self.i].to(h.device))
            elif source.constant is None:
                values = torch.zeros((), dtype=torch.float64, device=h.device)
            else:
                values = source.constant.to(h.device)
            new = self.subspace.set(row, values)
            if window is not None:
                pos = torch.arange(ctx.start, ctx.start + row.shape[1], device=h.device)
                inside = ((pos >= window[0]) & (pos < window[1]))[None, :, None]
                new = torch.where(inside, new, row)
            out[j:j + 1] = new
        self.i += 1
        return out


class Subspaces:
    """What each hookpoint's patch replaces (cfg.subspace), for a pair's target class."""

    def __init__(self, cfg: PatchConfig, adapter, hookpoints: list[str], probes):
        self.kind, self.hookpoints, self.probes, self.cache = cfg.subspace, hookpoints, probes, {}
        self.mean_diff: dict = {}
        if self.kind == "latents":
            sae_path = cfg.patch_sae or cfg.sae
            if not sae_path or not cfg.patch_latents:
                raise InputError("subspace latents needs an SAE (--set patch_sae=SAE, or --sae) and "
                                 "--set 'patch_latents=[N,...]'", "name the SAE and the latents to patch")
            self.sae, hp = load_sae_checked(sae_path, cfg.patch_latents, adapter, cfg.allow_other_model)
            others = [h for h in hookpoints if h != hp]
            if others:
                raise UsageError(f"SAE latents can only be patched at the SAE's hookpoint {hp}, not "
                                 f"{', '.join(others)}", f"pass --hookpoint {hp}")
            self.latents = list(cfg.patch_latents)
        elif self.kind == "direction" and cfg.direction_from == "probe":
            if probes is None:
                raise InputError("subspace direction from a probe needs --probe PROBES",
                                 "or --set direction_from=mean_diff")
            missing = [h for h in hookpoints if h not in probes.hookpoints]
            if missing:
                raise UsageError(f"no probe at {', '.join(missing)} for the direction (probes at: "
                                 f"{', '.join(probes.hookpoints)})", "patch hookpoints the probes were trained on")
        self.direction_from = cfg.direction_from

    @property
    def needs_means(self) -> bool:
        return self.kind == "direction" and self.direction_from == "mean_diff"

    def of(self, hookpoint: str, target: str | None):
        key = (hookpoint, target if self.direction_from == "probe" else None)
        if key not in self.cache:
            if self.kind == "full":
                self.cache[key] = Full()
            elif self.kind == "latents":
                self.cache[key] = Latents(self.sae, self.latents)
            elif self.direction_from == "probe":
                self.cache[key] = Direction(self.probes.direction(hookpoint, target))
            else:
                self.cache[key] = Direction(self.mean_diff[hookpoint])
        return self.cache[key]


class Statistics:
    """Per hookpoint over every row of the pairs: the mean clean activation (mean ablation; for latents, the
    latents' means) and the mean corrupt one (difference-of-means directions). One pass per side needed."""

    def __init__(self):
        self.sums: dict = {}
        self.counts: dict = {}

    def add(self, key, values) -> None:
        flat = values.reshape(-1, values.shape[-1]).double()
        self.sums[key] = flat.sum(dim=0) + (self.sums[key] if key in self.sums else 0)
        self.counts[key] = self.counts.get(key, 0) + flat.shape[0]

    def mean(self, key):
        return (self.sums[key] / self.counts[key]).float()
