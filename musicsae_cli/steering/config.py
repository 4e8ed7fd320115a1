"""Configs of `musicsae steer generate` and `musicsae steer sweep`: a direction source, how to apply it, and
the generation settings. Every field is documented; unknown keys are rejected."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import lift_generation_settings
from ..errors import ConfigError
from ..extract.config import GENERATION_HELP
from ..models.selection import Concepts, ModelName, ModelSelection

SOURCES = ("probe", "sae", "contrast", "file")
LATENT_MODES = ("clamp", "scale", "zero")


def _split(value, kind):
    """'2,4' or 2 or [2, 4] -> [2, 4] (comma lists come from the command line)."""
    if value is None:
        return value
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            return [kind(p) for p in parts]
        except ValueError as exc:
            raise ValueError(f"expected comma-separated numbers, got {value!r}") from exc
    if isinstance(value, int | float):
        return [value]
    return value


class DirectionConfig(BaseModel):
    """Where the steering direction comes from: exactly one of probe, sae, contrast (with store) or file."""

    model_config = ConfigDict(extra="forbid")

    probe: str | None = Field(None, description="Probes folder (`musicsae probe train`): the direction of `target` "
                              "at each probed hookpoint (raw-activation space: weight / std).")
    target: str | None = Field(None, description="Class of the probe to steer towards; with a seed-layout .npy file "
                               "([layers, classes, d]) the class index.")
    sae: str | None = Field(None, description="SAE folder or training run: the decoder rows of `latents` at the "
                            "SAE's hookpoint (add/relative), or the latents to edit (clamp/scale/zero).")
    member: str | None = Field(None, description="Which SAE of a sweep run.")
    latents: list[int] = Field(default_factory=list, description="SAE latent indices, e.g. [123, 456].")
    latent_scale: float | Literal["mean"] | None = Field(
        None, description="Scale of each latent's decoder row (add/relative) or unit of the clamp value: a number, "
        "'mean' (the latent's mean non-zero activation over `store`), or null (1).")
    store: str | None = Field(None, description="Activation store: the source of `contrast`, or of "
                              "latent_scale=mean.")
    contrast: str | None = Field(None, description="Difference of means between two values of a store label, "
                                 "`label=a:b` -> mean(a) - mean(b) at every store hookpoint.")
    where: list[str] = Field(default_factory=list, description="Store row filters applied before the contrast "
                             "(e.g. stream=cond).")
    pooling: Literal["item", "frame"] = Field("item", description="Contrast means over items (each item's frames "
                                              "averaged first, so long items do not dominate) or over frames.")
    file: str | None = Field(None, description=".npy ([d], [layers, d] with row i = layers.i, or the common "
                             "[layers, classes, d] probe-weight layout with `target` an index), .safetensors or "
                             ".npz ({hookpoint: (d,)}).")
    max_rows: int = Field(65536, ge=1, description="Store rows read (evenly spaced) for latent_scale=mean.")

    @field_validator("latents", mode="before")
    @classmethod
    def _latents(cls, v):
        return _split(v, int)

    @field_validator("latent_scale", mode="before")
    @classmethod
    def _scale(cls, v):
        if isinstance(v, str) and v != "mean":
            try:
                return float(v)
            except ValueError as exc:
                raise ValueError(f"expected a number or 'mean', got {v!r}") from exc
        return v

    @property
    def sources(self) -> list[str]:
        """The source fields that are set."""
        return [s for s in SOURCES if getattr(self, s) not in (None, "")]


def _dim_values(value):
    """'0=1.5,2=-1' or {0: 1.5} -> {0: 1.5, 2: -1.0} (comma lists come from the command line)."""
    if value is None:
        return {}
    if isinstance(value, str):
        out = {}
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            key, sep, number = part.partition("=")
            try:
                out[int(key)] = float(number)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"expected DIM=VALUE pairs such as 0=1.5,2=-1, got {part!r}")
        return out
    return value


class DimsConfig(BaseModel):
    """Per-dimension controls at one hookpoint, as RAVE's users turn its latent dimensions (the bias and scale of
    each dimension in the nn~ externals and the VST): h[d] := h[d] * scale[d] + bias[d] at the scheduled positions,
    before any direction edit at the same hookpoint."""

    model_config = ConfigDict(extra="forbid")

    bias: dict[int, float] = Field(default_factory=dict, description="Added to dimensions, e.g. {0: 1.5} "
                                   "(command line: --dim-bias 0=1.5,2=-1).")
    scale: dict[int, float] = Field(default_factory=dict, description="Multiplies dimensions, e.g. {1: 2.0} "
                                    "(command line: --dim-scale 1=2).")
    hookpoint: str | None = Field(None, description="Where (default: the model's latent hookpoint, e.g. a RAVE "
                                  "export's `latent`, whose dimensions are PCA-ordered).")

    @field_validator("bias", "scale", mode="before")
    @classmethod
    def _pairs(cls, v):
        return _dim_values(v)

    @property
    def active(self) -> bool:
        return bool(self.bias or self.scale)


class ScheduleConfig(BaseModel):
    """When to steer, in the model's own sequence positions, counted from the start of what it is fed (the
    position convention recorded with the model says which frame each position holds; an audio prompt's frames
    come first)."""

    model_config = ConfigDict(extra="forbid")

    start: int = Field(0, ge=0, description="First steered position.")
    end: int | None = Field(None, ge=0, description="Stop before this position (null: to the end).")
    every: int = Field(1, ge=1, description="Steer every N-th position from `start` (a steering period).")
    ramp: int = Field(0, ge=0, description="Ramp the strength linearly from 1/ramp to full over this many steered "
                      "positions (0: full strength at once).")


class SteeringConfig(BaseModel):
    """How a direction is applied: layers, strengths, mode, schedule and stream."""

    model_config = ConfigDict(extra="forbid")

    direction: DirectionConfig = Field(default_factory=DirectionConfig, description="The direction source.")
    dims: DimsConfig = Field(default_factory=DimsConfig, description="Per-dimension bias and scale (alone, or "
                             "with a direction).")
    layers: str | None = Field(None, description="Hookpoints to steer (layers.N = output of block N; ranges, "
                               "layers.-1, lists). Default: the direction's only hookpoint.")
    strength: list[float] = Field([1.0], description="One strength per layer, or one for all. add: h + a*v; "
                                  "relative: h + a*||h||*v (per position); clamp: latent := a * latent_scale; "
                                  "scale: latent *= a.")
    mode: Literal["add", "relative", "clamp", "scale", "zero"] = Field(
        "add", description="add/relative add the direction; clamp/scale/zero edit SAE latents and keep the SAE's "
        "reconstruction error, so a no-op edit changes nothing.")
    normalize: bool = Field(True, description="add: unit-normalise v per layer, so a is in activation-norm units "
                            "(false: use v as given, e.g. latent_scale-scaled decoder rows).")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="When to steer.")
    stream: Literal["both", "cond", "uncond"] = Field(
        "both", description="Generation stream(s) to steer, where the model generates conditional and "
        "unconditional streams together (steering only cond is then amplified by their mix); with one stream "
        "every row is steered.")
    allow_other_model: bool = Field(False, description="Accept a probe/SAE/store made with another model (models "
                                    "are compared by a fingerprint of their weights); widths must still match.")

    @field_validator("strength", mode="before")
    @classmethod
    def _strength(cls, v):
        return _split(v, float)

    @model_validator(mode="after")
    def _one_source(self):
        d = self.direction
        if len(d.sources) > 1:
            raise ConfigError(f"several direction sources set: {', '.join(d.sources)}",
                              "choose one of --probe, --sae, --contrast or --file")
        if not self.strength:
            raise ConfigError("no strength given", "e.g. --strength 4 or --strength 0.5,0.3,0.2")
        return self


class ModelSettings(ModelSelection):
    """Which model steering runs on, and where (shared by generate, sweep and audio)."""

    model_seed: int = Field(0, ge=0, description="Weights seed of a built-in random model (match the extraction).")
    concepts: Concepts = None


class GenerationSettings(ModelSettings):
    """The model and sampling settings shared by generate and sweep."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(default_factory=list, description="Text prompts (one clip batch row each).")
    prompts_file: str | None = Field(None, description="More prompts: a .txt file (one per line) or a manifest.")
    audio: str | None = Field(None, description="Audio to continue (mono mix, resampled); must be shorter than "
                              "duration_s, which includes it. For a model that re-synthesises audio (an autoencoder "
                              "such as a RAVE export): the audio to re-synthesise, a file, a folder or a manifest "
                              "(duration_s is then the input's own).")
    duration_s: float = Field(10.0, gt=0, description="Total seconds per clip (an audio prompt included).")
    generation: dict[str, Any] = Field(default_factory=dict, description=GENERATION_HELP)
    batch_size: int = Field(4, ge=1, description="Clips generated together.")

    @model_validator(mode="before")
    @classmethod
    def _lift(cls, data):
        return lift_generation_settings(data)


class SteerGenerateConfig(SteeringConfig, GenerationSettings):
    """`steer generate`: generate clips with steering and record how to reproduce them."""

    model_config = ConfigDict(extra="forbid")

    samples_per_prompt: int = Field(1, ge=1, description="Clips per prompt.")
    seed: int = Field(0, ge=0, description="Sampling seed; batch b uses seed + b.")


class SteerSweepConfig(SteeringConfig, GenerationSettings):
    """`steer sweep`: dose-response of one direction, scored by a probe, against random controls."""

    model_config = ConfigDict(extra="forbid")

    strengths: list[float] = Field([0.0, 2.0, 4.0, 8.0], description="Strengths swept (each multiplies the "
                                   "per-layer `strength`); 0 is the unsteered baseline.")
    seeds: list[int] = Field([0, 1, 2], description="Sampling seeds; each is run at every strength and control.")
    random_controls: int = Field(3, ge=0, description="Random directions of the same norm per layer (latent modes: "
                                 "random latents of the same SAE), each run at every non-zero strength.")
    control_seed: int = Field(0, ge=0, description="Seed of the random controls.")
    score_probe: str | None = Field(None, description="Probes that score the clips (default: direction.probe).")
    score_target: str | None = Field(None, description="Class whose probability is the score (default: "
                                     "direction.target).")
    score_hookpoint: str | None = Field(None, description="Probed hookpoint to score at (default: the deepest "
                                        "steered layer the probe has, else its deepest).")
    rescore_from: Literal["audio", "codes"] = Field("audio", description="Re-extract from the generated audio "
                                                    "(as extraction does) or from the generated tokens, for models "
                                                    "that generate tokens.")
    save_audio: bool = Field(False, description="Also write every clip as wav.")
    score_f0: bool = Field(False, description="Also score every clip's pitch with a pitch tracker (f0_model): the "
                           "median f0 of its confident frames, and its shift in cents from the unsteered clip of "
                           "the same prompt or item and seed.")
    f0_model: str = Field("crepe-tiny", description="The pitch tracker of score_f0 (crepe-tiny or crepe-full: "
                          "CREPE's real weights).")
    f0_target: str | None = Field(None, description="Pitch class the f0 target score counts (score_f0): the share "
                                  "of confident frames at that pitch class. Default: the target class when it names "
                                  "a pitch class (A, C#, Db...).")
    judge_probe: str | None = Field(None, description="Probes folder of an independent judge: scored like the "
                                    "scoring probe at a hookpoint that is not steered.")
    judge_hookpoint: str | None = Field(None, description="Hookpoint of judge_probe (must not be steered; default: "
                                        "its probed hookpoint farthest from the steered layers).")
    judge_data: str | None = Field(None, description="Labelled concept audio (a dataset folder or manifest): a "
                                   "logistic regression on the model's mean-pooled audio embeddings of it judges "
                                   "each clip's target probability, never reading a layer of the network.")
    judge_label: str | None = Field(None, description="Label column of judge_data (default: the scoring probe's "
                                    "label).")
    judge_target: str | None = Field(None, description="Class the judges score (default: the scored target).")
    frechet: bool = Field(True, description="Quality drift: the Frechet distance between the audio embeddings of "
                          "steered and unsteered clips (models with audio embeddings).")
    text_adherence: bool = Field(True, description="Text adherence of each clip to its prompt, where the model "
                                 "offers it (mean log-likelihood ratio of the generated tokens with and without "
                                 "the text).")
    resamples: int = Field(2000, ge=10, description="Bootstrap resamples of the (seed, prompt) units for the CIs "
                           "and p-values.")
    frechet_resamples: int = Field(200, ge=10, description="Bootstrap resamples of the Frechet distances (each "
                                   "one a matrix square root per condition and strength).")
    bootstrap_seed: int = Field(0, ge=0, description="Seed of the bootstrap resamples and the judge's folds.")

    @field_validator("strengths", mode="before")
    @classmethod
    def _strengths(cls, v):
        return _split(v, float)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v):
        return _split(v, int)

    @model_validator(mode="after")
    def _something_to_sweep(self):
        if self.dims.active:
            raise ConfigError("a sweep scales a direction; per-dimension controls are fixed edits",
                              "sweep a dimension as a direction: --file with a one-hot .npy at the latent "
                              "hookpoint and --set normalize=false")
        if not self.seeds:
            raise ConfigError("no sampling seeds to sweep", "e.g. --seeds 0,1,2 (each runs at every strength)")
        if not self.strengths:
            raise ConfigError("no strengths to sweep", "e.g. --strengths 0,2,4,8 (0 is the unsteered baseline)")
        return self


class SteerAudioConfig(SteeringConfig, ModelSettings):
    """`steer audio`: run a model over audio with and without steering and compare its outputs."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = "crepe-full"  # a model with outputs of its own
    max_items: int | None = Field(None, ge=1, description="Use at most this many audio files (manifest order).")
    save_outputs: bool = Field(True, description="Write every item's plain and steered outputs as .npz.")
    seed: int = Field(0, ge=0, description="Seed of a model's own random draws (a RAVE decoder's noise), the same "
                      "for the plain and the steered pass.")
