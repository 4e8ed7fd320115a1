"""The config of `musicsae extract` (teacher forcing from audio, or capture during generation)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import lift_generation_settings
from ..errors import ConfigError
from ..models.selection import Concepts, Hookpoints, ModelSelection

GENERATION_HELP = ("Generation settings of the model's family (`musicsae model families` lists them with their "
                   "defaults); each may also be given flat, e.g. `top_k: 50`.")


class ExtractConfig(ModelSelection):
    """What to run, which hookpoints to capture and how to store them."""

    concepts: Concepts = None
    hookpoints: Hookpoints = "all"
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
