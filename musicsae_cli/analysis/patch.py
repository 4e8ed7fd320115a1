"""`analyze patch`: activation patching and ablation per hookpoint, the causal test of what a layer carries.

For each clean/corrupt pair (see patch_pairs) the model runs on both inputs once, recording every hookpoint's
output in the (batch, rows, width) view every family's edits see. Then, per hookpoint h (and per time window, when
asked) and per condition, one patched run: the corrupt input with h's activation taken from the clean run
(clean -> corrupt), the clean input with h's activation from the corrupt run (corrupt -> clean), and the clean input
with h zeroed or set to its mean over the clean inputs (zero / mean ablation). What is replaced is the whole
activation, its component along one direction (a probe's, or the difference of the clean and corrupt means), or a
set of SAE latents with the SAE's error term kept (see patch_edits). Patched runs of one pair and condition share
forward passes: run i of a pass patches its own hookpoint on batch row i, for families that run copies of an
input as one batch (others run them one by one).

A metric is read from each run:

  probe     a saved probe's logit for a class at its hookpoint (the pair's `target`, else the class the probe
            gives the clean input), averaged over rows
  latent    an SAE latent's mean activation at the SAE's hookpoint (the mean of several latents)
  outputs   the model's own outputs (capability `outputs`, e.g. CREPE's pitch activations): minus their distance
            to the clean run's outputs, so the clean run scores 0
  loss      the model's own loss (capability `loss`, a token model's): the mean log-probability of the clean input's
            next tokens, so a corrupt prompt or input that makes them less likely lowers it

The effect of an intervention is normalised by the pair's clean - corrupt gap: patching clean -> corrupt reports
(m_patched - m_corrupt) / (m_clean - m_corrupt), the share of the behaviour the hookpoint restores (1: all of it,
0: none); corrupt -> clean and the ablations report (m_clean - m_patched) / (m_clean - m_corrupt), the share of
the behaviour they destroy. Over pairs, an effect is the ratio of the mean numerator to the mean gap (stable when
a pair's gap is small), with a percentile bootstrap CI over pairs; `delta` keeps the mean numerator in the metric's
own units, for comparing models (a random twin's gap may be near zero, where a ratio says little).

A hookpoint downstream of the metric's hookpoint cannot move it; they are patched anyway (an effect of 0 there is
a check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import InputError
from ..models.identity import check_same_model
from ..progress import ProgressFactory, no_progress
from ..results import Result
from .config import PatchConfig
from .patch_edits import Latents, PatchEdit, Recorder, Source, Statistics, Subspaces, Unbatched
from .patch_metric import Metric
from .patch_pairs import Pair, Side, read_pairs

FORMAT_VERSION = 2
DIRECTIONS = ("clean_to_corrupt", "corrupt_to_clean")


@dataclass(kw_only=True)
class PatchResult(Result):
    """What `analyze patch` reports: the effect of each condition per hookpoint (and window), and the passes spent."""

    out: str
    n_pairs: int
    hookpoints: list[str]
    conditions: list[str]
    metric: str
    metric_hookpoint: str | None
    subspace: str
    windows: int
    mean_gap: float
    summary: dict
    effects: list[dict]
    forward_passes: int
    patched_runs: int
    forward_s: float
    notes: list[str]
    elapsed_s: float

    def lines(self) -> list[str]:
        where = f" at {self.metric_hookpoint}" if self.metric_hookpoint else ""
        windows = f" x {self.windows} time windows" if self.windows > 1 else ""
        lines = [self.out, f"{self.n_pairs} pairs x {len(self.hookpoints)} hookpoints{windows}, {self.subspace} "
                           f"patches, metric {self.metric}{where} (mean clean - corrupt gap {self.mean_gap:.4g}); "
                           f"{self.forward_passes} forward passes for {self.patched_runs} runs, "
                           f"{self.elapsed_s:.1f} s"]
        for cond in self.conditions:
            rows = [e for e in self.effects if e["condition"] == cond]
            if self.windows > 1:
                lines.append(f"  {cond.replace('_', ' ')} (per window): " + "; ".join(
                    f"{hp} " + " ".join(f"{e['effect']:.2f}" for e in rows if e["hookpoint"] == hp)
                    for hp in self.hookpoints))
            else:
                lines.append(f"  {cond.replace('_', ' ')}: " + ", ".join(
                    f"{e['hookpoint']} {e['effect']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]" for e in rows))
        return lines + self.notes


def patch(source: str | Path, out: str | Path, cfg: PatchConfig, overwrite: bool = False,
          progress: ProgressFactory = no_progress, adapter=None) -> PatchResult:
    """Patch and ablate every hookpoint over the pairs of `source`; write effects.csv, per_pair.csv, a heatmap."""
    from ..models import load_adapter

    started = time.perf_counter()
    check_output(out, overwrite)
    adapter = adapter or load_adapter(cfg.model, family=cfg.family, revision=cfg.revision, device=cfg.device,
                                      dtype=cfg.dtype, seed=cfg.seed, options=cfg.model_options)
    adapter.require("intervene", "activation patching")
    probes = None
    if cfg.probe:
        from ..probes.model import ProbeSet

        probes = ProbeSet.load(cfg.probe)
        check_same_model(f"the probes {cfg.probe}", probes.model, adapter.describe(), cfg.allow_other_model)
    hookpoints = adapter.resolve_hookpoints(cfg.hookpoints)
    metric = Metric(cfg, adapter, hookpoints, probes)
    subspaces = Subspaces(cfg, adapter, hookpoints, probes)
    pairs, notes = read_pairs(source, cfg, adapter)
    conditions = [*(d for d in DIRECTIONS if cfg.directions in ("both", d)), *(f"{a}_ablation" for a in cfg.ablations)]
    run = _Run(cfg, metric, subspaces, hookpoints, conditions)
    if "mean" in cfg.ablations or subspaces.needs_means:
        run.statistics(pairs, progress)
    with progress("Patching", len(pairs)) as bar:
        for pair in pairs:
            run.pair(pair)
            bar.advance()
    rows = run.rows
    gaps = [r["gap"] for r in rows if r["hookpoint"] == hookpoints[0] and r["window"] == 0
            and r["condition"] == conditions[0]]  # one per pair
    gap = float(np.mean(gaps))
    if abs(gap) < 1e-9:
        raise InputError("the clean and corrupt runs score the same on the metric (no gap to restore)",
                         "choose a corruption that changes the metric, or another metric")
    effects = _effects(rows, hookpoints, run.n_windows, conditions, cfg)
    notes += _gap_note(gaps, cfg)
    ideal = len(pairs) * (2 + len(hookpoints) * run.n_windows * len(conditions))
    summary = _summary(effects, conditions)
    config = cfg.model_dump(mode="json")
    with staged_directory(out, overwrite) as stage:
        write_csv_rows(stage / "effects.csv", effects)
        write_csv_rows(stage / "per_pair.csv", rows)
        _heatmap(stage / "heatmap.png", effects, hookpoints, run.n_windows, conditions, cfg, len(pairs))
        write_config(stage, config)
        write_json(stage / "manifest.json", new_manifest(
            "patch", FORMAT_VERSION, config, source=str(source), model=adapter.describe(), hookpoints=hookpoints,
            metric={"kind": cfg.metric, "hookpoint": metric.hookpoint}, subspace=cfg.subspace, n_pairs=len(pairs),
            conditions=conditions, windows=run.n_windows, forward_passes=run.forwards, patched_runs=ideal,
            batched=run.batched, mean_gap=gap, summary=summary, notes=notes,
            files=["effects.csv", "per_pair.csv", "heatmap.png"]))
    return PatchResult(out=str(out), n_pairs=len(pairs), hookpoints=hookpoints, conditions=conditions,
                       metric=cfg.metric, metric_hookpoint=metric.hookpoint, subspace=cfg.subspace,
                       windows=run.n_windows, mean_gap=gap, summary=summary, effects=effects,
                       forward_passes=run.forwards, patched_runs=ideal, forward_s=round(run.forward_s, 3),
                       notes=notes, elapsed_s=round(time.perf_counter() - started, 3))


class _Run:
    """The experiment's state: statistics, the per-pair rows, and the forward passes spent."""

    def __init__(self, cfg: PatchConfig, metric: Metric, subspaces: Subspaces, hookpoints: list[str],
                 conditions: list[str]):
        self.cfg, self.metric, self.subspaces, self.hookpoints, self.conditions = (cfg, metric, subspaces,
                                                                                   hookpoints, conditions)
        self.n_windows = cfg.windows
        self.batch = cfg.batch if metric.batches else 1
        self.batched = self.batch > 1
        self.forwards, self.forward_s, self.rows = 0, 0.0, []  # passes run (aborted ones too), and their time
        self.stats = Statistics()

    def record(self, side: Side):
        recs = {hp: Recorder() for hp in self.hookpoints}
        t0 = time.perf_counter()
        reading = self.metric.run(side, 1, recs)[0]
        self.forward_s += time.perf_counter() - t0
        self.forwards += 1
        return reading, recs

    def statistics(self, pairs: list[Pair], progress) -> None:
        """Means over the pairs' rows, one pass per side needed (clean; corrupt for difference-of-means)."""
        sides = ("clean", "corrupt") if self.subspaces.needs_means else ("clean",)
        latents = self.subspaces.kind == "latents"
        with progress("Mean activations", len(pairs) * len(sides)) as bar:
            for pair in pairs:
                for name in sides:
                    _, recs = self.record(getattr(pair, name))
                    for hp, rec in recs.items():
                        for h in rec.calls:
                            self.stats.add((name, hp), h)
                            if latents and name == "clean":
                                self.stats.add(("latents", hp), self.subspaces.of(hp, None).values(h))
                    bar.advance()
        if self.subspaces.needs_means:
            self.subspaces.mean_diff = {hp: (self.stats.mean(("clean", hp)) - self.stats.mean(("corrupt", hp)))
                                        .numpy() for hp in self.hookpoints}

    def mean_value(self, hp: str, subspace):
        if isinstance(subspace, Latents):
            return self.stats.mean(("latents", hp)).double()
        return subspace.values(self.stats.mean(("clean", hp))[None, None, :])[0, 0]

    def pair(self, pair: Pair) -> None:
        (clean, rec_clean), (corrupt, rec_corrupt) = self.record(pair.clean), self.record(pair.corrupt)
        target = self.metric.target_of(clean, pair)
        m_clean = self.metric.score(clean, clean, target)
        m_corrupt = self.metric.score(corrupt, clean, target)
        for hp in self.hookpoints:
            if not rec_clean[hp].calls or len(rec_clean[hp].calls) != len(rec_corrupt[hp].calls):
                raise InputError(f"{hp} was not run (or ran differently) on the pair {pair.pair_id}",
                                 "choose hookpoints the model runs on this input")
        for cond in self.conditions:
            jobs = []
            for li, hp in enumerate(self.hookpoints):
                subspace = self.subspaces.of(hp, target)
                if cond == "clean_to_corrupt":
                    source = Source(calls=rec_clean[hp].calls)
                elif cond == "corrupt_to_clean":
                    source = Source(calls=rec_corrupt[hp].calls)
                else:
                    source = Source(constant=self.mean_value(hp, subspace) if cond == "mean_ablation" else None)
                end = rec_clean[hp].end
                for w in range(self.n_windows):
                    window = None if self.n_windows == 1 else (round(w * end / self.n_windows),
                                                               round((w + 1) * end / self.n_windows))
                    jobs.append((li, hp, w, subspace, source, window))
            side = pair.corrupt if cond == "clean_to_corrupt" else pair.clean
            for job, reading in zip(jobs, self.patched(side, jobs), strict=True):
                li, hp, w = job[:3]
                m = self.metric.score(reading, clean, target)
                self.rows.append({"pair_id": pair.pair_id, "target": target, "hookpoint": hp, "layer": li,
                                  "window": w, "condition": cond, "metric": m, "metric_clean": m_clean,
                                  "metric_corrupt": m_corrupt,
                                  "numerator": m - m_corrupt if cond == "clean_to_corrupt" else m_clean - m,
                                  "gap": m_clean - m_corrupt})

    def patched(self, side: Side, jobs: list) -> list:
        """One reading per job, `batch` jobs per pass. Where the family ran fewer copies per pass than asked (its
        own pass size, or one by one), the batch shrinks to what it ran and the chunk is run again."""
        readings, start = [], 0
        while start < len(jobs):
            chunk = jobs[start:start + self.batch]
            try:
                readings += self._pass(side, chunk)
            except Unbatched as exc:
                self.batch = exc.seen if 1 < exc.seen < len(chunk) else 1
                self.batched = self.batch > 1
                continue
            start += len(chunk)
        return readings

    def _pass(self, side: Side, chunk: list) -> list:
        rows: dict = {}
        for j, (_, hp, _, subspace, source, window) in enumerate(chunk):
            rows.setdefault(hp, (subspace, {}))[1][j] = (source, window)
        edits = {hp: PatchEdit(hp, sub, r, len(chunk)) for hp, (sub, r) in rows.items()}
        self.forwards += 1
        t0 = time.perf_counter()
        try:
            return self.metric.run(side, len(chunk), edits)
        finally:
            self.forward_s += time.perf_counter() - t0


def _summary(effects: list[dict], conditions: list[str]) -> dict:
    """Per condition, the hookpoint (and window) with the largest effect, and the hookpoints whose CI excludes 0."""
    out = {}
    for cond in conditions:
        rows = [e for e in effects if e["condition"] == cond and np.isfinite(e["effect"])]
        if not rows:
            continue
        top = max(rows, key=lambda e: e["effect"])
        out[cond] = {"top": top["hookpoint"], "window": top["window"], "effect": top["effect"],
                     "ci_excludes_zero": sorted({e["hookpoint"] for e in rows if e["ci_low"] > 0 or e["ci_high"] < 0})}
    return out


def _gap_note(gaps: list[float], cfg: PatchConfig) -> list[str]:
    """A note when the pairs' clean - corrupt gap is not reliably away from zero (its bootstrap CI spans 0)."""
    gaps_ = np.asarray(gaps, dtype=np.float64)
    if len(gaps_) < 2:
        return []
    means = gaps_[np.random.default_rng(cfg.seed).integers(0, len(gaps_), (cfg.n_bootstrap, len(gaps_)))].mean(1)
    lo, hi = np.quantile(means, [(1 - cfg.ci) / 2, (1 + cfg.ci) / 2])
    if lo <= 0 <= hi:
        return [f"the clean - corrupt gap is not reliably nonzero (CI [{lo:.3g}, {hi:.3g}]): effects are ratios to "
                "a gap near zero; compare `delta` (the change in the metric's units) instead"]
    return []


def _effects(rows: list[dict], hookpoints: list[str], n_windows: int, conditions: list[str],
             cfg: PatchConfig) -> list[dict]:
    """Per hookpoint, window and condition: mean numerator / mean gap over pairs, with a bootstrap CI over pairs."""
    out = []
    rng = np.random.default_rng(cfg.seed)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["hookpoint"], r["window"], r["condition"]), []).append(r)
    for li, hp in enumerate(hookpoints):
        for w in range(n_windows):
            for cond in conditions:
                sel = groups[(hp, w, cond)]
                num = np.array([r["numerator"] for r in sel])
                gap = np.array([r["gap"] for r in sel])
                effect = float(num.mean() / gap.mean()) if gap.mean() != 0 else float("nan")
                lo = hi = effect
                if len(sel) > 1:
                    idx = rng.integers(0, len(sel), size=(cfg.n_bootstrap, len(sel)))
                    g = gap[idx].mean(axis=1)
                    ratios = np.where(g != 0, num[idx].mean(axis=1) / np.where(g != 0, g, 1.0), np.nan)
                    alpha = (1 - cfg.ci) / 2
                    lo, hi = (float(v) for v in np.nanquantile(ratios, [alpha, 1 - alpha]))
                out.append({"hookpoint": hp, "layer": li, "window": w, "window_start": round(w / n_windows, 6),
                            "window_end": round((w + 1) / n_windows, 6), "condition": cond, "effect": effect,
                            "ci_low": lo, "ci_high": hi, "delta": float(num.mean()), "gap": float(gap.mean()),
                            "n_pairs": len(sel)})
    return out


def _heatmap(path: Path, effects: list[dict], hookpoints: list[str], n_windows: int, conditions: list[str],
             cfg: PatchConfig, n_pairs: int) -> None:
    """Hookpoints x conditions (one window), or one panel per condition of hookpoints x time windows."""
    from ..plotting import figure, style_axis

    value = {(e["hookpoint"], e["window"], e["condition"]): e["effect"] for e in effects}
    title = f"activation patching ({cfg.subspace}): effect on the {cfg.metric} metric ({n_pairs} pairs)"
    if n_windows == 1:
        panels = [(None, [[value[(hp, 0, c)] for c in conditions] for hp in hookpoints],
                   [c.replace("_", " ") for c in conditions], "intervention")]
    else:
        panels = [(c.replace("_", " "), [[value[(hp, w, c)] for w in range(n_windows)] for hp in hookpoints],
                   [f"{w / n_windows:.2g}-{(w + 1) / n_windows:.2g}" for w in range(n_windows)],
                   "time window (share of the input)") for c in conditions]
    ncols = len(panels)
    width = 2.2 + 1.6 * len(panels[0][2]) if ncols == 1 else 1.4 + 0.5 * n_windows
    with figure(path, ncols=ncols, size=(width * ncols, 1.6 + 0.32 * len(hookpoints)), title=title) as (fig, axes):
        for ax, (name, rows, ticks, xlabel) in zip(axes, panels, strict=True):
            mat = np.array(rows, dtype=float)
            im = ax.imshow(mat, aspect="auto", cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
            ax.set_yticks(range(len(hookpoints)), hookpoints)
            ax.set_xticks(range(len(ticks)), ticks, rotation=20, ha="right")
            if mat.size <= 120:
                for i in range(mat.shape[0]):
                    for j in range(mat.shape[1]):
                        ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)
            ax.grid(False)
            if name:
                ax.set_title(name)
            style_axis(ax, xlabel=xlabel, ylabel="hookpoint", legend=False)
        fig.colorbar(im, ax=axes[-1], label="normalised effect")
