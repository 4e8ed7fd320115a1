"""`musicsae analyze`: what layers and latents encode, one module per command (sensitivity, patch, compare,
separation, features); the group and what its commands share are in _shared."""

from __future__ import annotations

from . import compare, features, patch, sensitivity, separation
from ._shared import app
from .compare import contrast_sets
from .features import latent_selection

for _command in (sensitivity.sensitivity, patch.patch, compare.compare, separation.separation, features.features):
    _command.register(app)  # in this order in the help

__all__ = ["app", "contrast_sets", "latent_selection"]
