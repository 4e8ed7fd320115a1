"""`data split`: source separation with Demucs into one audio file per stem, resumable file by file.

Models come by name from the hub or from a local model repository (`repo`; see demucs_models). Every file is read at
the model's rate (resampled when needed), normalised by the mean and standard deviation of its mono mix as Demucs
models expect, separated with demucs.apply.apply_model (overlapping segments, optional random time shifts seeded per
file) and written as `<out>/<stem>/<relative path of the input>.<ext>`. Two-stem mode writes one stem and the sum of
the others.

Channels: a mono file is duplicated for a stereo model and its stems are mixed back to mono (channels=input,
the default); with channels=model every stem keeps the model's channels. A file with more channels than the
model is cut to the model's first channels, as Demucs does.

Resuming: a file counts as done when every one of its stem files exists. A file's stems are written into a
hidden `.partial-*` folder inside the output and then renamed into place, so a crash never leaves a
half-written stem file; a rerun (same settings, any subset or superset of inputs) skips done files and
separates the rest. manifest.csv (one row per stem file with the input's labels, group, `stem`,
`source_path` and `source_item`) is rewritten at the end of every run, also an interrupted one, listing
everything done so far; manifest.json says whether the last run completed.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import (
    MANIFEST_NAME,
    check_replaceable,
    make_parents,
    new_manifest,
    read_manifest,
    swap_into_place,
    write_config,
    write_json,
)
from ..errors import AudioError, InputError, MusicSAEError, OutputExistsError, StoreError
from ..progress import ProgressFactory, no_progress
from ..results import Result, skipped_lines
from .config import SplitConfig
from .demucs_models import describe_model, load_separation_model, max_segment
from .derive import (
    PROVENANCE,
    check_out_not_inside,
    check_unique_names,
    derived_labels,
    load_sources,
    output_subtype,
    provenance,
    relative_name,
    write_audio_file,
)
from .io import audio_info, load_audio, resample, skip_unusable
from .manifest import Manifest, read_manifest_file

SPLIT_FORMAT_VERSION = 1
SPLIT_COLUMNS = ("stem", *PROVENANCE)
# Settings that do not change what is written; a rerun may change them and still resume.
RUNTIME_ONLY = ("device", "jobs", "strict")
LOCK_NAME = ".split.lock"
try:  # POSIX only; elsewhere two runs on one output are simply not detected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None
PARTIAL_PREFIX = ".partial-"
log = logging.getLogger("musicsae")


@dataclass(kw_only=True)
class SplitResult(Result):
    """What `data split` reports: files separated now and before, the stem files written, speed, files skipped."""

    path: str
    manifest: str
    model: dict
    stems: list[str]
    resumed: bool
    files: int
    separated: int
    already_done: int
    stem_files: int
    audio_seconds: float
    separation_s: float
    elapsed_s: float
    audio_s_per_s: float | None
    device: str
    skipped: list[dict]

    def lines(self) -> list[str]:
        speed = f", {self.audio_s_per_s:.2f} audio s/s" if self.audio_s_per_s else ""
        return [self.manifest, f"{self.separated} files separated, {self.already_done} already done, "
                               f"{self.stem_files} stem files ({', '.join(self.stems)}) on {self.device}{speed}",
                *skipped_lines(self.skipped)]


def _segments(model) -> list[float]:
    return [float(m.segment) for m in getattr(model, "models", [model])]


# ---------------------------------------------------------------- separation of one signal
def separate(model, audio: np.ndarray, cfg: SplitConfig, device=None, callback=None) -> np.ndarray:
    """Stems (S, C_model, N) of `audio` (C, N) at the model's rate, as the model's `sources` order.

    The mix is normalised by the mean and standard deviation of its mono mix before apply_model and the
    estimates are scaled back, the way Demucs models are trained and used; `random` is seeded with cfg.seed
    first so that the shift trick gives the same stems every time.
    """
    import random

    import torch
    from demucs.apply import apply_model

    wav = torch.from_numpy(np.ascontiguousarray(to_model_channels(audio, model.audio_channels), dtype=np.float32))
    ref = wav.mean(0)
    mean = ref.mean()
    std = (ref.std() if ref.numel() > 1 else torch.zeros(())) + 1e-8
    random.seed(cfg.seed)
    with torch.no_grad():
        out = apply_model(model, ((wav - mean) / std)[None], shifts=cfg.shifts, split=True, overlap=cfg.overlap,
                          segment=cfg.segment_s, device=device, num_workers=cfg.jobs, callback=callback)
    return (out[0] * std + mean).cpu().numpy()


def to_model_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """(C, N) audio with the model's channel count: mono duplicated, extra channels cut, stereo mixed to mono."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if have > channels:
        return audio[:channels]
    raise InputError(f"cannot map {have} channels onto a {channels}-channel model", "mix the input down first")


def stem_audio(estimates: np.ndarray, sources: list[str], cfg: SplitConfig) -> dict[str, np.ndarray]:
    """The stems to write, by name: every source, or (two-stem mode) one source and the sum of the others."""
    if cfg.two_stems is None:
        return dict(zip(sources, estimates, strict=True))
    i = sources.index(cfg.two_stems)
    rest = np.sum([estimates[j] for j in range(len(sources)) if j != i], axis=0)
    return {cfg.two_stems: estimates[i], cfg.rest_name: rest}


def stem_names(sources: list[str], cfg: SplitConfig) -> list[str]:
    """Names of the stems written for `sources`; InputError for an unknown two-stem choice."""
    if cfg.two_stems is None:
        return list(sources)
    if cfg.two_stems not in sources:
        raise InputError(f"the model has no stem '{cfg.two_stems}'", f"its stems: {', '.join(sources)}")
    if cfg.rest_name in sources or cfg.rest_name == cfg.two_stems:
        raise InputError(f"rest_name '{cfg.rest_name}' clashes with a stem of the model", "choose another name")
    return [cfg.two_stems, cfg.rest_name]


# ---------------------------------------------------------------- datasets
def split_dataset(sources, out: str | Path, cfg: SplitConfig, overwrite: bool = False,
                  progress: ProgressFactory = no_progress, model=None) -> SplitResult:
    """Separate every file of `sources` (a folder, dataset folder, manifest or audio files) into `out`.

    `model` (already loaded, e.g. by a benchmark) replaces loading `cfg.model` from `cfg.repo`.
    """
    from ..runtime import resolve_device

    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    out = Path(out)
    output_subtype(cfg.format, cfg.bit_depth)
    manifest = load_sources(sources)
    check_out_not_inside(out, sources)
    names = {r["item_id"]: relative_name(r, manifest.root) for r in manifest.rows}
    check_unique_names(names)
    device = resolve_device(cfg.device)
    model = model if model is not None else load_separation_model(cfg.model, cfg.repo)
    sources_ = list(model.sources)
    stems = stem_names(sources_, cfg)
    if cfg.segment_s is not None and cfg.segment_s > max_segment(model):
        raise InputError(f"segment_s {cfg.segment_s:g} is longer than the model allows ({max_segment(model):g} s)",
                         "use a shorter segment or leave it unset")
    cfg_json = cfg.model_dump(mode="json")
    info = describe_model(model, cfg.model, cfg.repo)
    target = out
    out, resume = _prepare_out(target, cfg_json, overwrite)  # out: where this run writes
    ext = cfg.format
    started = time.perf_counter()
    stats = {"separated": 0, "already_done": 0, "audio_s": 0.0, "separate_s": 0.0}
    skipped: list[tuple[str, str]] = []
    rows: dict[str, dict] = {}
    labels = derived_labels(manifest, SPLIT_COLUMNS)
    complete = False
    with _locked(out):
        _clean_partials(out)
        write_json(out / MANIFEST_NAME, _head(cfg_json, info, stems, labels, sources, "incomplete", 0, skipped))
        write_config(out, cfg_json)
        try:
            with progress("Separating", len(manifest.rows)) as bar:
                for row in manifest.rows:
                    name = names[row["item_id"]]
                    targets = {s: out / s / f"{name}.{ext}" for s in stems}
                    base = {"group": row["group"], **{c: row.get(c) for c in manifest.label_columns
                                                      if c not in SPLIT_COLUMNS}, **provenance(row)}
                    if all(t.is_file() for t in targets.values()):
                        stats["already_done"] += 1
                        rows.update(_rows_for(name, targets, base))
                    elif _split_one(row, name, targets, out, model, stems, cfg, device, stats, skipped, progress):
                        stats["separated"] += 1
                        rows.update(_rows_for(name, targets, base))
                    bar.advance()
            if not rows and skipped:
                raise InputError(f"no usable audio among {len(manifest.rows)} files",
                                 "see the warnings for why each file was skipped")
            complete = True
        finally:
            n = _write_rows(out, rows, labels)
            write_json(out / MANIFEST_NAME, _head(cfg_json, info, stems, labels, sources,
                                                  "complete" if complete else "incomplete", n, skipped))
    if out != target:
        (out / LOCK_NAME).unlink(missing_ok=True)
        swap_into_place(out, target, LOCK_NAME, "stems folder")
    elapsed = time.perf_counter() - started
    speed = round(stats["audio_s"] / elapsed, 3) if stats["separated"] and elapsed > 0 else None
    return SplitResult(path=str(target), manifest=str(target / "manifest.csv"), model=info, stems=stems,
                       resumed=resume, files=len(manifest.rows), separated=stats["separated"],
                       already_done=stats["already_done"], stem_files=n, audio_seconds=round(stats["audio_s"], 3),
                       separation_s=round(stats["separate_s"], 3), elapsed_s=round(elapsed, 3), audio_s_per_s=speed,
                       device=str(device), skipped=[{"path": p, "reason": r} for p, r in skipped])


def _split_one(row, name, targets: dict[str, Path], out: Path, model, stems, cfg: SplitConfig, device, stats,
               skipped, progress: ProgressFactory) -> bool:
    """Separate one file and commit its stems; False when the file was skipped as unusable."""
    path = Path(row["path"])
    try:
        channels_in = audio_info(path).channels
        audio, rate = load_audio(path, sample_rate=int(model.samplerate), mono=False)
    except AudioError as exc:
        skip_unusable(path, exc.message, cfg.strict, skipped, exc)
        return False
    if audio.shape[1] == 0:
        skip_unusable(path, "zero-length audio", cfg.strict, skipped)
        return False
    calls = _model_calls(model, audio.shape[1], cfg)
    t0 = time.perf_counter()
    with progress(f"  {name}", calls) if calls > 2 else no_progress("", None) as inner:
        def callback(state: dict) -> None:
            if state.get("state") == "end":
                inner.advance()

        estimates = separate(model, audio, cfg, device, callback)
    stats["separate_s"] += time.perf_counter() - t0
    stats["audio_s"] += audio.shape[1] / rate
    written = stem_audio(estimates, list(model.sources), cfg)
    if cfg.channels == "input" and channels_in == 1:
        written = {k: v.mean(axis=0, keepdims=True) for k, v in written.items()}
    out_rate = cfg.sample_rate or rate
    if out_rate != rate:
        written = {k: resample(v, rate, out_rate) for k, v in written.items()}
    _, subtype = output_subtype(cfg.format, cfg.bit_depth)
    if cfg.clip == "rescale" and subtype != "FLOAT":
        peak = max(float(np.abs(v).max()) for v in written.values())
        if peak > 1.0:
            written = {k: v * (0.999 / peak) for k, v in written.items()}
    _commit(out, {targets[s]: written[s] for s in stems}, out_rate, cfg)
    return True


def _commit(out: Path, files: dict[Path, np.ndarray], rate: int, cfg: SplitConfig) -> None:
    """Write a file's stems into a hidden partial folder, then rename each into place."""
    stage = out / f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        staged = {}
        for target, audio in files.items():
            tmp = stage / target.relative_to(out)
            write_audio_file(tmp, audio, rate, cfg.format, cfg.bit_depth, atomic=False)
            staged[target] = tmp
        for target, tmp in staged.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _model_calls(model, n: int, cfg: SplitConfig) -> int:
    """How many segment passes apply_model makes for an n-sample file (for the progress bar)."""
    rate = int(model.samplerate)
    max_shift = int(0.5 * rate) if cfg.shifts else 0
    total = 0
    for seg in _segments(model):
        seg_len = int(rate * (cfg.segment_s or seg))
        stride = max(1, int((1 - cfg.overlap) * seg_len))
        total += max(1, cfg.shifts) * math.ceil((n + max_shift) / stride)
    return total


def _rows_for(name, targets: dict[str, Path], base: dict) -> dict[str, dict]:
    rows = {}
    for stem, path in targets.items():
        info = audio_info(path)
        item_id = f"{stem}/{name}"
        rows[item_id] = {"path": path, "item_id": item_id, **base, "stem": stem,
                         "duration_s": round(info.duration_s, 6), "sample_rate": info.sample_rate,
                         "channels": info.channels}
    return rows


def _write_rows(out: Path, rows: dict[str, dict], labels: list[str]) -> int:
    """Write manifest.csv: this run's rows plus the rows of earlier runs whose files are still there."""
    path = out / "manifest.csv"
    if path.is_file():
        try:
            old = read_manifest_file(path)
        except MusicSAEError:
            old = None
        if old is not None:
            kept = {r["item_id"]: r for r in old.rows if r["item_id"] not in rows and Path(r["path"]).is_file()}
            rows = {**kept, **rows}
            labels = [*labels, *[c for c in old.label_columns if c not in labels]]
    ordered = sorted(rows.values(), key=lambda r: r["item_id"])
    if ordered:
        Manifest(ordered, labels, out).write(path)
    else:
        path.unlink(missing_ok=True)
    return len(ordered)


def _head(cfg_json: dict, info: dict, stems: list[str], labels: list[str], sources, status: str, n: int,
          skipped) -> dict:
    return new_manifest("dataset", SPLIT_FORMAT_VERSION, cfg_json, source="split", status=status,
                        inputs=[str(s) for s in sources], manifest="manifest.csv", model=info, stems=stems,
                        n_items=n, label_columns=labels, skipped=[{"path": p, "reason": r} for p, r in skipped])


def _is_split_output(out: Path) -> bool:
    try:
        head = read_manifest(out)
    except StoreError:
        return False
    return head.get("kind") == "dataset" and head.get("source") == "split"


def _prepare_out(out: Path, cfg_json: dict, overwrite: bool) -> tuple[Path, bool]:
    """(folder to write, resume?): `out` itself, new or resumed; with --overwrite of an existing output, its hidden
    sibling `.<name>.overwrite` (resumed when an interrupted overwrite left it), swapped in when complete."""
    if not out.exists():
        make_parents(out)
        out.mkdir()
        return out, False
    if not out.is_dir():
        raise OutputExistsError(out)
    if not any(p for p in out.iterdir() if p.name != LOCK_NAME):
        return out, False
    if not overwrite:
        if not _is_split_output(out):
            raise OutputExistsError(out)
        changed = _changed(out, cfg_json)
        if changed:
            raise InputError(f"{out} holds stems made with other settings ({', '.join(changed)})",
                             "rerun with the same settings to resume, or pass --overwrite to start over")
        return out, True
    check_replaceable(out)
    with _locked(out):  # fail now, not at the end, when another run is still writing the old output
        pass
    stage = out.parent / f".{out.name}.overwrite"
    if _is_split_output(stage) and not _changed(stage, cfg_json):
        log.info("resuming the interrupted --overwrite of %s (the old stems stay until it is complete)", out)
        return stage, True
    if stage.exists():
        check_replaceable(stage)
        with _locked(stage):
            shutil.rmtree(stage)
    stage.mkdir()
    return stage, False


def _changed(folder: Path, cfg_json: dict) -> list[str]:
    before = read_manifest(folder).get("config", {})
    return [k for k in cfg_json if k not in RUNTIME_ONLY and before.get(k) != cfg_json[k]]


@contextmanager
def _locked(out: Path):
    """An exclusive lock on the output folder (released by the OS if the process dies)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another run is writing {out}", "wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def _clean_partials(out: Path) -> None:
    """Remove the partial folders of runs that were killed (their files were never renamed into place)."""
    for p in out.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)

