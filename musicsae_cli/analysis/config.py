"""The config of `musicsae analyze sensitivity`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError


class SensitivityConfig(BaseModel):
    """Which model and hookpoints, which perturbations of which excerpts, and how to aggregate."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("facebook/musicgen-small", description="Hub id, a local save_pretrained directory, or "
                       "tiny-musicgen (built in, random weights).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Precision the model runs in.")
    hookpoints: str = Field("all", description="layers.N, ranges layers.A-B, negative layers.-1, lists "
                            "separated by commas, or all.")
    batch_size: int = Field(8, ge=1, description="Clips per forward pass.")
    seed: int = Field(0, ge=0, description="Seed for the tiny model's weights, the noise perturbation and the "
                      "bootstrap.")
    excerpt_s: float = Field(4.0, gt=0, description="Seconds of each clip to analyse (whole excerpts, not "
                             "short chunks); shorter clips are used whole.")
    excerpt_at: Literal["start", "center"] = Field("start", description="Where the excerpt is cut from.")
    perturbations: dict[str, list[float]] = Field(
        default_factory=lambda: {"identity": [0.0], "pitch": [-2.0, -1.0, 1.0, 2.0],
                                 "tempo": [0.8, 0.9, 1.1, 1.25]},
        description="Perturbation name -> settings: pitch (semitones), tempo (stretch rates > 0), gain (dB), "
                    "noise (SNR dB), identity (control, setting ignored).")
    by: str | None = Field(None, description="Also aggregate per value of this manifest label column.")
    max_clips: int | None = Field(None, ge=1, description="Use at most this many clips (manifest order).")
    n_bootstrap: int = Field(1000, ge=1, description="Bootstrap resamples over clips for the CIs.")
    ci: float = Field(0.95, gt=0, lt=1, description="Confidence level of the bootstrap intervals.")
    text: str | None = Field(None, description="Condition every clip on this text (default: unconditional).")
    strict: bool = Field(False, description="Fail on the first unreadable audio file instead of skipping it.")

    @model_validator(mode="after")
    def _check_perturbations(self) -> SensitivityConfig:
        from .perturb import check_perturbations

        check_perturbations(self.perturbations)
        return self


__all__ = ["ConfigError", "SensitivityConfig"]
