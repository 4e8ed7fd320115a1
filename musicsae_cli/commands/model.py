"""`musicsae model ...`: the built-in tiny model and what a model offers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._command import MusicsaeGroup
from ._common import (
    EXAMPLES,
    FamilyOpt,
    JsonOpt,
    Output,
    OverwriteOpt,
    QuietOpt,
    TrustCodeOpt,
    VerboseOpt,
    command,
    legacy_output,
    trust_code,
)

app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Models: the registered families, a model's hookpoints, tiny random models for trials.")
LegacyOut = Annotated[Path | None, typer.Argument(hidden=True, help="Deprecated: use -o.")]


@command(app, "families", examples=["musicsae model families", "musicsae model families --json"])
def families(
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List the model families: what models each covers, what they can do, their generation settings."""
    o = Output(json_out, quiet, verbose)
    from ..models import CAPABILITIES, FAMILIES

    rows = [fam.describe() for fam in FAMILIES.values()]
    lines = []
    for row in rows:
        lines.append(f"{row['name']}: {row['summary']}")
        lines.append(f"  can: {'; '.join(CAPABILITIES[c] for c in row['capabilities'])}")
        if row["generation_settings"]:
            shown = ", ".join(f"{k}={v}" for k, v in row["generation_settings"].items())
            lines.append(f"  generation settings (--gen KEY=VALUE): {shown}")
    o.result({"families": rows}, lines)


@command(app, "save-tiny", examples=[f"musicsae model save-tiny -o {EXAMPLES['tiny']}/ && musicsae model hookpoints "
                                     f"{EXAMPLES['tiny']}/"])
def save_tiny(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory to write (loadable with --model DIR).")]
    = None,
    legacy_out: LegacyOut = None,
    family: Annotated[str | None, typer.Option(help="Model family whose tiny random model to write (default: that "
                                                    "of the default model; `model families`).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a family's tiny random-weight model in its own saved format (for tests, demos and offline trials)."""
    o = Output(json_out, quiet, verbose)
    from ..models import save_tiny as save

    out = legacy_output(out, legacy_out)
    res = save(family, out, seed=seed, overwrite=overwrite)
    o.result(res, [res["path"], f"tiny {res['family']} model: {res['n_layers']} layers, width {res['hidden_size']}, "
                                f"{res['parameters']:,} parameters"], out=res.pop("path"))


@command(app, "save-tiny-demucs", examples=[
    "musicsae model save-tiny-demucs -o demucs-models/ && "
    "musicsae data split songs/ -o stems/ -c tiny --repo demucs-models/"])
def save_tiny_demucs(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Model repository folder to write into (created if "
                                                                "missing; use it as `data split --repo DIR`).")]
    = None,
    legacy_out: LegacyOut = None,
    name: Annotated[str, typer.Option(help="Model name (the bag name with --bag-size > 1).")] = "tiny-htdemucs",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    bag_size: Annotated[int, typer.Option(help="Write a bag of this many models instead of one.")] = 1,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a tiny random-weight HTDemucs in Demucs's local-repository layout (for tests, demos, offline trials)."""
    o = Output(json_out, quiet, verbose)
    from ..audio.tiny_demucs import save_tiny_demucs as save

    repo = legacy_output(out, legacy_out)
    res = save(repo, name=name, seed=seed, bag_size=bag_size, overwrite=overwrite)
    kind = f"bag of {res['bag_size']}" if res["bag_size"] > 1 else "single model"
    o.result(res, [f"{res['repo']}: {res['name']} ({kind}, {res['parameters_per_model']:,} parameters per model, "
                   f"stems {', '.join(res['sources'])}, {res['sample_rate']} Hz)", *res["files"]], out=repo)


@command(app, "hookpoints", examples=[f"musicsae model hookpoints {EXAMPLES['tiny']}",
                                      "musicsae model hookpoints crepe-full",
                                      f"musicsae model hookpoints {EXAMPLES['hub']} --json"])
def hookpoints(
    model: Annotated[str, typer.Argument(help="A built-in name, hub id, local folder or file, or "
                                              "py:package.module:factory (with --trust-code).")],
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    family: FamilyOpt = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", metavar="KEY=VALUE", help="A model option of its family (repeatable), e.g. sample_rate=44100.")]
    = None,
    trust: TrustCodeOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List a model's hookpoints and their widths."""
    o = Output(json_out, quiet, verbose)
    from ..config import parse_set
    from ..models import load_adapter

    trust_code(trust)
    adapter = load_adapter(model, family=family or "auto", revision=revision, device="cpu",
                           options=parse_set(option) if option else None)
    widths = adapter.hookpoint_widths
    o.result({"model": adapter.describe(), "hookpoints": widths}, [f"{h}\t{w}" for h, w in widths.items()])
