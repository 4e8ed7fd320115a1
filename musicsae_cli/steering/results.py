"""What the steering services report: `steer generate` (and its re-synthesis), `steer sweep` and `steer audio`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..results import ABSENT, Result, internal


def steering_line(res: Result) -> str:
    """'add probe direction at layers.4 (strengths 4)', or 'per-dimension controls at latent'."""
    if res["mode"] == "dims":
        return f"per-dimension controls at {', '.join(res['layers'])}"
    return (f"{res['mode']} {res['direction']} direction at {', '.join(res['layers'])} (strengths "
            f"{', '.join(f'{s:g}' for s in res['strengths'])})")


@dataclass(kw_only=True)
class SteeredGeneration(Result):
    """What `steer generate` reports: the clips written and the steering; for a model that re-synthesises its
    input, how much the steering changed the outputs."""

    out: str
    clips: int
    layers: list[str]
    strengths: list[float]
    mode: str
    direction: str
    seconds_per_clip: float
    resynthesis: bool = ABSENT
    rel_change_mean: float = ABSENT  # re-synthesis: ||steered - plain|| / ||plain||, mean over clips
    elapsed_s: float

    def lines(self) -> list[str]:
        what = (f"{self.clips} clips re-synthesised" if self.get("resynthesis")
                else f"{self.clips} clips of {self.seconds_per_clip:.2f} s")
        lines = [self.out, f"{what}, {steering_line(self)}, {self.elapsed_s:.1f} s"]
        if self.get("resynthesis"):
            lines.append(f"outputs changed by {self.rel_change_mean:.3f} of their norm on average")
        return lines


@dataclass(kw_only=True)
class SweepResult(Result):
    """What `steer sweep` reports: the dose-response summary, saturation, the judges and the time of each phase."""

    out: str
    clips: int
    summary: str  # the per-strength table, one line per strength (and the f0 line)
    f0_stats: Any
    saturated: bool
    saturation: dict
    score_hookpoint: str
    target: str
    layers: list[str]
    stats: list[dict]
    judge_summary: str
    primary_score: Any
    slopes: Any
    judges: dict
    timing: dict[str, float]
    elapsed_s: float

    def lines(self) -> list[str]:
        saturated = [f"saturated: {self.saturation['reason']}"] if self.saturated else []
        split = ", ".join(f"{k} {self.timing[f'{k}_s']:.1f} s"
                          for k in ("generation", "reextraction", "scoring", "embedding"))
        data = self.judges["data"]
        fit = [] if data is None or data["cv_accuracy"] is None else [
            f"data judge: cross-validated accuracy {data['cv_accuracy']:.2f} ({data['cv_folds']} folds, chance "
            f"{data['chance']:.2f})"]
        return [self.out, *saturated, *fit, self.judge_summary, f"time: {split}",
                f"{self.clips} clips; P({self.target}) at {self.score_hookpoint}:", *self.summary.splitlines()]


@dataclass(kw_only=True)
class SteeredAudio(Result):
    """What `steer audio` reports: how much the steering changed the model's outputs, and the mean of every
    reading the family takes of them, plain and steered (--json: `<reading>_plain_mean`, `<reading>_steered_mean`
    after rel_change_mean)."""

    out: str
    items: int
    rel_change_mean: float
    means: dict[str, float] = internal()  # {"<reading>_plain_mean": ..., "<reading>_steered_mean": ...}
    layers: list[str]
    strengths: list[float]
    mode: str
    direction: str
    readings: list[str]
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        fields = super().to_json()
        head = {k: fields.pop(k) for k in ("out", "items", "rel_change_mean")}
        return {**head, **self.means, **fields}

    def lines(self) -> list[str]:
        return [self.out, f"{self.items} items, {steering_line(self)}: outputs changed by "
                          f"{self.rel_change_mean:.3f} of their norm on average",
                *(f"  {name}: {self.means[f'{name}_plain_mean']:.4g} plain -> "
                  f"{self.means[f'{name}_steered_mean']:.4g} steered" for name in self.readings)]
