"""Do two sets of items look different inside the model? Per-layer cosines, separation and a permutation test.

The sets are two values of a store label (store mode) or two lists of prompts generated here (prompt mode: one
store with a `set` label a/b is written inside the output, and only the conditional stream is compared).
Per hookpoint, on pooled vectors (float64):

- cosines between every a and every b sample (cross-set) and between the pairs i<j within each set (the
  reference a cross-set value must be compared with): mean, std and 5/50/95% quantiles, both raw and "centred"
  (after subtracting the mean of all a and b samples: raw cosines of residual-stream vectors are dominated by
  a direction every item shares, so they are all close to 1);
- the cosine between the set means, ||mean_a - mean_b||, and the standardised separation: that norm divided
  by the pooled within-set RMS distance to the set mean;
- a seeded label-permutation test of ||mean_a - mean_b|| (p = (1 + #null >= observed) / (1 + permutations))
  that moves whole groups (the store's `group` column: all windows of one track) between the sets, since
  windows of one track are not independent; a group holding samples of both sets has its samples shuffled
  within itself (a paired comparison) while the other groups move as units;
- the difference-of-means direction mean_a - mean_b (float32), saved for `musicsae steer generate --file`.

This module is the service (modes, checks, writing the output); the statistics live in compare_stats.py, reading
the two sets from a store in compare_data.py, the figure in compare_plots.py.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import check_output, new_manifest, staged_directory, write_config, write_csv_rows, write_json
from ..errors import ConfigError, InputError, UsageError
from ..progress import ProgressFactory, no_progress
from ..results import ABSENT, Result
from .compare_data import Sets, load_sets
from .compare_plots import plot_compare as _plot
from .compare_stats import (
    compare_sets,
    grouped_permutation_masks,
    permutation_chunks,
    permutation_masks,  # noqa: F401 (re-exported)
)
from .config import CompareConfig

log = logging.getLogger("musicsae")
FORMAT_VERSION = 1
DIRECTIONS_FILE = "directions.safetensors"
STORE_DIR = "store"
SET_LABEL = "set"
NOTES = [
    "Raw cosines of residual-stream vectors are dominated by a direction shared by every item, so they sit close "
    "to 1 for any pair; the centred cosines subtract the mean of all a and b samples and show what tells the "
    "sets apart. Compare the cross-set value (ab) with the within-set values (aa, bb), never with 1.",
    "separation = ||mean_a - mean_b|| / pooled within-set RMS distance to the set mean (divisor n_a + n_b - 2).",
    "p_value: label-permutation test of ||mean_a - mean_b||, (1 + #permutations >= observed) / "
    "(1 + n_permutations), or exact over every split when there are no more splits than n_permutations "
    "(small sets: the smallest possible p is then 1 / #splits); one test per hookpoint, not corrected for "
    "testing several hookpoints.",
    "permutation_unit: what the test moves between the sets. group: every sample of a group (group_column, a "
    "track) moves together, so near-identical windows of one track cannot pass for independent evidence; a "
    "group holding samples of both sets (mixed_groups) keeps its counts and shuffles its samples within itself. "
    "item: items move independently (no group column). permutation.units counts the groups (or items), "
    "permutation.distinct_permutations the relabellings possible.",
    "directions.safetensors holds mean_a - mean_b per hookpoint in raw activation space (float32): a positive "
    "steering strength moves generation towards set a.",
]
FRAME_NOTE = ("frame pooling: frames of one item are not independent, so within-set cosines include pairs from "
              "the same item; the permutation test moves the frames of a group (or item) together, but prefer "
              "item pooling for inference.")
FEW_PERMUTATIONS = 20  # below this many distinct relabellings the test cannot reach p < 0.05


@dataclass(kw_only=True)
class CompareResult(Result):
    """What `analyze compare` reports: per hookpoint the cosines, separation and p-value, and the directions file."""

    out: str
    mode: str  # store or prompts
    store: str
    prompts: dict[str, list[dict]] = ABSENT  # prompt mode: set -> prompt_id, text
    generation: dict = ABSENT  # prompt mode: clips and rows generated, seconds
    model: Any
    label: str
    a: str
    b: str
    where: list[str]
    stream: dict | None
    pooling: str
    n_a: int
    n_b: int
    n_a_available: int
    n_b_available: int
    hookpoints: list[str]
    seed: int
    n_permutations: int
    permutation_unit: str | None
    permutation_units: int | None
    permutation: dict
    directions: str
    layers: list[dict]
    notes: list[str]
    elapsed_s: float

    def lines(self) -> list[str]:
        lines = [self.out, f"{self.label}: {self.a} (a, {self.n_a}) vs {self.b} (b, {self.n_b}), {self.pooling} "
                           f"pooling, {len(self.hookpoints)} hookpoints, {self.n_permutations} permutations "
                           f"({self.elapsed_s:.1f} s)"]
        if self.permutation_unit:
            mixed = self.permutation.get("mixed_groups") if self.permutation else None
            lines.append(f"  permutation test over whole {self.permutation_unit}s ({self.permutation_units} units"
                         + (f", {mixed} holding both sets" if mixed else "") + ")")
        lines.append("  hookpoint: cosine cross vs within a/b (raw | centred), separation, p-value")
        for r in self.layers:
            sep = "n/a" if r["separation"] is None else f"{r['separation']:.2f}"
            p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
            lines.append(f"  {r['hookpoint']}: {r['cos_ab_mean']:.3f} vs {r['cos_aa_mean']:.3f}/"
                         f"{r['cos_bb_mean']:.3f} | {r['centred_cos_ab_mean']:+.3f} vs "
                         f"{r['centred_cos_aa_mean']:+.3f}/{r['centred_cos_bb_mean']:+.3f}, separation {sep}, p={p}")
        lines.append(f"direction mean_a - mean_b per hookpoint: {self.directions} (musicsae steer generate --file)")
        return lines


# -- the command -----------------------------------------------------------------------------------------------
def parse_contrast(text: str) -> tuple[str, str, str]:
    """'label=a:b' -> (label, a, b), as `musicsae steer generate --contrast` writes it."""
    label, sep, values = (text or "").partition("=")
    a, sep2, b = values.partition(":")
    if not (sep and sep2 and label.strip() and a.strip() and b.strip()):
        raise UsageError(f"--contrast expects COL=a:b, got {text!r}", "e.g. --contrast concept=notes:tempos")
    return label.strip(), a.strip(), b.strip()


def compare(store: str | Path | None, out: str | Path, cfg: CompareConfig, overwrite: bool = False,
            progress: ProgressFactory = no_progress, adapter=None) -> CompareResult:
    """Compare the two sets of `cfg` (store mode with `store`, else prompt mode); write the results to `out`."""
    started = time.perf_counter()
    _check_mode(store, cfg)
    check_output(out, overwrite)  # fail before any reading or generation
    if cfg.prompt_mode:
        return _prompt_mode(out, cfg, overwrite, progress, adapter, started)
    from ..store import ActivationStore

    opened = ActivationStore.open(store)
    sets = load_sets(opened, cfg.label, cfg.a, cfg.b, cfg, progress)
    record = {"mode": "store", "store": str(store)}
    with staged_directory(out, overwrite) as stage:
        res = _analyse_and_write(stage, out, opened, sets, cfg, record, progress)
    return CompareResult(**res, elapsed_s=round(time.perf_counter() - started, 3))


def _check_mode(store, cfg: CompareConfig) -> None:
    if cfg.prompt_mode and store is not None:
        raise UsageError("pass either STORE (store mode) or prompts (--prompts-a/--prompts-b), not both",
                         "see `musicsae analyze compare --help`")
    if not cfg.prompt_mode and store is None:
        raise UsageError("nothing to compare: pass STORE with --label COL --a VALUE --b VALUE, or "
                         "--prompts-a FILE --prompts-b FILE", "see `musicsae analyze compare --help`")
    if cfg.prompt_mode:
        given = [k for k in ("label", "a", "b") if getattr(cfg, k) is not None]
        if given:
            raise UsageError(f"{', '.join('--' + k for k in given)}: store-mode options given in prompt mode",
                             f"prompt mode labels the generated sets itself ('{SET_LABEL}' = a / b)")
        if cfg.extract.stream == "uncond":
            raise ConfigError("prompt mode compares the conditional stream, but extract.stream is uncond",
                              "set extract.stream to cond or both")
        return
    missing = [k for k in ("label", "a", "b") if not getattr(cfg, k)]
    if missing:
        raise UsageError(f"store mode needs --label COL --a VALUE --b VALUE (missing: "
                         f"{', '.join('--' + k for k in missing)})", "or the shorthand --contrast COL=a:b")
    if cfg.a == cfg.b:
        raise UsageError(f"--a and --b are the same value ({cfg.a!r})", "compare two different values")


# -- analysis and output ---------------------------------------------------------------------------------------
def _analyse_and_write(stage: Path, out, store, sets: Sets, cfg: CompareConfig, record: dict, progress,
                       extra_files: tuple[str, ...] = ()) -> dict:
    from safetensors.numpy import save_file

    n_a, n_b = next(iter(sets.xa.values())).shape[0], next(iter(sets.xb.values())).shape[0]
    for name, n in (("a", n_a), ("b", n_b)):
        if sets.available[name] > n:
            log.warning("set %s: using a seeded sample of %d of %d %s (max_samples)", name, n,
                        sets.available[name], "items" if cfg.pooling == "item" else "frames")
    masks, exact, permutation = _permutations(sets, cfg)
    layers, directions = [], {}
    # one step per hookpoint's cosines, and one per chunk of its permutations
    with progress("Comparing", len(sets.hookpoints) * (1 + permutation_chunks(masks))) as bar:
        for li, hp in enumerate(sets.hookpoints):
            row, direction = compare_sets(sets.xa[hp], sets.xb[hp], masks, exact, bar)
            layers.append({"hookpoint": hp, "layer": li, **row})
            directions[hp] = np.ascontiguousarray(direction)
            bar.advance(1)
    config = cfg.model_dump(mode="json")
    notes = NOTES + ([FRAME_NOTE] if cfg.pooling == "frame" else [])
    result = {"out": str(out), **record, "model": store.model, "label": sets.label, "a": sets.a, "b": sets.b,
              "where": sets.where, "stream": sets.stream, "pooling": cfg.pooling, "n_a": n_a, "n_b": n_b,
              "n_a_available": sets.available["a"], "n_b_available": sets.available["b"],
              "hookpoints": sets.hookpoints, "seed": cfg.seed, "n_permutations": cfg.n_permutations,
              "permutation_unit": permutation["unit"], "permutation_units": permutation["units"],
              "permutation": permutation,
              "directions": str(Path(out) / DIRECTIONS_FILE), "layers": layers, "notes": notes}
    files = ["compare.json", "layers.csv", DIRECTIONS_FILE, "compare.png", *extra_files]
    save_file(directions, str(stage / DIRECTIONS_FILE),
              metadata={"kind": "difference of means", "direction": f"mean({sets.label}={sets.a}) - "
                        f"mean({sets.label}={sets.b})", "pooling": cfg.pooling, "store": str(record.get("store"))})
    write_csv_rows(stage / "layers.csv", layers)
    _plot(stage / "compare.png", layers, sets)
    write_json(stage / "compare.json", {**result, "items_a": sets.items_a, "items_b": sets.items_b,
                                        "config": config})
    write_config(stage, config)
    write_json(stage / "manifest.json", new_manifest("compare", FORMAT_VERSION, config, mode=record["mode"],
                                                     store=str(record.get("store")), model=store.model,
                                                     label=sets.label, a=sets.a, b=sets.b, n_a=n_a, n_b=n_b,
                                                     where=sets.where, stream=sets.stream,
                                                     hookpoints=sets.hookpoints, files=files))
    return result


def _permutations(sets: Sets, cfg: CompareConfig) -> tuple[np.ndarray | None, bool, dict]:
    """(masks, exact, record) of the permutation test: whole groups move between the sets (see NOTES)."""
    unit = "item" if sets.group_column == "item_id" else "group"
    if not cfg.n_permutations:
        return None, False, {"unit": None, "units": None, "column": sets.group_column}
    masks, exact, record = grouped_permutation_masks(sets.groups_a, sets.groups_b, cfg.n_permutations, cfg.seed)
    record = {"unit": unit, "column": sets.group_column, **record, "exact": exact}
    distinct = record["distinct_permutations"]
    if record["mixed_groups"]:
        log.warning("%d of %d groups ('%s') hold samples of both sets (e.g. %s): the permutation test shuffles "
                    "their samples within each such group and moves the other groups whole", record["mixed_groups"],
                    record["units"], sets.group_column, ", ".join(record["mixed_examples"]))
    if isinstance(distinct, int) and distinct < FEW_PERMUTATIONS:
        log.warning("only %d distinct permutations of %d %ss (%d in a, %d in b) are possible, so the smallest "
                    "p-value is %.2g: compare more %ss per set%s", distinct, record["units"], unit,
                    record["units_a"], record["units_b"], 1 / distinct, unit,
                    "" if unit == "item" else " (--set group_column=item_id treats the items of a group as "
                    "independent, which is optimistic)")
    return masks, exact, record


# -- prompt mode ------------------------------------------------------------------------------------------------
def _prompt_mode(out, cfg: CompareConfig, overwrite: bool, progress, adapter,
                 started: float) -> CompareResult:
    from ..extract.generate import extract_generate
    from ..models import load_adapter
    from ..store import ActivationStore

    prompts = {name: _set_prompts(name, cfg) for name in ("a", "b")}
    for name, items in prompts.items():
        n = len(items) * cfg.extract.samples_per_prompt
        if n < 2:
            raise InputError(f"set {name} would have {n} generated clip; the within-set cosines need at least 2",
                             f"give set {name} at least 2 prompts, or raise extract.samples_per_prompt")
    ext = cfg.extract
    if adapter is None:
        from ..concepts.io import with_concepts

        adapter = with_concepts(load_adapter(ext.model, family=ext.family, revision=ext.revision, device=ext.device,
                                             dtype=ext.dtype, seed=ext.seed, options=ext.model_options), ext.concepts)
    hookpoints = adapter.resolve_hookpoints(ext.hookpoints)
    if cfg.hookpoints:
        hookpoints = [hp for hp in hookpoints if any(fnmatch.fnmatchcase(hp, p) for p in cfg.hookpoints)]
        if not hookpoints:
            raise InputError(f"--hookpoint {', '.join(cfg.hookpoints)} match none of the extracted hookpoints",
                             "available: " + ", ".join(adapter.resolve_hookpoints(ext.hookpoints)))
    ext = ext.model_copy(update={"hookpoints": ",".join(hookpoints)})
    where = [*cfg.where, "stream=cond"]
    source = f"{cfg.prompts_a_file or '--prompt-a'} vs {cfg.prompts_b_file or '--prompt-b'}"
    with staged_directory(out, overwrite) as stage:
        gen = extract_generate(prompts["a"] + prompts["b"], stage / STORE_DIR, ext, progress=progress,
                               adapter=adapter, source=source)
        store = ActivationStore.open(stage / STORE_DIR)
        run_cfg = cfg.model_copy(update={"where": where, "hookpoints": hookpoints})
        sets = load_sets(store, SET_LABEL, "a", "b", run_cfg, progress)
        record = {"mode": "prompts", "store": str(Path(out) / STORE_DIR),
                  "prompts": {n: [{"prompt_id": p.prompt_id, "text": p.text} for p in items]
                              for n, items in prompts.items()},
                  "generation": {k: gen[k] for k in ("clips_written", "rows_written", "generated_seconds",
                                                     "elapsed_s")}}
        res = _analyse_and_write(stage, out, store, sets, run_cfg, record, progress, extra_files=(STORE_DIR,))
    return CompareResult(**res, elapsed_s=round(time.perf_counter() - started, 3))


def _set_prompts(name: str, cfg: CompareConfig) -> list:
    """The prompts of set `name` (file first, then the inline ones), ids prefixed and labelled set=name."""
    from ..extract.generate import Prompt, read_prompts

    path = getattr(cfg, f"prompts_{name}_file")
    items = read_prompts(path, cfg.extract.prompt_column) if path else []
    items += [Prompt(f"prompt{i:03d}", text, {}) for i, text in enumerate(getattr(cfg, f"prompts_{name}"))]
    if not items:
        raise UsageError(f"prompt mode: set {name} has no prompts", f"pass --prompts-{name} FILE or --prompt-{name} "
                         "TEXT (each set needs its own)")
    return [Prompt(f"{name}-{p.prompt_id}", p.text, {**p.labels, SET_LABEL: name}) for p in items]
