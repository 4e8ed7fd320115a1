"""`data chunk`: cut audio into fixed-length windows, optionally resampled and mixed down, dropping silence.

Window k starts at round(k * hop_s * rate) samples (no drift over long files) and holds length_s of audio.
After the last full window, the remainder (the piece that starts at the next window start, when the last
full window did not already reach the end) is dropped, zero-padded to full length, or kept short. Windows
whose RMS level (over all channels, padding excluded) is below `min_rms_db` are dropped; numbering keeps
their place, so chunk k always starts at k * hop_s.

Files are streamed block by block (soxr's streaming resampler gives the same samples as a one-shot
resample), so an hour-long file never sits in memory whole. The output is a dataset folder built in a hidden
sibling and moved into place when complete: `<out>/<relative path of the source>/<chunk:05d>.<ext>` plus
manifest.csv with the source's labels and group, `source_path`/`source_item` (the original recording),
`chunk`, `start_s` and `end_s` (seconds in that recording: a chunk of a chunk adds its offset).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import new_manifest, staged_directory, write_config, write_json
from ..errors import AudioError, InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result, skipped_lines
from .config import ChunkConfig
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
from .io import audio_info, check_finite, skip_unusable
from .manifest import Manifest

CHUNK_FORMAT_VERSION = 1
CHUNK_COLUMNS = (*PROVENANCE, "chunk", "start_s", "end_s")
BLOCK_FRAMES = 1 << 18  # frames read per block while streaming a file
EXAMPLES = 3  # files named in each end-of-run warning
log = logging.getLogger("musicsae")


@dataclass(frozen=True)
class Piece:
    """One window of a file, in samples at the output rate."""

    index: int
    start: int
    length: int  # samples of real audio
    padded: int  # samples written (length, or length_s worth with last=pad)


@dataclass(kw_only=True)
class ChunkResult(Result):
    """What `data chunk` reports: chunks written from how many files, seconds in and out, what was dropped."""

    path: str
    manifest: str
    sources: int
    chunks: int
    dropped_silent: int
    dropped_short: int
    files_without_window: int
    seconds_in: float
    seconds_out: float
    elapsed_s: float
    skipped: list[dict]

    def lines(self) -> list[str]:
        return [self.manifest, f"{self.chunks} chunks from {self.sources} files ({self.seconds_out:.1f} s of "
                               f"{self.seconds_in:.1f} s), dropped: {self.dropped_silent} silent, "
                               f"{self.dropped_short} short last pieces", *skipped_lines(self.skipped)]


def window_start(k: int, hop_s: float, rate: int) -> int:
    """First sample of window k (rounded from the exact time, so long files do not drift)."""
    return int(round(k * hop_s * rate))


def plan_chunks(n: int, rate: int, cfg: ChunkConfig) -> list[Piece]:
    """Every window of an `n`-sample file (before the silence filter), as cut_stream would emit them."""
    blocks = (np.zeros((1, min(BLOCK_FRAMES, n - i)), np.float32) for i in range(0, n, BLOCK_FRAMES))
    return list(cut_stream(blocks, rate, cfg, lambda piece, data: piece))


def cut_stream(blocks: Iterable[np.ndarray], rate: int, cfg: ChunkConfig,
               emit: Callable[[Piece, np.ndarray], object]) -> Iterator:
    """Feed (C, m) blocks of one file; yields emit(piece, audio (C, piece.padded)) for every window in order."""
    length = int(round(cfg.length_s * rate))
    hop_s = cfg.hop_s or cfg.length_s
    if length < 1 or window_start(1, hop_s, rate) < 1:
        raise InputError(f"length_s {cfg.length_s:g} / hop_s {hop_s:g} are shorter than one sample at {rate} Hz",
                         "use longer windows or a higher sample rate")
    k, need, pos = 0, 0, 0  # next window, its first sample, absolute index of the next incoming sample
    buf: np.ndarray | None = None
    buf_start = 0
    last_full_end = None
    for block in blocks:
        m = block.shape[1]
        if pos + m <= need:  # entirely in a gap between windows
            pos += m
            continue
        seg_start = max(pos, need)
        part = block[:, seg_start - pos:]
        pos += m
        if buf is None or buf.shape[1] == 0:
            buf, buf_start = part, seg_start
        else:
            buf = np.concatenate([buf, part], axis=1)
        while need + length <= buf_start + buf.shape[1]:
            off = need - buf_start
            yield emit(Piece(k, need, length, length), buf[:, off:off + length])
            last_full_end = need + length
            k += 1
            need = window_start(k, hop_s, rate)
            drop = min(need - buf_start, buf.shape[1])
            buf, buf_start = buf[:, drop:], buf_start + drop
    n = pos
    if cfg.last == "drop" or need >= n or (last_full_end is not None and last_full_end >= n):
        return
    rest = n - need
    if rest < cfg.min_last_s * rate:
        return
    data = buf[:, need - buf_start:] if buf is not None else np.zeros((1, 0), np.float32)
    if cfg.last == "pad":
        data = np.pad(data, ((0, 0), (0, length - rest)))
        yield emit(Piece(k, need, rest, length), data)
    else:
        yield emit(Piece(k, need, rest, rest), data)


def read_blocks(path: Path, sample_rate: int | None, mono: bool, block: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """A file as (C, m) float32 blocks, mixed down (before resampling) and resampled as asked.

    NonFiniteAudioError (an AudioError) at the first block holding NaN/Inf samples, checked before mixing or
    resampling spreads them.
    """
    import soundfile as sf
    import soxr

    with sf.SoundFile(str(path)) as fh:
        channels = 1 if mono else fh.channels
        stream = None
        if sample_rate is not None and sample_rate != fh.samplerate:
            stream = soxr.ResampleStream(fh.samplerate, sample_rate, channels, dtype="float32", quality="HQ")
        pos = 0  # frames read so far, for the time of a bad sample
        while True:
            data = fh.read(block, dtype="float32", always_2d=True)  # (m, C)
            check_finite(data, path, fh.samplerate, pos)
            pos += data.shape[0]
            last = data.shape[0] < block
            if mono and data.shape[1] > 1:
                data = data.mean(axis=1, keepdims=True, dtype=np.float32)
            if stream is not None:
                data = stream.resample_chunk(np.ascontiguousarray(data), last=last)
            yield data.T  # (C, m) view; written back frame-major without a copy
            if last:
                return


def rms_db(audio: np.ndarray) -> float:
    """RMS level in dBFS over all samples and channels (-inf for digital silence or no samples)."""
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return float("-inf") if rms == 0.0 else 20.0 * math.log10(rms)


def chunk_dataset(sources, out: str | Path, cfg: ChunkConfig, overwrite: bool = False,
                  progress: ProgressFactory = no_progress) -> ChunkResult:
    """Cut every file of `sources` (a folder, dataset folder, manifest, or audio files) into a dataset at `out`."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    out = Path(out)
    output_subtype(cfg.format, cfg.bit_depth)
    manifest = load_sources(sources)
    check_out_not_inside(out, sources)
    names = {r["item_id"]: relative_name(r, manifest.root) for r in manifest.rows}
    check_unique_names(names)
    started = time.perf_counter()
    stats = {"chunks": 0, "silent": 0, "short_pieces": 0, "no_window": 0, "seconds_in": 0.0, "seconds_out": 0.0}
    skipped: list[tuple[str, str]] = []  # each one warned about as it happens (skip_unusable)
    dropped: dict[str, list] = {"short": [], "no_window": [], "silent": [], "all_silent": []}  # warned at the end
    rows: list[dict] = []
    cfg_json = cfg.model_dump(mode="json")
    with staged_directory(out, overwrite) as stage, progress("Chunking", len(manifest.rows)) as bar:
        for row in manifest.rows:
            rows += _chunk_one(row, manifest.label_columns, names[row["item_id"]], stage, cfg, stats, skipped,
                               dropped)
            bar.advance()
        warn_dropped(dropped, cfg)
        if not rows:
            raise InputError(f"no chunks from {len(manifest.rows)} files",
                             "see the warnings; files may be shorter than length_s (try last=pad or keep) or "
                             "all below min_rms_db")
        labels = derived_labels(manifest, CHUNK_COLUMNS)
        Manifest(rows, labels, stage).write(stage / "manifest.csv")
        write_json(stage / "manifest.json", new_manifest(
            "dataset", CHUNK_FORMAT_VERSION, cfg_json, source="chunk", inputs=[str(s) for s in sources],
            manifest="manifest.csv", n_items=len(rows), label_columns=labels,
            skipped=[{"path": p, "reason": r} for p, r in skipped]))
        write_config(stage, cfg_json)
    elapsed = time.perf_counter() - started
    return ChunkResult(path=str(out), manifest=str(out / "manifest.csv"), sources=len(manifest.rows),
                       chunks=stats["chunks"], dropped_silent=stats["silent"], dropped_short=stats["short_pieces"],
                       files_without_window=stats["no_window"], seconds_in=round(stats["seconds_in"], 3),
                       seconds_out=round(stats["seconds_out"], 3), elapsed_s=round(elapsed, 3),
                       skipped=[{"path": p, "reason": r} for p, r in skipped])


def _chunk_one(row: dict, labels: list[str], name, stage: Path, cfg: ChunkConfig, stats: dict,
               skipped: list, dropped: dict[str, list] | None = None) -> list[dict]:
    """Write the chunks of one source; on a decode error remove what was written and skip (or raise).

    What the source lost to the short-piece rule and the silence filter is added to `dropped` (for
    warn_dropped): (file, seconds) under short and no_window, (file, windows dropped, windows) under silent,
    (file, windows) under all_silent.
    """
    path = Path(row["path"])
    written: list[Path] = []
    silent_before = stats["silent"]
    try:
        info = audio_info(path)
        if info.frames == 0:
            skip_unusable(path, "zero-length audio", cfg.strict, skipped)
            return []
        rate = cfg.sample_rate or info.sample_rate
        channels = 1 if cfg.mono else info.channels
        hop_s = cfg.hop_s or cfg.length_s
        base = {"group": row["group"], **{c: row.get(c) for c in labels if c not in CHUNK_COLUMNS},
                **provenance(row)}
        offset = float(row["start_s"]) if isinstance(row.get("start_s"), (int, float)) and \
            row.get("source_path") not in (None, "") else 0.0
        ext = cfg.format
        out_rows: list[dict] = []
        n_pieces = 0

        def emit(piece: Piece, data: np.ndarray):
            nonlocal n_pieces
            n_pieces += 1
            if cfg.min_rms_db is not None and rms_db(data[:, :piece.length]) < cfg.min_rms_db:
                stats["silent"] += 1
                return None
            file = stage / f"{name}" / f"{piece.index:05d}.{ext}"
            write_audio_file(file, data, rate, cfg.format, cfg.bit_depth, atomic=False)
            written.append(file)
            out_rows.append({"path": file, "item_id": f"{name}/{piece.index:05d}", **base, "chunk": piece.index,
                             "start_s": round(offset + piece.start / rate, 6),
                             "end_s": round(offset + (piece.start + piece.length) / rate, 6),
                             "duration_s": round(piece.padded / rate, 6), "sample_rate": rate, "channels": channels})
            return None

        counted = [0]
        for _ in cut_stream(_counting(read_blocks(path, cfg.sample_rate, cfg.mono), counted), rate, cfg, emit):
            pass
        n_in = counted[0]
    except AudioError as exc:
        _remove(written, stage)
        skip_unusable(path, exc.message, cfg.strict, skipped, exc)
        return []
    except InputError:
        _remove(written, stage)
        raise
    except Exception as exc:  # libsndfile raises several error types for truncated data
        _remove(written, stage)
        skip_unusable(path, f"cannot decode (truncated or corrupt): {exc}", cfg.strict, skipped)
        return []
    full = _full_windows(n_in, rate, cfg.length_s, hop_s)
    shown = f"{name}{path.suffix}"
    dropped = {"short": [], "no_window": [], "silent": [], "all_silent": []} if dropped is None else dropped
    if n_pieces == full and _has_rest(n_in, rate, cfg.length_s, hop_s, full):  # the short piece went
        stats["short_pieces"] += 1
        dropped["short"].append((shown, (n_in - window_start(full, hop_s, rate)) / rate))
    if n_pieces == 0:
        stats["no_window"] += 1
        dropped["no_window"].append((shown, n_in / rate))
    silent = stats["silent"] - silent_before
    if silent:
        dropped["silent"].append((shown, silent, n_pieces))
        if not out_rows:
            dropped["all_silent"].append((shown, n_pieces))
    stats["chunks"] += len(out_rows)
    stats["seconds_in"] += n_in / rate
    stats["seconds_out"] += sum(r["duration_s"] for r in out_rows)
    return out_rows


def warn_dropped(dropped: dict[str, list], cfg: ChunkConfig) -> None:
    """One warning per kind of audio the run left out on purpose (the counts of the command's summary), naming
    a few files: short last pieces, files too short for any window, windows below min_rms_db."""
    def names(items: list[tuple], show) -> str:
        more = f", ... ({len(items) - EXAMPLES} more)" if len(items) > EXAMPLES else ""
        return ", ".join(show(item) for item in items[:EXAMPLES]) + more

    if cfg.last == "drop":
        why = "last=drop; --last pad or keep keeps them"
    else:
        why = f"shorter than min_last_s {cfg.min_last_s:g} s"
    if dropped["short"]:
        log.warning("dropped the short last piece of %d file(s) (%s): %s", len(dropped["short"]), why,
                    names(dropped["short"], lambda f: f"{f[0]} ({f[1]:.2f} s)"))
    if dropped["no_window"]:
        log.warning("%d file(s) gave no chunk, being shorter than one %g s window (%s): %s",
                    len(dropped["no_window"]), cfg.length_s, why,
                    names(dropped["no_window"], lambda f: f"{f[0]} ({f[1]:.2f} s)"))
    if dropped["silent"]:
        total = sum(f[1] for f in dropped["silent"])
        whole = (f"; {len(dropped['all_silent'])} file(s) gave no chunk at all: "
                 f"{names(dropped['all_silent'], lambda f: f[0])}" if dropped["all_silent"] else "")
        log.warning("dropped %d window(s) quieter than %g dBFS (min_rms_db) in %d file(s): %s%s", total,
                    cfg.min_rms_db, len(dropped["silent"]),
                    names(dropped["silent"], lambda f: f"{f[0]} ({f[1]} of {f[2]})"), whole)


def _counting(blocks: Iterable[np.ndarray], counted: list[int]) -> Iterator[np.ndarray]:
    """Pass blocks through, adding their sample count to counted[0]."""
    for b in blocks:
        counted[0] += b.shape[1]
        yield b


def _full_windows(n: int, rate: int, length_s: float, hop_s: float) -> int:
    length = int(round(length_s * rate))
    k = 0
    while window_start(k, hop_s, rate) + length <= n:
        k += 1
    return k


def _has_rest(n: int, rate: int, length_s: float, hop_s: float, full: int) -> bool:
    """Whether a short piece remains after `full` full windows (what last=drop drops)."""
    start = window_start(full, hop_s, rate)
    end = window_start(full - 1, hop_s, rate) + int(round(length_s * rate)) if full else 0
    return start < n and (full == 0 or end < n)


def _remove(files: list[Path], stage: Path) -> None:
    """Remove a skipped source's chunks, and the folders below `stage` that this leaves empty."""
    for f in files:
        f.unlink(missing_ok=True)
    for folder in sorted({p for f in files for p in f.parents if stage in p.parents}, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
