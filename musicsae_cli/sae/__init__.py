"""Sparse autoencoders: architectures, sparse kernels, training, metrics and SAELens-compatible save/load.

Importing this package does not import torch; the names below load their module on first use::

    from musicsae_cli.sae import SAESpec, SparseAutoencoder, load_sae, save_sae
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ARCHITECTURES": "architectures", "SAESpec": "architectures", "SparseAutoencoder": "architectures",
    "TrainStep": "architectures", "ReconstructionMetrics": "metrics", "DeadLatentTracker": "metrics",
    "save_sae": "io", "load_sae": "io", "describe_sae": "io",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
