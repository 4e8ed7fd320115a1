"""`musicsae data ...`: synthesise concept audio, index datasets, separate stems (Demucs), cut windows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..audio.index_options import folder_label, refuse_dataset_flags
from . import _options as opt
from ._command import command
from ._common import legacy_output, resolve, split_csv
from ._help import MusicsaeGroup

app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Prepare audio: synthesise labelled concept audio, index datasets, separate stems, cut windows.")

ConfigOpt = opt.preset("data")
LegacyOut = Annotated[Path | None, typer.Argument(hidden=True, help="Deprecated: use -o.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (must not exist).")]
SourcesArg = Annotated[list[Path], typer.Argument(help="A folder of audio, a dataset folder, a manifest, or audio "
                                                       "files.")]
StrictOpt = Annotated[bool | None, typer.Option("--strict/--no-strict", help="Fail on unusable audio.")]
FormatOpt = Annotated[str | None, typer.Option("--format", help="wav, flac or mp3.")]
BitDepthOpt = Annotated[int | None, typer.Option(help="16, 24 or 32 (float wav).")]


@command(app, "synth", config="musicsae_cli.audio.config:SynthConfig", group="data",
         aliases={"--duration": "--duration-s"}, examples=[
             "musicsae data synth -o concepts/",
             "musicsae data synth -o notes/ -c small --seed 3",
             "musicsae data synth -o tempo/ --concepts tempos --set 'tempos_bpm=[60, 90, 120, 150]'"])
def synth(
    out: OutOpt = None,
    legacy_out: LegacyOut = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    concepts: Annotated[str | None, typer.Option(help="Comma list: notes,intervals,chords,tempos,timbres.")] = None,
    timbres: Annotated[str | None, typer.Option(help="Comma list of instruments, e.g. sine,piano,organ.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same files).")] = None,
    sample_rate: Annotated[int | None, typer.Option(help="Sample rate in Hz.")] = None,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Clip length in seconds.")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Synthesise labelled concept audio (notes, intervals, chords, tempos, timbres) with a manifest."""
    from ..audio.synth import SynthConfig

    out = legacy_output(out, legacy_out, dry_run)
    flags = {"concepts": split_csv(concepts), "timbres": split_csv(timbres), "seed": seed,
             "sample_rate": sample_rate, "duration_s": duration_s}
    cfg = resolve(SynthConfig, "data", config, set_, flags, dry_run, ui)
    from ..audio.concepts import make_concept_dataset

    ui.show(make_concept_dataset(out, cfg, overwrite, ui.progress), out=out)


@command(app, "index", config="musicsae_cli.audio.config:IndexConfig", group="data",
         aliases={"--label-name": "--label"}, examples=[
             "musicsae data index songs/ -o songs.csv -l genre",
             "musicsae data index songs/ -o songs.csv --group-regex '^(.+)_part[0-9]+$'",
             "musicsae data index meta.csv -o checked.csv --path-column file -l genre -l bpm --group-column track",
             "musicsae data index hf:meganwei/syntheory --subset notes --split train -o syntheory-notes/",
             "musicsae data index saved-dataset/ --split test --sample-rate 32000 --limit 500 -o genres/"])
def index(
    source: Annotated[Path, typer.Argument(help="A folder of audio (class subfolders = labels), a "
                                                ".csv/.jsonl/.parquet manifest, or a Hugging Face dataset: "
                                                "hf:OWNER/NAME[@REVISION], a save_to_disk folder, Parquet/Arrow "
                                                "files with an audio column, or an audiofolder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write (.csv, .jsonl or .parquet); for a "
                                                          "dataset, the folder to write (audio/ + manifest.csv; "
                                                          "rerun to resume).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    path_column: Annotated[str | None, typer.Option(help="Manifest column with audio paths.")] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", "-l", help="A manifest: label columns to keep (repeatable or comma list; default all). A folder: "
                              "the name of the label its class subfolders give (default label).")] = None,
    group_column: Annotated[str | None, typer.Option(help="Column naming each item's track/source.")] = None,
    id_column: Annotated[str | None, typer.Option(help="Column with item ids.")] = None,
    group_regex: Annotated[str | None, typer.Option(help="Regex whose capture group gives the track id.")] = None,
    strict: StrictOpt = None,
    decode: Annotated[bool | None, typer.Option("--decode/--no-decode", help="Decode every file fully.")] = None,
    keep_silent: Annotated[bool | None, typer.Option("--keep-silent", help="Keep silent clips.")] = None,
    split: Annotated[str | None, typer.Option(help="Dataset split (datasets; default: the only one).")] = None,
    subset: Annotated[str | None, typer.Option(help="Dataset subset, load_dataset's name (datasets; default: the "
                                                    "only one).")] = None,
    audio_column: Annotated[str | None, typer.Option(help="Column holding the audio (datasets; default: the one "
                                                          "of Audio type).")] = None,
    sample_rate: Annotated[int | None, typer.Option(help="Resample dataset audio to this rate in Hz (default: "
                                                         "keep each row's).")] = None,
    audio_format: Annotated[str | None, typer.Option("--format", help="flac or wav: files a dataset's rows are "
                                                                      "written as.")] = None,
    limit: Annotated[int | None, typer.Option(help="Read only the first N rows (datasets).")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Index a folder or manifest into a checked manifest (path, item_id, group, labels, duration)."""
    from ..audio.dataset import IndexConfig
    from ..audio.hf_sources import dataset_source

    dataset = dataset_source(source)
    label_name, labels = folder_label(split_csv(label), source, dataset is None)
    flags = {"path_column": path_column, "label_columns": labels, "group_column": group_column,
             "id_column": id_column, "label_name": label_name, "group_regex": group_regex, "strict": strict,
             "decode": decode, "keep_silent": keep_silent, "split": split, "subset": subset,
             "audio_column": audio_column, "sample_rate": sample_rate, "audio_format": audio_format, "limit": limit}
    if dataset is None:
        refuse_dataset_flags(flags, source)
    cfg = resolve(IndexConfig, "data", config, set_, flags, dry_run, ui)
    from ..audio.dataset import index_source

    ui.show(index_source(source, out, cfg, overwrite, ui.progress, dataset=dataset), out=out)


@command(app, "split", config="musicsae_cli.audio.config:SplitConfig", group="data",
         keys={"segment": "segment_s", "audio_format": "format"},
         examples=[
             "musicsae data split songs/ -o stems/ -c htdemucs",
             "musicsae data split songs.csv -o stems/ -c vocals --device cuda",
             "musicsae model save-tiny-demucs -o demucs-models/ && "
             "musicsae data split songs/ -o stems/ -c tiny --repo demucs-models/"])
def split(
    sources: SourcesArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: <out>/<stem>/<relative path>.<ext> plus "
                                                          "manifest.csv; rerun to resume.")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Demucs model or bag name, e.g. htdemucs.")] = None,
    repo: Annotated[Path | None, typer.Option(help="Local model repository folder (offline).")] = None,
    two_stems: Annotated[str | None, typer.Option(help="Write this stem and the sum of the others "
                                                       "(e.g. vocals).")] = None,
    rest_name: Annotated[str | None, typer.Option(help="Name of the summed stem (default instrumental).")] = None,
    device: opt.Device = None,
    shifts: Annotated[int | None, typer.Option(help="Random time shifts averaged per file (0 = none).")] = None,
    overlap: Annotated[float | None, typer.Option(help="Overlap between segments (0-1).")] = None,
    segment: Annotated[float | None, typer.Option(help="Segment length in seconds (default: the model's).")] = None,
    jobs: Annotated[int | None, typer.Option(help="CPU threads over segments (0 = none).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the random shifts (re-applied per file).")] = None,
    channels: Annotated[str | None, typer.Option(help="Stem channels: input (mono in, mono out) or model.")] = None,
    audio_format: FormatOpt = None,
    bit_depth: BitDepthOpt = None,
    sample_rate: Annotated[int | None, typer.Option(help="Rate of the stems (default: the model's).")] = None,
    strict: StrictOpt = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Separate audio into stems with Demucs (all stems or two), with a manifest; resumable."""
    from ..audio.split import SplitConfig

    flags = {"model": model, "repo": str(repo) if repo is not None else None, "two_stems": two_stems,
             "rest_name": rest_name, "device": device, "shifts": shifts, "overlap": overlap, "segment_s": segment,
             "jobs": jobs, "seed": seed, "channels": channels, "format": audio_format, "bit_depth": bit_depth,
             "sample_rate": sample_rate, "strict": strict}
    cfg = resolve(SplitConfig, "data", config, set_, flags, dry_run, ui)
    from ..audio.split import split_dataset

    ui.show(split_dataset(sources, out, cfg, overwrite, ui.progress), out=out)


@command(app, "chunk", config="musicsae_cli.audio.config:ChunkConfig", group="data",
         keys={"window_s": "length_s", "audio_format": "format"}, aliases={"--length-s": "--window-s"}, examples=[
             "musicsae data chunk songs/ -o chunks/ -c 5s",
             "musicsae data chunk stems/ -o chunks/ --window-s 10 --hop-s 5 --last pad --sample-rate 32000 --mono"])
def chunk(
    sources: SourcesArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (must not exist): chunks plus "
                                                          "manifest.csv.")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    window_s: Annotated[float | None, typer.Option("--window-s", help="Window length in seconds.")] = None,
    hop_s: Annotated[float | None, typer.Option("--hop-s", help="Step between windows (default: the length).")] = None,
    last: Annotated[str | None, typer.Option(help="Short last piece: drop, pad or keep.")] = None,
    sample_rate: Annotated[int | None, typer.Option(help="Resample to this rate (Hz).")] = None,
    mono: Annotated[bool | None, typer.Option("--mono/--keep-channels", help="Mix down to mono.")] = None,
    min_rms_db: Annotated[float | None, typer.Option(help="Drop windows quieter than this RMS (dBFS).")] = None,
    audio_format: FormatOpt = None,
    bit_depth: BitDepthOpt = None,
    strict: StrictOpt = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Cut audio into fixed-length windows (resample, mono, silence filter) with a manifest of their times."""
    from ..audio.chunk import ChunkConfig

    flags = {"length_s": window_s, "hop_s": hop_s, "last": last, "sample_rate": sample_rate, "mono": mono,
             "min_rms_db": min_rms_db, "format": audio_format, "bit_depth": bit_depth, "strict": strict}
    cfg = resolve(ChunkConfig, "data", config, set_, flags, dry_run, ui)
    from ..audio.chunk import chunk_dataset

    ui.show(chunk_dataset(sources, out, cfg, overwrite, ui.progress), out=out)
