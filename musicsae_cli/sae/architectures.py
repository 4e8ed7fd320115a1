"""SAE architectures by name: the registry (`register_architecture`, `architecture_class`, ARCHITECTURES) and
SAESpec, the architecture and shape of an SAE.

Each architecture is a subclass of SparseAutoencoder in its own module under sae/archs/ (ReLU with decoder-norm-
weighted L1, TopK with AuxK, BatchTopK, JumpReLU), registered by name with `register_architecture`. The class
states what the rest of musicsae needs to know about it (SAELens name and activation, extra saved weights,
unit-norm decoder rows, which `sae train` settings apply) and overrides what it computes differently; everything
else is in the shared base (sae/base.py: SparseAutoencoder, KSparseAutoencoder and the conventions every
architecture shares). `SparseAutoencoder(spec)` and `SparseAutoencoder.create(spec, ...)` build the class that
`spec.arch` names. A new architecture is one module under sae/archs/ plus its `register_architecture` call. The
names of sae/base.py are importable from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import ConfigError
from .base import (  # noqa: F401 (re-exported)
    SAELENS_WEIGHTS,
    KSparseAutoencoder,
    SparseAutoencoder,
    TrainStep,
    geometric_median,
)

_REGISTRY: dict[str, type[SparseAutoencoder]] = {}  # architecture name -> class, in registration order


def register_architecture(name: str, cls: type[SparseAutoencoder]) -> None:
    """Register `cls` (a SparseAutoencoder subclass) as the SAE architecture `name`: SAESpec(arch=name) accepts it
    and SparseAutoencoder(spec) builds it. Sets cls.arch = name."""
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ConfigError(f"SAE architecture {name!r} is registered twice ({existing.__name__}, {cls.__name__})",
                          "register the new class under a name of its own")
    cls.arch = name
    _REGISTRY[name] = cls


def architecture_class(name: str) -> type[SparseAutoencoder]:
    """The SparseAutoencoder subclass registered as `name`; ConfigError naming the choices for any other name."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown SAE architecture {name!r}", f"use one of {', '.join(_REGISTRY)}")
    return cls


def __getattr__(name: str):
    if name == "ARCHITECTURES":  # the registered names, in registration order: relu, topk, batchtopk, jumprelu
        return tuple(_REGISTRY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class SAESpec:
    """Architecture and shape of an SAE (everything needed to rebuild it before loading weights)."""

    arch: str
    d_in: int
    d_sae: int
    k: int | None = None  # topk / batchtopk: latents kept per row (on average per row for batchtopk)
    jumprelu_bandwidth: float = 0.001  # STE kernel width (Rajamanoharan et al. 2024)
    jumprelu_init_threshold: float = 0.001

    def __post_init__(self):
        cls = architecture_class(self.arch)
        if self.d_in < 1 or self.d_sae < 1:
            raise ConfigError(f"SAE dimensions must be positive (d_in={self.d_in}, d_sae={self.d_sae})")
        if cls.uses_k:
            if self.k is None or not 1 <= self.k <= self.d_sae:
                raise ConfigError(f"{self.arch} needs 1 <= k <= d_sae ({self.d_sae}), got k={self.k}", "set k")
        if self.jumprelu_bandwidth <= 0 or self.jumprelu_init_threshold <= 0:
            raise ConfigError("jumprelu_bandwidth and jumprelu_init_threshold must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SAESpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown SAE spec keys: {', '.join(unknown)}", f"known keys: {', '.join(sorted(known))}")
        return cls(**d)


from . import archs  # noqa: E402,F401  registers the built-in architectures (they import this module)
