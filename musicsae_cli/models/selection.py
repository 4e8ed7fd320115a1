"""The config fields that choose a model, each written once for every command that loads one.

`ModelSelection` is the base of a command config that runs a model (`extract`, `analyze sensitivity`,
`analyze patch`, `steer ...`): model, family, model_options, revision, device and dtype. The annotated types
below carry the description of one field each, for configs that take only some of them (`concept learn`) or
the same field beside the model (the hookpoints to read, learned prompt concepts).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import DEFAULT_MODEL, MODEL_HELP

FAMILY_HELP = "Model family (auto: from the model name; `musicsae model families` lists them)."
OPTIONS_HELP = ("Options of the model's family, e.g. for torch models sample_rate (Hz, when the model does not "
                "state it), layouts ({hookpoint: channels_first|channels_last|item}), input, method.")

ModelName = Annotated[str, Field(description=MODEL_HELP)]
Revision = Annotated[str | None, Field(description="Hub revision (branch, tag or commit) of the model.")]
Device = Annotated[str, Field(description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")]
Hookpoints = Annotated[str, Field(description="Hookpoint names of the model (`musicsae model hookpoints MODEL`): "
                                              "layers.N, ranges layers.A-B, layers.-1, module paths with globs "
                                              "(encoder.*), lists separated by commas, or all.")]
Concepts = Annotated[str | None, Field(description="Learned prompt concepts (a `concept learn` folder): prompts "
                                                   "may name them as <name>.")]


class ModelSelection(BaseModel):
    """The model a command runs: which one, of which family and with which options, at which hub revision, on
    what device and at what precision."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = DEFAULT_MODEL
    family: str = Field("auto", description=FAMILY_HELP)
    model_options: dict[str, Any] = Field(default_factory=dict, description=OPTIONS_HELP)
    revision: Revision = None
    device: Device = "auto"
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Precision the model runs in.")


__all__ = ["FAMILY_HELP", "OPTIONS_HELP", "Concepts", "Device", "Hookpoints", "ModelName", "ModelSelection",
           "Revision"]
