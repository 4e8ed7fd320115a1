"""`musicsae steer generate | sweep | audio`: generation steered along a direction, its dose-response, and
steering any model over audio."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import OptionGroup, command
from ._common import generation_aliases, generation_flags, hookpoint_spec, resolve, trust_code
from ._help import MusicsaeGroup

ConfigOpt = opt.preset("steer")
app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Steer generation along a probe, SAE-latent, difference-of-means or file direction.")
Opt = typer.Option
OutOpt = Annotated[Path, Opt("--out", "-o", help="Output folder.")]
PromptOpt = Annotated[list[str] | None, Opt("--prompt", help="A text prompt (repeatable).")]
PromptsOpt = Annotated[str | None, Opt("--prompts", help="Prompts file: .txt (one per line) or a manifest.")]
AudioOpt = Annotated[str | None, Opt("--audio", help="Audio to continue (shorter than --duration-s); for a model "
                                                    "that re-synthesises audio (RAVE), the audio file, folder or "
                                                    "manifest to re-synthesise.")]
DimBiasOpt = Annotated[str | None, Opt("--dim-bias", help="Add to latent dimensions, e.g. 0=1.5,2=-1.")]
DimScaleOpt = Annotated[str | None, Opt("--dim-scale", help="Scale latent dimensions, e.g. 1=2.")]
DurationOpt = Annotated[float | None, Opt("--duration-s", help="Total seconds per clip, audio prompt included.")]
ProbeOpt = Annotated[str | None, Opt("--probe", help="Probes folder: direction of --target per layer.")]
TargetOpt = Annotated[str | None, Opt("--target", help="Probe class to steer towards.")]
SaeOpt = Annotated[str | None, Opt("--sae", help="SAE folder or run: decoder rows of --latent.")]
LatentOpt = Annotated[str | None, Opt("--latent", help="SAE latents, e.g. 123,456.")]
LatentScaleOpt = Annotated[str | None, Opt("--latent-scale", help="A number, or 'mean' (over --store).")]
StoreOpt = Annotated[str | None, Opt("--store", help="Activation store (for --contrast or --latent-scale mean).")]
ContrastOpt = Annotated[str | None, Opt("--contrast", help="Difference of means, label=a:b.")]
FileOpt = Annotated[str | None, Opt("--file", help=".npy, .safetensors or .npz direction file.")]
StrengthOpt = Annotated[str | None, Opt("--strength", help="Strength(s): one, or one per hookpoint (0.5,0.3,0.2); "
                                                            "with --mode relative a fraction of each activation's "
                                                            "norm.")]
ModeOpt = Annotated[str | None, Opt("--mode", help="add, relative, clamp, scale or zero.")]
EveryOpt = Annotated[int | None, Opt("--every", help="Steer every N-th sequence position.")]
StreamOpt = Annotated[str | None, Opt("--stream", help="Generation stream(s) to steer: both, cond, uncond.")]
SeedOpt = Annotated[int | None, Opt("--seed", help="Sampling seed.")]
CONFIG_KEYS = {"duration": "duration_s", "probe": "direction.probe", "target": "direction.target",
               "sae": "direction.sae", "latent": "direction.latents", "latent_scale": "direction.latent_scale",
               "store": "direction.store", "contrast": "direction.contrast", "file": "direction.file",
               "hookpoint": "layers", "every": "schedule.every", "controls": "random_controls",
               "prompt": "prompts", "prompts": "prompts_file", "dim_bias": "dims.bias", "dim_scale": "dims.scale"}
ALIASES = {"--layers": "--hookpoint", "--hookpoints": "--hookpoint", "--duration": "--duration-s",
           **generation_aliases()}


def _direction_flags(probe, target, sae, latent, latent_scale, store, contrast, file, hookpoint, strength,
                     mode) -> dict:
    return {"direction.probe": probe, "direction.target": target, "direction.sae": sae, "direction.latents": latent,
            "direction.latent_scale": latent_scale, "direction.store": store, "direction.contrast": contrast,
            "direction.file": file, "layers": hookpoint_spec(hookpoint), "strength": strength, "mode": mode}


# The direction and where it is added (every steer command), as config flags.
DIRECTION = OptionGroup(_direction_flags, {
    "probe": (ProbeOpt, None), "target": (TargetOpt, None), "sae": (SaeOpt, None), "latent": (LatentOpt, None),
    "latent_scale": (LatentScaleOpt, None), "store": (StoreOpt, None), "contrast": (ContrastOpt, None),
    "file": (FileOpt, None), "hookpoint": (opt.Hookpoints, None), "strength": (StrengthOpt, None),
    "mode": (ModeOpt, None)})
Direction = Annotated[dict, DIRECTION]


def _generation_flags(model, concepts, family, trust, gen, prompt, prompts, audio, duration, every, stream,
                      **direction) -> dict:
    trust_code(trust)
    return {**generation_flags(gen), "model": model, "family": family, "concepts": concepts, "prompts": prompt,
            "prompts_file": prompts, "audio": audio, "duration_s": duration, **_direction_flags(**direction),
            "schedule.every": every, "stream": stream}


# What `steer generate` and `steer sweep` share: the model, the prompts, the direction and the schedule.
Generation = Annotated[dict, OptionGroup(_generation_flags, {
    "model": (opt.Model, None), "concepts": (opt.Concepts, None), "family": (opt.Family, None),
    "trust": (opt.TrustCode, False), "gen": (opt.Gen, None), "prompt": (PromptOpt, None), "prompts": (PromptsOpt, None),
    "audio": (AudioOpt, None), "duration": (DurationOpt, None), **DIRECTION.options, "every": (EveryOpt, None),
    "stream": (StreamOpt, None)})]


@command(app, "generate", config="musicsae_cli.steering.config:SteerGenerateConfig", group="steer", keys=CONFIG_KEYS,
         aliases=ALIASES, examples=[
             "musicsae steer generate -c probe --probe probes/genre --target rock --strength 0.1 "
             "--prompt 'a calm song' -o out/rock",
             "musicsae steer generate -c sae-latent --sae runs/topk --latent 1234 --store store/ --prompt 'a song' "
             "-o out/latent",
             "musicsae steer generate -c tiny --store store/ --contrast concept=notes:tempos -o out/contrast"])
def generate(out: OutOpt, config: ConfigOpt = None, set_: opt.Set = None, *,
             steering: Generation, seed: SeedOpt = None, dim_bias: DimBiasOpt = None, dim_scale: DimScaleOpt = None,
             device: opt.Device = None, allow_other_model: opt.AllowOtherModel = False,
             overwrite: opt.Overwrite = False, dry_run: opt.DryRun = False, ui: opt.UI) -> None:
    """Generate clips with steering (or re-synthesise --audio with a model that re-synthesises, such as RAVE);
    writes wav, tokens and a JSON record that reproduces them."""
    from ..steering.config import SteerGenerateConfig

    flags = {**steering, "device": device, "allow_other_model": allow_other_model or None, "seed": seed,
             "dims.bias": dim_bias, "dims.scale": dim_scale}
    cfg = resolve(SteerGenerateConfig, "steer", config, set_, flags, dry_run, ui)
    from ..steering.generate import steer_generate

    ui.show(steer_generate(cfg, out, overwrite=overwrite, progress=ui.progress), out=out)


@command(app, "sweep", config="musicsae_cli.steering.config:SteerSweepConfig", group="steer", keys=CONFIG_KEYS,
         aliases=ALIASES, examples=[
             "musicsae steer sweep -c sweep --probe probes/genre --target rock --strengths 0,0.05,0.1,0.2 "
             "--seeds 0,1,2 -o sweep/",
             "musicsae steer sweep -c tiny --probe probes/concept --target notes -o sweep-tiny/"])
def sweep(out: OutOpt, config: ConfigOpt = None, set_: opt.Set = None, *,
          steering: Generation,
          strengths: Annotated[str | None, Opt("--strengths", help="Strengths swept, e.g. 0,2,4,8.")] = None,
          seeds: Annotated[str | None, Opt("--seeds", help="Sampling seeds, e.g. 0,1,2.")] = None,
          controls: Annotated[int | None, Opt("--controls", help="Random control directions.")] = None,
          score_probe: Annotated[str | None, Opt(help="Probes that score the clips (default --probe).")] = None,
          score_f0: Annotated[bool, Opt("--score-f0", help="Also score pitch with CREPE (f0 shift in cents; with a "
                                                          "pitch-class target, the share of frames at it).")] = False,
          judge_probe: Annotated[str | None, Opt(help="Probes folder of an independent judge at a layer that is not "
                                                      "steered.")] = None,
          judge_hookpoint: Annotated[str | None, Opt(help="Hookpoint of --judge-probe (default: its probed "
                                                          "hookpoint farthest from the steered layers).")] = None,
          judge_data: Annotated[str | None, Opt(help="Labelled concept audio (dataset folder or manifest): a "
                                                     "classifier on the model's audio embeddings judges the clips.")]
          = None,
          judge_label: Annotated[str | None, Opt(help="Label column of --judge-data (default: the probe's "
                                                      "label).")] = None,
          resamples: Annotated[int | None, Opt("--resamples", help="Bootstrap resamples for CIs and "
                                                                   "p-values.")] = None,
          device: opt.Device = None, allow_other_model: opt.AllowOtherModel = False, overwrite: opt.Overwrite = False,
          dry_run: opt.DryRun = False, ui: opt.UI) -> None:
    """Dose-response: strengths x seeds x prompts, scored by a probe, against random directions and strength 0."""
    from ..steering.config import SteerSweepConfig

    flags = {**steering, "device": device, "allow_other_model": allow_other_model or None, "strengths": strengths,
             "seeds": seeds, "random_controls": controls, "score_probe": score_probe, "score_f0": score_f0 or None,
             "judge_probe": judge_probe, "judge_hookpoint": judge_hookpoint, "judge_data": judge_data,
             "judge_label": judge_label, "resamples": resamples}
    cfg = resolve(SteerSweepConfig, "steer", config, set_, flags, dry_run, ui)
    from ..steering.sweep import steer_sweep

    ui.show(steer_sweep(cfg, out, overwrite=overwrite, progress=ui.progress), out=out)


@command(app, "audio", config="musicsae_cli.steering.config:SteerAudioConfig", group="steer", keys=CONFIG_KEYS,
         aliases={"--layers": "--hookpoint", "--hookpoints": "--hookpoint"}, examples=[
             "musicsae steer audio notes/ -m crepe-tiny --probe probes/pitch --target A --hookpoint block5 "
             "--strength 4 -o steer-a/",
             "musicsae steer audio songs/ -m ./encoder.ts --sae runs/enc --latent 3 --mode zero -o ablate/"])
def audio(source: Annotated[Path, typer.Argument(help="Audio: a manifest, a dataset folder or a folder of audio.")],
          out: OutOpt, config: ConfigOpt = None, set_: opt.Set = None,
          model: opt.Model = None, family: opt.Family = None, trust: opt.TrustCode = False, *, direction: Direction,
          dim_bias: DimBiasOpt = None, dim_scale: DimScaleOpt = None,
          max_items: Annotated[int | None, Opt("--max-items", help="Use at most this many audio files.")] = None,
          device: opt.Device = None, allow_other_model: opt.AllowOtherModel = False, overwrite: opt.Overwrite = False,
          dry_run: opt.DryRun = False, ui: opt.UI) -> None:
    """Run a model over audio with and without steering and compare its own outputs (any model with outputs)."""
    from ..steering.config import SteerAudioConfig

    trust_code(trust)
    flags = {"model": model, "family": family, "device": device, **direction, "max_items": max_items,
             "allow_other_model": allow_other_model or None, "dims.bias": dim_bias, "dims.scale": dim_scale}
    cfg = resolve(SteerAudioConfig, "steer", config, set_, flags, dry_run, ui)
    from ..steering.audio import steer_audio

    ui.show(steer_audio(source, out, cfg, overwrite=overwrite, progress=ui.progress), out=out)
