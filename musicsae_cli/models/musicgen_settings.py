"""MusicGen's generation settings, importable without numpy or torch (the CLI's help lists them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Sampling(BaseModel):
    """MusicGen's generation settings (the family's `generation` config; each is also `--gen KEY=VALUE`)."""

    model_config = ConfigDict(extra="forbid")

    guidance_scale: float = Field(3.0, ge=1.0, description="Classifier-free guidance scale (1 = no guidance).")
    top_k: int = Field(250, ge=0, description="Top-k sampling (0 = off).")
    top_p: float = Field(0.0, ge=0.0, le=1.0, description="Nucleus sampling (0 = off).")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature.")
