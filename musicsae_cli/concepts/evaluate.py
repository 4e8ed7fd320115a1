"""`concept evaluate`: does a learned concept generate its audio?

For each concept: clips generated from its training prompt are compared with its held-out audio by the Frechet
distance of the model's own audio embeddings (all frames of all clips as the sample), beside two references in the
same units: a random-token control (the same number of new tokens at random rows of the learned rows' norms, so the
prompt's shape is the same and only what was learned differs) and the concept's training audio (the distance two
samples of the concept itself have, a floor). Also the validation CE before and after learning (from the learn run)
and the vocabulary tokens nearest each learned row. Writes report.json, report.csv and report.png.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result


@dataclass(kw_only=True)
class ConceptEvaluateResult(Result):
    """What `concept evaluate` reports: per concept, the Frechet distances against the controls, the validation
    CE and the nearest words."""

    path: str
    model: str
    rows: list[dict]
    samples: int

    def lines(self) -> list[str]:
        out = [self.path, f"{len(self.rows)} concept(s) on {self.model}, {self.samples} generated clips each; "
                          "Frechet distance to the held-out audio (audio embeddings):"]
        for r in self.rows:
            ce = (f"; validation CE {r['val_ce_before']:.3f} -> {r['val_ce_after']:.3f}"
                  if r["val_ce_before"] is not None else "")
            out.append(f"  <{r['concept']}>: learned {r['fd_learned']:.2f}, random tokens {r['fd_random']:.2f}, "
                       f"training audio {r['fd_train_audio']:.2f}{ce}; nearest words: {r['nearest']}")
        return out


def _chunk_audio(chunks: list[dict], split: str, concept: str, chunk_s: float, sample_rate: int) -> list[np.ndarray]:
    from .data import chunk_audio

    return [chunk_audio(c, chunk_s, sample_rate) for c in chunks if c["concept"] == concept and c["split"] == split]


def _frames(adapter, clips: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(adapter.audio_embeddings(clips), axis=0)  # (frames, d)


def evaluate(concepts: str | Path, out: str | Path, *, samples: int = 8, duration_s: float | None = None,
             seed: int = 0, model: str | None = None, device: str = "auto", overwrite: bool = False,
             progress: ProgressFactory = no_progress) -> ConceptEvaluateResult:
    import torch

    from ..artifacts import check_output, new_manifest, staged_directory, write_csv_rows, write_json
    from ..models import load_adapter
    from ..steering.frechet import frechet_between
    from .data import read_cache
    from .io import attach, read_concepts

    concepts = Path(concepts)
    check_output(out, overwrite, "report")
    manifest, rows = read_concepts(concepts)
    if not (concepts / "codes" / "chunks.csv").is_file():
        raise InputError(f"{concepts} has no codes/chunks.csv (the list of its audio chunks)",
                         "evaluate the folder `concept learn` wrote, with its codes/ subfolder")
    _, chunks = read_cache(concepts / "codes")
    adapter = load_adapter(model or manifest["model_id"], device=device)
    adapter.require("generate", "concept evaluate")
    adapter.require("audio_embeddings", "concept evaluate")
    attach(adapter, concepts)
    chunk_s = float(manifest["config"]["chunk_s"])
    duration = duration_s or chunk_s
    g = torch.Generator().manual_seed(seed)
    control = {}
    for c, r in rows.items():  # random rows with the learned rows' norms, as a concept of its own
        noise = torch.randn(r.shape, generator=g)
        control[f"random{c.replace('_', '')}"] = noise / noise.norm(dim=1, keepdim=True) * r.norm(dim=1, keepdim=True)
    ids = adapter.add_concepts({name: int(r.shape[0]) for name, r in control.items()})
    for name, r in control.items():
        adapter.set_concept_rows(ids[name], r)
    report = []
    with progress("Evaluating concepts", len(rows)) as tracker:
        for c, r in rows.items():
            prompt = manifest["prompts"][c]
            held = _chunk_audio(chunks, "val", c, chunk_s, adapter.sample_rate)
            train = _chunk_audio(chunks, "train", c, chunk_s, adapter.sample_rate)
            if not held:
                held, train = train[len(train) // 2:], train[: len(train) // 2]  # no held-out clip: split the rest
            if not held or not train:
                raise InputError(f"concept {c!r} has too little audio to compare with (one chunk)",
                                 "learn it from more audio")
            ref = _frames(adapter, held)
            fd = {}
            control_name = f"random{c.replace('_', '')}"
            for key, text in (("learned", prompt), ("random", prompt.replace(f"<{c}>", f"<{control_name}>"))):
                gen = adapter.generate([text] * samples, duration, [], seed=seed)
                fd[key] = frechet_between(_frames(adapter, [a[0] for a in gen.audio]), ref)
            fd["train_audio"] = frechet_between(_frames(adapter, train), ref)
            near = adapter.concept_neighbours(r, k=3)
            words = sorted({w.lstrip("\u2581") for row in near for w, _ in row[:1]})
            info = manifest["concepts"][c]
            report.append({"concept": c, "prompt": prompt, "fd_learned": fd["learned"], "fd_random": fd["random"],
                           "fd_train_audio": fd["train_audio"], "val_ce_before": info.get("val_ce_before"),
                           "val_ce_after": info.get("val_ce_after"), "nearest": ", ".join(words),
                           "neighbours": [[(w, round(s, 4)) for w, s in row] for row in near]})
            tracker.advance(1)
    result = ConceptEvaluateResult(path=str(out), model=adapter.model_id, rows=report, samples=samples)
    with staged_directory(out, overwrite) as stage:
        write_json(stage / "report.json", {**new_manifest("concept-report", 1, {"samples": samples, "seed": seed,
                                                                                "duration_s": duration}),
                                           "concepts": str(concepts), "model": adapter.model_id, "rows": report})
        write_json(stage / "manifest.json", new_manifest("concept-report", 1, {"samples": samples, "seed": seed},
                                                         concepts=str(concepts)))
        write_csv_rows(stage / "report.csv", [{k: v for k, v in r.items() if k != "neighbours"} for r in report])
        _plot(stage / "report.png", report)
    return result


def _plot(path: Path, report: list[dict]) -> None:
    from .. import plotting

    with plotting.figure(path, panel=(max(4.6, 1.4 * len(report) + 2), 3.3),
                         title="Learned concepts against their held-out audio") as (fig, axes):
        ax = axes[0]
        x = np.arange(len(report))
        for i, (key, name) in enumerate((("fd_learned", "learned tokens"), ("fd_random", "random tokens"),
                                         ("fd_train_audio", "training audio (floor)"))):
            ax.bar(x + (i - 1) * 0.27, [r[key] for r in report], width=0.27, label=name)
        ax.set_xticks(x, [f"<{r['concept']}>" for r in report])
        plotting.style_axis(ax, ylabel="Frechet distance (audio embeddings)", legend=True)
