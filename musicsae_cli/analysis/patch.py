"""`analyze patch`: activation patching and ablation per hookpoint, the causal test of what a layer carries.

For each clean/corrupt pair the model runs on both inputs once, recording every hookpoint's output (in the
(batch, rows, width) view every family's edits see). Then, per hookpoint h and per direction, one more forward
pass: the corrupt input with h's output replaced by the clean run's (clean -> corrupt), and the clean input with
h's output replaced by the corrupt run's (corrupt -> clean); and per ablation one pass of the clean input with h
zeroed or set to its mean over the clean inputs. A metric is read from each run:

  probe     a saved probe's logit for a class at its hookpoint (the pair's `target`, else the class the probe
            gives the clean input), averaged over frames
  latent    an SAE latent's mean activation at the SAE's hookpoint (the mean of several latents)
  outputs   the model's own outputs (capability `outputs`, e.g. CREPE's pitch activations): minus their distance
            to the clean run's outputs, so the clean run scores 0

The effect of an intervention is normalised by the pair's clean - corrupt gap: patching clean -> corrupt reports
(m_patched - m_corrupt) / (m_clean - m_corrupt), the share of the behaviour the hookpoint restores (1: all of it,
0: none); corrupt -> clean and the ablations report (m_clean - m_patched) / (m_clean - m_corrupt), the share of
the behaviour they destroy. Over pairs, an effect is the ratio of the mean numerator to the mean gap (stable when
a pair's gap is small), with a percentile bootstrap CI over pairs.

A hookpoint downstream of the metric's hookpoint cannot move it; they are patched anyway (an effect of 0 there is
a check). The recorded activations are replayed call by call, so any family with the `intervene` capability is
patched alike, whatever its layout; equal-length inputs are needed (a pair of different lengths is cropped to
the shorter, or refused with `length: refuse`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from .config import PatchConfig

FORMAT_VERSION = 1
DIRECTIONS = ("clean_to_corrupt", "corrupt_to_clean")


@dataclass
class Pair:
    pair_id: str
    clean: np.ndarray
    corrupt: np.ndarray
    target: str | None = None
    cropped: bool = False


class Recorder:
    """An identity edit that keeps a copy of every call's input (the hookpoint's output, call by call)."""

    def __init__(self):
        self.calls: list = []

    def __call__(self, h):
        self.calls.append(h.detach().clone())
        return h


class Replay:
    """An edit that returns the recorded outputs of another run, call by call (the patch)."""

    def __init__(self, calls: list, hookpoint: str):
        self.calls, self.hookpoint, self.i = calls, hookpoint, 0

    def __call__(self, h):
        if self.i >= len(self.calls) or self.calls[self.i].shape != h.shape:
            got = tuple(self.calls[self.i].shape) if self.i < len(self.calls) else "nothing"
            raise InputError(f"the runs of a pair differ at {self.hookpoint}: recorded {got}, patching "
                             f"{tuple(h.shape)}", "give pairs of equal length (or length: crop)")
        out = self.calls[self.i].to(dtype=h.dtype, device=h.device)
        self.i += 1
        return out


class Ablate:
    """An edit that sets a hookpoint's output to zero, or to a fixed vector (its mean) at every row."""

    def __init__(self, value=None):
        self.value = value

    def __call__(self, h):
        import torch

        if self.value is None:
            return torch.zeros_like(h)
        return self.value.to(dtype=h.dtype, device=h.device).expand_as(h).clone()


class Metric:
    """What a run is scored by (see the module doc); `score(run)` for a run's captures or outputs."""

    def __init__(self, cfg: PatchConfig, adapter):
        self.kind = cfg.metric
        self.adapter = adapter
        self.hookpoint = None
        if self.kind == "probe":
            from ..probes.model import ProbeSet

            if not cfg.probe:
                raise InputError("metric probe needs --probe PROBES", "train one with musicsae probe train")
            self.probes = ProbeSet.load(cfg.probe)
            if self.probes.task != "classification":
                raise InputError("metric probe needs classification probes", "use a classification probe")
            best = (self.probes.manifest.get("metrics") or {}).get("best") or {}
            hp = cfg.probe_hookpoint or best.get("hookpoint") or self.probes.hookpoints[-1]
            self.probes.index(hp)  # InputError naming the probe's hookpoints
            self.hookpoint = adapter.resolve_hookpoints(hp)[0]
            self.target = cfg.target
            if self.target is not None:
                self.probes.class_index(self.target)
        elif self.kind == "latent":
            from ..sae.io import load_sae

            if not cfg.sae or not cfg.latents:
                raise InputError("metric latent needs --sae SAE and --latent N", "name the SAE and its latent(s)")
            self.sae, sae_cfg = load_sae(cfg.sae, device="cpu")
            d_in, d_sae = self.sae.spec.d_in, self.sae.spec.d_sae
            self.hookpoint = adapter.resolve_hookpoints(str(sae_cfg.get("hook_name")))[0]
            width = adapter.hookpoint_widths[self.hookpoint]
            if d_in != width:
                raise InputError(f"the SAE reads {d_in}-wide activations but {self.hookpoint} is {width} wide",
                                 "use an SAE trained on this model's hookpoint")
            bad = [i for i in cfg.latents if not 0 <= i < d_sae]
            if bad:
                raise InputError(f"latent(s) {bad} out of range for an SAE of {d_sae} latents",
                                 f"use 0..{d_sae - 1}")
            self.latents = list(cfg.latents)
        else:
            adapter.require("outputs", "metric outputs")

    read: list[str] = []  # the hookpoints a run asks for (all of them: every recorder sees its call)

    def run(self, audio: np.ndarray, edits: dict):
        """The model on one input with `edits` active: its captures at the metric's hookpoint, or its outputs."""
        with self.adapter.intervene(edits):
            if self.kind == "outputs":
                return np.asarray(self.adapter.outputs(audio), dtype=np.float64)
            acts = self.adapter.audio_activations([audio], self.read)[0][self.hookpoint]
        return acts.detach().float().cpu().numpy() if hasattr(acts, "detach") else np.asarray(acts, np.float32)

    def target_of(self, clean_run, pair: Pair) -> str | None:
        if self.kind != "probe":
            return None
        if pair.target is not None:
            self.probes.class_index(pair.target)
            return pair.target
        if self.target is not None:
            return self.target
        logits = self.probes.logits(self.hookpoint, clean_run).mean(axis=0)
        return self.probes.classes[int(np.argmax(logits))]

    def score(self, run, clean_run, target: str | None) -> float:
        if self.kind == "probe":
            return float(self.probes.logits(self.hookpoint, run)[:, self.probes.class_index(target)].mean())
        if self.kind == "latent":
            import torch

            with torch.no_grad():
                z = self.sae.encode(torch.from_numpy(np.ascontiguousarray(run, np.float32)))
            return float(z[:, self.latents].float().mean())
        n = min(len(run), len(clean_run))
        return -float(np.linalg.norm(run[:n] - clean_run[:n]) / np.sqrt(max(1, run[:n].size)))


def read_pairs(source: str | Path, cfg: PatchConfig, sr: int, hop: int) -> tuple[list[Pair], list[str]]:
    """Pairs from a pairs file (columns clean, corrupt, optional target / pair_id) or from a dataset perturbed by
    cfg.perturbation (corrupt = the clean item perturbed); (pairs, notes on cropping)."""
    from ..audio.io import load_audio
    from ..audio.manifest import load_dataset, read_records
    from .perturb import check_perturbations, perturb

    source = Path(source)
    notes: list[str] = []
    pairs: list[Pair] = []

    def load(path) -> np.ndarray:
        audio, _ = load_audio(path, sample_rate=sr, mono=True, duration_s=cfg.excerpt_s)
        return np.ascontiguousarray(audio, np.float32)

    if cfg.perturbation is None:
        if not source.is_file():
            raise InputError(f"no pairs file {source}", "pass a CSV/JSONL with clean and corrupt columns, or a "
                                                        "dataset with --perturb NAME=SETTING")
        records = read_records(source)
        columns = list(records[0]) if records else []
        if "clean" not in columns or "corrupt" not in columns:
            raise InputError(f"{source.name} needs clean and corrupt columns (it has: {', '.join(columns) or '-'})",
                             "one row per pair: clean,corrupt[,target] audio paths")
        for i, r in enumerate(records):
            paths = [Path(r[c]) if Path(r[c]).is_absolute() else source.parent / r[c] for c in ("clean", "corrupt")]
            pairs.append(Pair(str(r.get("pair_id") or f"pair{i:04d}"), load(paths[0]), load(paths[1]),
                              None if r.get("target") in (None, "") else str(r["target"])))
    else:
        name, _, value = cfg.perturbation.partition("=")
        try:
            setting = float(value)
        except ValueError:
            raise InputError(f"bad perturbation {cfg.perturbation!r}", "write NAME=SETTING, e.g. pitch=2, gain=-6, "
                                                                       "tempo=0.8") from None
        check_perturbations({name: [setting]})
        manifest = load_dataset(source)
        for i, row in enumerate(manifest.rows[: cfg.max_pairs] if cfg.max_pairs else manifest.rows):
            clean = load(row["path"])
            corrupt = perturb(name, clean, sr, setting, np.random.default_rng([cfg.seed, i]))
            target = row.get(cfg.target_column) if cfg.target_column else None
            pairs.append(Pair(str(row["item_id"]), clean, corrupt, None if target is None else str(target)))
    pairs = pairs[: cfg.max_pairs] if cfg.max_pairs else pairs
    if not pairs:
        raise InputError(f"no pairs in {source}", "add rows, or point at a dataset with items")
    for p in pairs:
        if len(p.clean) != len(p.corrupt):
            if cfg.length == "refuse":
                raise InputError(f"pair {p.pair_id}: clean is {len(p.clean) / sr:.3f} s, corrupt "
                                 f"{len(p.corrupt) / sr:.3f} s", "give equal lengths, or --set length=crop")
            p.cropped = True
        n = (min(len(p.clean), len(p.corrupt)) // hop) * hop
        if n == 0:
            raise InputError(f"pair {p.pair_id} is shorter than one frame", "use longer clips")
        p.clean, p.corrupt = p.clean[:n], p.corrupt[:n]
    cropped = [p.pair_id for p in pairs if p.cropped]
    if cropped:
        notes.append(f"{len(cropped)} pair(s) of different lengths cropped to the shorter: {', '.join(cropped[:5])}"
                     + (" ..." if len(cropped) > 5 else ""))
    return pairs, notes


def patch(source: str | Path, out: str | Path, cfg: PatchConfig, overwrite: bool = False,
          progress: ProgressFactory = no_progress, adapter=None) -> dict:
    """Patch and ablate every hookpoint over the pairs of `source`; write effects.csv, per_pair.csv, a heatmap."""
    from ..models import load_adapter

    started = time.perf_counter()
    check_output(out, overwrite)
    adapter = adapter or load_adapter(cfg.model, family=cfg.family, revision=cfg.revision, device=cfg.device,
                                      dtype=cfg.dtype, seed=cfg.seed, options=cfg.model_options)
    adapter.require("intervene", "activation patching")
    if cfg.metric != "outputs":
        adapter.require("audio", "activation patching over audio")
    hookpoints = adapter.resolve_hookpoints(cfg.hookpoints)
    metric = Metric(cfg, adapter)
    metric.read = list(dict.fromkeys([*hookpoints, *([metric.hookpoint] if metric.hookpoint else [])]))
    pairs, notes = read_pairs(source, cfg, adapter.sample_rate, adapter.hop_length)
    conditions = [*(d for d in DIRECTIONS if cfg.directions in ("both", d)), *(f"{a}_ablation" for a in cfg.ablations)]
    means = _means(adapter, pairs, hookpoints, progress) if "mean" in cfg.ablations else {}
    rows, forwards = [], 0
    with progress("Patching", len(pairs) * (2 + len(hookpoints) * len(conditions))) as bar:
        for pair in pairs:
            rec = {"clean": {hp: Recorder() for hp in hookpoints}, "corrupt": {hp: Recorder() for hp in hookpoints}}
            runs = {side: metric.run(getattr(pair, side), rec[side]) for side in ("clean", "corrupt")}
            forwards += 2
            bar.advance(2)
            target = metric.target_of(runs["clean"], pair)
            m_clean = metric.score(runs["clean"], runs["clean"], target)
            m_corrupt = metric.score(runs["corrupt"], runs["clean"], target)
            for li, hp in enumerate(hookpoints):
                if not rec["clean"][hp].calls or len(rec["clean"][hp].calls) != len(rec["corrupt"][hp].calls):
                    raise InputError(f"{hp} was not run (or ran differently) on the pair {pair.pair_id}",
                                     "choose hookpoints the model runs on this input")
                for cond in conditions:
                    if cond == "clean_to_corrupt":
                        audio, edit = pair.corrupt, Replay(rec["clean"][hp].calls, hp)
                    elif cond == "corrupt_to_clean":
                        audio, edit = pair.clean, Replay(rec["corrupt"][hp].calls, hp)
                    else:
                        audio, edit = pair.clean, Ablate(means.get(hp) if cond == "mean_ablation" else None)
                    m = metric.score(metric.run(audio, {hp: edit}), runs["clean"], target)
                    forwards += 1
                    rows.append({"pair_id": pair.pair_id, "target": target, "hookpoint": hp, "layer": li,
                                 "condition": cond, "metric": m, "metric_clean": m_clean, "metric_corrupt": m_corrupt,
                                 "numerator": m - m_corrupt if cond == "clean_to_corrupt" else m_clean - m,
                                 "gap": m_clean - m_corrupt})
                    bar.advance()
    effects = _effects(rows, hookpoints, conditions, cfg)
    gap = float(np.mean([r["gap"] for r in rows[:: len(hookpoints) * len(conditions)]]))
    if abs(gap) < 1e-9:
        raise InputError("the clean and corrupt runs score the same on the metric (no gap to restore)",
                         "choose a corruption that changes the metric, or another metric")
    config = cfg.model_dump(mode="json")
    with staged_directory(out, overwrite) as stage:
        write_csv_rows(stage / "effects.csv", effects)
        write_csv_rows(stage / "per_pair.csv", rows)
        _heatmap(stage / "heatmap.png", effects, hookpoints, conditions, cfg, len(pairs))
        write_config(stage, config)
        write_json(stage / "manifest.json", new_manifest(
            "patch", FORMAT_VERSION, config, source=str(source), model=adapter.describe(), hookpoints=hookpoints,
            metric={"kind": cfg.metric, "hookpoint": metric.hookpoint}, n_pairs=len(pairs), conditions=conditions,
            forward_passes=forwards, mean_gap=gap, notes=notes, files=["effects.csv", "per_pair.csv",
                                                                       "heatmap.png"]))
    return {"out": str(out), "n_pairs": len(pairs), "hookpoints": hookpoints, "conditions": conditions,
            "metric": cfg.metric, "metric_hookpoint": metric.hookpoint, "mean_gap": gap, "effects": effects,
            "forward_passes": forwards, "notes": notes, "elapsed_s": round(time.perf_counter() - started, 3)}


def _means(adapter, pairs: list[Pair], hookpoints: list[str], progress) -> dict:
    """Each hookpoint's mean output over every row of the clean inputs (the mean ablation's value)."""
    sums: dict[str, object] = {}
    counts: dict[str, int] = {}
    with progress("Mean activations", len(pairs)) as bar:
        for pair in pairs:
            recs = {hp: Recorder() for hp in hookpoints}
            with adapter.intervene(recs):
                adapter.audio_activations([pair.clean], hookpoints)
            for hp, rec in recs.items():
                for h in rec.calls:
                    flat = h.reshape(-1, h.shape[-1]).double()
                    sums[hp] = flat.sum(dim=0) + (sums[hp] if hp in sums else 0)
                    counts[hp] = counts.get(hp, 0) + flat.shape[0]
            bar.advance()
    return {hp: (sums[hp] / counts[hp]).float() for hp in sums}


def _effects(rows: list[dict], hookpoints: list[str], conditions: list[str], cfg: PatchConfig) -> list[dict]:
    """Per hookpoint and condition: mean numerator / mean gap over pairs, with a bootstrap CI over pairs."""
    out = []
    rng = np.random.default_rng(cfg.seed)
    for li, hp in enumerate(hookpoints):
        for cond in conditions:
            sel = [r for r in rows if r["hookpoint"] == hp and r["condition"] == cond]
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
            out.append({"hookpoint": hp, "layer": li, "condition": cond, "effect": effect, "ci_low": lo,
                        "ci_high": hi, "n_pairs": len(sel)})
    return out


def _heatmap(path: Path, effects: list[dict], hookpoints: list[str], conditions: list[str], cfg: PatchConfig,
             n_pairs: int) -> None:
    from ..plotting import figure, style_axis

    mat = np.array([[next(e["effect"] for e in effects if e["hookpoint"] == hp and e["condition"] == c)
                     for c in conditions] for hp in hookpoints])
    title = f"activation patching: effect on the {cfg.metric} metric ({n_pairs} pairs)"
    with figure(path, size=(2.2 + 1.6 * len(conditions), 1.6 + 0.32 * len(hookpoints)), title=title) as (fig,
                                                                                                           (ax,)):
        im = ax.imshow(mat, aspect="auto", cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_yticks(range(len(hookpoints)), hookpoints)
        ax.set_xticks(range(len(conditions)), [c.replace("_", " ") for c in conditions], rotation=20, ha="right")
        for i in range(len(hookpoints)):
            for j in range(len(conditions)):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.grid(False)
        style_axis(ax, xlabel="intervention", ylabel="hookpoint", legend=False)
        fig.colorbar(im, ax=ax, label="normalised effect")
