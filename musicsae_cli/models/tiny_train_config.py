"""The settings of `model train-tiny` (codec, decoder, data, seed) and the check that codec and decoder agree."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..audio.config import SynthConfig
from ..errors import ConfigError


def _default_synth() -> SynthConfig:
    return SynthConfig(timbres=["sine", "piano", "organ"], duration_s=1.0, max_per_concept=108, variants=2,
                       chord_qualities=["major", "minor"], intervals=[3, 4, 5, 7, 12], interval_play=["harmonic"])


class CodecSettings(BaseModel):
    """The EnCodec-compatible codec and its training."""

    model_config = ConfigDict(extra="forbid")

    num_codebooks: int = Field(4, ge=1, le=32, description="Residual quantizers (codebooks).")
    codebook_size: int = Field(256, ge=2, le=4096, description="Entries per codebook.")
    steps: int = Field(300, ge=0, description="Autoencoder steps: encoder and decoder on the continuous latent.")
    finetune_steps: int = Field(200, ge=0, description="Then, with the codebooks fitted to the trained encoder, "
                                "steps of the decoder alone on the quantised latents (both 0: the random codec).")
    batch_size: int = Field(8, ge=1, description="Clips per codec step.")
    lr: float = Field(2e-3, gt=0, description="Codec learning rate.")


class DecoderSettings(BaseModel):
    """The text encoder and the decoder, and their joint training."""

    model_config = ConfigDict(extra="forbid")

    num_codebooks: int | None = Field(None, ge=1, description="Decoder codebooks; null: the codec's (they must "
                                                              "match).")
    vocab_size: int | None = Field(None, ge=2, description="Decoder vocabulary; null: the codec's codebook size "
                                                           "(they must match).")
    hidden_size: int = Field(64, ge=8, description="Decoder width.")
    num_layers: int = Field(4, ge=1, description="Decoder blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads (must divide hidden_size).")
    steps: int = Field(1500, ge=1, description="Decoder training steps.")
    batch_size: int = Field(16, ge=1, description="Clips per decoder step.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate (linear warm-up, cosine decay).")
    warmup: int = Field(100, ge=0, description="Warm-up steps.")
    cond_dropout: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction of rows trained with the "
                                                                  "unconditional (empty) text, for guidance.")


class TrainTinyConfig(BaseModel):
    """How `model train-tiny` builds and trains the tiny MusicGen."""

    model_config = ConfigDict(extra="forbid")

    synth: SynthConfig = Field(default_factory=_default_synth, description="Concept audio synthesised in-process "
                               "(unused with --data).")
    data: str | None = Field(None, description="A dataset folder written by `musicsae data synth` to train on "
                                               "instead (its manifest.csv labels name the prompts).")
    codec: CodecSettings = Field(default_factory=CodecSettings, description="The codec.")
    decoder: DecoderSettings = Field(default_factory=DecoderSettings, description="Text encoder and decoder.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Clips of each concept held out for the "
                                                                  "validation CE (at least one).")
    seed: int = Field(0, ge=0, description="Seed of the weights, batches and condition dropout.")
    checkpoint_every: int = Field(250, ge=1, description="Checkpoint every this many steps of either phase.")


def check_shapes(cfg: TrainTinyConfig) -> tuple[int, int]:
    """(num_codebooks, vocab_size) of the decoder; ConfigError when they do not match the codec's."""
    k = cfg.decoder.num_codebooks if cfg.decoder.num_codebooks is not None else cfg.codec.num_codebooks
    v = cfg.decoder.vocab_size if cfg.decoder.vocab_size is not None else cfg.codec.codebook_size
    if k != cfg.codec.num_codebooks:
        raise ConfigError(f"decoder.num_codebooks {k} does not match the codec's {cfg.codec.num_codebooks} quantizers",
                          "leave decoder.num_codebooks unset (it follows codec.num_codebooks) or make them equal")
    if v != cfg.codec.codebook_size:
        raise ConfigError(f"decoder.vocab_size {v} does not match the codec's codebook size "
                          f"{cfg.codec.codebook_size}", "leave decoder.vocab_size unset (it follows "
                          "codec.codebook_size) or make them equal")
    if cfg.decoder.hidden_size % cfg.decoder.num_heads:
        raise ConfigError(f"decoder.num_heads {cfg.decoder.num_heads} does not divide decoder.hidden_size "
                          f"{cfg.decoder.hidden_size}", "choose a head count that divides the width")
    return k, v
