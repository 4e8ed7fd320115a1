"""Model adapters behind one interface, looked up by name; heavy backends are imported only on load."""

from __future__ import annotations

from .base import GenerationOutput, ModelAdapter

FAMILIES = ("musicgen",)


def load_adapter(name: str, family: str = "auto", revision: str | None = None, device: str = "auto",
                 dtype: str = "fp32", seed: int = 0) -> ModelAdapter:
    """Load `name` (a built-in tiny model, a local directory or a hub id) as a model adapter."""
    from ..errors import UsageError

    if family == "auto":
        family = "musicgen"  # the only family so far; RAVE and token LMs will be detected here
    if family != "musicgen":
        raise UsageError(f"unknown model family '{family}'", f"available: {', '.join(FAMILIES)}")
    from .musicgen import MusicGenAdapter

    return MusicGenAdapter.load(name, revision=revision, device=device, dtype=dtype, seed=seed)


__all__ = ["FAMILIES", "GenerationOutput", "ModelAdapter", "load_adapter"]
