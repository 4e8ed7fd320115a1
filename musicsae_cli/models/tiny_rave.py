"""A tiny RAVE-format export (random weights) for trying the RAVE workflow offline, tests and benchmarks.

It has what a RAVE export has, at toy size: methods `encode` (pqmf -> encoder blocks -> a 1x1 'mean' projection,
minus `latent_mean`, rotated by `latent_pca`, the first `latent_size` dimensions) and `decode(z, from_forward=False)`
(zero-padded to the full latent, the inverse rotation, the decoder's upsampling blocks, a waveform plus a little
random noise, then the inverse band split back to audio), attributes `sr`, `latent_size`, `full_latent_size`,
`n_channels`, buffers `encode_params`, `decode_params`, `forward_params`, `latent_pca`, `latent_mean`,
`fidelity`, and children `pqmf`, `encoder` (`encoder.net`: strided conv blocks) and `decoder` (`net`: upsampling
blocks, `waveform_module`, `noise_module`). Like RAVE's decoder it draws random noise, so a re-synthesis depends on
the torch seed. With `streaming=True` the encoder's convolutions pad from a cache kept between calls (buffers `pad`,
as cached convolutions keep them), so a call depends on the calls before it. It is scripted and saved with
`torch.jit.save`, and loaded back through the same path as a real export. Imports torch: load lazily.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

TINY_FILE = "tiny_rave.ts"


@dataclass(frozen=True)
class RaveDims:
    """Sizes of a RAVE-format export: encode ratio = bands * 2 ** blocks."""

    sr: int = 4096
    bands: int = 4
    blocks: int = 4
    hidden: int = 8
    full_latent: int = 8
    latent: int = 4
    channels: int = 1
    streaming: bool = False

    @property
    def ratio(self) -> int:
        return self.bands * 2 ** self.blocks


class PQMF(nn.Module):
    """A learned band split standing in for RAVE's PQMF: a strided conv to `bands` channels, and its inverse."""

    def __init__(self, channels: int, bands: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, bands, bands, stride=bands)
        self.synthesis = nn.ConvTranspose1d(bands, channels, bands, stride=bands)

    def forward(self, x):
        return self.conv(x)

    @torch.jit.export
    def inverse(self, x):
        return self.synthesis(x)


class CachedPad(nn.Module):
    """Left padding taken from the end of the previous call (a cached convolution's state), per batch row."""

    def __init__(self, channels: int, padding: int, max_batch: int = 8):
        super().__init__()
        self.initialized = 1
        self.padding = padding
        self.register_buffer("pad", torch.zeros(max_batch, channels, padding))

    def forward(self, x):
        x = torch.cat([self.pad[:x.shape[0]], x], -1)
        self.pad[:x.shape[0]].copy_(x[..., -self.padding:])
        return x


def _encoder_block(c_in: int, hidden: int, streaming: bool) -> nn.Module:
    if streaming:  # the same 2 samples of padding, all on the left and from the cache
        return nn.Sequential(CachedPad(c_in, 2), nn.Conv1d(c_in, hidden, 4, stride=2), nn.LeakyReLU(0.2))
    return nn.Sequential(nn.Conv1d(c_in, hidden, 4, stride=2, padding=1), nn.LeakyReLU(0.2))


class Encoder(nn.Module):
    """`net`: stride-2 conv blocks; `mean`: the 1x1 projection to the full latent."""

    def __init__(self, bands: int, blocks: int, hidden: int, full: int, streaming: bool = False):
        super().__init__()
        self.net = nn.Sequential(*[_encoder_block(bands if i == 0 else hidden, hidden, streaming)
                                   for i in range(blocks)])
        self.mean = nn.Conv1d(hidden, full, 1)

    def forward(self, x):
        return self.mean(self.net(x))


class Decoder(nn.Module):
    """`net`: stride-2 upsampling blocks back to the band rate; `waveform_module` and `noise_module` (the
    amplitude of random noise) give the bands."""

    def __init__(self, full: int, bands: int, blocks: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(*[nn.Sequential(nn.ConvTranspose1d(full if i == 0 else hidden, hidden, 2, stride=2),
                                                 nn.LeakyReLU(0.2)) for i in range(blocks)])
        self.waveform_module = nn.Conv1d(hidden, bands, 1)
        self.noise_module = nn.Conv1d(hidden, bands, 1)

    def forward(self, z):
        h = self.net(z)
        noise = torch.randn_like(h[:, :1]) * torch.sigmoid(self.noise_module(h)) * 0.01
        return torch.tanh(self.waveform_module(h)) + noise


class TinyRave(nn.Module):
    def __init__(self, dims: RaveDims):
        super().__init__()
        self.sr = dims.sr
        self.latent_size = dims.latent
        self.full_latent_size = dims.full_latent
        self.n_channels = dims.channels
        self.pqmf = PQMF(dims.channels, dims.bands)
        self.encoder = Encoder(dims.bands, dims.blocks, dims.hidden, dims.full_latent, dims.streaming)
        self.decoder = Decoder(dims.full_latent, dims.bands, dims.blocks, dims.hidden)
        pca = torch.linalg.qr(torch.randn(dims.full_latent, dims.full_latent))[0]
        self.register_buffer("encode_params", torch.tensor([dims.channels, 1, dims.latent, dims.ratio]))
        self.register_buffer("decode_params", torch.tensor([dims.latent, dims.ratio, dims.channels, 1]))
        self.register_buffer("forward_params", torch.tensor([dims.channels, 1, dims.channels, 1]))
        self.register_buffer("latent_pca", pca)
        self.register_buffer("latent_mean", torch.randn(dims.full_latent) * 0.1)
        self.register_buffer("fidelity", torch.linspace(0.5, 1.0, dims.full_latent))

    @torch.jit.export
    def encode(self, x):
        z = self.encoder(self.pqmf(x))
        z = z - self.latent_mean.unsqueeze(-1)
        z = F.conv1d(z, self.latent_pca.unsqueeze(-1))
        return z[:, :self.latent_size]

    @torch.jit.export
    def decode(self, z, from_forward: bool = False):
        pad = torch.zeros(z.shape[0], self.full_latent_size - z.shape[1], z.shape[2], dtype=z.dtype, device=z.device)
        z = torch.cat([z, pad], 1)
        z = F.conv1d(z, self.latent_pca.t().unsqueeze(-1)) + self.latent_mean.unsqueeze(-1)
        return self.pqmf.inverse(self.decoder(z))

    def forward(self, x):
        return self.decode(self.encode(x), True)


def build_tiny_rave(dims: RaveDims = RaveDims(), seed: int = 0) -> TinyRave:
    """The RAVE-format module of `dims` in eval mode, random weights seeded by `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyRave(dims).eval()


def save_tiny_rave(out: str | Path, seed: int = 0, overwrite: bool = False, dims: RaveDims = RaveDims()) -> dict:
    """Write the tiny export as OUT/tiny_rave.ts with musicsae's manifest beside it (load it with
    `--model OUT/tiny_rave.ts`)."""
    from ..artifacts import new_manifest, staged_directory, write_json

    module = build_tiny_rave(dims, seed)
    with staged_directory(Path(out), overwrite) as stage:
        torch.jit.save(torch.jit.script(module), str(stage / TINY_FILE))
        write_json(stage / "manifest.json", new_manifest("model", 1, {"seed": seed, **asdict(dims)}, family="rave",
                                                         name="tiny-rave", file=TINY_FILE))
    return {"path": str(Path(out) / TINY_FILE), "n_layers": dims.blocks, "hidden_size": dims.hidden,
            "parameters": sum(p.numel() for p in module.parameters()), "seed": seed}
