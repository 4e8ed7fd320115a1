"""`musicsae data ...`: synthesise concept audio and index datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    DryRunOpt,
    JsonOpt,
    Output,
    OverwriteOpt,
    QuietOpt,
    SetOpt,
    VerboseOpt,
    cli_command,
    config_option,
    resolve,
)

app = typer.Typer(help="Prepare audio: synthesise labelled concept audio, index datasets.", no_args_is_help=True)

ConfigOpt = Annotated[str | None, config_option("data")]


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command("synth")
@cli_command
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder for the dataset (must not exist).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    concepts: Annotated[str | None, typer.Option(help="Comma list: notes,intervals,chords,tempos,timbres.")] = None,
    timbres: Annotated[str | None, typer.Option(help="Comma list of instruments, e.g. sine,piano,organ.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same files).")] = None,
    sample_rate: Annotated[int | None, typer.Option(help="Sample rate in Hz.")] = None,
    duration: Annotated[float | None, typer.Option(help="Clip length in seconds.")] = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Synthesise labelled concept audio (notes, intervals, chords, tempos, timbres) with a manifest."""
    out_ = Output(json_out, quiet, verbose)
    from ..audio.synth import SynthConfig

    flags = {"concepts": _csv(concepts), "timbres": _csv(timbres), "seed": seed, "sample_rate": sample_rate,
             "duration_s": duration}
    cfg = resolve(SynthConfig, "data", config, set_, flags, dry_run, out_)
    from ..audio.concepts import make_concept_dataset

    res = make_concept_dataset(out, cfg, overwrite, out_.progress)
    per = ", ".join(f"{k} {v}" for k, v in res["per_concept"].items())
    out_.result(res, [res["manifest"], f"{res['items']} clips ({per}), {res['seconds_of_audio']:.0f} s of audio"])


@app.command("index")
@cli_command
def index(
    source: Annotated[Path, typer.Argument(help="A folder of audio (class subfolders = labels) or a "
                                                ".csv/.jsonl/.parquet manifest.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write (.csv, .jsonl or .parquet).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    path_column: Annotated[str | None, typer.Option(help="Manifest column with audio paths.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Label column to keep (repeatable; default all).")] = None,
    group_column: Annotated[str | None, typer.Option(help="Column naming each item's track/source.")] = None,
    id_column: Annotated[str | None, typer.Option(help="Column with item ids.")] = None,
    label_name: Annotated[str | None, typer.Option(help="Label column for class subfolder names.")] = None,
    group_regex: Annotated[str | None, typer.Option(help="Regex whose capture group gives the track id.")] = None,
    strict: Annotated[bool | None, typer.Option("--strict/--no-strict", help="Fail on unusable audio.")] = None,
    decode: Annotated[bool | None, typer.Option("--decode/--no-decode", help="Decode every file fully.")] = None,
    keep_silent: Annotated[bool | None, typer.Option("--keep-silent", help="Keep silent clips.")] = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Index a folder or manifest into a checked manifest (path, item_id, group, labels, duration)."""
    out_ = Output(json_out, quiet, verbose)
    from ..audio.dataset import IndexConfig, build_index
    from ..audio.manifest import check_manifest_output

    flags = {"path_column": path_column, "label_columns": label, "group_column": group_column,
             "id_column": id_column, "label_name": label_name, "group_regex": group_regex, "strict": strict,
             "decode": decode, "keep_silent": keep_silent}
    cfg = resolve(IndexConfig, "data", config, set_, flags, dry_run, out_)
    check_manifest_output(out, overwrite)
    res = build_index(source, cfg, out_.progress)
    res.manifest.write(out)
    summary = {"manifest": str(out), "items": len(res.manifest), "label_columns": res.manifest.label_columns,
               "skipped": [{"path": p, "reason": r} for p, r in res.skipped]}
    lines = [str(out), f"{len(res.manifest)} items indexed, labels: {', '.join(res.manifest.label_columns) or '-'}"]
    if res.skipped:
        lines.append(f"{len(res.skipped)} skipped:")
        lines += [f"  {p}: {r}" for p, r in res.skipped]
    out_.result(summary, lines)
