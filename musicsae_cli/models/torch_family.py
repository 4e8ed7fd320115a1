"""The `torch` family: what --model can be, its model options, and loading (TorchScript, torch.export, py:).

Any PyTorch audio model, with hookpoints named by module path.

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

Here: claims, the options and the loader. The adapter is in torch_adapter, the dry run in torch_dryrun, a hookpoint's
rows and the shared grid in torch_grid, the hooks in torch_capture.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, UsageError
from .identity import canonical_id, weights_fingerprint
from .torch_adapter import TorchAdapter
from .torch_dryrun import INPUTS, first_line

SCRIPT_SUFFIXES = (".ts", ".pt", ".jit")
EXPORT_SUFFIX = ".pt2"
LAYOUTS = ("channels_first", "channels_last", "item")
OPTIONS = ("sample_rate", "layouts", "input", "method")
RATE_ATTRIBUTES = ("sample_rate", "sampling_rate", "sr")
SCRIPT_HINT = "save it with torch.jit.save(torch.jit.script(model), PATH), or export it to .pt2 with torch.export"
_PY_NAME = re.compile(r"^py:([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


def claims(name: str) -> bool:
    """Whether `name` is for this family: `py:package.module:callable`, or a path ending in .ts/.pt/.jit/.pt2
    (existing or not: a missing file fails when loaded)."""
    name = str(name)
    return name.startswith("py:") or Path(name).suffix.lower() in (*SCRIPT_SUFFIXES, EXPORT_SUFFIX)


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


def load_script(path: Path):
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still loads
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # any failure means "not a TorchScript archive"
        raise InputError(f"{path} is not a TorchScript model ({first_line(exc)})", SCRIPT_HINT) from None


def _load_export(path: Path):
    """(unflattened module, static input length or None, static batch or None, input layout or None)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
            module = torch.export.unflatten(program)
    except Exception as exc:
        raise InputError(f"{path} is not a torch.export program ({first_line(exc)})",
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
        raise InputError(f"cannot import {module_name} ({first_line(exc)})",
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


def attribute_rate(module) -> int | None:
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
            module, source = load_script(path), "torchscript"
    if not callable(getattr(module, opts.method, None)):
        raise UsageError(f"model '{model_id}' has no method {opts.method}", "set the model option method")
    rate = opts.sample_rate or attribute_rate(module)
    if rate is None:
        raise UsageError(f"model '{model_id}' does not say its sample rate",
                         "pass the model option sample_rate (Hz), e.g. sample_rate=16000")
    fingerprint = weights_fingerprint(module)  # as loaded, before any precision cast
    try:
        module.to(device=torch_device, dtype=torch_dtype)
    except Exception as exc:
        raise UsageError(f"cannot move model '{model_id}' to {torch_device} in {torch_dtype}: {first_line(exc)}",
                         "use --device cpu and --dtype fp32") from None
    if hasattr(module, "eval"):
        module.eval()
    return TorchAdapter(module, model_id, source, rate, method=opts.method, input_layout=opts.input,
                        layouts=opts.layouts, fingerprint=fingerprint, static_length=static_length,
                        static_batch=static_batch, device=torch_device, dtype=torch_dtype)
