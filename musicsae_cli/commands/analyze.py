"""`musicsae analyze sensitivity`: how much each layer's activations change under musical perturbations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    AllowOtherModelOpt,
    DeviceOpt,
    DryRunOpt,
    JsonOpt,
    MemberOpt,
    Output,
    OverwriteOpt,
    QuietOpt,
    SetOpt,
    VerboseOpt,
    WhereOpt,
    cli_command,
    config_option,
    resolve,
)

app = typer.Typer(help="Analyse what layers and latents encode: sensitivity, separation, features, comparisons.",
                  no_args_is_help=True)


@app.command("sensitivity")
@cli_command
def sensitivity(
    source: Annotated[Path, typer.Argument(help="Audio: a manifest, a dataset folder or a folder of audio.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (CSV, JSON and one PNG per "
                                                          "perturbation).")],
    config: Annotated[str | None, config_option("analyze")] = None,
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option(help="Hub id, local directory or tiny-musicgen.")] = None,
    layers: Annotated[str | None, typer.Option("--layers", "--hookpoints",
                                               help="Hookpoints: layers.N, layers.A-B, layers.-1, all.")] = None,
    by: Annotated[str | None, typer.Option("--by", metavar="COL",
                                           help="Also aggregate per value of this label column.")] = None,
    max_clips: Annotated[int | None, typer.Option(help="Use at most this many clips.")] = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Per-layer relative change and 1 - cosine under pitch shift, time stretch, gain, noise (with CIs)."""
    o = Output(json_out, quiet, verbose)
    from ..analysis.config import SensitivityConfig

    flags = {"model": model, "hookpoints": layers, "by": by, "max_clips": max_clips, "device": device}
    cfg = resolve(SensitivityConfig, "analyze", config, set_, flags, dry_run, o)
    from ..analysis.sensitivity import sensitivity as run

    res = run(source, out, cfg, overwrite, o.progress)
    lines = [res["out"], f"{res['n_clips']} clips x {len(res['hookpoints'])} hookpoints, perturbations: "
                         f"{', '.join(res['perturbations'])} ({res['elapsed_s']:.1f} s)"]
    for name in res["perturbations"]:
        rows = [r for r in res["summary"] if r["perturbation"] == name]
        peak = max(rows, key=lambda r: r["rel_change_mean"], default=None)
        if peak:
            lines.append(f"  {name}: largest relative change {peak['rel_change_mean']:.3f} at {peak['hookpoint']} "
                         f"(setting {peak['setting']:g})")
    if res["skipped"]:
        lines.append(f"{len(res['skipped'])} skipped:")
        lines += [f"  {s['path']}: {s['reason']}" for s in res["skipped"]]
    o.result(res, lines)


@app.command("compare")
@cli_command
def compare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (compare.json, layers.csv, "
                                                          "directions.safetensors, compare.png).")],
    store: Annotated[Path | None, typer.Argument(help="Store mode: the activation store. Omit it in prompt "
                                                      "mode.")] = None,
    config: Annotated[str | None, config_option("analyze")] = None,
    set_: SetOpt = None,
    label: Annotated[str | None, typer.Option("--label", metavar="COL", help="Store mode: the label column.")]
    = None,
    a: Annotated[str | None, typer.Option("--a", metavar="VALUE", help="Store mode: the label value of set a.")]
    = None,
    b: Annotated[str | None, typer.Option("--b", metavar="VALUE", help="Store mode: the label value of set b.")]
    = None,
    contrast: Annotated[str | None, typer.Option("--contrast", metavar="COL=A:B",
                                                 help="Shorthand for --label COL --a A --b B.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Row filter for both sets, e.g. stream=cond "
                                                                    "(repeatable).")] = None,
    hookpoints: Annotated[list[str] | None, typer.Option(
        "--hookpoints", "--layers", help="Dense hookpoints: names, comma lists or globs (default: all).")] = None,
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
    model: Annotated[str | None, typer.Option(help="Prompt mode: hub id, local directory or tiny-musicgen.")]
    = None,
    device: Annotated[str | None, typer.Option(help="Prompt mode: auto, cpu, cuda, cuda:N or mps.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Prompt mode: model precision fp32, fp16 or bf16.")] = None,
    duration: Annotated[float | None, typer.Option(help="Prompt mode: seconds per generated clip.")] = None,
    samples_per_prompt: Annotated[int | None, typer.Option(help="Prompt mode: clips per prompt.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the permutations (and of generation).")] = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Do two sets look different inside the model? Per layer: cross- vs within-set cosines (raw and centred),
    standardised separation, a permutation p-value, and mean_a - mean_b saved for steering.

    Store mode: STORE --label COL --a A --b B (or --contrast COL=A:B) compares the items with COL=A and COL=B.

    Prompt mode: --prompts-a FILE --prompts-b FILE (or repeated --prompt-a/--prompt-b TEXT) --model M.
    Every prompt is generated into OUT/store (label set=a/b); the conditional stream is compared.

    Steer with the result: musicsae steer generate --file OUT/directions.safetensors
    """
    o = Output(json_out, quiet, verbose)
    from ..analysis.config import CompareConfig
    from ..errors import UsageError

    if contrast is not None:
        if any(v is not None for v in (label, a, b)):
            raise UsageError("--contrast is shorthand for --label/--a/--b; pass one or the other",
                             "e.g. --contrast concept=notes:tempos")
        from ..analysis.compare import parse_contrast

        label, a, b = parse_contrast(contrast)
    flags = {"label": label, "a": a, "b": b, "where": where, "hookpoints": hookpoints, "pooling": pooling,
             "n_permutations": n_permutations, "seed": seed, "prompts_a_file": prompts_a and str(prompts_a),
             "prompts_b_file": prompts_b and str(prompts_b), "prompts_a": prompt_a, "prompts_b": prompt_b,
             "extract.model": model, "extract.device": device, "extract.dtype": dtype, "extract.duration_s": duration,
             "extract.samples_per_prompt": samples_per_prompt, "extract.seed": seed}
    cfg = resolve(CompareConfig, "analyze", config, set_, flags, dry_run, o)
    from ..analysis.compare import compare as run

    res = run(store, out, cfg, overwrite, o.progress)
    lines = [res["out"], f"{res['label']}: {res['a']} (a, {res['n_a']}) vs {res['b']} (b, {res['n_b']}), "
                         f"{res['pooling']} pooling, {len(res['hookpoints'])} hookpoints, "
                         f"{res['n_permutations']} permutations ({res['elapsed_s']:.1f} s)",
             "  hookpoint: cosine cross vs within a/b (raw | centred), separation, p-value"]
    for r in res["layers"]:
        sep = "n/a" if r["separation"] is None else f"{r['separation']:.2f}"
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(f"  {r['hookpoint']}: {r['cos_ab_mean']:.3f} vs {r['cos_aa_mean']:.3f}/{r['cos_bb_mean']:.3f} "
                     f"| {r['centred_cos_ab_mean']:+.3f} vs {r['centred_cos_aa_mean']:+.3f}/"
                     f"{r['centred_cos_bb_mean']:+.3f}, separation {sep}, p={p}")
    lines.append(f"direction mean_a - mean_b per hookpoint: {res['directions']} (musicsae steer generate --file)")
    o.result(res, lines)


@app.command("separation")
@cli_command
def separation(
    store: Annotated[Path, typer.Argument(help="Activation store, or a latent store from `sae encode`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (JSON report, CSV/NPZ tables, PNGs).")],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", metavar="COL",
                                                    help="Label column (repeatable or comma-separated).")] = None,
    config: Annotated[str | None, config_option("analyze")] = None,
    set_: SetOpt = None,
    sae: Annotated[str | None, typer.Option(help="SAE folder or run: analyse its latents (encoded on the fly "
                                                 "from an activation store).")] = None,
    member: MemberOpt = None,
    allow_other_model: AllowOtherModelOpt = False,
    hookpoint: Annotated[str | None, typer.Option(help="Store hookpoint (default: the SAE's or the only one).")]
    = None,
    where: WhereOpt = None,
    pooling: Annotated[str | None, typer.Option(help="frame (default), or mean/max over each item's frames.")]
    = None,
    task: Annotated[str | None, typer.Option(help="auto, classification or regression.")] = None,
    folds: Annotated[int | None, typer.Option(help="Cross-validation folds (grouped, stratified).")] = None,
    max_rows: Annotated[int | None, typer.Option(help="Analyse a stratified sample of at most this many.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of samples, splits, forests and projections.")] = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Top latents per class (mean difference, AUROC), MI, silhouettes, grouped CV forests, t-SNE and UMAP."""
    o = Output(json_out, quiet, verbose)
    from ..analysis.config import SeparationConfig

    flags = {"labels": label, "sae": sae, "member": member, "allow_other_model": allow_other_model or None,
             "hookpoint": hookpoint, "where": where,
             "pooling": pooling, "task": task, "folds": folds, "max_rows": max_rows, "seed": seed}
    cfg = resolve(SeparationConfig, "analyze", config, set_, flags, dry_run, o)
    from ..analysis.separation import separation as run

    res = run(store, out, cfg, overwrite, o.progress)
    feats, samp = res["features"], res["sampling"]
    lines = [res["out"], f"{samp['samples']} samples x {feats['width']} {feats['kind']} of {feats['hookpoint']} "
                         f"(pooling {samp['pooling']}, {res['timings_s']['total']:.1f} s)"]
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
    o.result(res, lines)


@app.command("features")
@cli_command
def features(
    store: Annotated[Path, typer.Argument(help="Activation store (latents encoded on the fly with --sae), or a latent "
                                               "store from `sae encode`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: index.html, latents/*.html, audio/, plots/, "
                                                          "features.json (or, with --item, items/ITEM.png/.csv).")],
    config: Annotated[str | None, config_option("analyze")] = None,
    set_: SetOpt = None,
    sae: Annotated[str | None, typer.Option(help="SAE folder or training run (optional for a latent store; needed "
                                                 "for --probes).")] = None,
    member: MemberOpt = None,
    allow_other_model: AllowOtherModelOpt = False,
    hookpoint: Annotated[str | None, typer.Option(help="Store hookpoint (default: the SAE's).")] = None,
    where: WhereOpt = None,
    latents: Annotated[str | None, typer.Option(help="Show these latents, e.g. 3,17,42.")] = None,
    top_density: Annotated[int | None, typer.Option("--top-density", metavar="N",
                                                    help="Show the N most frequently active latents (default 16).")]
    = None,
    random: Annotated[int | None, typer.Option("--random", metavar="N",
                                               help="Show N active latents drawn at random (--seed).")] = None,
    by_label: Annotated[str | None, typer.Option("--by-label", metavar="COL",
                                                 help="Per value of COL, show the --top latents with the largest "
                                                      "mean-activation difference (its frames minus all others).")]
    = None,
    top: Annotated[int | None, typer.Option(metavar="N", help="How many latents (per label value with "
                                                              "--by-label).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Top activating frames (with clips) per latent.")]
    = None,
    clip_s: Annotated[float | None, typer.Option("--clip-s", help="Seconds of audio per clip, centred on the "
                                                                  "frame.")] = None,
    labels: Annotated[str | None, typer.Option(help="Label columns for co-occurrence, e.g. genre,bpm (default: "
                                                    "the categorical ones).")] = None,
    probes: Annotated[list[str] | None, typer.Option("--probes", metavar="DIR",
                                                     help="Probes folder: nearest probe directions of each "
                                                          "latent's decoder row (repeatable).")] = None,
    item: Annotated[str | None, typer.Option(metavar="ITEM_ID", help="Item view instead of the dashboard: the "
                                                                     "latents of each frame of this item (printed, "
                                                                     "items/ITEM.png heatmap, items/ITEM.csv).")]
    = None,
    device: DeviceOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed of --random.")] = None,
    overwrite: OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Static HTML dashboard of SAE latents: density, histogram, top frames with audio, label lift, nearest probes.

    Opens from disk (OUT/index.html), no server. Default selection: the 16 most frequently active latents.
    With --item ITEM_ID only the item view is written (a lighter mode): which latents fire on each frame.
    """
    o = Output(json_out, quiet, verbose)
    from ..analysis.config import FeaturesConfig
    from ..errors import UsageError

    chosen = [name for name, v in (("--latents", latents), ("--top-density", top_density), ("--random", random),
                                   ("--by-label", by_label)) if v is not None]
    if len(chosen) > 1:
        raise UsageError(f"choose one latent selection, not {' and '.join(chosen)}",
                         "--latents, --top-density N, --random N or --by-label COL [--top N]")
    if top is not None and (top_density is not None or random is not None):
        raise UsageError("--top sets the count that --top-density/--random already give", "pass only one of them")
    select = {"--latents": "latents", "--top-density": "density", "--random": "random", "--by-label": "label"}
    flags = {"sae": sae, "member": member, "allow_other_model": allow_other_model or None, "hookpoint": hookpoint,
             "where": where, "latents": latents,
             "select": select[chosen[0]] if chosen else None, "n": top_density or random or top,
             "by_label": by_label, "top_k": top_k, "clip_s": clip_s, "labels": labels, "probes": probes,
             "item": item, "device": device, "seed": seed}
    cfg = resolve(FeaturesConfig, "analyze", config, set_, flags, dry_run, o)
    from ..analysis.features import analyze_features

    res = analyze_features(store, out, cfg, overwrite, o.progress)
    if res["mode"] == "item":
        lines = [f"{res['heatmap']}  {res['csv']}",
                 f"item {res['item_id']}: {res['n_frames']} frames, {res['latents_active']} latents active; "
                 f"top {cfg.per_frame} per frame (latent (value)):"]
        for f in res["frames"]:
            when = f"{f['time_s']:8.3f} s" if f["time_s"] is not None else "        "
            fired = ", ".join(f"{x['latent']} ({x['value']:.3g})" for x in f["latents"]) or "-"
            lines.append(f"  {when}  frame {f['frame']:>5}: {fired}")
        o.result(res, lines)
        return
    lines = [res["index"], f"{len(res['latents'])} of {res['width']} latents over {res['n_rows']} frames of "
                           f"{res['hookpoint']}: {res['selection']['description']}",
             f"{res['audio']['clips']} clips written, {res['audio']['unavailable']} unavailable "
             f"({res['elapsed_s']:.1f} s)"]
    for e in res["latents"]:
        tops = ", ".join(f"{t['column']}={t['value']} (lift {t['lift']:.2f})" for t in e["top_labels"])
        probe = e["nearest_probe"]
        near = f"; probe {probe['label']}{'=' + str(probe['class']) if probe['class'] is not None else ''} " \
               f"(cos {probe['cosine']:.3f})" if probe else ""
        mean = f"{e['mean_active']:.4g}" if e["mean_active"] is not None else "-"
        lines.append(f"  latent {e['latent']}: density {e['density']:.4g}, mean {mean}"
                     f"{'; ' + tops if tops else ''}{near}")
    lines += [f"note: {n}" for n in res["probe_notes"]]
    o.result(res, lines)
