"""What `musicsae model families | save-tiny | hookpoints` report: the registered families, a tiny model written,
a model's hookpoints."""

from __future__ import annotations

from dataclasses import dataclass

from ..results import Result, internal


@dataclass(kw_only=True)
class FamilyList(Result):
    """The model families: what models each covers, what they can do, their generation settings."""

    families: list[dict]  # Family.describe() of each, in registration order

    def lines(self) -> list[str]:
        from . import CAPABILITIES

        lines = []
        for row in self.families:
            lines.append(f"{row['name']}: {row['summary']}")
            lines.append(f"  can: {'; '.join(CAPABILITIES[c] for c in row['capabilities'])}")
            if row["generation_settings"]:
                shown = ", ".join(f"{k}={v}" for k, v in row["generation_settings"].items())
                lines.append(f"  generation settings (--gen KEY=VALUE): {shown}")
        return lines


def list_families() -> FamilyList:
    """`model families`: every registered family, described."""
    from . import FAMILIES

    return FamilyList(families=[fam.describe() for fam in FAMILIES.values()])


@dataclass(kw_only=True)
class TinyModel(Result):
    """A family's tiny random model, written (`model save-tiny`)."""

    path: str = internal()  # what --model loads (the command's output)
    family: str
    n_layers: int
    hidden_size: int
    parameters: int
    seed: int

    def lines(self) -> list[str]:
        return [self.path, f"tiny {self.family} model: {self.n_layers} layers, width {self.hidden_size}, "
                           f"{self.parameters:,} parameters"]


@dataclass(kw_only=True)
class Hookpoints(Result):
    """A model's hookpoints and their widths (`model hookpoints`)."""

    model: dict  # the adapter's describe()
    hookpoints: dict[str, int]

    def lines(self) -> list[str]:
        return [f"{h}\t{w}" for h, w in self.hookpoints.items()]


def model_hookpoints(model: str, family: str | None = None, revision: str | None = None,
                     options: dict | None = None) -> Hookpoints:
    """Load `model` on the CPU and list its hookpoints."""
    from . import load_adapter

    adapter = load_adapter(model, family=family or "auto", revision=revision, device="cpu", options=options)
    widths = adapter.hookpoint_widths
    return Hookpoints(model=adapter.describe(), hookpoints=widths)
