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
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


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
