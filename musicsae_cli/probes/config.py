"""The config of `musicsae probe train`: what to probe, how to split, how to fit."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ProbeConfig(BaseModel):
    """Everything that decides what a probe training run produces."""

    model_config = ConfigDict(extra="forbid")

    # what to probe
    label: str | None = Field(None, description="Metadata column to predict (e.g. genre, concept, bpm); required.")
    task: Literal["classification", "regression"] = Field(
        "classification", description="classification (one output per class) or regression (one numeric output).")
    hookpoints: list[str] = Field([], description="Store hookpoints to probe: names, comma lists or globs such as "
                                  "'layers.*' (default: all hookpoints).")
    pooling: Literal["mean", "max", "last", "frame"] = Field(
        "mean", description="mean, max or last: one sample per item pooled over its rows; frame: every row is a "
                            "sample (rows keep their item's group for the split).")
    where: list[str] = Field([], description="Row filters, e.g. ['stream=cond', 'timbre in sine,piano'].")
    max_rows: int | None = Field(200_000, ge=1, description="frame pooling: at most this many rows (a seeded "
                                 "sample, reported) are held in memory; null: all rows.")
    # split
    split_column: str = Field("group", description="Column whose values (tracks) never sit on both sides of a "
                              "split (falls back to item_id when the store has no such column).")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="About this share of the groups is held out "
                                 "for testing: one fold of round(1/test_fraction) group folds stratified by class "
                                 "(ignored when folds is set).")
    folds: int | None = Field(None, ge=2, description="k-fold cross-validation by group, stratified by class: "
                              "metrics are the mean and std over folds and the saved probes are refitted on all "
                              "labelled groups.")
    seed: int = Field(0, ge=0, description="Seed for the split, the shuffled-label control and initialisation.")
    # fitting
    loss: Literal["cross_entropy", "mse"] = Field(
        "cross_entropy", description="classification loss: softmax cross-entropy, or mse on one-hot targets "
                                     "(never on the class index). Regression always uses mse on the "
                                     "standardised target.")
    optimizer: Literal["lbfgs", "adam"] = Field("lbfgs", description="lbfgs (full batch, strong Wolfe line "
                                                "search) or adam (mini-batches of batch_size).")
    max_iter: int = Field(100, ge=1, description="lbfgs iterations (it stops earlier once converged), or adam "
                          "epochs.")
    lr: float | None = Field(None, gt=0, description="Learning rate (default: 1.0 for lbfgs, 1e-2 for adam).")
    batch_size: int | None = Field(4096, ge=1, description="adam: samples per step (null: full batch).")
    weight_decay: float = Field(1e-3, ge=0, description="L2 penalty (weight_decay/2 * ||W||^2) on the weights "
                                "of the standardised probe, per probe.")
    control: bool = Field(True, description="Also train each probe on shuffled training labels (a control that "
                          "should score at chance on the true test labels).")
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")

    @field_validator("hookpoints", "where", mode="before")
    @classmethod
    def _listify(cls, value):
        if isinstance(value, str):  # a YAML/--set scalar: "layers.0,layers.3"
            return [value]
        return value

    @field_validator("hookpoints")
    @classmethod
    def _split_commas(cls, value: list[str]) -> list[str]:
        names = [part.strip() for item in value for part in item.split(",") if part.strip()]
        return [] if names == ["all"] else names

    @property
    def fit_loss(self) -> str:
        """The loss actually minimised: ce, onehot_mse or mse (regression)."""
        if self.task == "regression":
            return "mse"
        return "ce" if self.loss == "cross_entropy" else "onehot_mse"

    @property
    def learning_rate(self) -> float:
        """lr, or the optimizer's default."""
        return self.lr if self.lr is not None else (1.0 if self.optimizer == "lbfgs" else 1e-2)
