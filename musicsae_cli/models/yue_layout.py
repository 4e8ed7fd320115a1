"""The yue family's token layout (where a causal LM keeps its audio tokens) and its code files (.npy, .npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError, UsageError

LAYOUT_FILE = "musicsae_layout.json"
SUFFIXES = (".npy", ".npz")
YUE_TEMPLATE = "Generate music from the given lyrics segment by segment.\n[Genre] {genre}\n{lyrics}"


class TokenLayout(BaseModel):
    """Where a causal LM keeps its audio tokens and how a code file becomes its input."""

    model_config = ConfigDict(extra="forbid")

    audio_offset: int = Field(45334, ge=0, description="Id of code 0 of codebook 0.")
    codebook_size: int = Field(1024, ge=2, description="Codes per codebook.")
    codebooks: int = Field(12, ge=1, description="Codebooks of the codec (each has its own id range).")
    codebook: int = Field(0, ge=0, description="The codebook the model reads (stage 1: 0).")
    frame_rate: float = Field(50.0, gt=0, description="Codec frames per second.")
    sample_rate: int = Field(16000, gt=0, description="The codec's audio sample rate.")
    tracks: list[str] = Field(["vocal", "instrumental"], min_length=1, description="Tracks interleaved frame by "
                              "frame, in order.")
    prefix: list[int] = Field([32001, 32016], description="Ids before the codes (YuE: start-of-audio, <xcodec>).")
    suffix: list[int] = Field([32002], description="Ids after the codes (YuE: end-of-audio).")
    max_positions: int | None = Field(None, ge=1, description="Context length (default: the model config's).")
    prompt_template: str = Field(YUE_TEMPLATE, description="The text before the first segment, with {genre} "
                                 "and {lyrics} (every segment) filled in.")
    segment_start: str = Field("[start_of_segment]", description="The text before a segment's lyrics.")

    def token(self, codes: np.ndarray) -> np.ndarray:
        return self.audio_offset + self.codebook * self.codebook_size + codes

    @property
    def needs_vocab(self) -> int:
        return max(self.audio_offset + self.codebooks * self.codebook_size, *(i + 1 for i in self.prefix),
                   *(i + 1 for i in self.suffix))


def read_layout(options: dict, folder: Path | None) -> TokenLayout:
    """The layout of the model option `layout` (a dict or a JSON file), else `musicsae_layout.json` beside the
    checkpoint, else YuE's."""
    given = options.pop("layout", None)
    source = "YuE's default"
    if isinstance(given, str):
        path, source = Path(given).expanduser(), given
        if not path.is_file():
            raise InputError(f"token layout file {given} does not exist", "pass a JSON file or a mapping")
        given = json.loads(path.read_text("utf-8"))
    elif given is None and folder is not None and (folder / LAYOUT_FILE).is_file():
        source = str(folder / LAYOUT_FILE)
        given = json.loads((folder / LAYOUT_FILE).read_text("utf-8"))
    try:
        return TokenLayout(**(given or {}))
    except (ValidationError, TypeError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"token layout ({source}): {where + ': ' if where else ''}{first['msg']}",
                         f"keys: {', '.join(TokenLayout.model_fields)}") from None


def read_codes(path, layout: TokenLayout) -> np.ndarray:
    """(tracks, frames) int64 codes of the layout's codebook from a .npy or .npz code file; InputError naming the
    file for a wrong shape, missing tracks or codes outside the codebook."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [t for t in layout.tracks if t not in data.files]
                if missing:
                    raise InputError(f"{path}: no array for track(s) {', '.join(missing)} (has "
                                     f"{', '.join(data.files) or 'none'})",
                                     f"save one array per track: {', '.join(layout.tracks)}")
                arrays = [np.asarray(data[t]) for t in layout.tracks]
            if len({a.shape for a in arrays}) != 1:
                raise InputError(f"{path}: the tracks have different shapes "
                                 f"({', '.join(str(a.shape) for a in arrays)})", "save tracks of equal length")
            codes = np.stack(arrays)
        else:
            codes = np.load(path, allow_pickle=False)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable code file ({str(exc).splitlines()[0]})",
                         "save codes with numpy.save / numpy.savez") from None
    n_tracks = len(layout.tracks)
    if codes.ndim == 3 and codes.shape[0] == n_tracks:
        if codes.shape[1] <= layout.codebook:
            raise InputError(f"{path}: {codes.shape[1]} codebooks, the model reads codebook {layout.codebook}",
                             "save (tracks, codebooks, frames) with that codebook")
        codes = codes[:, layout.codebook]
    if codes.ndim != 2 or codes.shape[0] != n_tracks:
        raise InputError(f"{path}: codes of shape {codes.shape}, expected ({n_tracks}, frames) or ({n_tracks}, "
                         "codebooks, frames)", f"tracks in order: {', '.join(layout.tracks)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"{path}: codes are {codes.dtype}, not integers", "save the codec's integer codes")
    bad = (codes < 0) | (codes >= layout.codebook_size)
    if bad.any():
        j, t = (int(v[0]) for v in np.nonzero(bad))
        raise InputError(f"{path}: code {int(codes[j, t])} at track {layout.tracks[j]}, frame {t} is outside the "
                         f"codebook [0, {layout.codebook_size})", "check the codec the codes came from")
    return codes.astype(np.int64)


__all__ = ["LAYOUT_FILE", "SUFFIXES", "TokenLayout", "read_codes", "read_layout"]
