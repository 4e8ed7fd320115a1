"""`musicsae steer generate | sweep`: MusicGen generation steered along a direction, and its dose-response."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    AllowOtherModelOpt,
    DeviceOpt,
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

app = typer.Typer(help="Steer generation along a probe, SAE-latent, difference-of-means or file direction.",
                  no_args_is_help=True)
Opt = typer.Option
OutOpt = Annotated[Path, Opt("--out", "-o", help="Output folder.")]
ModelOpt = Annotated[str | None, Opt(help="Hub id, local directory or tiny-musicgen.")]
PromptOpt = Annotated[list[str] | None, Opt("--prompt", help="A text prompt (repeatable).")]
PromptsOpt = Annotated[str | None, Opt("--prompts", help="Prompts file: .txt (one per line) or a manifest.")]
AudioOpt = Annotated[str | None, Opt("--audio", help="Audio to continue (shorter than --duration).")]
DurationOpt = Annotated[float | None, Opt("--duration", help="Total seconds per clip, audio prompt included.")]
ProbeOpt = Annotated[str | None, Opt("--probe", help="Probes folder: direction of --target per layer.")]
TargetOpt = Annotated[str | None, Opt("--target", help="Probe class to steer towards.")]
SaeOpt = Annotated[str | None, Opt("--sae", help="SAE folder or run: decoder rows of --latent.")]
LatentOpt = Annotated[str | None, Opt("--latent", help="SAE latents, e.g. 123,456.")]
LatentScaleOpt = Annotated[str | None, Opt("--latent-scale", help="A number, or 'mean' (over --store).")]
StoreOpt = Annotated[str | None, Opt("--store", help="Activation store (for --contrast or --latent-scale mean).")]
ContrastOpt = Annotated[str | None, Opt("--contrast", help="Difference of means, label=a:b.")]
FileOpt = Annotated[str | None, Opt("--file", help=".npy, .safetensors or .npz direction file.")]
LayersOpt = Annotated[str | None, Opt("--layers", help="Hookpoints to steer (layers.N = output of block N).")]
StrengthOpt = Annotated[str | None, Opt("--strength", help="Strength(s): one, or one per layer (0.5,0.3,0.2).")]
ModeOpt = Annotated[str | None, Opt("--mode", help="add, relative, clamp, scale or zero.")]
EveryOpt = Annotated[int | None, Opt("--every", help="Steer every N-th decoder position.")]
StreamOpt = Annotated[str | None, Opt("--stream", help="Guidance stream(s) to steer: both, cond, uncond.")]
SeedOpt = Annotated[int | None, Opt("--seed", help="Sampling seed.")]


def _flags(model, prompt, prompts, audio, duration, probe, target, sae, latent, latent_scale, store, contrast,
           file, layers, strength, mode, every, stream, device, allow_other_model) -> dict:
    return {"allow_other_model": allow_other_model or None, "model": model, "prompts": prompt,
            "prompts_file": prompts, "audio": audio, "duration_s": duration,
            "direction.probe": probe, "direction.target": target, "direction.sae": sae, "direction.latents": latent,
            "direction.latent_scale": latent_scale, "direction.store": store, "direction.contrast": contrast,
            "direction.file": file, "layers": layers, "strength": strength, "mode": mode, "schedule.every": every,
            "stream": stream, "device": device}


@app.command("generate")
@cli_command
def generate(out: OutOpt, config: Annotated[str | None, config_option("steer")] = None, set_: SetOpt = None,
             model: ModelOpt = None, prompt: PromptOpt = None, prompts: PromptsOpt = None, audio: AudioOpt = None,
             duration: DurationOpt = None, probe: ProbeOpt = None, target: TargetOpt = None, sae: SaeOpt = None,
             latent: LatentOpt = None, latent_scale: LatentScaleOpt = None, store: StoreOpt = None,
             contrast: ContrastOpt = None, file: FileOpt = None, layers: LayersOpt = None,
             strength: StrengthOpt = None, mode: ModeOpt = None, every: EveryOpt = None, stream: StreamOpt = None,
             seed: SeedOpt = None, device: DeviceOpt = None, allow_other_model: AllowOtherModelOpt = False,
             overwrite: OverwriteOpt = False, dry_run: DryRunOpt = False, json_out: JsonOpt = False,
             quiet: QuietOpt = False, verbose: VerboseOpt = False) -> None:
    """Generate clips with steering; writes wav, codes and a JSON record that reproduces them."""
    o = Output(json_out, quiet, verbose)
    from ..steering.config import SteerGenerateConfig

    flags = _flags(model, prompt, prompts, audio, duration, probe, target, sae, latent, latent_scale, store,
                   contrast, file, layers, strength, mode, every, stream, device, allow_other_model) | {"seed": seed}
    cfg = resolve(SteerGenerateConfig, "steer", config, set_, flags, dry_run, o)
    from ..steering.generate import steer_generate

    res = steer_generate(cfg, out, overwrite=overwrite, progress=o.progress)
    o.result(res, [res["out"], f"{res['clips']} clips of {res['seconds_per_clip']:.2f} s, {res['mode']} "
                               f"{res['direction']} direction at {', '.join(res['layers'])} (strengths "
                               f"{', '.join(f'{s:g}' for s in res['strengths'])}), {res['elapsed_s']:.1f} s"])


@app.command("sweep")
@cli_command
def sweep(out: OutOpt, config: Annotated[str | None, config_option("steer")] = None, set_: SetOpt = None,
          model: ModelOpt = None, prompt: PromptOpt = None, prompts: PromptsOpt = None, audio: AudioOpt = None,
          duration: DurationOpt = None, probe: ProbeOpt = None, target: TargetOpt = None, sae: SaeOpt = None,
          latent: LatentOpt = None, latent_scale: LatentScaleOpt = None, store: StoreOpt = None,
          contrast: ContrastOpt = None, file: FileOpt = None, layers: LayersOpt = None,
          strength: StrengthOpt = None, mode: ModeOpt = None, every: EveryOpt = None, stream: StreamOpt = None,
          strengths: Annotated[str | None, Opt("--strengths", help="Strengths swept, e.g. 0,2,4,8.")] = None,
          seeds: Annotated[str | None, Opt("--seeds", help="Sampling seeds, e.g. 0,1,2.")] = None,
          controls: Annotated[int | None, Opt("--controls", help="Random control directions.")] = None,
          score_probe: Annotated[str | None, Opt(help="Probes that score the clips (default --probe).")] = None,
          device: DeviceOpt = None, allow_other_model: AllowOtherModelOpt = False, overwrite: OverwriteOpt = False,
          dry_run: DryRunOpt = False,
          json_out: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = False) -> None:
    """Dose-response: strengths x seeds x prompts, scored by a probe, against random directions and strength 0."""
    o = Output(json_out, quiet, verbose)
    from ..steering.config import SteerSweepConfig

    flags = _flags(model, prompt, prompts, audio, duration, probe, target, sae, latent, latent_scale, store,
                   contrast, file, layers, strength, mode, every, stream, device, allow_other_model)
    flags |= {"strengths": strengths, "seeds": seeds, "random_controls": controls, "score_probe": score_probe}
    cfg = resolve(SteerSweepConfig, "steer", config, set_, flags, dry_run, o)
    from ..steering.sweep import steer_sweep

    res = steer_sweep(cfg, out, overwrite=overwrite, progress=o.progress)
    saturated = [f"saturated: {res['saturation']['reason']}"] if res["saturated"] else []
    o.result(res, [res["out"], *saturated, f"{res['clips']} clips; P({res['target']}) at {res['score_hookpoint']}:",
                   res["summary"]])
