"""`data index`: turn a folder or a manifest into a checked manifest, skipping unusable audio with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import AudioError, InputError
from ..progress import ProgressFactory, no_progress
from .io import NonFiniteAudioError, audio_info, check_finite, skip_unusable
from .manifest import MANIFEST_FORMATS, Manifest, index_folder, read_manifest_file
from .manifest_record import write_recorded


class IndexConfig(BaseModel):
    """How `data index` reads a source and which audio it keeps."""

    model_config = ConfigDict(extra="forbid")

    path_column: str = Field("path", description="Manifest column holding audio paths (manifest sources).")
    label_columns: list[str] | None = Field(
        None, description="Manifest columns to keep as labels; null keeps every non-reserved column.")
    group_column: str | None = Field(
        None, description="Manifest column naming each item's track/source; default: 'group' if present, "
                          "else the item id.")
    id_column: str | None = Field(None, description="Manifest column with item ids; default: 'item_id' if "
                                                    "present, else the path without extension.")
    label_name: str = Field("label", description="Label column filled from class subfolder names (folders).")
    group_regex: str | None = Field(
        None, description="Regex applied to folder item ids; its first (or `group`) capture is the group, "
                          "e.g. '^(.+)_part\\d+$'.")
    decode: bool = Field(True, description="Decode every file fully to catch truncated or corrupt audio and NaN/Inf "
                                          "samples (without it only headers are read).")
    silence_db: float = Field(-60.0, description="Clips whose peak is below this level (dBFS) count as silent.")
    keep_silent: bool = Field(False, description="Keep silent clips instead of skipping them.")
    strict: bool = Field(False, description="Fail on the first unusable file instead of skipping it.")


@dataclass
class IndexResult:
    """The checked manifest and what was left out, with reasons."""

    manifest: Manifest
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str | None = None
    config: dict | None = None

    def write(self, out: str | Path) -> Path:
        """Write the manifest with the record that lets a later --overwrite replace it (see write_recorded)."""
        return write_recorded(self.manifest, out, self.source, self.config)


def build_index(source: str | Path, config: IndexConfig, progress: ProgressFactory = no_progress) -> IndexResult:
    """Read a folder or manifest, then check every file (header, optional decode, silence)."""
    source = Path(source)
    if source.is_dir():
        manifest = index_folder(source, config.label_name, config.group_regex)
    elif source.suffix.lower() in MANIFEST_FORMATS:
        manifest = read_manifest_file(source, config.path_column, config.label_columns, config.group_column,
                                      config.id_column)
    elif not source.exists():
        raise InputError(f"no such file or folder: {source}", "pass a folder of audio or a manifest file")
    else:
        raise InputError(f"cannot index {source}", f"pass a folder or a {'/'.join(MANIFEST_FORMATS)} manifest")
    result = check_items(manifest, config, progress)
    result.source, result.config = str(source), config.model_dump(mode="json")
    return result


def check_items(manifest: Manifest, config: IndexConfig, progress: ProgressFactory = no_progress) -> IndexResult:
    """Keep the rows whose audio decodes, is not empty and (unless allowed) not silent."""
    kept, skipped = [], []
    with progress("Checking audio", len(manifest.rows)) as bar:
        for row in manifest.rows:
            reason = _problem(row, config)
            bar.advance()
            if reason is None:
                kept.append(row)
                continue
            skip_unusable(row["path"], reason, config.strict, skipped)
    if not kept:
        raise InputError(f"no usable audio among {len(manifest.rows)} files", "see the warnings for why each "
                         "file was skipped")
    return IndexResult(Manifest(kept, manifest.label_columns, manifest.root), skipped)


def _problem(row: dict, config: IndexConfig) -> str | None:
    """Why a row's audio is unusable, or None; fills duration_s/sample_rate/channels on success."""
    if not Path(row["path"]).is_file():
        return "file not found"
    try:
        info = audio_info(row["path"])
    except AudioError:
        return "cannot decode (corrupt or unsupported format)"
    if info.frames == 0:
        return "zero-length audio"
    row.update(duration_s=round(info.duration_s, 6), sample_rate=info.sample_rate, channels=info.channels)
    if not config.decode:
        return None
    try:
        peak = _peak(row["path"], info.sample_rate)
    except NonFiniteAudioError as exc:
        return exc.reason
    except Exception:  # libsndfile raises several error types for truncated data
        return "cannot decode (truncated or corrupt)"
    if not config.keep_silent and (peak == 0.0 or 20 * np.log10(peak) < config.silence_db):
        return f"silent (peak below {config.silence_db:g} dBFS)"
    return None


def _peak(path: Path, rate: int, block: int = 1 << 16) -> float:
    """Peak absolute sample, decoded block by block so long files never sit in memory whole.

    NonFiniteAudioError at the first NaN/Inf sample (a NaN peak would otherwise read as silence).
    """
    import soundfile as sf

    peak = 0.0
    n = 0
    for chunk in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):  # (m, C)
        check_finite(chunk, path, rate, n)
        n += len(chunk)
        if chunk.size:
            peak = max(peak, float(np.abs(chunk).max()))
    if n == 0:
        raise AudioError(f"no samples decoded from {path}")
    return peak
