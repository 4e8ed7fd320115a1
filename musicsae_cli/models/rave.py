"""The `rave` family: RAVE exports (TorchScript files saved from a scripted RAVE model), by encoder block.

A RAVE export is a TorchScript file (`.ts`, `.pt`) with the methods `encode` (audio (B, C, N) -> latent
(B, latent_size, N / ratio)) and `decode`, a buffer `encode_params` ([in_channels, in_ratio, latent_channels,
encode_ratio]) and an attribute `sr` (its sample rate). It is read with `torch.jit.load` only.

Hookpoints:

* `pqmf`: the multiband split of the input (a row every `bands` samples);
* `encoder.N`: the output of block N of the encoder's `net`;
* `latent.raw`: the output of the `encoder` module itself, before the export's bottleneck (a variational
  encoder's mean and scale of the full latent, before the PCA rotation and the crop);
* `latent`: what `encode` returns, the PCA-ordered latent (a row every `encode_ratio` samples, i.e. sr / ratio
  frames per second). Variational exports subtract `latent_mean`, rotate by `latent_pca` and keep `latent_size`
  dimensions, so dimension 0 carries the most variance;
* `decoder.N`: the output of block N of the decoder's `net`, in `decode` of the latent (hooking one runs the
  decoder too).

Everything else follows the `torch` family: widths and time axes come from a dry run on silence, and the hookpoints
of one extraction share the coarsest grid among them (finer ones averaged over the rows inside each coarse row).

musicsae feeds mono audio (multichannel files are downmixed when read, and extraction records it); a stereo export
(`n_channels` 2) gets that mono signal on both channels. The model's own output (`outputs`) is its re-synthesis of
the input: `decode(encode(x))`, with any edits applied at any hookpoint, as (channels, samples) audio at `sr`.

RAVE draws random numbers (the variational bottleneck's sample, the decoder's noise synthesis): every pass seeds
torch's generator with `noise_seed` (0) first, so the same audio gives the same activations and re-synthesis, and a
steered pass is paired with the plain one. A streaming export (cached convolutions, which keep the end of one call
to pad the next: buffers `pad`/`cache` beside an `initialized` flag) has that state zeroed before every pass, so
each item is a fresh stream and nothing leaks between items; its causal convolutions delay the rows by the export's
latency, which the describe record notes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from .identity import canonical_id, weights_fingerprint
from .script_stepper import Unsteppable
from .torch_adapter import TorchAdapter
from .torch_family import SCRIPT_SUFFIXES, attribute_rate, load_script

LATENT = "latent"
LATENT_RAW = "latent.raw"
PQMF = "pqmf"
ENCODER = "encoder"
NET_PATHS = ("encoder.net", "encoder.encoder.net")  # where the encoder's blocks live, first found wins
DECODER_NET = "decoder.net"
STATE_BUFFERS = ("pad", "cache")  # a cached convolution's state (beside its `initialized` flag)
REQUIRED_METHODS = ("encode", "decode")
REQUIRED_BUFFER = "encode_params"
POSITION_CONVENTION = ("row t covers samples [t*hop, (t+1)*hop) of the window at the coarsest hop of the extracted "
                       "hookpoints (latent: hop = the encode ratio); finer hookpoints are averaged over the rows "
                       "inside it")

_CACHE: dict[tuple[str, int, int], Any] = {}  # (resolved path, mtime, size) -> module loaded by claims()


class RaveError(UsageError):
    """A model given to the rave family is not a usable RAVE export (exit 2)."""


class RaveShortAudioError(InputError):
    """Audio shorter than one latent frame (exit 2)."""


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _module_for(path: Path, keep: bool):
    """The TorchScript module at `path`, loaded once: claims() keeps it for load(), which takes it out."""
    key = _key(path)
    module = _CACHE.pop(key, None) if not keep else _CACHE.get(key)
    if module is None:
        module = load_script(path)
        if keep:
            _CACHE.clear()  # one pending module at most
            _CACHE[key] = module
    return module


def _methods(module) -> set[str]:
    try:
        return set(module._c._method_names())
    except Exception:  # not a ScriptModule
        return {m for m in REQUIRED_METHODS if callable(getattr(module, m, None))}


def _buffers(module) -> set[str]:
    try:
        return {n for n, _ in module.named_buffers(recurse=False)}
    except Exception:
        return set()


def missing_parts(module) -> list[str]:
    """What `module` lacks to be a RAVE export ([] when it is one)."""
    methods = _methods(module)
    missing = [f"no {m} method" for m in REQUIRED_METHODS if m not in methods]
    if REQUIRED_BUFFER not in _buffers(module):
        missing.append(f"no {REQUIRED_BUFFER} buffer")
    return missing


def claims(name: str) -> bool:
    """Whether `name` is a .ts/.pt file holding a RAVE export (methods encode and decode, buffer encode_params).
    The file is loaded to check, once: load() reuses it."""
    path = Path(str(name)).expanduser()
    if path.suffix.lower() not in SCRIPT_SUFFIXES or not path.is_file():
        return False
    try:
        if not missing_parts(_module_for(path, keep=True)):
            return True
    except Exception:  # not TorchScript, unreadable: some other family's, or a load error later
        pass
    _CACHE.clear()  # keep no module another family loads itself
    return False


def _int(value, default: int | None = None) -> int | None:
    try:
        return int(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return default


class _Hidden(Unsteppable):
    """An Unsteppable from stepping through module paths, reported against RAVE hookpoint names."""

    def __init__(self, exc: Unsteppable, paths: dict[str, str]):
        super().__init__(exc.kind, exc.path, exc.method, exc.hides, exc.inclusive)
        self._inner, self._paths = exc, paths

    def hidden(self, names) -> list[str]:
        names = list(names)
        by_path = {self._paths.get(n, n): n for n in names}
        return [by_path[p] for p in self._inner.hidden(list(by_path))]


def state_buffers(module) -> list:
    """The buffers a streaming export keeps between calls ([] for a stateless export)."""
    found = []
    for _, m in module.named_modules():
        try:
            own = dict(m.named_buffers(recurse=False))
        except Exception:
            continue
        if hasattr(m, "initialized"):
            found += [own[n] for n in STATE_BUFFERS if n in own]
    return found


class RaveAdapter(TorchAdapter):
    """A RAVE export with hookpoints pqmf, encoder.N, latent.raw, latent and decoder.N (see the module doc)."""

    family = "rave"
    position_convention = POSITION_CONVENTION
    output_audio = True  # outputs(): the re-synthesis
    latent_hookpoint = LATENT
    noise_seed = 0

    def __init__(self, module, model_id: str, sample_rate: int, *, fingerprint: str | None = None,
                 device=None, dtype=None):
        super().__init__(module, model_id, "torchscript", sample_rate, method="encode",
                         input_layout="batch_channel_time", fingerprint=fingerprint, device=device, dtype=dtype)
        params = [_int(v) for v in module.encode_params.tolist()] if hasattr(module, "encode_params") else []
        self.n_channels = _int(getattr(module, "n_channels", None), params[0] if params else 1) or 1
        self.encode_ratio = params[3] if len(params) == 4 else None
        self.latent_size = _int(getattr(module, "latent_size", None))
        self.full_latent_size = _int(getattr(module, "full_latent_size", None))
        modules = dict(module.named_modules())
        self.net_path = next((p for p in NET_PATHS if p in modules and len(list(modules[p].children()))), None)
        if self.net_path is None:
            raise RaveError(f"RAVE export '{model_id}' has no encoder blocks (looked for "
                            f"{' or '.join(NET_PATHS)})", "load it with --family torch to hook its module paths")
        paths = {PQMF: PQMF} if PQMF in modules else {}
        for child, _ in modules[self.net_path].named_children():
            paths[f"encoder.{child}"] = f"{self.net_path}.{child}"
        if ENCODER in modules and self.net_path != ENCODER:
            paths[LATENT_RAW] = ENCODER
        decoder = [f"decoder.{c}" for c, _ in modules[DECODER_NET].named_children()] if DECODER_NET in modules else []
        self._decoder = {n: f"{DECODER_NET}.{n.split('.', 1)[1]}" for n in decoder}
        self._paths = {**paths, **self._decoder}  # hookpoint -> module path (latent: the return of encode)
        self._modules = {**{n: modules[p] for n, p in self._paths.items()}, LATENT: module}
        self._names = [*paths, LATENT, *decoder]
        self._state = state_buffers(module)
        self.streaming = bool(self._state)
        self.max_batch = min(int(b.shape[0]) for b in self._state) if self._state else None
        self._decode = False  # run decode even without decoder hooks (outputs)

    # ---- input ----
    def _shaped(self, x, input_layout: str | None = None):
        """(B, N) mono audio as (B, n_channels, N): a stereo export gets it on both channels."""
        x = x[:, None, :]
        return x.repeat(1, self.n_channels, 1) if self.n_channels > 1 else x

    def audio_activations(self, audio, hookpoints, texts=None):
        ratio = self.encode_ratio or self.hookpoints[LATENT].hop or 1
        for item in audio:
            n = int(getattr(item, "size", len(item)))
            if n < ratio:
                raise RaveShortAudioError(f"audio of {n} samples ({n / self.sample_rate:.4g} s) is shorter than one "
                                          f"latent frame of this RAVE export ({ratio} samples)",
                                          f"feed at least {ratio / self.sample_rate:.4g} s at {self.sample_rate} Hz")
        return super().audio_activations(audio, hookpoints, texts)

    @property
    def input_channels(self) -> int:
        return self.n_channels

    # ---- running ----
    def _call(self, x, hooks: dict[str, list[Callable]]):
        """encode(x), then decode(z) when a decoder hookpoint is hooked or outputs are wanted; hooks on RAVE
        hookpoints: module paths stepped into, `latent` on the return value of encode. Streaming state is zeroed
        and torch's generator seeded with `noise_seed` first (see the module doc)."""
        import torch

        from .script_stepper import chain

        for buffer in self._state:
            buffer.zero_()
        hooks = {n: fns for n, fns in hooks.items() if fns}
        latent = hooks.pop(LATENT, None)
        decoder = {self._paths[n]: hooks.pop(n) for n in list(hooks) if n in self._decoder}
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.noise_seed)
            try:
                z = super()._call(x, {self._paths[n]: fns for n, fns in hooks.items()})
                if latent:
                    z = chain(latent)(self.module, (x,), z)
                if not (decoder or self._decode):
                    return z
                if not decoder:
                    return self.module.decode(z)
                return self._stepper.run(self.module, decoder, z, method="decode")
            except Unsteppable as exc:
                raise _Hidden(exc, self._paths) from None

    def _measure(self, hook, runs: list, blocked: dict) -> None:
        """Decoder blocks upsample the latent: u rows per latent frame, so their rows come in groups of u and no
        single (n + offset) // hop rule fits every length; they get hop = encode ratio / u (offset 0), the grid
        their rows are pooled onto, and captures keep the rows the model gives."""
        super()._measure(hook, runs, blocked)
        if hook.hop is not None or hook.name not in self._decoder or not self.encode_ratio:
            return
        factors = set()
        for _, shapes in runs:
            latent, mine = shapes.get(LATENT), shapes.get(hook.name)
            if not (isinstance(latent, tuple) and isinstance(mine, tuple)) or latent[-1] == 0:
                return
            factors.add(mine[hook.time_axis] / latent[-1])
        u = factors.pop() if len(factors) == 1 else None
        if u is not None and u == int(u) and self.encode_ratio % int(u) == 0:
            hook.hop, hook.offset = self.encode_ratio // int(u), 0

    def outputs(self, audio):
        """The re-synthesis decode(encode(audio)) as (channels, samples) float32, edits applied at any hookpoint."""
        self._decode = True
        try:
            return self.forward(audio).cpu().numpy()  # (channels, samples)
        finally:
            self._decode = False

    def describe(self) -> dict:
        channels = ("mono" if self.n_channels == 1 else f"mono audio duplicated onto {self.n_channels} channels")
        return {**super().describe(), "input": f"(batch, {self.n_channels}, samples)", "channels": channels,
                "encode_ratio": self.encode_ratio, "latent_size": self.latent_size,
                "full_latent_size": self.full_latent_size, "noise_seed": self.noise_seed,
                "streaming": ({"state": "zeroed before every pass (each item a fresh stream)",
                               "max_batch": self.max_batch,
                               "note": "cached convolutions are causal: rows lag the audio by the export's latency"}
                              if self.streaming else False),
                "hookpoint_paths": {n: self._paths.get(n, "encode() return") for n in self._names}}


def load(name: str, revision: str | None = None, device: str = "auto", dtype: str = "fp32", seed: int = 0,
         **options) -> RaveAdapter:
    """A RAVE export (.ts/.pt TorchScript) as an adapter; it takes no model options."""
    from ..runtime import resolve_device, resolve_dtype
    from . import no_options

    no_options("rave", options)
    if revision:
        raise UsageError("a local model file has no revisions", "drop --revision")
    path = Path(name).expanduser()
    if not path.is_file():
        raise InputError(f"model file {path} does not exist", "check the path")
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    module = _module_for(path, keep=False)
    model_id = canonical_id(name)
    missing = missing_parts(module)
    if missing:
        found = sorted(m for m in _methods(module) if not m.startswith("_"))
        raise RaveError(f"{path.name} is TorchScript but not a RAVE export: {', '.join(missing)} (methods: "
                        f"{', '.join(found) or 'none'})", "load it with --family torch")
    rate = attribute_rate(module)
    if rate is None:
        raise RaveError(f"RAVE export '{model_id}' has no sample rate attribute sr",
                        "re-export it from a RAVE model, or load it with --family torch and sample_rate=...")
    fingerprint = weights_fingerprint(module)
    try:
        module.to(device=torch_device, dtype=torch_dtype)
    except Exception as exc:
        raise UsageError(f"cannot move model '{model_id}' to {torch_device} in {torch_dtype}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                         "use --device cpu and --dtype fp32") from None
    module.eval()
    return RaveAdapter(module, model_id, rate, fingerprint=fingerprint, device=torch_device, dtype=torch_dtype)


__all__ = ["LATENT", "RaveAdapter", "RaveError", "RaveShortAudioError", "claims", "load", "missing_parts"]
