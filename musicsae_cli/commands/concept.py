"""`musicsae concept learn`: learn new prompt concepts from audio (textual inversion), usable as `<name>` in any
prompt with `--concepts`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import command
from ._common import EXAMPLES, resolve
from ._help import MusicsaeGroup

ConfigOpt = opt.preset("concept")
app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Learned prompt concepts (textual inversion): learn them from audio, use them as <name> in "
                       "prompts with --concepts.")


@command(app, "learn", config="musicsae_cli.concepts.config:ConceptLearnConfig", group="concept", examples=[
    "musicsae concept learn my-sounds/ -o concepts/",
    "musicsae concept learn my-sounds/ -o concepts/ --tokens 12 --steps 500",
    "musicsae concept learn concept-audio/ -o concepts/ -c tiny && musicsae extract -m "
    f"{EXAMPLES['trained']} --concepts concepts/ --prompt '<bells> at 90 bpm' -o gen/"])
def learn(
    data: Annotated[Path, typer.Argument(help="A folder of concept subfolders (each subfolder's name becomes a "
                                              "<name> token), or a manifest / dataset folder with a concept "
                                              "column.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Concepts folder to write (an interrupted run into it "
                                                          "resumes).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    model: opt.Model = None,
    tokens: Annotated[int | None, typer.Option(help="Prompt tokens per concept.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    chunk_s: Annotated[float | None, typer.Option(help="Chunk length in seconds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split, initial rows and batches.")] = None,
    device: opt.Device = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Learn new prompt tokens for each concept of DATA: only their embedding rows are trained, against the
    model's own loss on the concept audio's codes (encoded once and cached)."""
    from ..concepts.config import ConceptLearnConfig

    cfg = resolve(ConceptLearnConfig, "concept", config, set_, {"model": model, "tokens": tokens, "steps": steps,
                                                                "chunk_s": chunk_s, "seed": seed, "device": device},
                  dry_run, ui)
    from ..concepts.learn import learn as run

    res = run(data, out, cfg, overwrite=overwrite, progress=ui.progress)
    ui.show(res, out=res.path)


@command(app, "evaluate", examples=["musicsae concept evaluate concepts/ -o concepts-eval/",
                                    "musicsae concept evaluate concepts/ -o concepts-eval/ --samples 16 --seed 1"])
def evaluate(
    concepts: Annotated[Path, typer.Argument(help="A concepts folder written by `concept learn`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder to write.")],
    samples: Annotated[int, typer.Option(min=1, help="Clips generated per concept (and per control).")] = 8,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Seconds per generated clip "
                                                                          "(default: the chunk length).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed (and of the random-token control).")] = 0,
    model: opt.Model = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    overwrite: opt.Overwrite = False,
    *,
    ui: opt.UI,
) -> None:
    """Do learned concepts generate their audio? Frechet distance of generated clips to the held-out audio (against
    random tokens and the training audio), validation CE before and after, nearest vocabulary words."""
    from ..concepts.evaluate import evaluate as run

    res = run(concepts, out, samples=samples, duration_s=duration_s, seed=seed, model=model, device=device,
              overwrite=overwrite, progress=ui.progress)
    ui.show(res, out=res.path)
