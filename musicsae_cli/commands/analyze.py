"""`musicsae analyze sensitivity`: how much each layer's activations change under musical perturbations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import _options as opt
from ._command import MusicsaeGroup, command
from ._common import EXAMPLES, model_flags, resolve, split_csv

ConfigOpt = opt.preset("analyze")
app = typer.Typer(cls=MusicsaeGroup, rich_markup_mode="rich", no_args_is_help=True,
                  help="Analyse what layers and latents encode: sensitivity, separation, features, comparisons.")
ANALYSIS = "musicsae_cli.analysis.config"
PairsArg = Annotated[Path, typer.Argument(help="Pairs: a CSV/JSONL with clean and corrupt audio columns (optional "
                                               "target, pair_id), or a dataset with --perturb.")]
SingleHookpointOpt = Annotated[str | None, typer.Option(
    "--hookpoint", help="Store hookpoint (default: the SAE's or the only one).")]


@command(app, "sensitivity", config=f"{ANALYSIS}:SensitivityConfig", group="analyze",
         keys={"hookpoint": "hookpoints", "max_items": "max_clips"},
         aliases={"--layers": "--hookpoint", "--hookpoints": "--hookpoint", "--max-clips": "--max-items"}, examples=[
             f"musicsae analyze sensitivity concepts/ -o sens/ -c pitch-tempo -m {EXAMPLES['local']} --hookpoint all",
             "musicsae analyze sensitivity songs.csv -o sens/ --by genre --max-items 200",
             "musicsae analyze sensitivity notes/ -o sens-crepe/ -c crepe -m crepe-tiny",
             "musicsae analyze sensitivity concepts/ -o sens-tiny/ -c tiny"])
def sensitivity(
    source: Annotated[Path, typer.Argument(help="Audio: a manifest, a dataset folder or a folder of audio.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (CSV, JSON and one PNG per "
                                                          "perturbation).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    model: opt.Model = None,
    family: opt.Family = None,
    trust: opt.TrustCode = False,
    hookpoint: opt.Hookpoints = None,
    by: Annotated[str | None, typer.Option("--by", metavar="COL",
                                           help="Also aggregate per value of this label column.")] = None,
    max_items: Annotated[int | None, typer.Option("--max-items", help="Use at most this many clips.")] = None,
    device: opt.Device = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Per-layer relative change and 1 - cosine under pitch shift, time stretch, gain, noise (with CIs)."""
    from ..analysis.config import SensitivityConfig

    flags = {**model_flags(model, family, trust, hookpoint, device), "by": by, "max_clips": max_items}
    cfg = resolve(SensitivityConfig, "analyze", config, set_, flags, dry_run, ui)
    from ..analysis.sensitivity import sensitivity as run

    ui.show(run(source, out, cfg, overwrite, ui.progress), out=out)


@command(app, "patch", config=f"{ANALYSIS}:PatchConfig", group="analyze",
         keys={"hookpoint": "hookpoints", "max_items": "max_pairs", "perturb": "perturbation", "latent": "latents"},
         examples=[
             "musicsae analyze patch pairs.csv -o patch/ -m crepe-tiny --probe probes/pitch --hookpoint 'block*'",
             "musicsae analyze patch notes/ --perturb pitch=2 -o patch-pitch/ -m crepe-tiny --probe probes/pitch",
             "musicsae analyze patch notes/ --perturb pitch=2 -o patch-out/ -m crepe-tiny --metric outputs"])
def patch(
    pairs: PairsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (effects.csv, per_pair.csv, "
                                                          "heatmap.png).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    model: opt.Model = None,
    family: opt.Family = None,
    trust: opt.TrustCode = False,
    hookpoint: opt.Hookpoints = None,
    perturb: Annotated[str | None, typer.Option("--perturb", metavar="NAME=SETTING", help="Pairs from a dataset: "
                                                "each item and the item perturbed, e.g. pitch=2, gain=-6.")] = None,
    metric: Annotated[str | None, typer.Option(help="probe, latent, outputs or loss.")] = None,
    subspace: Annotated[str | None, typer.Option(help="What is patched: full, direction or latents.")] = None,
    windows: Annotated[int | None, typer.Option(help="Also patch this many time windows of the input apart.")]
    = None,
    patch_latent: Annotated[list[int] | None, typer.Option("--patch-latent", help="Subspace latents: an SAE latent "
                                                           "to patch (repeatable).")] = None,
    probe: Annotated[str | None, typer.Option(help="Probes folder (metric probe).")] = None,
    target: Annotated[str | None, typer.Option(help="Probe class whose logit is the metric.")] = None,
    sae: Annotated[str | None, typer.Option(help="SAE folder (metric latent).")] = None,
    latent: Annotated[list[int] | None, typer.Option("--latent", help="SAE latent(s) read by metric latent "
                                                                      "(repeatable).")] = None,
    max_items: Annotated[int | None, typer.Option("--max-items", help="Use at most this many pairs.")] = None,
    allow_other_model: opt.AllowOtherModel = False,
    device: opt.Device = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Activation patching and ablation per hookpoint: how much of a clean/corrupt difference each layer carries."""
    from ..analysis.config import PatchConfig

    flags = {**model_flags(model, family, trust, hookpoint, device), "perturbation": perturb, "metric": metric,
             "probe": probe, "target": target, "sae": sae, "latents": latent or None, "max_pairs": max_items,
             "subspace": subspace, "windows": windows, "patch_latents": patch_latent or None,
             "allow_other_model": allow_other_model or None}
    cfg = resolve(PatchConfig, "analyze", config, set_, flags, dry_run, ui)
    from ..analysis.patch import patch as run

    ui.show(run(pairs, out, cfg, overwrite, ui.progress), out=out)


@command(app, "compare", config=f"{ANALYSIS}:CompareConfig", group="analyze",
         keys={"hookpoint": "hookpoints", "prompts_a": "prompts_a_file", "prompts_b": "prompts_b_file",
               "model": "extract.model", "dtype": "extract.dtype", "duration_s": "extract.duration_s",
               "samples_per_prompt": "extract.samples_per_prompt"},
         aliases={"--hookpoints": "--hookpoint", "--layers": "--hookpoint", "--duration": "--duration-s"}, examples=[
             "musicsae analyze compare store/ --contrast mood=happy:sad -o cmp/",
             f"musicsae analyze compare --prompts-a happy.txt --prompts-b sad.txt -m {EXAMPLES['hub']} -o cmp/",
             "musicsae analyze compare -c tiny -o cmp-tiny/"])
def compare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (compare.json, layers.csv, "
                                                          "directions.safetensors, compare.png).")],
    store: Annotated[Path | None, typer.Argument(help="Store mode: the activation store. Omit it in prompt "
                                                      "mode.")] = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    label: Annotated[str | None, typer.Option("--label", "-l", metavar="COL", help="Store mode: the label "
                                                                                   "column.")] = None,
    a: Annotated[str | None, typer.Option("--a", metavar="VALUE", help="Store mode: the label value of set a.")]
    = None,
    b: Annotated[str | None, typer.Option("--b", metavar="VALUE", help="Store mode: the label value of set b.")]
    = None,
    contrast: Annotated[str | None, typer.Option("--contrast", metavar="COL=A:B",
                                                 help="Shorthand for --label COL --a A --b B.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Row filter for both sets, e.g. stream=cond "
                                                                    "(repeatable).")] = None,
    hookpoint: opt.Hookpoints = None,
    pooling: Annotated[str | None, typer.Option(help="item (mean of each item's frames) or frame.")] = None,
    n_permutations: Annotated[int | None, typer.Option(help="Label permutations for the p-values (0: none).")]
    = None,
    prompts_a: Annotated[Path | None, typer.Option("--prompts-a", help="Prompt mode: prompts of set a (.txt, one "
                                                                       "per line, or a manifest).")] = None,
    prompts_b: Annotated[Path | None, typer.Option("--prompts-b", help="Prompt mode: prompts of set b.")] = None,
    prompt_a: Annotated[list[str] | None, typer.Option("--prompt-a", help="Prompt mode: a prompt of set a "
                                                                          "(repeatable).")] = None,
    prompt_b: Annotated[list[str] | None, typer.Option("--prompt-b", help="Prompt mode: a prompt of set b "
                                                                          "(repeatable).")] = None,
    model: opt.Model = None,
    concepts: opt.Concepts = None,
    device: Annotated[str | None, typer.Option(help="Prompt mode: auto, cpu, cuda, cuda:N or mps.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Prompt mode: model precision fp32, fp16 or bf16.")] = None,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Prompt mode: seconds per generated "
                                                                          "clip.")] = None,
    samples_per_prompt: Annotated[int | None, typer.Option(help="Prompt mode: clips per prompt.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the permutations (and of generation).")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Do two sets look different inside the model? Per layer: cross- vs within-set cosines (raw and centred),
    standardised separation, a permutation p-value, and mean_a - mean_b saved for steering.

    Store mode: STORE --label COL --a A --b B (or --contrast COL=A:B) compares the items with COL=A and COL=B.

    Prompt mode: --prompts-a FILE --prompts-b FILE (or repeated --prompt-a/--prompt-b TEXT) --model M.
    Every prompt is generated into OUT/store (label set=a/b); the conditional stream is compared.

    Steer with the result: musicsae steer generate --file OUT/directions.safetensors
    """
    from ..analysis.config import CompareConfig

    label, a, b = contrast_sets(contrast, label, a, b)
    flags = {"label": label, "a": a, "b": b, "where": where, "hookpoints": split_csv(hookpoint), "pooling": pooling,
             "n_permutations": n_permutations, "seed": seed, "prompts_a_file": prompts_a and str(prompts_a),
             "prompts_b_file": prompts_b and str(prompts_b), "prompts_a": prompt_a, "prompts_b": prompt_b,
             "extract.model": model, "extract.concepts": concepts, "extract.device": device,
             "extract.dtype": dtype, "extract.duration_s": duration_s,
             "extract.samples_per_prompt": samples_per_prompt, "extract.seed": seed}
    cfg = resolve(CompareConfig, "analyze", config, set_, flags, dry_run, ui)
    from ..analysis.compare import compare as run

    ui.show(run(store, out, cfg, overwrite, ui.progress), out=out)


@command(app, "separation", config=f"{ANALYSIS}:SeparationConfig", group="analyze", keys={"label": "labels"},
         examples=[
             "musicsae analyze separation latents/ -l pitch_class -l bpm -o sep/",
             "musicsae analyze separation store/ --sae runs/topk -l genre --pooling mean -o sep/",
             "musicsae analyze separation store/ --hookpoint layers.12 -l genre -c tiny -o sep/"])
def separation(
    store: Annotated[Path, typer.Argument(help="Activation store, or a latent store from `sae encode`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (JSON report, CSV/NPZ tables, PNGs).")],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", metavar="COL",
                                                    help="Label column (repeatable or comma-separated).")] = None,
    config: ConfigOpt = None,
    set_: opt.Set = None,
    sae: Annotated[str | None, typer.Option(help="SAE folder or run: analyse its latents (encoded on the fly "
                                                 "from an activation store).")] = None,
    member: opt.Member = None,
    allow_other_model: opt.AllowOtherModel = False,
    hookpoint: SingleHookpointOpt = None,
    where: opt.Where = None,
    pooling: Annotated[str | None, typer.Option(help="frame, or mean/max over each item's frames.")] = None,
    task: Annotated[str | None, typer.Option(help="auto, classification or regression.")] = None,
    folds: Annotated[int | None, typer.Option(help="Cross-validation folds (grouped, stratified).")] = None,
    max_rows: Annotated[int | None, typer.Option(help="Analyse a stratified sample of at most this many.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of samples, splits, forests and projections.")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Top latents per class (mean difference, AUROC), MI, silhouettes, grouped CV forests, t-SNE and UMAP."""
    from ..analysis.config import SeparationConfig

    flags = {"labels": label, "sae": sae, "member": member, "allow_other_model": allow_other_model or None,
             "hookpoint": hookpoint, "where": where,
             "pooling": pooling, "task": task, "folds": folds, "max_rows": max_rows, "seed": seed}
    cfg = resolve(SeparationConfig, "analyze", config, set_, flags, dry_run, ui)
    from ..analysis.separation import separation as run

    res = run(store, out, cfg, overwrite, ui.progress)
    res["phase_elapsed_s"] = res.pop("timings_s", None)
    feats, samp = res["features"], res["sampling"]
    lines = [str(out), f"{samp['samples']} samples x {feats['width']} {feats['kind']} of {feats['hookpoint']} "
                         f"(pooling {samp['pooling']}, {res['phase_elapsed_s']['total']:.1f} s)"]
    for name, r in res["labels"].items():
        lines.append(f"{name} ({r['task']}, {len(r['classes'])} classes, {r['samples']} samples):")
        for cls, top in list(r.get("latents", {}).get("per_class", {}).items())[:12]:
            best = ", ".join(f"{t['latent']} ({t['auroc']:.2f})" for t in top["by_auroc"][:3])
            lines.append(f"  {cls}: top by AUROC {best}")
        sil = r.get("silhouette")
        if sil and "mean" in sil:
            lines.append(f"  silhouette {sil['mean']:.3f} ({sil['metric']}, {sil['samples']} samples): "
                         f"{sil['share_below_-0.1']:.0%} below -0.1, {sil['share_above_0.1']:.0%} above 0.1")
        for t, models in r.get("cv", {}).get("summary", {}).items():
            metric = "balanced_accuracy" if t == "classification" else "r2"
            scores = ", ".join(f"{m} {v[metric]['mean']:.3f}" for m, v in models.items())
            lines.append(f"  {t} {metric}: {scores}")
    ui.result(res, lines, out=out)


@command(app, "features", config=f"{ANALYSIS}:FeaturesConfig", group="analyze",
         keys={"latent": "latents", "top": "n", "by": "by_label", "frames": "top_k", "duration_s": "clip_s",
               "label": "labels", "probe": "probes"},
         aliases={"--latents": "--latent", "--by-label": "--by", "--top-k": "--frames", "--clip-s": "--duration-s",
                  "--labels": "--label", "--probes": "--probe", "--top-density": ("--select", "density", "--top"),
                  "--random": ("--select", "random", "--top")}, examples=[
             "musicsae analyze features store/ --sae runs/topk -o dash/",
             "musicsae analyze features latents/ --sae runs/topk --by pitch_class --top 2 --probe probes/ -o dash/",
             "musicsae analyze features store/ --sae runs/topk --latent 3,17,42 --frames 8 --duration-s 2 -o dash/",
             "musicsae analyze features store/ --sae runs/topk --item notes-C4-piano-000@0 -o item-view/"])
def features(
    store: Annotated[Path, typer.Argument(help="Activation store (latents encoded on the fly with --sae), or a latent "
                                               "store from `sae encode`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: index.html, latents/*.html, audio/, plots/, "
                                                          "features.json (or, with --item, items/ITEM.png/.csv).")],
    config: ConfigOpt = None,
    set_: opt.Set = None,
    sae: Annotated[str | None, typer.Option(help="SAE folder or training run (optional for a latent store; needed "
                                                 "for --probe).")] = None,
    member: opt.Member = None,
    allow_other_model: opt.AllowOtherModel = False,
    hookpoint: SingleHookpointOpt = None,
    where: opt.Where = None,
    select: Annotated[str | None, typer.Option(help="Which latents: density (most often active), random, label "
                                                    "(with --by) or latents (with --latent).")] = None,
    latent: Annotated[list[str] | None, typer.Option("--latent", help="Show these latents, e.g. 3,17,42 "
                                                                      "(repeatable).")] = None,
    top: Annotated[int | None, typer.Option(help="How many latents (per value of --by).")] = None,
    by: Annotated[str | None, typer.Option("--by", metavar="COL", help="Per value of COL, the --top latents with the "
                                                                       "largest mean-activation difference (its "
                                                                       "frames minus all others).")] = None,
    frames: Annotated[int | None, typer.Option(help="Top activating frames (with clips) per latent.")] = None,
    duration_s: Annotated[float | None, typer.Option("--duration-s", help="Seconds of audio per clip, centred on "
                                                                          "the frame.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", metavar="COL", help="Label columns for "
                                                    "co-occurrence (repeatable or comma list; default: the "
                                                    "categorical ones).")] = None,
    probe: Annotated[list[str] | None, typer.Option("--probe", metavar="DIR",
                                                    help="Probes folder: nearest probe directions of each "
                                                         "latent's decoder row (repeatable).")] = None,
    item: Annotated[str | None, typer.Option(metavar="ITEM_ID", help="Item view instead of the dashboard: the "
                                                                     "latents of each frame of this item (printed, "
                                                                     "items/ITEM.png heatmap, items/ITEM.csv).")]
    = None,
    device: opt.Device = None,
    seed: Annotated[int | None, typer.Option(help="Seed of --select random.")] = None,
    overwrite: opt.Overwrite = False,
    dry_run: opt.DryRun = False,
    *,
    ui: opt.UI,
) -> None:
    """Static HTML dashboard of SAE latents: density, histogram, top frames with audio, label lift, nearest probes.

    Opens from disk (OUT/index.html), no server. Default selection: the 16 most frequently active latents.
    With --item ITEM_ID only the item view is written (a lighter mode): which latents fire on each frame.
    """
    from ..analysis.config import FeaturesConfig

    flags = {"sae": sae, "member": member, "allow_other_model": allow_other_model or None, "hookpoint": hookpoint,
             "where": where, "latents": split_csv(latent), "select": latent_selection(select, latent, by),
             "n": top, "by_label": by, "top_k": frames, "clip_s": duration_s, "labels": split_csv(label),
             "probes": probe, "item": item, "device": device, "seed": seed}
    cfg = resolve(FeaturesConfig, "analyze", config, set_, flags, dry_run, ui)
    from ..analysis.features import analyze_features

    res = analyze_features(store, out, cfg, overwrite, ui.progress)
    ui.result(*(_item_view(res, cfg.per_frame) if res["mode"] == "item" else _dashboard(res)), out=out)


def _item_view(res: dict, per_frame: int) -> tuple[dict, list[str]]:
    """`analyze features --item`: the latents of each frame of the item."""
    lines = [f"{res['heatmap']}  {res['csv']}",
             f"item {res['item_id']}: {res['n_frames']} frames, {res['latents_active']} latents active; "
             f"top {per_frame} per frame (latent (value)):"]
    for f in res["frames"]:
        when = f"{f['time_s']:8.3f} s" if f["time_s"] is not None else "        "
        fired = ", ".join(f"{x['latent']} ({x['value']:.3g})" for x in f["latents"]) or "-"
        lines.append(f"  {when}  frame {f['frame']:>5}: {fired}")
    return res, lines


def _dashboard(res: dict) -> tuple[dict, list[str]]:
    """`analyze features`: the dashboard's index and one line per latent shown."""
    res["index_html"] = res.pop("index")
    lines = [res["index_html"], f"{len(res['latents'])} of {res['width']} latents over {res['n_rows']} frames of "
                                f"{res['hookpoint']}: {res['selection']['description']}",
             (f"{res['piano_rolls']} piano rolls of the notes around the top events (no audio: symbolic rows) "
              if res.get("piano_rolls") and not res["audio"]["clips"] else
              f"{res['audio']['clips']} clips written, {res['audio']['unavailable']} unavailable ")
             + f"({res['elapsed_s']:.1f} s)"]
    for e in res["latents"]:
        tops = ", ".join(f"{t['column']}={t['value']} (lift {t['lift']:.2f})" for t in e["top_labels"])
        probe = e["nearest_probe"]
        near = f"; probe {probe['label']}{'=' + str(probe['class']) if probe['class'] is not None else ''} " \
               f"(cos {probe['cosine']:.3f})" if probe else ""
        mean = f"{e['mean_active']:.4g}" if e["mean_active"] is not None else "-"
        position = f"; position feature (every top frame at frame {e['position_frame']})" \
            if e.get("position_feature") else ""
        lines.append(f"  latent {e['latent']}: density {e['density']:.4g}, mean {mean}"
                     f"{'; ' + tops if tops else ''}{near}{position}")
    lines += [f"note: {n}" for n in res["probe_notes"]]
    return res, lines


def contrast_sets(contrast: str | None, label: str | None, a: str | None, b: str | None) -> tuple:
    """`analyze compare`: (label, a, b) from --contrast COL=A:B, or as given by --label/--a/--b (never both)."""
    if contrast is None:
        return label, a, b
    from ..errors import UsageError

    if any(v is not None for v in (label, a, b)):
        raise UsageError("--contrast is shorthand for --label/--a/--b; pass one or the other",
                         "e.g. --contrast concept=notes:tempos")
    from ..analysis.compare import parse_contrast

    return parse_contrast(contrast)


def latent_selection(select: str | None, latent: list[str] | None, by: str | None) -> str | None:
    """`analyze features`: the --select mode, implied by --latent (latents) or --by (label); refuses two."""
    implied = [(name, kind) for name, kind, v in (("--latent", "latents", latent), ("--by", "label", by)) if v]
    if len(implied) > 1 or (implied and select not in (None, implied[0][1])):
        from ..errors import UsageError

        given = [f"{n}" for n, _ in implied] + ([f"--select {select}"] if select else [])
        raise UsageError(f"choose one latent selection, not {' and '.join(given)}",
                         "--select density|random [--top N], --latent 3,17,42, or --by COL [--top N]")
    return implied[0][1] if implied else select
