"""Hooks on `torch`-family hookpoint outputs: (batch, rows, width) views, captures pooled as captured, and edits."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UsageError
from .base import EditContext
from .script_stepper import Unsteppable
from .torch_grid import Hookpoint


def first_tensor(output):
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def _replace_first_tensor(output, new):
    import torch

    if isinstance(output, torch.Tensor):
        return new
    items = list(output)
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            items[i] = new
            break
    return tuple(items) if isinstance(output, tuple) else items


def to_rows(t, hook: Hookpoint):
    """A hookpoint output as (batch, rows, width): its time axis second, the other axes flattened."""
    if hook.time_axis is None:
        return t.reshape(t.shape[0], 1, -1)
    moved = t.movedim(hook.time_axis, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def from_rows(h, like, hook: Hookpoint):
    """The inverse of `to_rows`: (batch, rows, width) back to the shape and dtype of `like`."""
    if hook.time_axis is None:
        return h.reshape(like.shape).to(like.dtype)
    moved = like.movedim(hook.time_axis, 1)
    return h.reshape(moved.shape).movedim(1, hook.time_axis).to(like.dtype)


def capture_hook(hook: Hookpoint, store: dict, factor: int = 1) -> Callable:
    """Keep a hookpoint's output as float32 (batch, rows, width), averaged over groups of `factor` rows (a trailing
    partial group dropped) in the module's own layout before any copy, so fine layers cost little to capture."""
    def capture(module, args, output):
        tensor = first_tensor(output).detach()
        if factor > 1 and hook.time_axis is not None:
            rows = to_rows(_group_mean(tensor, hook.time_axis, factor), hook)
        else:
            rows = to_rows(tensor, hook)
        shared = rows.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
        store[hook.name] = rows.to(dtype=_float32(), copy=shared)  # the module may reuse its output buffer
    return capture


def _group_mean(t, axis: int, factor: int):
    """Mean over consecutive groups of `factor` steps along `axis` (a trailing partial group dropped)."""
    from torch.nn import functional as F  # noqa: N812

    m = t.shape[axis] // factor
    if t.dim() == 3 and axis == 2 and t.is_floating_point():
        return F.avg_pool1d(t, factor, factor)
    return t.narrow(axis, 0, m * factor).unflatten(axis, (m, factor)).mean(axis + 1)


def _float32():
    import torch

    return torch.float32


def edit_hook(hook: Hookpoint, fn: Callable, batch: int) -> Callable:
    takes_ctx = bool(getattr(fn, "needs_context", False))

    def edit(module, args, output):
        tensor = first_tensor(output)
        h = to_rows(tensor, hook)
        edited = fn(h, EditContext(start=0, length=int(h.shape[1]), batch=batch)) if takes_ctx else fn(h)
        if tuple(edited.shape) != tuple(h.shape):
            raise UsageError(f"the edit at hookpoint {hook.name} returned shape {tuple(edited.shape)}, not "
                             f"{tuple(h.shape)}", "return a tensor shaped like the one the edit was given")
        return _replace_first_tensor(output, from_rows(edited, tensor, hook))
    return edit


def pad_batch(x, batch: int):
    import torch

    return torch.cat([x, x.new_zeros((batch - x.shape[0], *x.shape[1:]))])


def unsteppable_error(exc: Unsteppable, hookpoint: str) -> UsageError:
    return UsageError(f"cannot step through {exc.kind} in {exc.path or 'the model'}'s {exc.method} to reach "
                      f"hookpoint {hookpoint}", "hook a module above it, or export the model with torch.export "
                      "(.pt2), which supports every module path")
