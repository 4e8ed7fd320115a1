"""Layer sensitivity: how much each hookpoint's activations change when a musical property of the input changes.

Per (perturbation, setting, hookpoint, clip): relative change ||a' - a|| / ||a|| and cosine distance 1 - cos,
frame-aligned (mean over frames) when the frame counts match, else on time-pooled (mean) vectors. Both are
scale-free, so wide layers are not favoured, and nothing is min-max rescaled. Aggregated as means with seeded
bootstrap confidence intervals over clips, optionally per value of a label column (`by`).

With `by`, summary rows carry the label value in a column named after the label column (`by_column`: the
column's own name, or by_<name> where that would clash with another field or with a dataset's `group` track
column); rows over all clips have no value there (null / empty). Without `by` there is no such column.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..audio.io import audio_info, load_audio, skip_unusable
from ..audio.manifest import load_dataset
from ..errors import AudioError, InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result, skipped_lines
from .config import SensitivityConfig
from .perturb import perturb, unit

FORMAT_VERSION = 1
_EPS = 1e-12
METRICS = ("rel_change", "cos_distance")
# Fields of the per-clip and summary rows (and the dataset's `group` track column): a `by` label column with one
# of these names is written as by_<name>, so it never overwrites or passes for one of them.
RESERVED = ("group", "clip_id", "path", "label", "perturbation", "setting", "hookpoint", "layer", "comparison",
            "frames_original", "frames_perturbed", "n_clips", *METRICS,
            *(f"{m}_{s}" for m in METRICS for s in ("mean", "ci_low", "ci_high")))
NOISE = 1e-6  # relative changes / cosine distances below this are float noise (the identity control)


@dataclass(kw_only=True)
class SensitivityResult(Result):
    """What `analyze sensitivity` reports (summary: the rows over all clips; the files hold every row)."""

    out: str
    model: dict
    hookpoints: list[str]
    n_clips: int
    perturbations: dict[str, dict]  # name -> settings, unit
    seed: int
    n_bootstrap: int
    ci: float
    by: str | None
    by_column: str | None
    by_values: list[Any] | None
    skipped: list[dict]
    plots: list[str]
    elapsed_s: float
    summary: list[dict]

    def lines(self) -> list[str]:
        lines = [self.out, f"{self.n_clips} clips x {len(self.hookpoints)} hookpoints, perturbations: "
                           f"{', '.join(self.perturbations)} ({self.elapsed_s:.1f} s)"]
        for name in self.perturbations:
            rows = [r for r in self.summary if r["perturbation"] == name]
            peak = max(rows, key=lambda r: r["rel_change_mean"], default=None)
            if peak:
                lines.append(f"  {name}: largest relative change {peak['rel_change_mean']:.3f} at "
                             f"{peak['hookpoint']} (setting {peak['setting']:g})")
        return lines + skipped_lines(self.skipped)


def by_column(by: str | None) -> str | None:
    """The column holding the `by` label value in the output tables (None without `by`)."""
    if by is None:
        return None
    return f"by_{by}" if by in RESERVED else by


@dataclass
class Clip:
    clip_id: str
    path: str
    label: str | None
    audio: np.ndarray  # (n,) mono float32 at the model's rate, whole frames


def layer_change(a, b) -> tuple[float, float, str]:
    """(relative change, 1 - cosine, comparison) between activations a (T, d) and b (T', d).

    Frame-aligned ("frames": per-frame metrics averaged over frames) when T and T' differ by at most one frame
    (trimmed to the shorter); otherwise on mean-pooled vectors ("pooled").
    """
    a = _np(a)
    b = _np(b)
    if abs(a.shape[0] - b.shape[0]) <= 1:
        n = min(a.shape[0], b.shape[0])
        a, b, mode = a[:n], b[:n], "frames"
    else:
        a, b, mode = a.mean(axis=0, keepdims=True), b.mean(axis=0, keepdims=True), "pooled"
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    rel = np.linalg.norm(b - a, axis=1) / np.maximum(na, _EPS)
    cos = np.sum(a * b, axis=1) / np.maximum(na * nb, _EPS)
    return float(rel.mean()), float(np.clip(1.0 - cos, 0.0, 2.0).mean()), mode


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def bootstrap_ci(values, n_boot: int, ci: float, seed: int) -> tuple[float, float, float]:
    """(mean, lower, upper): percentile bootstrap of the mean over `values` (one per clip), seeded."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(min(lo, mean)), float(max(hi, mean))


def sensitivity(source: str | Path, out: str | Path, cfg: SensitivityConfig, overwrite: bool = False,
                progress: ProgressFactory = no_progress, adapter=None) -> SensitivityResult:
    """Measure per-layer sensitivity of the model to each configured perturbation; write the results to `out`."""
    from ..models import load_adapter

    started = time.perf_counter()
    check_output(out, overwrite)  # fail before any model work
    manifest = load_dataset(source)
    if cfg.by is not None and cfg.by not in manifest.columns:
        raise InputError(f"the manifest has no column '{cfg.by}' for --by",
                         f"columns: {', '.join(manifest.columns)}")
    rows = manifest.rows[:cfg.max_clips] if cfg.max_clips else manifest.rows
    if not rows:
        raise InputError(f"no audio items in {source}", "point SOURCE at a manifest or a folder of audio")
    adapter = adapter or load_adapter(cfg.model, family=cfg.family, revision=cfg.revision, device=cfg.device,
                                      dtype=cfg.dtype, seed=cfg.seed, options=cfg.model_options)
    adapter.require("audio", "sensitivity analysis")
    hookpoints = adapter.resolve_hookpoints(cfg.hookpoints)
    sr, hop = adapter.sample_rate, adapter.hop_length
    clips, skipped = _load_clips(rows, cfg, sr, hop)
    if not clips:
        raise InputError("no usable clips (all unreadable or shorter than one frame)", "check the audio files")
    settings = [(name, float(s)) for name, values in cfg.perturbations.items() for s in values]
    texts_all = [cfg.text] * len(clips)
    per_clip: list[dict] = []
    with progress("Perturbing", len(clips) * (1 + len(settings))) as bar:
        for start in range(0, len(clips), cfg.batch_size):
            batch = clips[start:start + cfg.batch_size]
            texts = texts_all[start:start + len(batch)]
            original = adapter.audio_activations([c.audio for c in batch], hookpoints, texts)
            bar.advance(len(batch))
            for si, (name, setting) in enumerate(settings):
                audios = [perturb(name, c.audio, sr, setting, np.random.default_rng([cfg.seed, start + i, si]))
                          for i, c in enumerate(batch)]
                changed = adapter.audio_activations(audios, hookpoints, texts)
                for clip, a_item, b_item in zip(batch, original, changed, strict=True):
                    for li, hp in enumerate(hookpoints):
                        rel, cosd, mode = layer_change(a_item[hp], b_item[hp])
                        per_clip.append({"clip_id": clip.clip_id, "path": clip.path, "label": clip.label,
                                         "perturbation": name, "setting": setting, "hookpoint": hp, "layer": li,
                                         "comparison": mode, "frames_original": int(a_item[hp].shape[0]),
                                         "frames_perturbed": int(b_item[hp].shape[0]),
                                         "rel_change": rel, "cos_distance": cosd})
                bar.advance(len(batch))
    summary = _summarise(per_clip, settings, hookpoints, cfg)
    col = by_column(cfg.by)
    config = cfg.model_dump(mode="json")
    result = {"out": str(out), "model": adapter.describe(), "hookpoints": hookpoints, "n_clips": len(clips),
              "perturbations": {n: {"settings": v, "unit": unit(n)} for n, v in cfg.perturbations.items()},
              "seed": cfg.seed, "n_bootstrap": cfg.n_bootstrap, "ci": cfg.ci, "by": cfg.by, "by_column": col,
              "by_values": sorted({c.label for c in clips if c.label is not None}) if cfg.by else None,
              "skipped": [{"path": p, "reason": r} for p, r in skipped]}
    with staged_directory(out, overwrite) as stage:
        write_csv_rows(stage / "per_clip.csv", [_rename(r, cfg.by) for r in per_clip])
        write_csv_rows(stage / "summary.csv", summary)
        plots = _plot(stage, summary, hookpoints, cfg, len(clips))
        if cfg.by is not None:
            plots += _plot_by(stage, summary, hookpoints, cfg)
        write_json(stage / "summary.json", {**result, "config": config, "summary": summary,
                                            "per_clip": [_rename(r, cfg.by) for r in per_clip],
                                            "clips": [_rename({"clip_id": c.clip_id, "path": c.path,
                                                               "label": c.label, "seconds": len(c.audio) / sr},
                                                              cfg.by) for c in clips]})
        write_config(stage, config)
        write_json(stage / "manifest.json", new_manifest("sensitivity", FORMAT_VERSION, config,
                                                         source=str(source), model=adapter.describe(),
                                                         hookpoints=hookpoints, n_clips=len(clips),
                                                         files=["per_clip.csv", "summary.csv", "summary.json",
                                                                *plots]))
    return SensitivityResult(**result, plots=[str(Path(out) / p) for p in plots],
                             elapsed_s=round(time.perf_counter() - started, 3),
                             summary=[r for r in summary if col is None or r[col] is None])


def _load_clips(rows: list[dict], cfg: SensitivityConfig, sr: int, hop: int):
    clips: list[Clip] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        path = Path(row["path"])
        try:
            info = audio_info(path)
            total = info.frames / info.sample_rate
            offset = max(0.0, (total - cfg.excerpt_s) / 2) if cfg.excerpt_at == "center" else 0.0
            audio, _ = load_audio(path, sample_rate=sr, mono=True, offset_s=offset,
                                  duration_s=min(cfg.excerpt_s, total))
        except AudioError as exc:
            skip_unusable(path, exc.message, cfg.strict, skipped, exc)
            continue
        n = (min(len(audio), int(round(cfg.excerpt_s * sr))) // hop) * hop
        if n == 0:
            skip_unusable(path, f"shorter than one frame ({hop} samples at {sr} Hz)", cfg.strict, skipped)
            continue
        label = None if cfg.by is None else (None if row.get(cfg.by) is None else str(row.get(cfg.by)))
        clips.append(Clip(str(row["item_id"]), str(path), label, np.ascontiguousarray(audio[:n], np.float32)))
    return clips, skipped


def _summarise(per_clip: list[dict], settings, hookpoints: list[str], cfg: SensitivityConfig) -> list[dict]:
    groups: list[str | None] = [None]
    if cfg.by is not None:
        groups += sorted({r["label"] for r in per_clip if r["label"] is not None})
    index: dict[tuple, list[dict]] = {}
    for r in per_clip:
        index.setdefault((r["perturbation"], r["setting"], r["hookpoint"]), []).append(r)
    out = []
    for name, setting in settings:
        for li, hp in enumerate(hookpoints):
            cell = index.get((name, setting, hp), [])
            for g in groups:
                rows = cell if g is None else [r for r in cell if r["label"] == g]
                if not rows:
                    continue
                modes = sorted({r["comparison"] for r in rows})
                entry = {"perturbation": name, "setting": setting, "hookpoint": hp, "layer": li,
                         **({by_column(cfg.by): g} if cfg.by is not None else {}), "n_clips": len(rows),
                         "comparison": "+".join(modes)}
                for m in METRICS:
                    mean, lo, hi = bootstrap_ci([r[m] for r in rows], cfg.n_bootstrap, cfg.ci, cfg.seed)
                    entry.update({f"{m}_mean": mean, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
                out.append(entry)
    return out


def _rename(row: dict, by: str | None) -> dict:
    """Per-clip rows name the label column after --by (by_column; dropped without it)."""
    if "label" not in row:
        return row
    col = by_column(by)
    return {(col if k == "label" else k): v for k, v in row.items() if k != "label" or by is not None}


def _setting_label(name: str, setting: float) -> str:
    return "control" if name == "identity" else f"{setting:g} {unit(name)}"


def _draw(ax, x, rows: list[dict], metric: str, label: str, **style):
    mean = np.array([r[f"{metric}_mean"] for r in rows], dtype=np.float64)
    line, = ax.plot(x, mean, marker="o", ms=3, label=label, clip_on=False, zorder=3, **style)
    ax.fill_between(x, [r[f"{metric}_ci_low"] for r in rows], [r[f"{metric}_ci_high"] for r in rows],
                    color=line.get_color(), alpha=0.15, label=f"_{label} CI")


def _cell(summary: list[dict], name: str, setting: float, col: str, value) -> list[dict]:
    """Summary rows of one perturbation setting and `col` value (None: all clips), in layer order."""
    return sorted((r for r in summary if r["perturbation"] == name and r["setting"] == setting and r[col] == value),
                  key=lambda r: r["layer"])


AXES = {"rel_change": ("relative change", "||a'-a|| / ||a||"), "cos_distance": ("cosine distance", "1 - cos(a, a')")}


def _plot(stage: Path, summary: list[dict], hookpoints: list[str], cfg: SensitivityConfig, n_clips: int) -> list[str]:
    """One PNG per perturbation: both metrics vs layer, one line per setting with its CI band (all clips)."""
    from ..plotting import figure, figure_legend, hookpoint_ticks, output_name, style_axis, title

    col = by_column(cfg.by)
    names = []
    x = np.arange(len(hookpoints))
    for name, values in cfg.perturbations.items():
        fname = f"sensitivity_{name}.png"
        head = title(f"layer sensitivity of {cfg.model} to {name}" + (" (control: the unchanged clip)"
                                                                      if name == "identity" else f" ({unit(name)})"),
                     run=output_name(stage), n=f"n={n_clips} clips; mean and {cfg.ci:.0%} bootstrap CI over clips")
        with figure(stage / fname, ncols=2, panel=(5.6, 3.8), title=head) as (fig, axes):
            for setting in values:
                rows = sorted((r for r in summary if r["perturbation"] == name and r["setting"] == float(setting)
                               and (col is None or r[col] is None)), key=lambda r: r["layer"])
                if rows:
                    for ax, m in zip(axes, METRICS, strict=True):
                        _draw(ax, x, rows, m, _setting_label(name, float(setting)))
            for ax, m in zip(axes, METRICS, strict=True):
                ax.set_title(AXES[m][0])
                hookpoint_ticks(ax, hookpoints)
                style_axis(ax, xlabel="hookpoint", ylabel=f"{AXES[m][0]} {AXES[m][1]}", bounded=(0.0, None),
                           noise=NOISE, min_span=0.01, legend=False)
            figure_legend(fig, axes[0])
        names.append(fname)
    return names


def _plot_by(stage: Path, summary: list[dict], hookpoints: list[str], cfg: SensitivityConfig) -> list[str]:
    """One PNG per perturbation with a --by breakdown: one panel per setting, the relative change per label value
    (its CI band over that value's clips) and over all clips (dashed), on one shared y range."""
    from ..plotting import figure, figure_legend, hookpoint_ticks, output_name, style_axis, title

    col = by_column(cfg.by)
    files = []
    x = np.arange(len(hookpoints))
    values = sorted({r[col] for r in summary if r[col] is not None})
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in cfg.by)
    for name, settings in cfg.perturbations.items():
        fname = f"sensitivity_{name}_by_{safe}.png"
        n = {v: max((r["n_clips"] for r in summary if r[col] == v and r["perturbation"] == name), default=0)
             for v in values}
        head = title(f"layer sensitivity of {cfg.model} to {name} by {cfg.by}",
                     run=output_name(stage), n=f"mean and {cfg.ci:.0%} bootstrap CI over each value's clips")
        ncols = min(len(settings), 4)
        nrows = -(-len(settings) // ncols)
        with figure(stage / fname, ncols=ncols, nrows=nrows, panel=(5.6, 3.8), title=head) as (fig, axes):
            for ax, setting in zip(axes, settings, strict=False):
                for v in values:
                    rows = _cell(summary, name, float(setting), col, v)
                    if len(rows) == len(hookpoints):
                        _draw(ax, x, rows, "rel_change", f"{cfg.by}={v} (n={n[v]})")
                rows = _cell(summary, name, float(setting), col, None)
                if rows:
                    _draw(ax, x, rows, "rel_change", f"all clips (n={rows[0]['n_clips']})", color="black", ls="--")
                ax.set_title(f"setting {_setting_label(name, float(setting))}")
                hookpoint_ticks(ax, hookpoints)
                style_axis(ax, xlabel="hookpoint", ylabel="relative change ||a'-a|| / ||a||", bounded=(0.0, None),
                           noise=NOISE, min_span=0.01, legend=False)
            used = axes[:len(settings)]
            top = max(ax.get_ylim()[1] for ax in used)
            for ax in used:  # one y range: settings compare at a glance
                ax.set_ylim(0.0, top)
            for ax in axes[len(settings):]:
                ax.set_visible(False)
            figure_legend(fig, axes[0])
        files.append(fname)
    return files
