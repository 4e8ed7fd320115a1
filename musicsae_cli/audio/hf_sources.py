"""Where a Hugging Face dataset lies: `hf:OWNER/NAME[@REVISION]`, a `save_to_disk` folder, Parquet/Arrow files or
an audiofolder (`dataset_source`); None for musicsae's own kinds (folders of audio, manifests)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .io import AUDIO_EXTENSIONS

HF_PREFIX = "hf:"


@dataclass
class DatasetSource:
    """Where a dataset lies: kind is hub, disk (save_to_disk), files (Parquet/Arrow) or audiofolder."""

    kind: str
    location: str
    revision: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{HF_PREFIX}{self.location}" + (f"@{self.revision}" if self.revision else "") \
            if self.kind == "hub" else self.location


def dataset_source(text: str | os.PathLike) -> DatasetSource | None:
    """The dataset a `data index` source names, or None for musicsae's own kinds (folders of audio, manifests)."""
    text = str(text)
    if text.startswith(HF_PREFIX):
        repo, _, revision = text[len(HF_PREFIX):].partition("@")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", repo) or (_ and not revision):
            raise InputError(f"bad dataset id {text!r}", "write hf:OWNER/NAME or hf:OWNER/NAME@REVISION")
        return DatasetSource("hub", repo, revision or None)
    path = Path(text)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                       and (path / "dataset_info.json").is_file()):
            return DatasetSource("disk", str(path))
        if (path / "manifest.json").is_file() and (path / "manifest.csv").is_file():
            return None  # a musicsae dataset folder
        if (path / "metadata.csv").is_file() or (path / "metadata.jsonl").is_file():
            return DatasetSource("audiofolder", str(path))
        tables = sorted(str(p) for p in path.rglob("*") if p.suffix in (".parquet", ".arrow") and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(path).parts))
        has_audio = any(p.suffix.lower() in AUDIO_EXTENSIONS for p in path.rglob("*"))
        return DatasetSource("files", str(path), files=tables) if tables and not has_audio else None
    if path.suffix == ".arrow" and path.is_file():
        return DatasetSource("files", str(path), files=[str(path)])
    if path.suffix == ".parquet" and path.is_file() and _has_audio_struct(path):
        return DatasetSource("files", str(path), files=[str(path)])
    return None


def _has_audio_struct(path: Path) -> bool:
    """Whether a Parquet file has a column of {bytes, path} structs (a dataset's audio), not a path column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:  # not Parquet at all: the manifest reader says so
        return False
    for f in schema:
        if pa.types.is_struct(f.type) and {"bytes", "path"} <= {c.name for c in f.type}:
            return True
    return False
