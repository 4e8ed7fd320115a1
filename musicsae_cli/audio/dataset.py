"""`data index`: turn a folder or a manifest into a checked manifest, skipping unusable audio with reasons.

`index_source` is the service of the command: a folder or manifest here (`write_index`), a Hugging Face dataset
in hf_datasets (`import_dataset`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AudioError, InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result, internal, skipped_lines
from .config import IndexConfig
from .io import NonFiniteAudioError, audio_info, check_finite, skip_unusable
from .manifest import MANIFEST_FORMATS, Manifest, check_manifest_output, index_folder, read_manifest_file
from .manifest_record import write_recorded


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


@dataclass(kw_only=True)
class IndexSummary(Result):
    """What `data index` of a folder or manifest reports: the items kept, their label columns, the files skipped."""

    out: str = internal()  # the manifest written
    items: int
    label_columns: list[str]
    skipped: list[dict]  # {"path", "reason"}

    def lines(self) -> list[str]:
        return [self.out, f"{self.items} items indexed, labels: {', '.join(self.label_columns) or '-'}",
                *skipped_lines(self.skipped)]


def index_source(source: str | Path, out: str | Path, cfg: IndexConfig, overwrite: bool = False,
                 progress: ProgressFactory = no_progress, dataset=None) -> Result:
    """`data index`: a folder or manifest into the checked manifest `out`, or the rows of `dataset` (a
    hf_sources.DatasetSource) as audio files plus a manifest in the folder `out`."""
    if dataset is not None:
        from .hf_datasets import import_dataset

        return import_dataset(dataset, Path(out), cfg, overwrite, progress)
    return write_index(source, out, cfg, overwrite, progress)


def write_index(source: str | Path, out: str | Path, cfg: IndexConfig, overwrite: bool = False,
                progress: ProgressFactory = no_progress) -> IndexSummary:
    """Check the items of a folder or manifest (`build_index`) and write the manifest `out`."""
    check_manifest_output(out, overwrite)
    res = build_index(source, cfg, progress)
    res.write(out)
    return IndexSummary(out=str(out), items=len(res.manifest), label_columns=res.manifest.label_columns,
                        skipped=[{"path": p, "reason": r} for p, r in res.skipped])


def build_index(source: str | Path, config: IndexConfig, progress: ProgressFactory = no_progress) -> IndexResult:
    """Read a folder or manifest, then check every file (header, optional decode, silence)."""
    source = Path(source)
    if source.is_dir():
        manifest = index_folder(source, config.label_name, config.group_regex, config.strict)
    elif source.suffix.lower() in MANIFEST_FORMATS:
        if config.group_regex is not None:
            raise InputError("--group-regex applies to folders of audio, not to a manifest",
                             "name each row's track with --group-column COLUMN")
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
