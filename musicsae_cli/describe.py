"""`musicsae info`: summarise any musicsae artefact (activation store, dataset folder, manifest file), or audio a
user already has (a plain folder of audio files, one audio file), from file headers only.

A folder with a manifest.json is described by the function its kind names in the registry (musicsae_cli.kinds);
kinds that name none show what their manifest records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import kinds
from .artifacts import MANIFEST_NAME, read_manifest
from .errors import InputError, MusicSAEError
from .results import Result, internal

_TOP_VALUES = 10
_LIST_UNREADABLE = 20  # unreadable files named in full; the count is always given


@dataclass(kw_only=True)
class Info(Result):
    """What `musicsae info` shows: the artefact's summary (its fields vary by kind), with --verify what is
    broken; printed as indented `key: value` lines."""

    summary: dict[str, Any] = internal()  # describe()'s summary, printed as top-level fields
    verified: bool = internal(False)  # every file read (--verify): summary["verify"] says what is broken

    @property
    def broken(self) -> bool:
        """Whether --verify found problems."""
        return self.verified and bool(self.summary["verify"]["problems"])

    def to_json(self) -> dict[str, Any]:
        return self.summary

    def lines(self) -> list[str]:
        return list(_lines(self.summary))


def _lines(data: dict[str, Any], indent: int = 0) -> Iterator[str]:
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield f"{pad}{key}:"
            yield from _lines(value, indent + 1)
        elif isinstance(value, list):
            yield f"{pad}{key}: {', '.join(map(str, value)) if value else '-'}"
        else:
            yield f"{pad}{key}: {'-' if value is None or value == {} else value}"


def info(path: str | Path, verify: bool = False) -> Info:
    """`musicsae info`: the summary of the artefact at `path`; with `verify`, every file read and what is broken
    (`verify`: ok and the problems), the summary then saying what could not be read instead of failing."""
    if not verify:
        return Info(summary=describe(path))
    from .verify import verify as check

    try:
        summary = describe(path)
    except MusicSAEError as exc:  # a damaged artefact: say what could not be read, then what is broken
        summary = {"path": str(path), "unreadable": exc.message}
    found = check(path)
    summary["verify"] = {"ok": not found["problems"], **found}
    return Info(summary=summary, verified=True)


def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of the artefact at `path`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}", "pass a store, a dataset folder or a manifest file")
    if path.is_dir():
        manifest = read_manifest(path) if (path / MANIFEST_NAME).is_file() else None
        if (path / kinds.SAE_CONFIG).is_file() and kinds.of(manifest) not in (kinds.SAE, kinds.SAE_RUN):
            from .sae.io import describe_sae

            return describe_sae(path)  # a plain SAELens folder (beside another kind's manifest: an error naming it)
        if manifest is None:
            audio = _audio_files(path)
            if audio:
                return describe_audio_folder(path, audio)
            raise InputError(f"not a musicsae artefact: {path} (no {MANIFEST_NAME}, no audio files)",
                             "info reads activation stores, dataset folders, manifest files and folders of audio")
        return kinds.describe(path, manifest)
    from .audio.io import AUDIO_EXTENSIONS
    from .audio.manifest import MANIFEST_FORMATS

    if path.suffix.lower() in MANIFEST_FORMATS:
        return {"kind": "manifest", "path": str(path), **describe_manifest(path), **_index_record(path)}
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return describe_audio_file(path)
    raise InputError(f"not a musicsae artefact: {path}", "info reads activation stores, dataset folders, manifests "
                     "and audio (a file or a folder of them)")


# ---- one function per kind of artefact, named in the kinds registry (musicsae_cli.kinds) --------------------------
def describe_record(path: Path, manifest: dict) -> dict[str, Any]:
    """Analyses and other outputs: what their manifest records (inputs, sizes, files), without the config."""
    head = _head(manifest, path)
    return {**head, **{k: v for k, v in manifest.items() if k not in head and k != "config"}}


def describe_store(path: Path, manifest: dict) -> dict[str, Any]:
    """An activation store, complete or still being written."""
    from .store import ActivationStore

    return ActivationStore.open(path, allow_incomplete=True).describe()


def describe_sae_folder(path: Path, manifest: dict) -> dict[str, Any]:
    """An SAE: its architecture, sizes and latent density (without its cfg.json: what its manifest records)."""
    if not (path / kinds.SAE_CONFIG).is_file():
        return describe_record(path, manifest)
    from .sae.io import describe_sae

    return describe_sae(path)


def describe_run(path: Path, manifest: dict) -> dict[str, Any]:
    """An SAE training run: its status, members, steps and final metrics, and the SAE of a finished run of one."""
    keys = ("status", "members", "steps", "split", "final_metrics")
    summary = {**_head(manifest, path), **{k: manifest.get(k) for k in keys},
               "store": manifest.get("config", {}).get("store"),
               "hookpoint": manifest.get("config", {}).get("hookpoint")}
    if (path / kinds.SAE_CONFIG).is_file() and manifest.get("status") == "complete":  # a run of one SAE
        from .sae.io import describe_sae

        summary["sae"] = describe_sae(path)
    return summary


def describe_probes(path: Path, manifest: dict) -> dict[str, Any]:
    """Probes: task, label, classes, hookpoints and their training metrics."""
    keys = ("task", "label", "classes", "hookpoints", "widths", "pooling", "model", "store", "split", "metrics")
    return {**_head(manifest, path), **{k: manifest.get(k) for k in keys}}


def describe_dataset(path: Path, manifest: dict) -> dict[str, Any]:
    """A dataset folder: its manifest file's items, groups, duration and labels."""
    return {**_head(manifest, path), **describe_manifest(path / manifest.get("manifest", "manifest.csv"))}


def _audio_files(folder: Path) -> list[Path]:
    """The audio files `data index` would take from `folder` (hidden files and folders left out), sorted."""
    from .audio.io import AUDIO_EXTENSIONS

    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _header(path: Path):
    """soundfile's header of `path` (nothing is decoded), or the reason it cannot be read."""
    import soundfile as sf

    try:
        return sf.info(str(path)), None
    except Exception as exc:  # libsndfile's errors (LibsndfileError, RuntimeError, ...) for a bad or odd file
        text = " ".join(str(exc).split()).replace(f"Error opening {str(path)!r}: ", "")  # the path is known
        return None, text or type(exc).__name__


def describe_audio_file(path: Path) -> dict[str, Any]:
    """One audio file: format, duration, sample rate and channels from its header."""
    info, error = _header(path)
    if info is None:
        from .errors import AudioError

        raise AudioError(f"cannot read audio file {path}: {error}", "is it a complete, supported audio file?")
    return {"kind": "audio_file", "path": str(path), "format": info.format, "subtype": info.subtype,
            "duration_s": round(float(info.duration), 3), "sample_rate": int(info.samplerate),
            "channels": int(info.channels), "frames": int(info.frames)}


def describe_audio_folder(folder: Path, files: list[Path] | None = None) -> dict[str, Any]:
    """A plain folder of audio (not a musicsae artefact), from file headers only (soundfile.info, no decoding):
    files by extension, total and min/median/max duration, sample rates and channel counts, first-level
    subfolders (the class labels `data index` would give) and the files that cannot be read."""
    import statistics

    files = _audio_files(folder) if files is None else files
    durations: list[float] = []
    rates: Counter = Counter()
    channels: Counter = Counter()
    unreadable: dict[str, str] = {}
    for p in files:
        info, error = _header(p)
        if info is None:
            unreadable[p.relative_to(folder).as_posix()] = error
            continue
        durations.append(float(info.duration))
        rates[int(info.samplerate)] += 1
        channels[int(info.channels)] += 1
    rel = [p.relative_to(folder).parts for p in files]
    out: dict[str, Any] = {"kind": "audio_folder", "path": str(folder), "audio_files": len(files),
                           "by_extension": dict(sorted(Counter(p.suffix.lower() for p in files).items())),
                           "readable": len(durations)}
    if durations:
        out["total_duration_s"] = round(sum(durations), 3)
        out["duration_s"] = {"min": round(min(durations), 3), "median": round(statistics.median(durations), 3),
                             "max": round(max(durations), 3)}
    out["sample_rates"] = {str(sr): n for sr, n in sorted(rates.items())}
    out["channels"] = {str(c): n for c, n in sorted(channels.items())}
    if any(len(parts) > 1 for parts in rel):  # class subfolders: the labels `data index` gives
        out["subfolders"] = dict(sorted(Counter(parts[0] for parts in rel if len(parts) > 1).items()))
        out["top_level_files"] = sum(len(parts) == 1 for parts in rel)
    out["unreadable_files"] = len(unreadable)
    out["unreadable"] = dict(list(unreadable.items())[:_LIST_UNREADABLE])  # file: why
    if len(unreadable) > _LIST_UNREADABLE:
        out["unreadable"]["..."] = f"{len(unreadable) - _LIST_UNREADABLE} more"
    out["next"] = f"musicsae data index {folder} -o manifest.csv (a checked manifest: item ids, groups, labels)"
    return out


def _head(manifest: dict, path: Path) -> dict[str, Any]:
    return {"kind": manifest.get("kind"), "path": str(path), "format_version": manifest.get("format_version"),
            "musicsae_version": manifest.get("musicsae_version"), "created": manifest.get("created")}


def _index_record(path: Path) -> dict[str, Any]:
    """Who wrote a manifest file, from the record `data index` keeps beside it (nothing without one)."""
    from .audio.manifest_record import manifest_record

    record = manifest_record(path)
    if record is None:
        return {}
    return {"written_by": {"command": "data index", "musicsae_version": record.get("musicsae_version"),
                           "created": record.get("created"), "source": record.get("source"),
                           "edited_since": manifest_record(path, check=True) is None}}


def describe_manifest(path: Path) -> dict[str, Any]:
    """Rows, groups, total duration and per-label value counts (or ranges for numeric labels)."""
    from .audio.manifest import read_manifest_file

    m = read_manifest_file(path)
    out: dict[str, Any] = {"items": len(m.rows), "groups": len({r["group"] for r in m.rows})}
    durations = [r["duration_s"] for r in m.rows if isinstance(r.get("duration_s"), int | float)]
    if durations:
        out["total_duration_s"] = round(float(sum(durations)), 3)
    out["labels"] = {col: summarise_values([r.get(col) for r in m.rows]) for col in m.label_columns}
    return out


def summarise_values(values: list) -> dict[str, Any]:
    """Counts of the most common values, or min/max/mean for numbers; `missing` counts empty cells."""
    present = [v for v in values if v is not None]
    summary: dict[str, Any] = {"missing": len(values) - len(present)}
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        summary.update(min=min(present), max=max(present), mean=round(sum(present) / len(present), 6),
                       distinct=len(set(present)))
    else:
        counts = Counter(str(v) for v in present)
        summary.update(distinct=len(counts), top=dict(counts.most_common(_TOP_VALUES)))
    return summary
