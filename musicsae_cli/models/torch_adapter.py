"""The `torch` family's adapter: module-path hookpoints on their shared grid, captures, edits and the outputs.

What it loads, and how a hookpoint's rows are found, is described in torch_family.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import UsageError
from .base import ModelAdapter
from .hookpoints import resolve_names
from .hooks import scoped_hooks
from .identity import weights_fingerprint
from .script_stepper import ScriptStepper, Unsteppable, chain
from .torch_capture import capture_hook, edit_hook, first_tensor, pad_batch, unsteppable_error
from .torch_dryrun import TorchDryRun, first_line
from .torch_grid import Grid, Hookpoint

POSITION_CONVENTION = ("frame-aligned hookpoints: row t covers samples [t*hop, (t+1)*hop) of the window at the "
                       "coarsest hop of the extracted hookpoints (finer ones are averaged over the rows inside it); "
                       "item layout: one row per window, at its start")


def _listing(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")


class TorchAdapter(TorchDryRun, ModelAdapter):
    """A PyTorch audio model (TorchScript, torch.export or a trusted Python factory) with module-path hookpoints."""

    family = "torch"
    position_convention = POSITION_CONVENTION
    capabilities = frozenset({"audio", "intervene", "outputs"})
    text_prompts = False  # an audio model reads no text
    max_batch: int | None = None  # most items one pass may hold (a model with per-row state sized for that many)

    def __init__(self, module, model_id: str, source: str, sample_rate: int, *, method: str = "forward",
                 input_layout: str = "auto", layouts: dict[str, str] | None = None, fingerprint: str | None = None,
                 static_length: int | None = None, static_batch: int | None = None, device=None, dtype=None):
        import torch

        self.module, self.model_id, self.source = module, model_id, source
        self.revision = None
        self.method = method
        self._input = input_layout  # "auto" until the dry run has tried both
        self.layouts = dict(layouts or {})
        self.fingerprint = fingerprint or weights_fingerprint(module)
        self.static_length, self.static_batch = static_length, static_batch
        self._device = device or torch.device("cpu")
        self._dtype = dtype or torch.float32
        self._rate = int(sample_rate)
        self._scripted = isinstance(module, torch.jit.ScriptModule)
        self._stepper = ScriptStepper() if self._scripted else None
        self._modules = {n: m for n, m in module.named_modules() if n}
        self._names = list(self._modules)
        self._hooks: dict[str, Hookpoint] | None = None
        self._active: list[str] | None = None
        self._edits: dict[str, Callable] = {}
        for pattern in self.layouts:
            try:
                resolve_names(pattern, self._names)
            except UsageError as exc:
                raise UsageError(f"model option layouts: {exc.message}", exc.hint) from None

    # ---- facts ----
    @property
    def device(self):
        return self._device

    @property
    def dtype(self):
        return self._dtype

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def input_layout(self) -> str:
        """How audio is fed: batch_channel_time (B, 1, N) or batch_time (B, N) (the dry run tries both)."""
        self._ensure_dry_run()  # it decides "auto"
        return self._input

    @property
    def hookpoints(self) -> dict[str, Hookpoint]:
        """Every module path with what the dry run found (run on first use)."""
        return self._ensure_dry_run()

    def _ensure_dry_run(self) -> dict[str, Hookpoint]:
        if self._hooks is None:
            self._hooks = self._dry_run()
        return self._hooks

    @property
    def hookpoint_widths(self) -> dict[str, int]:
        return {n: h.width for n, h in self.hookpoints.items() if h.error is None}

    @property
    def grid(self) -> Grid:
        """The row grid of the active hookpoints (set by resolve_hookpoints), else of every frame-aligned one."""
        if self._active:
            return self._grid(self._active)
        framed = [h for h in self.hookpoints.values() if h.error is None and h.hop is not None]
        if not framed:
            return Grid("item", 1, {})
        hop = max(h.hop for h in framed)
        return Grid("frame", hop, {h.name: hop // h.hop for h in framed if hop % h.hop == 0})

    @property
    def frame_rate(self) -> float:
        return self.grid.rate(self.sample_rate)

    @property
    def hop_length(self) -> int:
        return self.grid.hop

    def n_frames(self, n_samples: int) -> int:
        return self._n_rows(self.grid, n_samples)

    def _n_rows(self, grid: Grid, n_samples: int) -> int:
        if grid.kind == "item" or not grid.factors:
            return 1 if n_samples > 0 else 0
        return min(self.hookpoints[h].rows(n_samples) // f for h, f in grid.factors.items())

    def resolve_hookpoints(self, spec: str | list[str]) -> list[str]:
        """Expand `spec` (module paths, globs, `all`) and make the result the active set: its grid sets
        frame_rate, hop_length and n_frames."""
        names = self._expand(spec)
        self._grid(names)  # all frame-aligned or all item, on one grid
        self._active = names
        return names

    def _expand(self, spec: str | list[str]) -> list[str]:
        """Names of `spec`; UsageError for an unusable hookpoint named outright (globs and `all` skip those)."""
        if not self._names:
            raise UsageError(f"model '{self.model_id}' has no submodules to hook",
                             "save it without torch.jit.freeze / optimize_for_inference, which fold them away")
        names = resolve_names(spec, self._names)
        parts = spec if isinstance(spec, list) else str(spec).split(",")
        explicit = {p.strip() for p in parts if p and p.strip() in self._names}
        hooks = self.hookpoints
        for name in names:
            if name in explicit and hooks[name].error is not None:
                raise hooks[name].error
        usable = [n for n in names if hooks[n].error is None]
        if not usable:
            raise hooks[names[0]].error
        return usable

    def _grid(self, names: list[str]) -> Grid:
        hooks = [self.hookpoints[n] for n in names]
        items = [h.name for h in hooks if h.time_axis is None]
        framed = [h for h in hooks if h.time_axis is not None]
        if items and framed:
            raise UsageError(f"hookpoints mix frame-aligned outputs ({_listing([h.name for h in framed])}) and "
                             f"one-row-per-item outputs ({_listing(items)})",
                             "extract them into separate stores, one --hookpoints list for each kind")
        if items:
            return Grid("item", 1, {n: 1 for n in items})
        for h in framed:
            if h.hop is None:
                shapes = " and ".join(str(s) for s in h.shapes[:2])
                raise UsageError(f"hookpoint {h.name} does not add a row every whole number of samples (output "
                                 f"shapes {shapes}), so its rows cannot be aligned to audio frames",
                                 "set its layout to item with the model option layouts (one row per item)")
        coarse = max(framed, key=lambda h: h.hop)
        for h in framed:
            if coarse.hop % h.hop:
                raise UsageError(f"hookpoint {h.name} (a row every {h.hop} samples) does not divide the coarsest "
                                 f"hop, {coarse.hop} samples of {coarse.name}",
                                 "extract them into separate stores")
        return Grid("frame", coarse.hop, {h.name: coarse.hop // h.hop for h in framed})

    def describe(self) -> dict:
        hooks = self.hookpoints
        widths = set(self.hookpoint_widths.values())
        shown = self._active or [n for n, h in hooks.items() if h.error is None]
        try:
            factors = self._grid(shown).factors if shown else {}
        except UsageError:
            factors = {}
        return {**super().describe(), "fingerprint": self.fingerprint, "source": self.source,
                "hidden_size": widths.pop() if len(widths) == 1 else None, "n_layers": len(self._names),
                "method": self.method, "input": self.input_layout, "dtype": str(self.dtype).replace("torch.", ""),
                "hookpoints": {n: {"width": hooks[n].width, "layout": hooks[n].layout,
                                   "native_frame_rate": (self.sample_rate / hooks[n].hop
                                                         if hooks[n].hop else None),
                                   "pooled_by": factors.get(n, 1)} for n in shown}}

    # ---- running the model ----
    def _silence(self, n_samples: int, batch: int = 1):
        import torch

        return torch.zeros(batch, n_samples, device=self.device, dtype=self.dtype)

    def _shaped(self, x, input_layout: str | None = None):
        """(B, N) audio as the model takes it."""
        return x[:, None, :] if (input_layout or self.input_layout) == "batch_channel_time" else x

    def _entry(self, x):
        """The model's own call, no hooks of musicsae (a .pt2 program's shape guards become UsageErrors)."""
        if self.static_length is not None and x.shape[-1] != self.static_length:
            raise UsageError(f"this .pt2 program was exported for inputs of {self.static_length} samples, not "
                             f"{x.shape[-1]}", "re-export it with dynamic shapes (torch.export.Dim), or set window_s"
                             f" to {self.static_length / self.sample_rate:g} s")
        if self.source != "export":
            return getattr(self.module, self.method)(x)
        try:
            return self.module(x)
        except RuntimeError as exc:
            if "Expected input at" not in str(exc):
                raise
            raise UsageError(f"the .pt2 program rejects input of shape {tuple(x.shape)}: {first_line(exc)}",
                             "re-export it with dynamic shapes (torch.export.Dim) for the batch and time axes") \
                from None

    def _call(self, x, hooks: dict[str, list[Callable]]):
        """One forward pass on model-shaped input `x`, with `hooks` ({module path: [hook, ...]})."""
        hooks = {n: fns for n, fns in hooks.items() if fns}
        if not hooks:
            return self._entry(x)
        if self._scripted:
            return self._stepper.run(self.module, hooks, x, method=self.method)
        regs = [(self._modules[n], "forward", chain(fns), False) for n, fns in hooks.items()]
        with scoped_hooks(regs):
            return self._entry(x)

    def _call_steps(self, x, hooks):
        """`_call`, with a construct the stepper cannot enter reported against the hookpoint it hides."""
        try:
            return self._call(x, hooks)
        except Unsteppable as exc:
            hidden = exc.hidden(hooks) or [exc.hides]
            raise unsteppable_error(exc, hidden[0]) from None

    def _edit_hooks(self, batch: int) -> dict[str, list[Callable]]:
        """The active edits as hooks, for a pass of `batch` items."""
        if not self._edits:
            return {}
        hooks = self.hookpoints
        return {n: [edit_hook(hooks[n], fn, batch)] for n, fn in self._edits.items()}

    def _capture(self, x, names: list[str], factors: dict[str, int] | None = None) -> dict[str, Any]:
        """{hookpoint: (B, T, d) float32} for (B, N) audio with the active edits applied; a hookpoint with a
        factor f > 1 is averaged over consecutive groups of f of its rows as it is captured."""
        import torch

        hooks = self.hookpoints
        parts: dict[str, list] = {n: [] for n in names}
        store: dict[str, Any] = {}

        def hooks_for(batch: int) -> dict:
            regs = self._edit_hooks(batch)  # edits first: captures see the edited value
            for n in names:
                regs.setdefault(n, []).append(capture_hook(hooks[n], store, (factors or {}).get(n, 1)))
            return regs

        with torch.inference_mode():
            b0 = self.static_batch
            size = b0 if b0 is not None else self.max_batch
            whole = size is None or x.shape[0] == size or (b0 is None and x.shape[0] <= size)
            steps = [x] if whole else [x[i:i + size] for i in range(0, x.shape[0], size)]
            for part in steps:
                real = part.shape[0]
                if b0 is not None and real < b0:
                    part = pad_batch(part, b0)
                store.clear()
                self._call_steps(self._shaped(part), hooks_for(part.shape[0]))
                for n in names:
                    if n not in store:
                        raise UsageError(f"hookpoint {n} did not run in this forward pass",
                                         "choose a module the model calls for every input")
                    parts[n].append(store[n][:real])
        return {n: p[0] if len(p) == 1 else torch.cat(p) for n, p in parts.items()}

    def audio_activations(self, audio, hookpoints, texts=None):
        """Per item, hookpoint -> (rows, d) float32 tensor on the shared grid (finer hookpoints averaged);
        items of equal length run as one batch."""
        import torch

        names = list(hookpoints)
        active = self._active or []
        grid = self._grid(active) if active and set(names) <= set(active) else self._grid(self._expand(names))
        items = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audio]
        by_length: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            by_length.setdefault(item.size, []).append(i)
        out: list[dict | None] = [None] * len(items)
        for n, members in by_length.items():
            x = torch.from_numpy(np.stack([items[i] for i in members])).to(self.device, self.dtype)
            got = self._capture(x, names, grid.factors)  # pooled onto the grid as captured
            for b, i in enumerate(members):
                rows = {h: got[h][b] for h in names}
                keep = min([self._n_rows(grid, n), *(r.shape[0] for r in rows.values())])
                out[i] = {h: r[:keep] for h, r in rows.items()}
        return out

    def forward(self, audio: np.ndarray):
        """The model's own output for one mono item (its first tensor, batch axis dropped), edits applied."""
        import torch

        x = torch.from_numpy(np.asarray(audio, dtype=np.float32).reshape(1, -1)).to(self.device, self.dtype)
        with torch.inference_mode():
            if self.static_batch not in (None, 1):
                x = pad_batch(x, self.static_batch)
            out = self._call_steps(self._shaped(x), self._edit_hooks(x.shape[0]))
        first = first_tensor(out)
        if first is None:
            raise UsageError(f"model '{self.model_id}' returned {type(out).__name__}, not a tensor",
                             "hook the module that gives the output you want")
        return first[0].float()

    def outputs(self, audio: np.ndarray) -> np.ndarray:
        """The model's own output for one item (first tensor, batch axis dropped) as float32, edits applied."""
        return self.forward(audio).float().cpu().numpy()

    @contextmanager
    def intervene(self, edits: dict):
        """While active, each hookpoint's output h (as (batch, rows, width); item layout (batch, 1, width)) is
        replaced by edits[hookpoint](h) (or fn(h, EditContext) when fn has `needs_context`), mapped back to the
        module's own shape. Captures see the edited value."""
        expanded = {n: fn for key, fn in edits.items() for n in self._expand([key])}  # globs: every match
        previous, self._edits = self._edits, {**self._edits, **expanded}
        try:
            yield
        finally:
            self._edits = previous
