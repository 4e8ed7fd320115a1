"""`musicsae analyze compare`: do two sets (of store items, or of generated prompts) look different inside the
model?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import _options as opt
from .._command import command
from .._common import EXAMPLES, resolve, split_csv
from ._shared import ANALYSIS, ConfigOpt


@command(None, "compare", config=f"{ANALYSIS}:CompareConfig", group="analyze",
         keys={"hookpoint": "hookpoints", "prompts_a": "prompts_a_file", "prompts_b": "prompts_b_file",
               "model": "extract.model", "dtype": "extract.dtype", "duration_s": "extract.duration_s",
               "samples_per_prompt": "extract.samples_per_prompt"},
         aliases={"--hookpoints": "--hookpoint", "--layers": "--hookpoint", "--duration": "--duration-s"}, examples=[
             "musicsae analyze compare store/ --contrast mood=happy:sad -o cmp/",
             f"musicsae analyze compare --prompts-a happy.txt --prompts-b sad.txt -m {EXAMPLES['hub']} -o cmp/",
             "musicsae analyze compare -c tiny -o cmp-tiny/"])
def compare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (compare.json, layers.csv, "
                                                          "directions.safetensors, compare.png).")],
    store: Annotated[Path | None, typer.Argument(help="Store mode: the activation store. Omit it in prompt "
                                                      "mode.")] = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    label: Annotated[str | None, typer.Option("--label", "-l", metavar="COL", help="Store mode: the label "
                                                                                   "column.")] = None,
    a: Annotated[str | None, typer.Option("--a", metavar="VALUE", help="Store mode: the label value of set a.")]
    = None,
    b: Annotated[str | None, typer.Option("--b", metavar="VALUE", help="Store mode: the label value of set b.")]
    = None,
    contrast: Annotated[str | None, typer.Option("--contrast", metavar="COL=A:B",
                                                 help="Shorthand for --label COL --a A --b B.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Row filter for both sets, e.g. stream=cond "
                                                                    "(repeatable).")] = None,
    hookpoint: opt.Hookpoints = None,
    pooling: Annotated[str | None, typer.Option(help="item (mean of each item's frames) or frame.")] = None,
    n_permutations: Annotated[int | None, typer.Option(help="Label permutations for the p-values (0: none).")]
    = None,
    prompts_a: Annotated[Path | None, typer.Option("--prompts-a", help="Prompt mode: prompts of set a (.txt, one "
                                                                       "per line, or a manifest).")] = None,
    prompts_b: Annotated[Path | None, typer.Option("--prompts-b", help="Prompt mode: prompts of set b.")] = None,
    prompt_a: Annotated[list[str] | None, typer.Option("--prompt-a", help="Prompt mode: a prompt of set a "
                                                                          "(repeatable).")] = None,
    prompt_b: Annotated[list[str] | None, typer.Option("--prompt-b", help="Prompt mode: a prompt of set b "
                                                                          "(repeatable).")] = None,
    model: opt.Model = None,
    concepts: opt.Concepts = None,
    device: Annotated[str | None, typer.Option(help="Prompt mode: auto, cpu, cuda, cuda:N or mps.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Prompt mode: model precision fp32, fp16 or bf16.")] = None,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Prompt mode: seconds per generated "
                                                                          "clip.")] = None,
    samples_per_prompt: Annotated[int | None, typer.Option(help="Prompt mode: clips per prompt.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the permutations (and of generation).")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Do two sets look different inside the model? Per layer: cross- vs within-set cosines (raw and centred),
    standardised separation, a permutation p-value, and mean_a - mean_b saved for steering.

    Store mode: STORE --label COL --a A --b B (or --contrast COL=A:B) compares the items with COL=A and COL=B.

    Prompt mode: --prompts-a FILE --prompts-b FILE (or repeated --prompt-a/--prompt-b TEXT) --model M.
    Every prompt is generated into OUT/store (label set=a/b); the conditional stream is compared.

    Steer with the result: musicsae steer generate --file OUT/directions.safetensors
    """
    from ...analysis.config import CompareConfig

    label, a, b = contrast_sets(contrast, label, a, b)
    flags = {"label": label, "a": a, "b": b, "where": where, "hookpoints": split_csv(hookpoint), "pooling": pooling,
             "n_permutations": n_permutations, "seed": seed, "prompts_a_file": prompts_a and str(prompts_a),
             "prompts_b_file": prompts_b and str(prompts_b), "prompts_a": prompt_a, "prompts_b": prompt_b,
             "extract.model": model, "extract.concepts": concepts, "extract.device": device,
             "extract.dtype": dtype, "extract.duration_s": duration_s,
             "extract.samples_per_prompt": samples_per_prompt, "extract.seed": seed}
    cfg = resolve(CompareConfig, "analyze", config, set_, flags, dry_run, ui)
    from ...analysis.compare import compare as run

    ui.show(run(store, out, cfg, overwrite, ui.progress), out=out)


def contrast_sets(contrast: str | None, label: str | None, a: str | None, b: str | None) -> tuple:
    """`analyze compare`: (label, a, b) from --contrast COL=A:B, or as given by --label/--a/--b (never both)."""
    if contrast is None:
        return label, a, b
    from ...errors import UsageError

    if any(v is not None for v in (label, a, b)):
        raise UsageError("--contrast is shorthand for --label/--a/--b; pass one or the other",
                         "e.g. --contrast concept=notes:tempos")
    from ...analysis.compare import parse_contrast

    return parse_contrast(contrast)
