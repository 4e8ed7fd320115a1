"""The `torch` family: any PyTorch audio model, with hookpoints named by module path.

What `--model` can be:

* a TorchScript file (`.ts`, `.pt`, `.jit`), saved with `torch.jit.save(torch.jit.script(model), PATH)`; it is
  read with `torch.jit.load` only, never unpickled, so it runs no Python code of its author;
* a torch.export program (`.pt2`), saved with `torch.export.save(torch.export.export(model, (audio,)), PATH)`;
  export it with dynamic shapes (`torch.export.Dim`) for the batch and time axes, else it only accepts the
  batch size and number of samples it was exported with;
* `py:package.module:factory`, a Python callable returning an `nn.Module`. Importing it runs that package's code,
  so it is allowed only with `--trust-code` on the command line (a config file or preset cannot allow it).

The model takes mono audio, (batch, 1, samples) or (batch, samples) (found by trying, or the model option
`input`), through `forward` (or the model option `method`). Its sample rate comes from the model option
`sample_rate`, else from a model attribute `sample_rate`, `sampling_rate` or `sr`.

Hookpoints are the model's module paths (`encoder.0`, `encoder.blocks.3.attn`, ...), in `named_modules()` order,
with globs (`encoder.*`) and `all`. A hookpoint's value is its module's output (the first tensor of a tuple).
Once, on first need, the model runs on 1.0 s and 2.0 s of silence (the dry run): the output axis that grows
with the input is its time axis, and the others, flattened, are its width. Layouts: `channels_first` (time last:
(B, C, T), (B, C, F, T)), `channels_last` (time on axis 1: (B, T, C)) and `item` (no time axis: one row per item,
e.g. a pooled embedding). The model option `layouts` ({hookpoint or glob: layout}) overrides what the dry run
finds; a .pt2 program with a static input length cannot be tried at two lengths, so it needs `layouts` for every
hookpoint it is asked for. A few more lengths, where needed, pin each hookpoint's hop (samples per row) and its
length rule (how many rows n samples give) down exactly.

Rows share one frame grid: the hookpoints of one extraction are all frame-aligned or all `item`. Frame-aligned
ones run at the coarsest hop among them; a finer hookpoint is averaged over the rows inside each coarse row
(a 4-sample hop under an 8-sample one: pairs of rows). Row t covers samples [t*hop, (t+1)*hop) of the window.

Edits (interventions) see every hookpoint as (batch, rows, width) and are mapped back to the module's own shape.
TorchScript modules take no forward hooks, so while hooks are active musicsae steps through the scripted code
in Python down to the hooked modules (everything else still runs compiled); a construct it cannot step through
names a module above it to hook instead.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MusicSAEError, UsageError
from .base import EditContext, ModelAdapter
from .hookpoints import resolve_names
from .hooks import scoped_hooks
from .identity import canonical_id, weights_fingerprint
from .script_stepper import ScriptStepper, Unsteppable, chain

SCRIPT_SUFFIXES = (".ts", ".pt", ".jit")
EXPORT_SUFFIX = ".pt2"
LAYOUTS = ("channels_first", "channels_last", "item")
INPUTS = {"batch_channel_time": "(batch, 1, samples)", "batch_time": "(batch, samples)"}
OPTIONS = ("sample_rate", "layouts", "input", "method")
RATE_ATTRIBUTES = ("sample_rate", "sampling_rate", "sr")
DRY_RUN_S = (1.0, 2.0)  # seconds of silence the dry run feeds the model (one second apart)
HOP_TOLERANCE = 0.01  # from one length alone, a hop within 1% of a whole number of samples is that number
PROBE_BUDGET = 48  # extra dry runs at most to pin one hookpoint's hop and offset down
POSITION_CONVENTION = ("frame-aligned hookpoints: row t covers samples [t*hop, (t+1)*hop) of the window at the "
                       "coarsest hop of the extracted hookpoints (finer ones are averaged over the rows inside it); "
                       "item layout: one row per window, at its start")
SCRIPT_HINT = "save it with torch.jit.save(torch.jit.script(model), PATH), or export it to .pt2 with torch.export"
_PY_NAME = re.compile(r"^py:([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


def claims(name: str) -> bool:
    """Whether `name` is for this family: `py:package.module:callable`, or a path ending in .ts/.pt/.jit/.pt2
    (existing or not: a missing file fails when loaded)."""
    name = str(name)
    return name.startswith("py:") or Path(name).suffix.lower() in (*SCRIPT_SUFFIXES, EXPORT_SUFFIX)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


# ---------------------------------------------------------------------------------------------------------------
# Hookpoint facts from the dry run
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Hookpoint:
    """What the dry run found about one module path."""

    name: str
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # output shapes, one per dry-run length
    time_axis: int | None = None  # None: one row per item
    layout: str = "item"
    width: int = 0
    hop: int | None = None  # samples per row (frame-aligned, whole number), None otherwise
    offset: int = 0  # rows(n) = (n + offset) // hop
    error: UsageError | None = None  # why it cannot be used

    def rows(self, n_samples: int) -> int:
        """Rows of its own for `n_samples` of input (frame-aligned: the model's length rule; item: 1)."""
        if self.time_axis is None:
            return 1 if n_samples > 0 else 0
        return max(0, (int(n_samples) + self.offset) // self.hop)


def feasible_hops(points: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """{hop: (lo, hi)}: every whole hop with the offsets lo <= offset < hi for which rows = (n + offset) // hop holds
    at every (samples, rows) point. A chain of strided layers always follows such a rule."""
    points = sorted(set(points))
    (n_a, t_a), (n_b, t_b) = points[0], points[-1]
    if t_b <= t_a:
        return {}
    span, grown = n_b - n_a, t_b - t_a  # grown is floor or ceil of span / hop
    fits = {}
    for hop in range(max(1, span // (grown + 1)), (span // (grown - 1) + 1 if grown > 1 else n_b) + 1):
        lo = max(hop * t - n for n, t in points)
        hi = min(hop * (t + 1) - n for n, t in points)
        if lo < hi:
            fits[hop] = (lo, hi)
    return fits


def measure_hop(points: list[tuple[int, int]], rows_at: Callable[[int], int | None] | None = None,
                budget: int = PROBE_BUDGET) -> tuple[int | None, int]:
    """(hop, offset) with rows(n) = (n + offset) // hop for every (samples, rows) point, or (None, 0).

    Lengths a whole second apart pin hops that divide the sample rate, but not others (2048 at 48 kHz) nor the
    offset. With `rows_at(n)` (the rows for n samples; None when the model refuses that length), lengths at the
    step edges are tried, by bisection, until one hop and one offset remain: the first length after the shortest
    point that adds a row gives the offset, the next such length the hop. From a single point (a program with a
    static input length), the hop is n / rows when within 1% of a whole number."""
    points = sorted(set(points))
    if len(points) == 1:
        (n, t), = points
        hop = round(n / t) if t > 0 else 0
        return (hop, hop * t - n) if hop >= 1 and abs(hop - n / t) <= HOP_TOLERANCE * n / t else (None, 0)
    spent = 0

    def rows(n: int) -> int | None:
        nonlocal spent
        spent += 1
        t = rows_at(n) if spent <= budget else None
        if t is not None:
            points.append((n, t))
        return t

    def first_growth(lo: int, hi: int, t: int) -> int | None:
        """The shortest length in (lo, hi] with more than t rows (lo has at most t)."""
        top = rows(hi)
        if top is None or top <= t:
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            got = rows(mid)
            if got is None:
                return None
            lo, hi = (lo, mid) if got > t else (mid, hi)
        return hi

    fits = feasible_hops(points)
    if rows_at is not None and fits and not _settled(fits):
        n0, t0 = points[0]
        first = first_growth(max(n0, min(h * (t0 + 1) - hi for h, (_, hi) in fits.items())),
                             max(h * (t0 + 1) - lo for h, (lo, _) in fits.items()), t0)
        fits = feasible_hops(points)
        if first is not None and len(fits) > 1:
            first_growth(first + min(fits) - 1, first + max(fits), t0 + 1)
            fits = feasible_hops(points)
    if not fits:
        return None, 0
    n_long, t_long = max(points)
    hop = min(fits, key=lambda h: abs(h - n_long / t_long))  # one left, unless the model refused a length
    return hop, fits[hop][0]


def _settled(fits: dict[int, tuple[int, int]]) -> bool:
    return len(fits) == 1 and next(iter(fits.values()))[1] - next(iter(fits.values()))[0] == 1


@dataclass(frozen=True)
class Grid:
    """The shared row grid of a set of hookpoints."""

    kind: str  # "frame" or "item"
    hop: int  # samples per row (1 for item)
    factors: dict[str, int]  # rows of a hookpoint averaged into one row

    def rate(self, sample_rate: int) -> float:
        return float(sample_rate) if self.kind == "item" else sample_rate / self.hop


# ---------------------------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------------------------

class TorchAdapter(ModelAdapter):
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
            raise UsageError(f"the .pt2 program rejects input of shape {tuple(x.shape)}: {_first_line(exc)}",
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
            raise _unsteppable_error(exc, hidden[0]) from None

    def _edit_hooks(self, batch: int) -> dict[str, list[Callable]]:
        """The active edits as hooks, for a pass of `batch` items."""
        if not self._edits:
            return {}
        hooks = self.hookpoints
        return {n: [_edit_hook(hooks[n], fn, batch)] for n, fn in self._edits.items()}

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
                regs.setdefault(n, []).append(_capture_hook(hooks[n], store, (factors or {}).get(n, 1)))
            return regs

        with torch.inference_mode():
            b0 = self.static_batch
            size = b0 if b0 is not None else self.max_batch
            whole = size is None or x.shape[0] == size or (b0 is None and x.shape[0] <= size)
            steps = [x] if whole else [x[i:i + size] for i in range(0, x.shape[0], size)]
            for part in steps:
                real = part.shape[0]
                if b0 is not None and real < b0:
                    part = _pad_batch(part, b0)
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
                x = _pad_batch(x, self.static_batch)
            out = self._call_steps(self._shaped(x), self._edit_hooks(x.shape[0]))
        first = _first_tensor(out)
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

    # ---- the dry run ----
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
                                 f"shaped {shapes}: {_first_line(errors[0])}",
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
                                     f"{_first_line(exc)}", "musicsae feeds windows of any length; make the model "
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
                tensor = _first_tensor(output)
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
                    blocked[n] = _unsteppable_error(exc, n)

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


# ---------------------------------------------------------------------------------------------------------------
# Hooks on hookpoint outputs
# ---------------------------------------------------------------------------------------------------------------

def _first_tensor(output):
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


def _capture_hook(hook: Hookpoint, store: dict, factor: int = 1) -> Callable:
    """Keep a hookpoint's output as float32 (batch, rows, width), averaged over groups of `factor` rows (a trailing
    partial group dropped) in the module's own layout before any copy, so fine layers cost little to capture."""
    def capture(module, args, output):
        tensor = _first_tensor(output).detach()
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


def _edit_hook(hook: Hookpoint, fn: Callable, batch: int) -> Callable:
    takes_ctx = bool(getattr(fn, "needs_context", False))

    def edit(module, args, output):
        tensor = _first_tensor(output)
        h = to_rows(tensor, hook)
        edited = fn(h, EditContext(start=0, length=int(h.shape[1]), batch=batch)) if takes_ctx else fn(h)
        if tuple(edited.shape) != tuple(h.shape):
            raise UsageError(f"the edit at hookpoint {hook.name} returned shape {tuple(edited.shape)}, not "
                             f"{tuple(h.shape)}", "return a tensor shaped like the one the edit was given")
        return _replace_first_tensor(output, from_rows(edited, tensor, hook))
    return edit


def _pad_batch(x, batch: int):
    import torch

    return torch.cat([x, x.new_zeros((batch - x.shape[0], *x.shape[1:]))])


def _unsteppable_error(exc: Unsteppable, hookpoint: str) -> UsageError:
    return UsageError(f"cannot step through {exc.kind} in {exc.path or 'the model'}'s {exc.method} to reach "
                      f"hookpoint {hookpoint}", "hook a module above it, or export the model with torch.export "
                      "(.pt2), which supports every module path")


def _listing(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Options:
    sample_rate: int | None = None
    layouts: dict[str, str] = field(default_factory=dict)
    input: str = "auto"
    method: str = "forward"


def _options(options: dict) -> _Options:
    unknown = [k for k in options if k not in OPTIONS]
    if unknown:
        raise UsageError(f"unknown model option '{unknown[0]}' for the torch family",
                         f"options: {', '.join(OPTIONS)}")
    out = _Options()
    if options.get("sample_rate") is not None:
        try:
            out.sample_rate = int(options["sample_rate"])
        except (TypeError, ValueError):
            out.sample_rate = 0
        if out.sample_rate <= 0:
            raise UsageError(f"model option sample_rate must be a positive whole number of Hz, not "
                             f"{options['sample_rate']!r}", "e.g. sample_rate=16000")
    layouts = options.get("layouts") or {}
    if isinstance(layouts, str):
        pairs = [p.split("=", 1) for p in layouts.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise UsageError(f"model option layouts must map hookpoints to layouts, not {layouts!r}",
                             "e.g. layouts='encoder.*=channels_first,head=item'")
        layouts = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(layouts, dict):
        raise UsageError("model option layouts must map hookpoints (or globs) to layouts",
                         f"layouts: {', '.join(LAYOUTS)}")
    for key, value in layouts.items():
        if value not in LAYOUTS:
            raise UsageError(f"unknown layout '{value}' for {key} in the model option layouts",
                             f"use {', '.join(LAYOUTS)}")
    out.layouts = {str(k): str(v) for k, v in layouts.items()}
    out.input = str(options.get("input") or "auto")
    if out.input not in ("auto", *INPUTS):
        raise UsageError(f"unknown model option input '{out.input}'",
                         "use auto, batch_channel_time (batch, 1, samples) or batch_time (batch, samples)")
    out.method = str(options.get("method") or "forward")
    return out


def _load_script(path: Path):
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still loads
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # any failure means "not a TorchScript archive"
        raise InputError(f"{path} is not a TorchScript model ({_first_line(exc)})", SCRIPT_HINT) from None


def _load_export(path: Path):
    """(unflattened module, static input length or None, static batch or None, input layout or None)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
            module = torch.export.unflatten(program)
    except Exception as exc:
        raise InputError(f"{path} is not a torch.export program ({_first_line(exc)})",
                         "save it with torch.export.save(torch.export.export(model, (audio,)), PATH)") from None
    user = list(program.graph_signature.user_inputs)
    if len(user) != 1:
        raise UsageError(f"the .pt2 program {path} takes {len(user)} inputs, not one audio tensor",
                         "export a module whose forward takes the audio alone")
    static_length = static_batch = layout = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == user[0]:
            val = node.meta.get("val")
            shape = list(getattr(val, "shape", []))
            if len(shape) in (2, 3):
                layout = "batch_channel_time" if len(shape) == 3 else "batch_time"
                static_batch = shape[0] if isinstance(shape[0], int) else None
                static_length = shape[-1] if isinstance(shape[-1], int) else None
    return module, static_length, static_batch, layout


def _load_python(name: str, seed: int):
    import importlib

    import torch

    from . import TRUST_CODE

    m = _PY_NAME.match(name)
    if not m:
        raise UsageError(f"'{name}' is not of the form py:package.module:callable", "e.g. py:mypkg.models:build")
    module_name, attr = m.groups()
    if not TRUST_CODE.get():
        raise UsageError(f"--model {name} runs Python code from {module_name}",
                         "pass --trust-code on the command line to allow it (a config file or preset cannot)")
    try:
        package = importlib.import_module(module_name)
    except Exception as exc:  # an import error of the user's package
        raise InputError(f"cannot import {module_name} ({_first_line(exc)})",
                         "install the package or put its folder on PYTHONPATH") from None
    factory = getattr(package, attr, None)
    if not callable(factory):
        raise UsageError(f"{module_name} has no callable {attr}", f"define {attr}() returning the model there")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module",
                         f"make {attr}() return the model")
    return model.eval()


def _attribute_rate(module) -> int | None:
    for attr in RATE_ATTRIBUTES:
        try:
            value = getattr(module, attr, None)
        except Exception:  # a scripted attribute that cannot be read
            value = None
        if value is None or callable(value):
            continue
        try:
            value = int(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):
            continue
        if value > 0:
            return value
    return None


def load(name: str, revision: str | None = None, device: str = "auto", dtype: str = "fp32", seed: int = 0,
         **options) -> TorchAdapter:
    """A TorchScript file, a .pt2 program or a trusted `py:` factory as an adapter (see the module doc); options:
    sample_rate, layouts, input, method."""
    from ..runtime import resolve_device, resolve_dtype

    opts = _options(options)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    static_length = static_batch = None
    if name.startswith("py:"):
        if revision:
            raise UsageError("a py: factory has no revisions", "drop --revision")
        module, source, model_id = _load_python(name, seed), "python", name
    else:
        path = Path(name).expanduser()
        if revision:
            raise UsageError("a local model file has no revisions", "drop --revision")
        if not path.is_file():
            raise InputError(f"model file {path} does not exist", "check the path")
        model_id = canonical_id(name)
        if path.suffix.lower() == EXPORT_SUFFIX:
            module, static_length, static_batch, layout = _load_export(path)
            source = "export"
            if opts.input == "auto" and layout is not None:
                opts.input = layout
            if opts.method != "forward":
                raise UsageError("a .pt2 program has one entry point, forward", "drop the model option method")
        else:
            module, source = _load_script(path), "torchscript"
    if not callable(getattr(module, opts.method, None)):
        raise UsageError(f"model '{model_id}' has no method {opts.method}", "set the model option method")
    rate = opts.sample_rate or _attribute_rate(module)
    if rate is None:
        raise UsageError(f"model '{model_id}' does not say its sample rate",
                         "pass the model option sample_rate (Hz), e.g. sample_rate=16000")
    fingerprint = weights_fingerprint(module)  # as loaded, before any precision cast
    try:
        module.to(device=torch_device, dtype=torch_dtype)
    except Exception as exc:
        raise UsageError(f"cannot move model '{model_id}' to {torch_device} in {torch_dtype}: {_first_line(exc)}",
                         "use --device cpu and --dtype fp32") from None
    if hasattr(module, "eval"):
        module.eval()
    return TorchAdapter(module, model_id, source, rate, method=opts.method, input_layout=opts.input,
                        layouts=opts.layouts, fingerprint=fingerprint, static_length=static_length,
                        static_batch=static_batch, device=torch_device, dtype=torch_dtype)
