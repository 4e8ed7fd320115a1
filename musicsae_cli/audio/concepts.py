"""`data synth`: write a concept-audio dataset folder (wav files, manifest.csv, manifest.json, config.yaml)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import new_manifest, staged_directory, write_config, write_json
from ..progress import ProgressFactory, no_progress
from ..results import Result
from .manifest import RESERVED, Manifest

DATASET_FORMAT_VERSION = 1


@dataclass(kw_only=True)
class ConceptDataset(Result):
    """What `data synth` reports: the clips written, per concept, and their length in all."""

    path: str
    manifest: str
    items: int
    seconds_of_audio: float
    per_concept: dict[str, int]

    def lines(self) -> list[str]:
        per = ", ".join(f"{k} {v}" for k, v in self.per_concept.items())
        return [self.manifest, f"{self.items} clips ({per}), {self.seconds_of_audio:.0f} s of audio"]


def make_concept_dataset(out: str | Path, config, overwrite: bool = False,
                         progress: ProgressFactory = no_progress) -> ConceptDataset:
    """Synthesise every clip of `config` into `out`; the folder appears only once it is complete."""
    from .synth import synthesize

    out = Path(out)
    cfg = config.model_dump(mode="json")
    with staged_directory(out, overwrite) as stage:
        rows = synthesize(config, stage, progress)
        labels = list(dict.fromkeys(k for r in rows for k in r if k not in RESERVED))
        manifest = Manifest([{**r, "path": stage / r["path"]} for r in rows], labels, stage)
        manifest.write(stage / "manifest.csv")
        write_json(stage / "manifest.json", new_manifest(
            "dataset", DATASET_FORMAT_VERSION, cfg, source="synth", manifest="manifest.csv",
            n_items=len(rows), label_columns=labels))
        write_config(stage, cfg)
    per_concept = Counter(str(r.get("concept")) for r in rows)
    return ConceptDataset(path=str(out), manifest=str(out / "manifest.csv"), items=len(rows),
                          seconds_of_audio=round(sum(float(r.get("duration_s") or 0) for r in rows), 3),
                          per_concept=dict(per_concept))
