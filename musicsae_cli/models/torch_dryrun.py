"""The `torch` family's dry run: the model run on silence, and each hookpoint's usability, layout, width and hop.

TorchDryRun is mixed into TorchAdapter, whose `_call`, `_shaped` and `_silence` run the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MusicSAEError, UsageError
from .script_stepper import Unsteppable
from .torch_capture import first_tensor, unsteppable_error
from .torch_grid import Hookpoint, measure_hop

INPUTS = {"batch_channel_time": "(batch, 1, samples)", "batch_time": "(batch, samples)"}
DRY_RUN_S = (1.0, 2.0)  # seconds of silence the dry run feeds the model (one second apart)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


class TorchDryRun:
    """The dry run of a TorchAdapter (see the module doc)."""

    def _dry_run(self) -> dict[str, Hookpoint]:
        """Run the model on silence and read each hookpoint's layout, width and hop from its output shapes.

        Two lengths, 1 s and 2 s, find the time axes; then, per frame-aligned hookpoint whose hop and offset the
        runs so far leave open, a few more lengths at its step edges pin them down (see measure_hop). A program
        with a static input length gets one run and the layouts it is given."""
        import torch

        found = {n: Hookpoint(n) for n in self._names}
        blocked: dict[str, UsageError] = {}
        if self.static_length is not None:
            lengths = [self.static_length]
        else:
            lengths = [max(1, round(s * self.sample_rate)) for s in DRY_RUN_S]
        candidates = [self._input] if self._input != "auto" else list(INPUTS)
        with torch.inference_mode():
            first = None
            errors: list[BaseException] = []
            for layout in candidates:
                try:
                    first = self._shapes_at(lengths[0], layout, blocked)
                except MusicSAEError:
                    raise
                except Exception as exc:  # the model's own error, reported below
                    errors.append(exc)
                    continue
                self._input = layout
                break
            if first is None:
                shapes = " or ".join(str(tuple(self._shaped(self._silence(lengths[0]), c).shape)) for c in candidates)
                raise UsageError(f"model '{self.model_id}' failed on {lengths[0] / self.sample_rate:g} s of silence "
                                 f"shaped {shapes}: {first_line(errors[0])}",
                                 "check the model options sample_rate, input (batch_channel_time or batch_time) "
                                 "and method")
            runs = [(lengths[0], first)]
            for n in lengths[1:]:
                try:
                    runs.append((n, self._shapes_at(n, self._input, blocked)))
                except MusicSAEError:
                    raise
                except Exception as exc:
                    raise UsageError(f"model '{self.model_id}' failed on {n / self.sample_rate:g} s of silence: "
                                     f"{first_line(exc)}", "musicsae feeds windows of any length; make the model "
                                     "accept them") from None
            for hook in found.values():
                self._read_hookpoint(hook, runs, blocked)
            for hook in found.values():
                if hook.error is None and hook.time_axis is not None:
                    self._measure(hook, runs, blocked)
        return found

    def _measure(self, hook: Hookpoint, runs: list, blocked: dict) -> None:
        """The hop and offset of a frame-aligned hookpoint from every run so far, with more runs where needed
        (added to `runs`, so later hookpoints see them too)."""
        name, axis = hook.name, hook.time_axis

        def rows_at(n: int) -> int | None:
            try:
                shapes = self._shapes_at(n, self._input, blocked)
            except MusicSAEError:
                raise
            except Exception:  # a length the model does not take
                return None
            runs.append((n, shapes))
            got = shapes.get(name)
            return got[axis] if isinstance(got, tuple) and len(got) > axis else None

        points = [(n, got[name][axis]) for n, got in runs if isinstance(got.get(name), tuple)]
        hook.hop, hook.offset = measure_hop(points, None if self.static_length is not None else rows_at)

    def _shapes_at(self, n_samples: int, input_layout: str, blocked: dict[str, UsageError]) -> dict:
        """{hookpoint: output shape or a reason string} for `n_samples` of silence; hookpoints a scripted
        construct hides are moved to `blocked`."""
        shapes: dict[str, Any] = {}

        def record(name: str):
            def hook(module, args, output):
                tensor = first_tensor(output)
                shapes[name] = tuple(tensor.shape) if tensor is not None else type(output).__name__
            return hook

        x = self._shaped(self._silence(n_samples), input_layout)
        while True:
            shapes.clear()
            hooks = {n: [record(n)] for n in self._names if n not in blocked}
            try:
                self._call(x, hooks)
                return dict(shapes)
            except Unsteppable as exc:
                hidden = exc.hidden(hooks)
                if not hidden:
                    raise UsageError(f"cannot step through {exc.kind} in {exc.path or 'the model'}'s {exc.method}",
                                     "export the model with torch.export (.pt2), which supports every module path") \
                        from None
                for n in hidden:
                    blocked[n] = unsteppable_error(exc, n)

    def _read_hookpoint(self, hook: Hookpoint, runs: list, blocked: dict) -> None:
        """What the first runs say about one hookpoint: usable or why not, and its layout and width."""
        name = hook.name
        if name in blocked:
            hook.error = blocked[name]
            return
        seen = [shapes.get(name) for _, shapes in runs]
        if any(s is None for s in seen):
            hook.error = UsageError(f"hookpoint {name} did not run in the model's {self.method}",
                                    "choose a module the model calls (a fused layer, such as "
                                    "nn.TransformerEncoderLayer at inference, skips its submodules: hook the layer)")
        elif any(isinstance(s, str) for s in seen):
            hook.error = UsageError(f"hookpoint {name} gives a {seen[0]}, not a tensor",
                                    "choose a module whose output is a tensor (or a tuple starting with one)")
        else:
            hook.shapes = list(seen)
            self._read_layout(hook)

    def _read_layout(self, hook: Hookpoint) -> None:
        name, shapes = hook.name, hook.shapes
        shown = " and ".join(str(s) for s in shapes[:2])
        first = shapes[0]
        if len(first) == 0 or first[0] != 1 or any(len(s) != len(first) for s in shapes):
            hook.error = UsageError(f"hookpoint {name} has no batch axis first (output shapes {shown} for a batch "
                                    "of 1)", "choose a module whose output is (batch, ...)")
            return
        changing = [a for a in range(1, len(first)) if len({s[a] for s in shapes[:2]}) > 1]
        set_layout = self._layout_option(name)
        static = self.static_length is not None
        if static and set_layout is None:
            hook.error = UsageError(f"this .pt2 program was exported for inputs of {self.static_length} samples "
                                    f"only, so the time axis of hookpoint {name} (output shape {shown}) cannot be "
                                    "found", "set its layout with the model option layouts (channels_first, "
                                    "channels_last or item), or re-export with dynamic shapes (torch.export.Dim)")
            return
        if len(changing) > 1:
            hook.error = UsageError(f"hookpoint {name} has several axes that follow the input length (output "
                                    f"shapes {shown})", "hook a module whose output has one time axis")
            return
        if set_layout == "item" or (set_layout is None and not changing):
            if changing:
                hook.error = UsageError(f"hookpoint {name} follows the input length (output shapes {shown}), so "
                                        "one row per item would change width", "leave its layout unset, or use "
                                        "channels_first or channels_last")
                return
            hook.time_axis, hook.layout, hook.width = None, "item", int(np.prod(first[1:], dtype=np.int64))
            return
        if set_layout is not None:
            axis = len(first) - 1 if set_layout == "channels_first" else 1
            if len(first) < 2 or (not static and not changing):
                hook.error = UsageError(f"hookpoint {name} has no time axis (output shape {shown}) and cannot be "
                                        "frame-aligned", "use layout item (one row per item)")
                return
            if not static and changing[0] != axis:
                hook.error = UsageError(f"layout {set_layout} puts the time of hookpoint {name} on axis {axis}, but "
                                        f"its axis {changing[0]} follows the input length (output shapes {shown})",
                                        "leave its layout unset, or set the other one")
                return
        else:
            axis = changing[0]
        hook.time_axis = axis
        hook.layout = ("channels_first" if axis == len(first) - 1 else "channels_last" if axis == 1
                       else f"time_axis_{axis}")
        hook.width = int(np.prod([d for a, d in enumerate(first) if a not in (0, axis)], dtype=np.int64))

    def _layout_option(self, name: str) -> str | None:
        if name in self.layouts:
            return self.layouts[name]
        import fnmatch

        for pattern, layout in self.layouts.items():
            if pattern == "all" or fnmatch.fnmatchcase(name, pattern):
                return layout
        return None
