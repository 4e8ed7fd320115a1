"""`musicsae analyze sensitivity`: how much each layer's activations change under musical perturbations."""

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

app = typer.Typer(help="Analyse what layers encode: sensitivity to pitch, tempo and other perturbations.",
                  no_args_is_help=True)


@app.command("sensitivity")
@cli_command
def sensitivity(
    source: Annotated[Path, typer.Argument(help="Audio: a manifest, a dataset folder or a folder of audio.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (CSV, JSON and one PNG per "
                                                          "perturbation).")],
    config: Annotated[str | None, config_option("analyze")] = None,
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option(help="Hub id, local directory or tiny-musicgen.")] = None,
    layers: Annotated[str | None, typer.Option("--layers", "--hookpoints",
                                               help="Hookpoints: layers.N, layers.A-B, layers.-1, all.")] = None,
    by: Annotated[str | None, typer.Option("--by", metavar="COL",
                                           help="Also aggregate per value of this label column.")] = None,
    max_clips: Annotated[int | None, typer.Option(help="Use at most this many clips.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Per-layer relative change and 1 - cosine under pitch shift, time stretch, gain, noise (with CIs)."""
    o = Output(json_out, quiet, verbose)
    from ..analysis.config import SensitivityConfig

    flags = {"model": model, "hookpoints": layers, "by": by, "max_clips": max_clips, "device": device}
    cfg = resolve(SensitivityConfig, "analyze", config, set_, flags, dry_run, o)
    from ..analysis.sensitivity import sensitivity as run

    res = run(source, out, cfg, overwrite, o.progress)
    lines = [res["out"], f"{res['n_clips']} clips x {len(res['hookpoints'])} hookpoints, perturbations: "
                         f"{', '.join(res['perturbations'])} ({res['elapsed_s']:.1f} s)"]
    for name in res["perturbations"]:
        rows = [r for r in res["summary"] if r["perturbation"] == name]
        peak = max(rows, key=lambda r: r["rel_change_mean"], default=None)
        if peak:
            lines.append(f"  {name}: largest relative change {peak['rel_change_mean']:.3f} at {peak['hookpoint']} "
                         f"(setting {peak['setting']:g})")
    if res["skipped"]:
        lines.append(f"{len(res['skipped'])} skipped:")
        lines += [f"  {s['path']}: {s['reason']}" for s in res["skipped"]]
    o.result(res, lines)
