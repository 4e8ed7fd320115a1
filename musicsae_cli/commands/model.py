"""`musicsae model ...`: the built-in tiny model and what a model offers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import command
from ._common import EXAMPLES, legacy_output, resolve, trust_code
from ._help import MusicsaeGroup

ConfigOpt = opt.preset("model")
app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Models: the registered families, a model's hookpoints, tiny models for trials "
                       "(random or trained).")
LegacyOut = Annotated[Path | None, typer.Argument(hidden=True, help="Deprecated: use -o.")]


@command(app, "families", examples=["musicsae model families", "musicsae model families --json"])
def families(
    *,
    ui: opt.UI,
) -> None:
    """List the model families: what models each covers, what they can do, their generation settings."""
    from ..models.reports import list_families

    ui.show(list_families())


@command(app, "save-tiny", examples=[f"musicsae model save-tiny -o {EXAMPLES['tiny']}/ && musicsae model hookpoints "
                                     f"{EXAMPLES['tiny']}/"])
def save_tiny(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory to write (loadable with --model DIR).")]
    = None,
    legacy_out: LegacyOut = None,
    family: Annotated[str | None, typer.Option(help="Model family whose tiny random model to write (default: that "
                                                    "of the default model; `model families`).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    overwrite: opt.Overwrite = False,
    *,
    ui: opt.UI,
) -> None:
    """Write a family's tiny random-weight model in its own saved format (for tests, demos and offline trials)."""
    from ..models import save_tiny as save

    out = legacy_output(out, legacy_out)
    res = save(family, out, seed=seed, overwrite=overwrite)
    ui.show(res, out=res.path)


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
    overwrite: opt.Overwrite = False,
    *,
    ui: opt.UI,
) -> None:
    """Write a tiny random-weight HTDemucs in Demucs's local-repository layout (for tests, demos, offline trials)."""
    from ..audio.tiny_demucs import save_tiny_demucs as save

    repo = legacy_output(out, legacy_out)
    ui.show(save(repo, name=name, seed=seed, bag_size=bag_size, overwrite=overwrite), out=repo)


@command(app, "hookpoints", examples=[f"musicsae model hookpoints {EXAMPLES['tiny']}",
                                      "musicsae model hookpoints crepe-full",
                                      f"musicsae model hookpoints {EXAMPLES['hub']} --json"])
def hookpoints(
    model: Annotated[str, typer.Argument(help="A built-in name, hub id, local folder or file, or "
                                              "py:package.module:factory (with --trust-code).")],
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    family: opt.Family = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", metavar="KEY=VALUE", help="A model option of its family (repeatable), e.g. sample_rate=44100.")]
    = None,
    trust: opt.TrustCode = False,
    *,
    ui: opt.UI,
) -> None:
    """List a model's hookpoints and their widths."""
    from ..config import parse_set
    from ..models.reports import model_hookpoints

    trust_code(trust)
    ui.show(model_hookpoints(model, family, revision, options=parse_set(option) if option else None))


@command(app, "train-tiny", config="musicsae_cli.models.tiny_train_config:TrainTinyConfig", group="model",
         keys={"steps": "decoder.steps", "codec_steps": "codec.steps", "out_arg": "out"}, examples=[
             "musicsae model train-tiny my-tiny/ && musicsae model hookpoints my-tiny/",
             "musicsae model train-tiny my-tiny/ -c fast --seed 1",
             "musicsae data synth -o concepts/ -c small && musicsae model train-tiny my-tiny/ --data concepts/"])
def train_tiny(
    out_arg: Annotated[Path | None, typer.Argument(metavar="OUT", help="Folder to write (or -o); an interrupted "
                                                                       "run into it resumes.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder to write (the same as OUT).")] = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    data: Annotated[Path | None, typer.Option(help="A `data synth` folder to train on (default: synthesise "
                                                   "the concept audio of the config).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the weights, batches and condition dropout.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Decoder (and text encoder) training steps.")] = None,
    codec_steps: Annotated[int | None, typer.Option(help="Codec autoencoder steps (before its decoder-only "
                                                          "steps, codec.finetune_steps).")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Train a tiny text-to-music model (audio codec, text encoder, decoder) on concept audio, with prompts naming
    the concept; saved like a hub checkpoint."""
    from ..errors import UsageError
    from ..models.tiny_train_config import TrainTinyConfig

    if out is not None and out_arg is not None and out != out_arg:
        raise UsageError(f"two outputs: {out_arg} and -o {out}", "pass the output once")
    target = out if out is not None else out_arg
    flags = {"data": None if data is None else str(data), "seed": seed, "decoder.steps": steps,
             "codec.steps": codec_steps}
    cfg = resolve(TrainTinyConfig, "model", config, set_, flags, dry_run, ui)
    if target is None:
        raise UsageError("missing OUT", "name the folder to write, e.g. `musicsae model train-tiny my-tiny/`")
    from ..models.tiny_train import train_tiny as train

    res = train(target, cfg, overwrite=overwrite, progress=ui.progress)
    ui.show(res, out=res.path)
