"""Settings of `concept learn`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..models import DEFAULT_MODEL
from ..models.selection import Device, ModelName, Revision


class ConceptLearnConfig(BaseModel):
    """How `concept learn` reads the concept audio and trains the new tokens' embeddings."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = DEFAULT_MODEL
    revision: Revision = None
    device: Device = "auto"
    concept_column: str = Field("concept", description="Manifest column naming each clip's concept (a folder of "
                                                       "concept subfolders: the subfolder names).")
    chunk_s: float = Field(5.0, gt=0, description="Length of the training chunks cut from each clip (seconds); "
                                                  "leftovers shorter than a chunk are dropped.")
    max_chunks_per_clip: int | None = Field(None, ge=1, description="At most this many chunks from one clip.")
    tokens: int = Field(8, ge=1, le=64, description="Prompt tokens per concept (5 to 20 is usual).")
    prompt: str = Field("{concept}", description="The training prompt; {concept} becomes the concept's "
                                                 "placeholder, e.g. 'music in the style of {concept}'.")
    init_noise: float = Field(0.1, ge=0, description="New rows start at the vocabulary's mean embedding plus this "
                                                     "many of its per-dimension std of Gaussian noise.")
    lr: float = Field(0.1, gt=0, description="Adam learning rate.")
    lr_step: int = Field(200, ge=1, description="Step decay: every this many steps ...")
    lr_gamma: float = Field(0.5, gt=0, le=1, description="... the learning rate is multiplied by this.")
    orthogonality: float = Field(0.01, ge=0, description="Weight of the penalty on cosine similarity between "
                                                         "any two new token rows.")
    margin: float = Field(0.1, ge=0, description="Weight of the margin term pushing concepts apart (with "
                                                 "several concepts): cosine of their mean rows above margin_cos.")
    margin_cos: float = Field(0.2, ge=-1, le=1, description="Largest cosine between two concepts' mean rows "
                                                            "that the margin term leaves alone.")
    steps: int = Field(300, ge=1, description="Training steps.")
    batch_size: int = Field(4, ge=1, description="Chunks per step (drawn across concepts).")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Clips of each concept held out for validation CE "
                                                             "(at least one where a concept has two or more).")
    eval_every: int = Field(100, ge=1, description="Validation CE every this many steps.")
    checkpoint_every: int = Field(100, ge=1, description="Checkpoint every this many steps.")
    seed: int = Field(0, ge=0, description="Seed of the split, the initial rows and the batches.")
    tensorboard: bool = Field(False, description="Also write TensorBoard event files (needs tensorboard).")
