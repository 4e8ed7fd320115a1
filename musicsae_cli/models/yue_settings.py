"""Generation settings of the yue family, importable without numpy or torch (the CLI's help lists them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TokenSampling(BaseModel):
    """How a causal LM over audio-codec tokens samples its codes (each is also `--gen KEY=VALUE`). Sampling is
    restricted to the audio tokens of the codebook the model writes, as YuE's stage 1 blocks every other id."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    top_p: float = Field(0.93, ge=0.0, le=1.0, description="Nucleus sampling (0 = off; YuE samples with 0.93).")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature.")
    repetition_penalty: float = Field(1.0, ge=1.0, description="Divide the positive logits (multiply the negative) of "
                                      "codes already drawn by this (1 = off; YuE's stage 1 uses 1.1 to 1.2).")
