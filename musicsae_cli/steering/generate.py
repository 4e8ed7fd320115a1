"""`steer generate`: generation with steering, written as wav (+ tokens) + a JSON record that reproduces it.

Output folder::

    manifest.json            the record: model (id, revision, sizes), environment, prompts, audio prompt (path,
                             sha256, frames), sampling settings, steering (layers, strengths, mode, schedule,
                             stream, direction source and norms), every clip (file, prompt, batch, seed), config
    config.yaml              the resolved config (prompts expanded): `steer generate -c OUT/config.yaml -o NEW`
                             generates the same clips on the same device and versions
    directions.safetensors   the direction vectors as loaded ({hookpoint: (d,)}), usable as --file
    clips/<id>.wav, <id>.codes.npy   (the generated tokens, for models that generate tokens; a model without a
                                     codec writes the codes alone)
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError
from ..progress import ProgressFactory, no_progress
from .config import GenerationSettings, ModelSettings, SteerGenerateConfig
from .directions import Direction, load_direction, sha256
from .edits import build_steering
from .results import SteeredGeneration

KIND = "steer_generate"
FORMAT_VERSION = 1
CLIPS = "clips"


def load_model(cfg: ModelSettings, purpose: str = "steered generation",
               needs: tuple[str, ...] = ("generate", "intervene")):
    """The adapter for `cfg.model` (a built-in random model's weights from model_seed), which must offer `needs`."""
    from ..concepts.io import with_concepts
    from ..models import load_adapter

    adapter = with_concepts(load_adapter(cfg.model, family=cfg.family, revision=cfg.revision, device=cfg.device,
                                         dtype=cfg.dtype, seed=cfg.model_seed, options=cfg.model_options),
                            cfg.concepts)
    for capability in needs:
        adapter.require(capability, purpose)
    return adapter


def resolve_prompts(cfg: GenerationSettings, adapter=None) -> list[str | None]:
    """Text prompts from `prompts` and `prompts_file`; [None] (unconditional) for an audio prompt alone, or for a
    model that generates without text prompts."""
    prompts: list[str | None] = list(cfg.prompts)
    if cfg.prompts_file:
        from ..extract.generate import read_prompts

        prompts += [p.text for p in read_prompts(cfg.prompts_file)]
    if not prompts:
        if cfg.audio is None and getattr(adapter, "text_prompts", True):
            raise UsageError("nothing to generate from", "pass --prompt TEXT, --prompts FILE or --audio FILE")
        prompts = [None]
    return prompts


def audio_prompt(cfg: GenerationSettings, adapter) -> tuple[np.ndarray | None, dict | None]:
    """The audio prompt (mono, at the model's rate) and its description; UsageError when it is not shorter than
    the clip."""
    if cfg.audio is None:
        return None, None
    if adapter.sample_rate is None:
        raise UsageError(f"model '{adapter.model_id}' (family {adapter.family}) takes no audio, so it cannot continue "
                         "an audio prompt", "drop --audio")
    from ..audio.io import load_audio

    audio, _ = load_audio(cfg.audio, sample_rate=adapter.sample_rate)
    if audio.size == 0:
        raise InputError(f"the audio prompt {cfg.audio} is empty", "pass a clip of at least one frame (20 ms)")
    seconds = audio.size / adapter.sample_rate
    n_frames = max(1, int(round(cfg.duration_s * adapter.frame_rate)))
    if adapter.n_frames(audio.size) >= n_frames:
        raise UsageError(f"the audio prompt is {seconds:.2f} s, not shorter than the requested duration "
                         f"{cfg.duration_s:g} s", "the duration is the total length, prompt included: raise "
                         "--duration-s or trim the prompt")
    return audio, {"path": str(cfg.audio), "sha256": sha256(cfg.audio), "seconds": round(seconds, 4),
                   "frames": int(adapter.n_frames(audio.size))}


def sampling_options(cfg: GenerationSettings, adapter) -> dict:
    """The family's generation settings (defaults filled in), shared by every batch."""
    return adapter.generation_settings(cfg.generation).model_dump(mode="json")


def environment(adapter) -> dict:
    """Versions and device: what else decides whether a rerun gives the same samples."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from .. import __version__

    try:
        transformers = version("transformers")
    except PackageNotFoundError:
        transformers = None
    return {"musicsae": __version__, "torch": torch.__version__, "transformers": transformers,
            "python": platform.python_version(), "device": str(adapter.device)}


def save_directions(path: Path, direction: Direction, layers: list[str]) -> None:
    """The vectors used at each steered layer, as {hookpoint: (d,)} safetensors (a valid --file)."""
    from safetensors.numpy import save_file

    save_file({hp: np.ascontiguousarray(direction.at(hp), dtype=np.float32) for hp in layers}, str(path))


def chosen_direction(cfg, adapter) -> Direction | None:
    """The configured direction; None when only per-dimension controls are set."""
    if not cfg.direction.sources and cfg.dims.active:
        return None
    return load_direction(cfg.direction, adapter, cfg.allow_other_model)


def steer_generate(cfg: SteerGenerateConfig, out: str | Path, overwrite: bool = False,
                   progress: ProgressFactory = no_progress, adapter=None) -> SteeredGeneration:
    """Generate `samples_per_prompt` steered clips per prompt; write audio, codes and the reproducing record."""
    from ..artifacts import new_manifest, staged_directory, write_config, write_json
    from ..audio.io import write_wav
    from .resynth import resynthesises, steer_resynthesis

    adapter = adapter or load_model(cfg, needs=("intervene",))
    if resynthesises(adapter):  # an autoencoder: the input audio re-synthesised with the edits
        direction = chosen_direction(cfg, adapter)
        steering = build_steering(cfg, adapter, direction)
        return steer_resynthesis(cfg, out, adapter, direction, steering, overwrite=overwrite, progress=progress)
    adapter.require("generate", "steered generation")
    prompts = resolve_prompts(cfg, adapter)
    prompt_audio, prompt_info = audio_prompt(cfg, adapter)
    sampling = sampling_options(cfg, adapter)
    direction = chosen_direction(cfg, adapter)
    steering = build_steering(cfg, adapter, direction)
    samples = [(i, s) for i in range(len(prompts)) for s in range(cfg.samples_per_prompt)]
    batches = [samples[b:b + cfg.batch_size] for b in range(0, len(samples), cfg.batch_size)]
    resolved = cfg.model_copy(update={"prompts": [p for p in prompts if p is not None], "prompts_file": None})
    clips, started = [], time.perf_counter()
    with staged_directory(out, overwrite) as stage, progress("Generating", len(batches)) as bar:
        for b, batch in enumerate(batches):
            with adapter.intervene(steering.edits):
                res = adapter.generate([prompts[i] for i, _ in batch], cfg.duration_s, [], seed=cfg.seed + b,
                                       prompt_audio=prompt_audio, settings=sampling)
            for j, (i, s) in enumerate(batch):
                clip_id = f"p{i:03d}-s{s}"
                clip = {"id": clip_id}
                if res.audio is not None:  # a model without a codec gives codes only
                    write_wav(stage / CLIPS / f"{clip_id}.wav", res.audio[j], adapter.sample_rate)
                    clip["wav"] = f"{CLIPS}/{clip_id}.wav"
                if res.tokens is not None:
                    (stage / CLIPS).mkdir(exist_ok=True)
                    codes = res.tokens[j] if res.lengths is None else res.tokens[j][:res.lengths[j]]  # no padding
                    np.save(stage / CLIPS / f"{clip_id}.codes.npy", codes)
                    clip["codes"] = f"{CLIPS}/{clip_id}.codes.npy"
                frames = int(res.n_frames if res.lengths is None else res.lengths[j])
                clips.append({**clip, "prompt": prompts[i], "prompt_index": i, "sample": s, "batch": b,
                              "seed": cfg.seed + b, "frames": frames})
            bar.advance()
        if direction is not None:
            save_directions(stage / "directions.safetensors", direction, steering.layers)
            steering.record.update(vectors_file="directions.safetensors",
                                   vectors_sha256=sha256(stage / "directions.safetensors"))
        # rows per clip: from the frame rate, or (a model whose rows are events, not frames) the longest clip's
        n_frames = (max(1, int(round(cfg.duration_s * adapter.frame_rate))) if adapter.frame_rate
                    else max(c["frames"] for c in clips))
        record = new_manifest(
            KIND, FORMAT_VERSION, resolved.model_dump(mode="json"),
            model={**adapter.describe(), "revision": adapter.revision}, environment=environment(adapter),
            prompts=prompts, audio_prompt=prompt_info,
            sampling={**sampling, "duration_s": cfg.duration_s, "n_frames": n_frames,
                      "seed": cfg.seed, "batch_size": cfg.batch_size, "samples_per_prompt": cfg.samples_per_prompt,
                      "seed_rule": "batch b uses seed + b"},
            steering=steering.record,
            clips=clips, reproduce="musicsae steer generate -c OUT/config.yaml -o NEW_OUT")
        write_json(stage / "manifest.json", record)
        write_config(stage, resolved.model_dump(mode="json"))
    return SteeredGeneration(out=str(out), clips=len(clips), layers=steering.layers, strengths=steering.strengths,
                             mode=steering.record["mode"], direction=steering.record["direction"]["kind"],
                             seconds_per_clip=n_frames / adapter.frame_rate if adapter.frame_rate else cfg.duration_s,
                             elapsed_s=round(time.perf_counter() - started, 3))
