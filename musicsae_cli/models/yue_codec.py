"""The audio side of the yue family: X-Codec through transformers' `XcodecModel`, so audio goes in and comes out.

YuE's codec is an X-Codec (acoustic encoder + HuBERT-style semantic encoder, residual vector quantiser, 16 kHz, 50
frames per second, codebooks of 1024). transformers loads X-Codec checkpoints converted to its layout (hub ids such
as hf-audio/xcodec-hubert-general, or a save_pretrained folder); a checkpoint is used only where its rate, frame
rate and codebook size match the token layout. Encoding uses the smallest bandwidth whose codebooks include the
layout's (YuE's stage 1: 0.5 kbps, codebook 0 alone); decoding reads the layout's codebook only, so it is offered
where that is codebook 0 (a residual quantiser's later codebooks mean nothing without the first).

The codec comes from the model option `codec` (hub id or folder), else a `codec/` folder beside the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError

CODEC_DIR = "codec"


def find_codec(option: str | None, folder: Path | None) -> str | None:
    """The codec named by the model option, else `codec/` beside the checkpoint (an X-Codec config.json), else
    None."""
    if option:
        return option
    if folder is not None and (folder / CODEC_DIR / "config.json").is_file():
        return str(folder / CODEC_DIR)
    return None


class Codec:
    """An X-Codec model matched to a token layout: mono audio at the layout's rate <-> codes of its codebook."""

    def __init__(self, model, source: str, layout, device, fingerprint: str):
        self.model, self.source, self.layout, self.device = model, source, layout, device
        self.fingerprint = fingerprint
        cfg = model.config
        found = {"sample rate": (int(cfg.sample_rate), layout.sample_rate),
                 "frame rate": (float(cfg.frame_rate), float(layout.frame_rate)),
                 "codebook size": (int(cfg.codebook_size), layout.codebook_size)}
        wrong = [f"{k} {a:g} (layout: {b:g})" for k, (a, b) in found.items() if a != b]
        if wrong:
            raise UsageError(f"codec {source} does not match the token layout: {', '.join(wrong)}",
                             "load the codec the model's codes came from, or describe them with the layout")
        nbits = int(np.log2(cfg.codebook_size))
        per_kbps = 1000 / (float(cfg.frame_rate) * nbits)  # codebooks per kbps
        usable = sorted(b for b in cfg.target_bandwidths if int(b * per_kbps) > layout.codebook)
        if not usable:
            raise UsageError(f"codec {source} has {int(max(cfg.target_bandwidths) * per_kbps)} codebooks; the "
                             f"layout reads codebook {layout.codebook}", "check the layout's codebook")
        self.bandwidth = float(usable[0])
        self.can_decode = layout.codebook == 0

    def encode(self, audio: list[np.ndarray]) -> list[np.ndarray]:
        """Codes (frames,) of the layout's codebook for each mono float32 array at the layout's rate."""
        import torch

        out = []
        with torch.inference_mode():
            for x in audio:
                wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(self.device)
                codes = self.model.encode(wav, bandwidth=self.bandwidth, return_dict=False)  # (1, n_q, frames)
                out.append(codes[0, self.layout.codebook].cpu().numpy().astype(np.int64))
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Audio (B, N) float32 of codes (B, frames) of codebook 0 (the codec at its lowest bandwidth)."""
        import torch

        if not self.can_decode:
            raise UsageError(f"the layout's codebook {self.layout.codebook} cannot be decoded without codebook 0",
                             "keep the codes and decode them with the codes of the earlier codebooks")
        with torch.inference_mode():
            ids = torch.as_tensor(np.asarray(codes, dtype=np.int64))[:, None].to(self.device)  # (B, 1, frames)
            wav = self.model.decode(ids, return_dict=False)  # (B, 1, N)
        wav = wav[0] if isinstance(wav, tuple) else wav
        return wav[:, 0].float().cpu().numpy()

    def describe(self) -> dict:
        return {"source": self.source, "bandwidth_kbps": self.bandwidth, "decodes": self.can_decode,
                "fingerprint": self.fingerprint}


def from_pretrained(cls, name: str, revision: str | None, what: str, hints: tuple[str, str], **kwargs):
    """`cls.from_pretrained` of a save_pretrained folder or a hub id, with one-line errors: hints = (for a folder
    without config.json, for a checkpoint that does not load)."""
    from .musicgen_hub import hub_access, quiet_transformers

    path = Path(name).expanduser()
    local = path.exists()
    if local and not (path / "config.json").is_file():
        raise InputError(f"{name} is not {what} checkpoint (no config.json)", hints[0])
    quiet_transformers()
    if not local:
        kwargs.update({"revision": revision} if revision else {}, **hub_access(name, revision))
    try:
        return cls.from_pretrained(str(path) if local else name, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot load {what} '{name}': {str(exc).splitlines()[0]}", hints[1]) from None


def load_codec(spec: str, layout, device, revision: str | None = None) -> Codec:
    """An X-Codec from a save_pretrained folder or a hub id (safetensors weights), checked against `layout`."""
    from transformers import XcodecModel

    from .identity import weights_fingerprint

    model = from_pretrained(XcodecModel, spec, revision, "an X-Codec",
                            ("pass a folder written by save_pretrained or a hub id such as "
                             "hf-audio/xcodec-hubert-general",
                             "pass an X-Codec checkpoint in transformers' layout (XcodecModel)"), use_safetensors=True)
    model.to(device).eval()
    path = Path(spec).expanduser()
    return Codec(model, str(path) if path.exists() else spec, layout, device, weights_fingerprint(model))


__all__ = ["CODEC_DIR", "Codec", "find_codec", "from_pretrained", "load_codec"]
