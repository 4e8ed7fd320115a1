"""The config of `musicsae extract` (teacher forcing from audio, or capture during generation)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import lift_generation_settings
from ..errors import ConfigError
from ..models import DEFAULT_MODEL, MODEL_HELP

FAMILY_HELP = "Model family (auto: from the model name; `musicsae model families` lists them)."
OPTIONS_HELP = ("Options of the model's family, e.g. for torch models sample_rate (Hz, when the model does not "
                "state it), layouts ({hookpoint: channels_first|channels_last|item}), input, method.")
GENERATION_HELP = ("Generation settings of the model's family (`musicsae model families` lists them with their "
                   "defaults); each may also be given flat, e.g. `top_k: 50`.")


class ExtractConfig(BaseModel):
    """What to run, which hookpoints to capture and how to store them."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description=MODEL_HELP)
    family: str = Field("auto", description=FAMILY_HELP)
    model_options: dict[str, Any] = Field(default_factory=dict, description=OPTIONS_HELP)
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Precision the model runs in.")
    concepts: str | None = Field(None, description="Learned prompt concepts (a `concept learn` folder): prompts may "
                                                   "name them as <name>.")
    hookpoints: str = Field("all", description="Hookpoint names of the model (`musicsae model hookpoints MODEL`): "
                            "layers.N, ranges layers.A-B, layers.-1, module paths with globs (encoder.*), lists "
                            "separated by commas, or all.")
    store_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float16", description="Precision of the stored activations.")
    batch_size: int = Field(8, ge=1, description="Windows (or generated clips) per forward pass.")
    seed: int = Field(0, ge=0, description="Seed for the tiny model's weights and for generation sampling.")
    shard_mb: float = Field(256, gt=0, description="Approximate size of one store shard (MB).")
    strict: bool = Field(False, description="Fail on the first unreadable audio file instead of skipping it.")
    # teacher forcing from audio
    window_s: float = Field(10.0, gt=0, description="Cut audio into windows of this many seconds.")
    hop_s: float | None = Field(None, gt=0, description="Step between window starts (seconds); default = "
                                "window_s (no overlap).")
    min_window_s: float = Field(0.0, ge=0, description="Drop a file's last window when it is shorter than this.")
    text: str | None = Field(None, description="Condition every item on this text (default: unconditional, so "
                             "labels never leak through the prompt).")
    text_column: str | None = Field(None, description="Condition each item on this manifest column.")
    # capture during generation
    duration_s: float = Field(10.0, gt=0, description="Length of each generated clip (seconds).")
    samples_per_prompt: int = Field(1, ge=1, description="Clips generated per prompt.")
    generation: dict[str, Any] = Field(default_factory=dict, description=GENERATION_HELP)
    stream: Literal["both", "cond", "uncond"] = Field(
        "both", description="Which generation stream(s) to store, where the model generates conditional and "
                            "unconditional streams together.")
    prompt_column: str = Field("prompt", description="Column with prompts when prompts come from a manifest.")

    @model_validator(mode="before")
    @classmethod
    def _lift(cls, data):
        return lift_generation_settings(data)

    @model_validator(mode="after")
    def _one_conditioning(self) -> ExtractConfig:
        if self.text is not None and self.text_column is not None:
            raise ConfigError("text and text_column are both set", "condition on one: --text or --text-column")
        return self

    @property
    def hop(self) -> float:
        return self.hop_s if self.hop_s is not None else self.window_s
