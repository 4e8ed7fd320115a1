"""`data index` of Hugging Face datasets: the hub, `save_to_disk` folders, Parquet/Arrow files, audiofolders.

A dataset source is read row by row with the `datasets` library (hub ids stream, local data is memory-mapped), its
audio column cast to `Audio(decode=False)` so each row carries the stored bytes (or a local path) and musicsae
decodes them itself with soundfile: no torchaudio or torchcodec. Every row becomes an audio file under
`<out>/audio/` (flac or wav, the source's rate unless `sample_rate` resamples, its channels) and a manifest row
whose labels are the dataset's scalar columns, class-label integers mapped to their names.

Sources (see `dataset_source`):
  hf:OWNER/NAME[@REVISION]   the hub (streamed); offline it fails at once with how to pass a local copy
  a `save_to_disk` folder    dataset_info.json + state.json, or dataset_dict.json with one folder per split
  Parquet / Arrow files      one file, or a folder of them (a local copy of a hub dataset repository)
  an audiofolder             audio files with metadata.csv / metadata.jsonl (`file_name` column)

The output is a dataset folder like `data synth` writes (manifest.csv, manifest.json, config.yaml, audio/) and
appears only when complete. It is built in the hidden sibling `.<name>.importing`; an interrupted run (Ctrl-C, a
killed process) leaves that folder with a journal of the rows done, and a rerun with the same source and settings
resumes after them. Bad input (a mixed-type label column, an undecodable row with `strict`) removes it: nothing
partial is left that reads as complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import check_replaceable, new_manifest, swap_into_place, write_config, write_json
from ..errors import AudioError, InputError, OutputExistsError, UsageError
from ..progress import ProgressFactory, no_progress
from ..results import Result, internal, skipped_lines
from .hf_loading import datasets_module, open_dataset
from .hf_rows import LabelTypes, import_row, plan_columns
from .hf_sources import DatasetSource
from .io import skip_unusable
from .manifest import MANIFEST_FORMATS, Manifest

IMPORT_FORMAT_VERSION = 1
JOURNAL = "rows.jsonl"
STAGE_SUFFIX = ".importing"
# settings that do not change what is written: a rerun may change them and still resume
RUNTIME_ONLY = ("strict", "decode", "keep_silent", "silence_db", "limit")
log = logging.getLogger("musicsae")


@dataclass(kw_only=True)
class DatasetImport(Result):
    """What `data index` of a dataset reports: the rows written as items, their labels, and the rows skipped."""

    source: str = internal()  # the dataset's label (hf:OWNER/NAME or its folder), for the human line
    path: str
    manifest: str
    items: int
    label_columns: list[str]
    skipped: list[dict]  # {"row": "row N", "reason": ...}
    split: str
    subset: str | None
    resumed_rows: int
    label_map: str
    seconds_of_audio: float

    def lines(self) -> list[str]:
        where = f"split {self.split}" + (f", subset {self.subset}" if self.subset else "")
        syntheory = " (SynTheory's under data synth's names)" if self.label_map == "syntheory" else ""
        lines = [self.manifest, f"{self.items} items from {self.source} ({where}), {self.seconds_of_audio:.0f} s of "
                                f"audio; labels: {', '.join(self.label_columns) or '-'}{syntheory}"]
        if self.resumed_rows:
            lines.append(f"resumed after {self.resumed_rows} rows written by an interrupted run")
        return lines + skipped_lines((s["row"], s["reason"]) for s in self.skipped)


def import_dataset(source: DatasetSource, out: Path, cfg, overwrite: bool = False,
                   progress: ProgressFactory = no_progress) -> DatasetImport:
    """Write the rows of a dataset as audio files plus a manifest into the dataset folder `out`."""
    from .syntheory import is_syntheory, subset_of

    if cfg.group_regex is not None:
        raise UsageError("--group-regex applies to folders of audio, not to a dataset",
                         "name each row's track with --group-column COLUMN")

    ds = datasets_module()
    _check_output_place(out, source, ds)
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    if out.exists():
        check_replaceable(out)
    rows, features, total, split, facts = open_dataset(source, cfg.split, cfg.subset)
    first = None
    if features is None:  # a stream that does not declare its features: look at its first row
        first = next(iter(rows), None)
        if first is None:
            raise InputError(f"{source.label} split {split!r} has no rows", "check --subset and --split")
    cols = plan_columns(features, first, cfg)
    rows = rows.cast_column(cols.audio, ds.Audio(decode=False))
    mapping = cfg.label_map
    if mapping == "auto":
        mapping = "syntheory" if is_syntheory(source.location) else "none"  # the hub id or a folder's name
    syn_subset = subset_of(list(cols.labels), facts.get("subset")) if mapping == "syntheory" else None
    if mapping == "syntheory" and syn_subset is None:
        raise InputError("the SynTheory label map does not know these columns", "pass --subset (notes, intervals, "
                         "scales, chords, simple_progressions, tempos, time_signatures) or --set label_map=none")
    settings = {**cfg.model_dump(mode="json"), "split": split, "subset": facts.get("subset"),
                "label_map": mapping, "source": source.label}
    stage, done = _stage(out, settings)
    limit = cfg.limit
    n_total = min(n for n in (total, limit) if n is not None) if (total, limit) != (None, None) else None
    types = LabelTypes()
    skipped = [(r["row_label"], r["reason"]) for r in done if r.get("skipped")]
    written = [r for r in done if not r.get("skipped")]
    start = len(done)
    journal = open(stage / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
    try:
        with progress("Importing rows", n_total) as bar:
            bar.advance(start)
            for i, row in enumerate(_rows(rows, start)):
                index = start + i
                if limit is not None and index >= limit:
                    break
                entry = import_row(row, index, cols, cfg, stage, types, mapping, syn_subset, split)
                if "reason" in entry:
                    label = f"row {index}"
                    skip_unusable(label, entry["reason"], cfg.strict, skipped)
                    entry = {"skipped": True, "row_label": label, "reason": entry["reason"], "row": index}
                else:
                    written.append(entry)
                journal.write(json.dumps(entry) + "\n")
                journal.flush()
                bar.advance()
    except (InputError, AudioError):  # bad input (or an unusable row with strict): nothing partial is kept
        journal.close()
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if not journal.closed:
            journal.close()
    if not written:
        shutil.rmtree(stage, ignore_errors=True)
        raise InputError(f"no usable audio among the {len(written) + len(skipped)} rows read from {source.label}",
                         "see the warnings for why each row was skipped")
    ids = [r["item_id"] for r in written]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        shutil.rmtree(stage, ignore_errors=True)
        raise InputError(f"--id-column {cols.item_id!r} repeats item ids ({', '.join(twice[:3])}"
                         f"{' ...' if len(twice) > 3 else ''})", "name a column whose values are unique, or drop "
                                                                  "--id-column")
    label_columns = list(dict.fromkeys(k for r in written for k in r["labels"]))
    manifest_rows = [{"path": stage / r["path"], "item_id": r["item_id"], "group": r["group"], **r["labels"],
                      "duration_s": r["duration_s"], "sample_rate": r["sample_rate"], "channels": r["channels"]}
                     for r in written]
    Manifest(manifest_rows, label_columns, stage).write(stage / "manifest.csv")
    head = {**facts, "split": split, "label_map": mapping, "audio_column": cols.audio,
            "rows_read": len(written) + len(skipped), "limit": limit,
            "class_labels": {c: names for c, names in cols.labels.items() if names is not None}}
    write_json(stage / "manifest.json", new_manifest(
        "dataset", IMPORT_FORMAT_VERSION, settings, source="hf", manifest="manifest.csv", n_items=len(written),
        label_columns=label_columns, origin=head, skipped=[{"row": r, "reason": why} for r, why in skipped]))
    write_config(stage, settings)
    (stage / JOURNAL).unlink()
    (stage / "settings.json").unlink()
    swap_into_place(stage, out)
    return DatasetImport(source=source.label, path=str(out), manifest=str(out / "manifest.csv"), items=len(written),
                         label_columns=label_columns, skipped=[{"row": r, "reason": why} for r, why in skipped],
                         split=split, subset=facts.get("subset"), resumed_rows=start, label_map=mapping,
                         seconds_of_audio=round(sum(r["duration_s"] for r in written), 3))


def _rows(rows, start: int):
    """The rows from `start` on (a memory-mapped table seeks; a stream skips)."""
    if start and hasattr(rows, "select"):
        return iter(rows.select(range(start, len(rows))))
    return iter(rows.skip(start)) if start else iter(rows)


def _check_output_place(out: Path, source: DatasetSource, ds) -> None:
    """Refuse an output inside the source folder or inside the datasets / hub caches."""
    if Path(out).suffix.lower() in MANIFEST_FORMATS:
        raise InputError(f"a dataset is written as a folder (audio files and manifest.csv), not as {out.name}",
                         f"pass -o {Path(out).with_suffix('')}/")
    target = out.resolve()
    places = [Path(source.location)] if source.kind != "hub" and Path(source.location).is_dir() else []
    caches = [ds.config.HF_DATASETS_CACHE]
    try:
        from huggingface_hub import constants

        caches.append(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        pass
    for place in [*places, *map(Path, caches)]:
        if not place.exists() and place not in places:
            continue
        base = place.resolve() if place.is_dir() else place.resolve().parent
        if target == base or base in target.parents:
            what = "the input dataset" if place in places else "the Hugging Face cache"
            raise InputError(f"the output {out} lies inside {what} ({place})",
                             "write the dataset folder somewhere else")


def _stage(out: Path, settings: dict) -> tuple[Path, list[dict]]:
    """(stage folder, rows already done): a resumable import of the same source and settings, or a new one."""
    stage = out.parent / f".{out.name}{STAGE_SUFFIX}"
    mine = {k: v for k, v in settings.items() if k not in RUNTIME_ONLY}
    if stage.is_dir():
        try:
            before = json.loads((stage / "settings.json").read_text("utf-8"))
        except (OSError, ValueError):
            before = None
        if before == mine and (stage / JOURNAL).is_file():
            done = []
            for line in (stage / JOURNAL).read_text("utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a line cut short by the interruption: redo that row
                if not entry.get("skipped") and not (stage / entry["path"]).is_file():
                    break
                done.append(entry)
            if done:
                log.warning("resuming the import into %s after %d rows", out, len(done))
            (stage / JOURNAL).write_text("".join(json.dumps(e) + "\n" for e in done), "utf-8")
            return stage, done
        if before is None and not (stage / JOURNAL).is_file():
            raise InputError(f"{stage} exists and musicsae did not write it", "move it away")
        shutil.rmtree(stage)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage.mkdir()
    write_json(stage / "settings.json", mine)
    return stage, []
