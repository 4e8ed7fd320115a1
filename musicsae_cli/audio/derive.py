"""What `data split` and `data chunk` share: reading their sources, naming and writing derived audio files.

Both read a folder of audio, a dataset folder, a manifest or a list of audio files, and write a dataset folder
(audio files, manifest.csv, manifest.json, config.yaml) that `extract` and every other command read directly.
Derived rows keep the source's labels and group, and say where they came from: `source_path` and
`source_item` always name the original recording (a row that already carries them, because it was itself
split or chunked, passes them on unchanged), so provenance survives chains such as split -> chunk.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import InputError
from .io import AUDIO_EXTENSIONS
from .manifest import MANIFEST_FORMATS, Manifest, load_dataset

# Output formats: soundfile format name and the subtype per bit depth (None: the format has no such depth).
OUTPUT_FORMATS = {
    "wav": ("WAV", {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}),
    "flac": ("FLAC", {16: "PCM_16", 24: "PCM_24", 32: None}),
    "mp3": ("MP3", {16: "MPEG_LAYER_III", 24: "MPEG_LAYER_III", 32: "MPEG_LAYER_III"}),
}
# The columns a derived row adds to say where it came from.
PROVENANCE = ("source_path", "source_item")


def load_sources(sources: Sequence[str | os.PathLike]) -> Manifest:
    """A manifest for one folder / dataset folder / manifest file, or for one or more audio files."""
    paths = [Path(s) for s in sources]
    if not paths:
        raise InputError("no input given", "pass a folder of audio, a manifest or audio files")
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].suffix.lower() in MANIFEST_FORMATS):
        return load_dataset(paths[0])
    for p in paths:
        if p.is_dir() or p.suffix.lower() in MANIFEST_FORMATS:
            raise InputError(f"{p}: a folder or manifest cannot be mixed with other inputs",
                             "pass one folder or manifest, or only audio files")
        if not p.exists():
            raise InputError(f"no such file: {p}", "pass a folder of audio, a manifest or audio files")
        if p.suffix.lower() not in AUDIO_EXTENSIONS:
            raise InputError(f"not an audio file: {p}", f"audio files end in {', '.join(AUDIO_EXTENSIONS)}")
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    rows = []
    for p in resolved:
        item_id = p.relative_to(root).with_suffix("").as_posix()
        rows.append({"path": p, "item_id": item_id, "group": item_id})
    if len({r["item_id"] for r in rows}) != len(rows):
        raise InputError("two inputs differ only by their extension", "pass each recording once")
    return Manifest(rows, [], root)


def check_out_not_inside(out: Path, sources: Sequence[str | os.PathLike]) -> None:
    """Refuse an output folder inside (or equal to) an input folder: a rerun would read its own outputs."""
    target = out.resolve()
    for s in sources:
        src = Path(s)
        if not src.is_dir():
            continue
        src = src.resolve()
        if target == src or src in target.parents:
            raise InputError(f"the output {out} lies inside the input folder {s}",
                             "write the output next to the input folder, not inside it")


def relative_name(row: dict, root: Path) -> PurePosixPath:
    """Where a source's outputs go below an output folder: its path relative to the dataset root, without the
    extension; for audio outside the root, its item id made path-safe."""
    try:
        return PurePosixPath(Path(row["path"]).resolve().relative_to(root.resolve()).with_suffix("").as_posix())
    except ValueError:
        parts = [re.sub(r"[^\w.\-]+", "_", p) for p in str(row["item_id"]).split("/")]
        parts = [p for p in parts if p not in ("", ".", "..")]
        return PurePosixPath(*parts) if parts else PurePosixPath("item")


def check_unique_names(names: dict[str, PurePosixPath]) -> None:
    """Two sources mapped to one output name (e.g. a.wav and a.flac) would overwrite each other."""
    seen: dict[PurePosixPath, str] = {}
    for item, name in names.items():
        if name in seen:
            raise InputError(f"items '{seen[name]}' and '{item}' would both write {name}",
                             "rename one of the files (they differ only by extension)")
        seen[name] = item


def output_subtype(fmt: str, bit_depth: int) -> tuple[str, str]:
    """(soundfile format, subtype) for an output format and bit depth; InputError for impossible pairs."""
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"unknown audio format '{fmt}'", f"use one of {', '.join(OUTPUT_FORMATS)}")
    name, subtypes = OUTPUT_FORMATS[fmt]
    subtype = subtypes.get(bit_depth)
    if subtype is None:
        depths = [str(d) for d, s in subtypes.items() if s is not None]
        raise InputError(f"{fmt} cannot store {bit_depth}-bit audio", f"use bit_depth {' or '.join(depths)}")
    return name, subtype


def write_audio_file(path: Path, audio: np.ndarray, sample_rate: int, fmt: str, bit_depth: int,
                     atomic: bool = True) -> Path:
    """Write (C, N) or (N,) float audio; integer and mp3 outputs are clipped to [-1, 1], float wav is not.

    With `atomic`, the file is written beside its target under a hidden temporary name and renamed into place.
    """
    import soundfile as sf

    name, subtype = output_subtype(fmt, bit_depth)
    data = np.asarray(audio, dtype=np.float32)
    data = data.T if data.ndim == 2 else data  # soundfile wants (N, C)
    if subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not atomic:
        sf.write(str(path), data, sample_rate, subtype=subtype, format=name)
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp.{fmt}", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, subtype=subtype, format=name)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def provenance(row: dict) -> dict:
    """The source_path/source_item of a derived row: passed on when the source row has them, else the row itself."""
    if row.get("source_path") not in (None, ""):
        return {"source_path": str(row["source_path"]), "source_item": row.get("source_item")}
    return {"source_path": str(Path(row["path"]).resolve()), "source_item": row["item_id"]}


def derived_labels(manifest: Manifest, added: Sequence[str]) -> list[str]:
    """The label columns of a derived manifest: the source's labels, then the added ones (each once)."""
    return [*[c for c in manifest.label_columns if c not in added], *added]
