"""The option rules of `data index` that depend on its source: a folder of class subfolders gives one label (which
--label names), and the dataset-only options are refused for folders and manifests.

Stdlib only, so the command module imports it at start-up (the source kinds themselves: hf_sources)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError

DATASET_ONLY = ("split", "subset", "audio_column", "sample_rate", "limit")  # and audio_format (--format)


def folder_label(labels: list[str] | None, source: Path, plain: bool) -> tuple[str | None, list[str] | None]:
    """(label name, label columns) of `data index`: a folder of class subfolders (not a dataset) gives one label,
    which --label names; a manifest keeps the --label columns."""
    if not (labels and source.is_dir() and plain):
        return None, labels
    if len(labels) > 1:
        raise UsageError(f"a folder gives one label (its class subfolders), not {len(labels)}",
                         "pass one --label NAME, or index a manifest to keep several label columns")
    return labels[0], None


def refuse_dataset_flags(flags: dict, source: Path) -> None:
    """`data index` of a folder or manifest: refuse the options that only datasets take."""
    given = [f"--{k.replace('_', '-')}" for k in DATASET_ONLY if flags[k] is not None] \
        + (["--format"] if flags["audio_format"] is not None else [])
    if given:
        raise UsageError(f"{', '.join(given)} applies to datasets (hf:OWNER/NAME, a save_to_disk folder, Parquet "
                         f"files with an audio column, an audiofolder), not to {source}",
                         "drop it, or pass a dataset")
