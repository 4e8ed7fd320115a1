"""`musicsae extract`: model activations into an activation store, from audio or while generating."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import command
from ._common import EXAMPLES, distributed_start, generation_aliases, generation_flags, model_flags, resolve

ConfigOpt = opt.preset("extract")


@command(None, "extract", config="musicsae_cli.extract.config:ExtractConfig", group="extract",
         keys={"hookpoint": "hookpoints"},
         aliases={"--layers": "--hookpoint", "--hookpoints": "--hookpoint", "--duration": "--duration-s",
                  **generation_aliases()}, examples=[
             f"musicsae extract songs.csv -o store/ -c {EXAMPLES['preset']}",
             "musicsae extract notes/ -o crepe-store/ -m crepe-full --hookpoint 'block*'",
             "musicsae extract songs/ -o store/ -m encoder.ts --hookpoint 'encoder.*' "
             "--set model_options.sample_rate=44100",
             f"musicsae extract songs/ -o store/ -m {EXAMPLES['local']} --hookpoint layers.12-18 "
             "--store-dtype bfloat16",
             "musicsae extract --prompts prompts.txt -o gen/ -c tiny --duration-s 2 --samples-per-prompt 2"])
def extract(
    out: Annotated[Path, typer.Option("--out", "-o", help="Activation store to write (resumed if interrupted).")],
    source: Annotated[Path | None, typer.Argument(help="Audio to teacher-force: a manifest, a dataset folder or a "
                                                       "folder of audio. Omit it to generate from prompts.")] = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    model: opt.Model = None,
    concepts: opt.Concepts = None,
    family: opt.Family = None,
    trust: opt.TrustCode = False,
    revision: Annotated[str | None, typer.Option(help="Hub revision of the model.")] = None,
    hookpoint: opt.Hookpoints = None,
    device: opt.Device = None,
    dtype: Annotated[str | None, typer.Option(help="Model precision: fp32, fp16 or bf16.")] = None,
    store_dtype: Annotated[str | None, typer.Option(help="Stored precision: float32, float16, bfloat16.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows or clips per forward pass.")] = None,
    window_s: Annotated[float | None, typer.Option(help="Window length in seconds.")] = None,
    hop_s: Annotated[float | None, typer.Option(help="Step between windows in seconds.")] = None,
    text: Annotated[str | None, typer.Option(help="Condition every item on this text.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Condition each item on this manifest column.")] = None,
    prompts: Annotated[Path | None, typer.Option(help="Generate from prompts: a .txt file (one per line) or a "
                                                      "manifest with a prompt column.")] = None,
    prompt: Annotated[list[str] | None, typer.Option(help="A prompt to generate from (repeatable).")] = None,
    prompt_column: Annotated[str | None, typer.Option(help="Prompt column of a prompts manifest.")] = None,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Seconds per generated clip.")] = None,
    samples_per_prompt: Annotated[int | None, typer.Option(help="Clips per prompt.")] = None,
    gen: opt.Gen = None,
    stream: Annotated[str | None, typer.Option(help="Streams to store when generating: both, cond, uncond.")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Seed (sampling; the tiny model's weights).")] = None,
    strict: Annotated[bool | None, typer.Option("--strict/--no-strict", help="Fail on unreadable audio.")] = None,
    overwrite: opt.Overwrite = False,
    nproc: opt.Nproc = 1,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Extract layer activations (residual streams) into an activation store."""
    from ..extract.config import ExtractConfig

    flags = {**generation_flags(gen), **model_flags(model, family, trust, hookpoint, device), "revision": revision,
             "concepts": concepts, "dtype": dtype, "store_dtype": store_dtype, "batch_size": batch_size,
             "window_s": window_s, "hop_s": hop_s, "text": text, "text_column": text_column, "duration_s": duration_s,
             "prompt_column": prompt_column, "samples_per_prompt": samples_per_prompt, "stream": stream,
             "seed": seed, "strict": strict}
    cfg = resolve(ExtractConfig, "extract", config, set_, flags, dry_run, ui)
    generating = generation_mode(source, prompts, prompt, nproc)
    distributed_start(nproc, cfg.device)
    if generating:
        from ..extract.generate import extract_generate

        res = extract_generate(prompt_items(prompts, prompt, cfg.prompt_column), out, cfg, overwrite, ui.progress,
                               source=str(prompts or "--prompt"))
    else:
        from ..extract.audio import extract_audio

        res = extract_audio(source, out, cfg, overwrite, ui.progress)
    ui.show(res, out=out)


def generation_mode(source: Path | None, prompts: Path | None, prompt: list[str] | None, nproc: int) -> bool:
    """True to generate from --prompts/--prompt, False to teacher-force SOURCE; refuses both or neither, and
    generating on several processes."""
    from ..distributed import launched, refusal
    from ..errors import UsageError

    generating = prompts is not None or bool(prompt)
    if generating == (source is not None):
        raise UsageError("pass either SOURCE (audio to teacher-force) or --prompts/--prompt (to generate)",
                         "see `musicsae extract --help`")
    if generating and (nproc > 1 or launched().active):
        raise refusal("extract while generating (--prompts/--prompt)")
    return generating


def prompt_items(prompts: Path | None, prompt: list[str] | None, column: str) -> list:
    """The prompts to generate from: those of the --prompts file, then each --prompt (prompt000, ...)."""
    from ..extract.generate import Prompt, read_prompts

    items = read_prompts(prompts, column) if prompts else []
    return items + [Prompt(f"prompt{i:03d}", p, {}) for i, p in enumerate(prompt or [])]
