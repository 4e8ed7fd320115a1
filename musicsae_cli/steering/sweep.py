"""`steer sweep`: dose-response of one direction, scored by a probe, against random controls and strength 0.

For every seed and prompt batch: the unsteered clip (strength 0), then at each non-zero strength the direction
and `random_controls` random directions with the same per-layer norm (latent modes: random latents of the same
SAE), all with the same sampling seed so the runs are paired. Each clip is re-extracted without conditioning at
the probe's hookpoint, pooled like the probe, and scored by the probability of the target class and its log-odds
(logit). When the probabilities are pinned at 0 or 1 (the probe reads the clips far outside its training
distribution), the sweep says so: a warning, `saturated` and its reason in the result and manifest, and the plot
shows the log-odds instead of a flat line.

Independent judges (judges.py) and the evaluation (evaluation.py: per-strength means with bootstrap CIs, slopes
against strength, the direction against the random directions, the Frechet distance of the audio embeddings to the
unsteered clips, text adherence) score the same clips.

Output folder: sweep.csv (one row per clip), dose_response.png, evaluation.csv, slopes.csv, evaluation.png,
manifest.json (config, stats, summary lines, saturation, judges, evaluation, timing), config.yaml, and clips/ with
save_audio.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..artifacts import write_csv_rows
from ..errors import InputError, UsageError
from ..progress import ProgressFactory, no_progress
from .config import LATENT_MODES, SteerSweepConfig
from .directions import Direction, check_same_model, load_direction, set_latents
from .edits import build_steering, steer_layers
from .generate import audio_prompt, environment, load_model, resolve_prompts, sampling_options
from .pitch import summarize_f0
from .report import plot_dose_response, saturation, summarize
from .results import SweepResult

KIND = "steer_sweep"
FORMAT_VERSION = 1
log = logging.getLogger("musicsae")


def load_scoring_probe(cfg: SteerSweepConfig, adapter):
    """(probe, target class, its index) that score the clips."""
    from ..probes import ProbeSet

    path = cfg.score_probe or cfg.direction.probe
    target = cfg.score_target or cfg.direction.target
    if not path:
        raise UsageError("a sweep needs a probe to score the clips", "pass --probe DIR (or --score-probe DIR)")
    probe = ProbeSet.load(path)
    check_same_model(f"the probe {path}", probe.model, adapter, cfg.allow_other_model)
    if probe.task != "classification":
        raise InputError(f"the {probe.label} probe is a regression probe", "score a sweep with a classification probe")
    if target is None:
        raise UsageError("which class should the sweep score?", "pass --target CLASS: " + ", ".join(probe.classes))
    return probe, target, probe.class_index(target)


def score_hookpoint(cfg: SteerSweepConfig, probe, layers: list[str]) -> str:
    """score_hookpoint, else the deepest steered layer the probe has, else the probe's deepest hookpoint."""
    if cfg.score_hookpoint:
        probe.index(cfg.score_hookpoint)  # InputError listing the probed hookpoints
        return cfg.score_hookpoint
    shared = [h for h in layers if h in probe.hookpoints]
    return max(shared, key=depth) if shared else max(probe.hookpoints, key=depth)


def depth(hookpoint: str) -> tuple[int, str]:
    """Sort key of a hookpoint by depth: its trailing block number (layers.N, encoder.N), else 0."""
    tail = hookpoint.rsplit(".", 1)[-1]
    return (int(tail) if tail.isdigit() else 0, hookpoint)


def random_controls(direction: Direction, cfg: SteerSweepConfig, layers: list[str]) -> list[Direction]:
    """`random_controls` seeded random directions with the direction's norm per layer (or random SAE latents)."""
    out = []
    for i in range(cfg.random_controls):
        rng = np.random.default_rng([cfg.control_seed, i])
        source = {"kind": "random", "index": i, "seed": cfg.control_seed}
        if cfg.mode in LATENT_MODES:
            d_sae = direction.sae.spec.d_sae
            pool = np.setdiff1d(np.arange(d_sae), direction.latents)
            control = Direction({}, source, sae=direction.sae, hookpoint=direction.hookpoint,
                                latent_means=direction.latent_means)
            picks = sorted(int(x) for x in rng.choice(pool, size=len(direction.latents), replace=False))
            set_latents(control, picks, cfg.direction.latent_scale)
            control.source["latents"] = picks
        else:
            vectors = {}
            for hp in layers:
                v = direction.at(hp)
                g = rng.standard_normal(v.shape[0])
                vectors[hp] = (g / np.linalg.norm(g) * np.linalg.norm(v)).astype(np.float32)
            control = Direction(vectors, source)
        out.append(control)
    return out


class _Units:
    """What a sweep runs at every condition: prompt batches of a generating model, or input items of a model
    that re-synthesises audio."""

    def __init__(self, cfg: SteerSweepConfig, adapter):
        from .resynth import audio_items, check_resynthesis, resynthesises

        self.cfg, self.adapter = cfg, adapter
        self.resynthesis = resynthesises(adapter)
        if self.resynthesis:
            check_resynthesis(cfg, adapter)
            self.rows, _ = audio_items(cfg.audio)
            self.names = [str(r["item_id"]) for r in self.rows]
            self.audio: dict[int, np.ndarray] = {}
            self.batches = [[i] for i in range(len(self.rows))]
            self.sampling, self.prompt_info = {}, None
        else:
            adapter.require("generate", "a steering sweep")
            self.names = resolve_prompts(cfg, adapter)
            self.prompt_audio, self.prompt_info = audio_prompt(cfg, adapter)
            self.sampling = sampling_options(cfg, adapter)
            n = len(self.names)
            self.batches = [list(range(b, min(b + cfg.batch_size, n))) for b in range(0, n, cfg.batch_size)]

    def texts(self, batch: list[int]) -> list:
        """The text prompts of `batch` (None for each item re-synthesised)."""
        return [None if self.resynthesis else self.names[i] for i in batch]

    def run(self, batch: list[int], seed: int, edits: dict):
        if self.resynthesis:
            from .resynth import load_item, resynthesise

            for i in batch:
                if i not in self.audio:
                    self.audio[i] = load_item(self.rows[i], self.adapter)
            return resynthesise(self.adapter, [self.audio[i] for i in batch], edits, seed)
        with self.adapter.intervene(edits):
            return self.adapter.generate([self.names[i] for i in batch], self.cfg.duration_s, [], seed=seed,
                                         prompt_audio=self.prompt_audio, settings=self.sampling)

    def columns(self, i: int) -> dict:
        if self.resynthesis:
            return {"item_index": i, "item_id": self.names[i]}
        return {"prompt_index": i, "prompt": self.names[i] or ""}

    def tag(self, i: int) -> str:
        return f"i{i:03d}" if self.resynthesis else f"p{i:03d}"


def steer_sweep(cfg: SteerSweepConfig, out: str | Path, overwrite: bool = False,
                progress: ProgressFactory = no_progress, adapter=None) -> SweepResult:
    """Run the sweep; write sweep.csv, dose_response.png, the evaluation and the manifest; return the summary."""
    from ..artifacts import new_manifest, staged_directory, write_config, write_json
    from ..audio.io import write_wav
    from .evaluation import evaluate_sweep
    from .scoring import SweepScorer

    started = time.perf_counter()
    adapter = adapter or load_model(cfg, "a steering sweep", needs=("intervene",))
    units = _Units(cfg, adapter)
    probe, target, _ = load_scoring_probe(cfg, adapter)
    direction = load_direction(cfg.direction, adapter, cfg.allow_other_model)
    layers = steer_layers(cfg, adapter, direction)
    build_steering(cfg, adapter, direction)  # strength/layer mistakes fail before any generation
    hp = score_hookpoint(cfg, probe, layers)
    controls = random_controls(direction, cfg, layers)
    scorer = SweepScorer(cfg, adapter, probe, target, hp, layers, units.resynthesis, progress)
    conditions = [("none", None, 0.0)]
    for s in sorted({float(x) for x in cfg.strengths if x != 0}):
        conditions += [("direction", None, s)] + [("random", i, s) for i in range(len(controls))]
    rows = []
    total = len(cfg.seeds) * len(units.batches) * len(conditions)
    with staged_directory(out, overwrite) as stage, progress("Sweeping", total) as bar:
        for seed in cfg.seeds:
            for batch in units.batches:
                for kind, index, strength in conditions:
                    d = controls[index] if kind == "random" else direction
                    edits = build_steering(cfg, adapter, d, scale=strength).edits if kind != "none" else {}
                    with scorer.timed("generation"):
                        res = units.run(batch, seed, edits)
                    scores = scorer.score(res, units.texts(batch), [(seed, i) for i in batch], kind, index, strength)
                    for j, i in enumerate(batch):
                        clip = f"s{seed}-{units.tag(i)}-{kind}{'' if index is None else index}-a{strength:g}"
                        if cfg.save_audio and res.audio is not None:
                            write_wav(stage / "clips" / f"{clip}.wav", res.audio[j], adapter.sample_rate)
                        rows.append({"clip": clip, "strength": strength, "seed": seed, **units.columns(i),
                                     "control": kind, "control_index": "" if index is None else index, **scores[j]})
                    bar.advance()
        write_csv_rows(stage / "sweep.csv", rows)
        stats, line = summarize(rows, cfg.strengths)
        f0_stats, f0_line = summarize_f0(rows, cfg.strengths) if scorer.pitch is not None else (None, None)
        if f0_line:
            line = f"{line}\n{f0_line}"
        sat = saturation(rows, target)
        if sat["saturated"]:
            log.warning("the sweep is saturated: %s; the probabilities show no dose-response, so read the logits "
                        "(summary, sweep.csv target_logit, dose_response.png), or score with a probe trained on "
                        "activations of clips like these", sat["reason"])
        title = f"{probe.label}={target} at {hp}; steering {', '.join(layers)} ({cfg.mode})"
        plot_dose_response(stage / "dose_response.png", stats, title, chance=1.0 / len(probe.classes),
                           logit=sat["saturated"])
        t_eval = time.perf_counter()
        evaluation, judge_line = evaluate_sweep(stage, rows, scorer, cfg, len(controls),
                                                f"{probe.label}={target}; steering {', '.join(layers)} ({cfg.mode})")
        timing = {f"{k}_s": round(v, 3) for k, v in scorer.timing.items()}
        timing |= {"evaluation_s": round(time.perf_counter() - t_eval, 3),
                   "total_s": round(time.perf_counter() - started, 3)}
        resolved = cfg if units.resynthesis else cfg.model_copy(
            update={"prompts": [p for p in units.names if p is not None], "prompts_file": None})
        written = {"prompts": units.names} if not units.resynthesis else {"items": units.names}
        write_json(stage / "manifest.json", new_manifest(
            KIND, FORMAT_VERSION, resolved.model_dump(mode="json"),
            model={**adapter.describe(), "revision": adapter.revision}, environment=environment(adapter),
            **written, audio_prompt=units.prompt_info, resynthesis=units.resynthesis,
            sampling={**units.sampling, "seeds": cfg.seeds, "duration_s": cfg.duration_s},
            score={"probe": str(cfg.score_probe or cfg.direction.probe), "label": probe.label, "target": target,
                   "hookpoint": hp, "pooling": probe.pooling, "rescore_from": cfg.rescore_from,
                   "conditioning": "none (unconditional teacher forcing)",
                   "f0": scorer.pitch.record() if scorer.pitch is not None else None},
            f0_stats=f0_stats,
            steering={"layers": layers, "mode": cfg.mode, "per_layer_strength": cfg.strength,
                      "strengths": sorted({0.0, *map(float, cfg.strengths)}), "schedule": cfg.schedule.model_dump(),
                      "stream": cfg.stream, "direction": direction.source,
                      "controls": [c.source for c in controls]},
            stats=stats, summary=line, saturated=sat["saturated"], saturation=sat, judges=scorer.record(),
            evaluation=evaluation, timing=timing,
            files=["sweep.csv", "dose_response.png", *evaluation["files"]]))
        write_config(stage, resolved.model_dump(mode="json"))
    return SweepResult(out=str(out), clips=len(rows), summary=line, f0_stats=f0_stats, saturated=sat["saturated"],
                       saturation=sat, score_hookpoint=hp, target=target, layers=layers, stats=stats,
                       judge_summary=judge_line, primary_score=evaluation["primary"], slopes=evaluation["slopes"],
                       judges=scorer.record(), timing=timing, elapsed_s=round(time.perf_counter() - started, 3))
