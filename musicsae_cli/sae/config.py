"""The config of `musicsae sae train`: architecture, recipe, data split, and an optional sweep."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError

BUILT_IN = ("relu", "topk", "batchtopk", "jumprelu")  # registered by sae/archs/ (named here without importing torch)
SWEEPABLE = ("k", "l1_coefficient", "l0_coefficient", "expansion_factor", "d_sae", "lr")


class SAETrainConfig(BaseModel):
    """Everything that decides what an SAE training run produces."""

    model_config = ConfigDict(extra="forbid")

    # what to train on
    hookpoint: str | None = Field(None, description="Store hookpoint to train on (default: the store's only one).")
    where: list[str] = Field([], description="Row filters, e.g. ['stream=cond', 'genre in rock,jazz'].")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of groups held out for validation.")
    split_column: str = Field("group", description="Column whose values are kept on one side of the split "
                              "(tracks), so validation never sees frames of training tracks.")
    # architecture
    architecture: str = Field(
        "topk", description="relu (L1 weighted by decoder norms), topk, batchtopk (saved with its inference "
                            "threshold), jumprelu, dictionary_learning (scikit-learn baseline), or any "
                            "architecture registered in musicsae_cli/sae/archs/.")
    expansion_factor: float = Field(16.0, gt=0, description="Latents per input dimension (ignored if d_sae set).")
    d_sae: int | None = Field(None, ge=1, description="Number of latents, overriding expansion_factor.")
    k: int = Field(32, ge=1, description="Active latents per row (topk) or on average (batchtopk).")
    l1_coefficient: float = Field(5.0, ge=0, description="relu: weight of sum_i f_i * ||W_dec,i||.")
    l0_coefficient: float = Field(1e-3, ge=0, description="jumprelu: weight of the L0 penalty.")
    jumprelu_bandwidth: float = Field(1e-3, gt=0, description="jumprelu: straight-through kernel width.")
    jumprelu_init_threshold: float = Field(1e-3, gt=0, description="jumprelu: initial threshold.")
    dl_alpha: float = Field(1.0, gt=0, description="dictionary_learning: sparsity of the dictionary fit.")
    dl_transform: Literal["omp", "lasso_lars", "lasso_cd", "threshold"] = Field(
        "omp", description="dictionary_learning: sparse coding used to encode (omp keeps k atoms).")
    normalize: bool = Field(True, description="Mean-centre inputs and scale them to E||x||^2 = d_in (folded "
                            "into the saved weights).")
    init_b_dec: Literal["geometric_median", "mean", "zeros"] = Field(
        "geometric_median", description="Decoder bias initialisation from the data.")
    # optimisation
    lr: float = Field(2e-4, gt=0, description="Adam learning rate.")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    lr_warmup_steps: int = Field(200, ge=0, description="Linear learning-rate warmup.")
    lr_decay: Literal["none", "linear", "cosine"] = Field("linear", description="Learning-rate decay to 0.")
    lr_decay_start: float = Field(0.8, ge=0, le=1, description="Fraction of training after which decay starts.")
    sparsity_warmup_steps: int = Field(0, ge=0, description="Linear warmup of the sparsity coefficient "
                                       "(relu/jumprelu; often 5% of training).")
    grad_clip: float | None = Field(1.0, gt=0, description="Gradient-norm clip (null: off).")
    auxk_coefficient: float = Field(1 / 32, ge=0, description="topk family: weight of the AuxK loss on dead "
                                    "latents.")
    auxk_k: int | None = Field(None, ge=1, description="Dead latents AuxK may use (default d_in/2).")
    dead_window_tokens: int = Field(10_000_000, ge=1, description="A latent that has not fired for this many "
                                    "tokens counts as dead.")
    resample_dead: bool = Field(False, description="relu: re-initialise dead latents (checked every "
                                "resample_every steps).")
    resample_every: int = Field(2000, ge=1, description="Steps between dead-latent resampling checks.")
    batch_size: int = Field(4096, ge=1, description="Rows per training step.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training rows.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (overrides epochs).")
    autocast: Literal["none", "bf16"] = Field("none", description="bf16 autocast (fp32 master weights).")
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
    seed: int = Field(0, ge=0, description="Seed for initialisation, shuffling and the split.")
    # data streaming
    buffer_rows: int = Field(65536, ge=1, description="Shuffle buffer (rows held in memory).")
    block_rows: int = Field(2048, ge=1, description="Rows read contiguously from the store.")
    init_rows: int = Field(65536, ge=1, description="Rows sampled for normalisation and b_dec initialisation.")
    # logging and checkpoints
    log_every: int = Field(50, ge=1, description="Steps between training-log rows.")
    eval_every: int = Field(500, ge=1, description="Steps between validation evaluations.")
    eval_rows: int = Field(100_000, ge=1, description="Validation rows evaluated at most (at the end: all).")
    checkpoint_every: int = Field(1000, ge=1, description="Steps between resumable checkpoints.")
    tensorboard: bool = Field(False, description="Also log to TensorBoard (needs the tensorboard package).")
    # several SAEs from one pass over the data
    sweep: dict[str, list[Any]] = Field({}, description="Train one SAE per value from the same batches, e.g. "
                                        "{k: [16, 32, 64]}; keys: " + ", ".join(SWEEPABLE) + ".")

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value in BUILT_IN or value == "dictionary_learning":
            return value
        from .architectures import ARCHITECTURES  # imports torch: only for a name not built in

        if value not in ARCHITECTURES:
            raise ConfigError(f"unknown SAE architecture {value!r}",
                              f"use one of {', '.join([*ARCHITECTURES, 'dictionary_learning'])}")
        return value

    @model_validator(mode="after")
    def _check_sweep(self) -> SAETrainConfig:
        for key, values in self.sweep.items():
            if key not in SWEEPABLE:
                raise ConfigError(f"cannot sweep '{key}'", f"sweepable: {', '.join(SWEEPABLE)}")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.{key} must be a non-empty list", f"e.g. --set 'sweep.{key}=[16, 32]'")
        if self.sweep and self.architecture == "dictionary_learning":
            raise ConfigError("the dictionary_learning baseline does not sweep", "train one dictionary per run")
        if len(self.sweep) > 1:
            raise ConfigError("sweep one key at a time", f"got {', '.join(self.sweep)}")
        return self

    def members(self) -> list[tuple[str, SAETrainConfig]]:
        """(name, config) of every SAE this run trains: one, or one per sweep value."""
        if not self.sweep:
            return [("sae", self)]
        key, values = next(iter(self.sweep.items()))
        return [(f"{key}={v}", self.model_copy(update={key: v, "sweep": {}})) for v in values]

    def width(self, d_in: int) -> int:
        """Number of latents for inputs of width d_in."""
        return self.d_sae if self.d_sae is not None else max(1, int(round(self.expansion_factor * d_in)))
