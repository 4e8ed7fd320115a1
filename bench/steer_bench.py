"""Cost of steering during generation, on a random MusicGen of musicgen-small size (d 1024, 24 layers, 16 heads,
ffn 4096, 4 codebooks x 2048).

    .venv/bin/python bench/steer_bench.py                      # 2 s of audio, batch 1, guidance 3, 3 repeats
    .venv/bin/python bench/steer_bench.py --batch 2 --repeats 5
    .venv/bin/python bench/steer_bench.py --small              # seconds: does it work

Variants, all with the same prompt and sampling seed, run in interleaved rounds after one untimed warm-up round
(medians reported, best in brackets; other processes on a shared machine inflate single runs):
  plain        adapter.generate, no hooks
  probe-both   an add edit (unit direction) at 3 layers, every step, both guidance streams
  probe-cond   the same, conditional stream only (clone + row write)
  relative     relative mode (h + a*||h||*v) at the same 3 layers, both streams
  sae-relu     a latent clamp at one layer through a random ReLU SAE, d_sae 16384 (only the edited latent's
               pre-activation is computed)
  sae-topk     the same with a TopK SAE (k 32): the full encoder matmul, since top-k membership needs every latent
Overhead = median / median(plain) - 1. The goal is <= 5 % per variant.

Then one small `steer sweep` on the same model (strengths 0 and 4, one seed, one random control, a random probe
scoring at the middle layer, a probe judge at the last layer and a data judge fitted on 6 synthesised concept
clips), with its wall time split into generation, re-extraction, scoring, audio embeddings of the clips, the data
judge's fit (reading, embedding and fitting its audio, once) and evaluation (bootstrap statistics and plots);
--no-sweep skips it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract_bench import REAL, SMALL, build_adapter, cpu_ticks  # noqa: E402


def matmul_peak(device, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n^3 matmul: this machine's own yardstick."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def make_variants(adapter, d: int, layers: list[str], sae_layer: str, d_sae: int, seed: int = 0) -> dict:
    """name -> edits for adapter.intervene (plain: none)."""
    import torch

    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.steering.edits import AddEdit, LatentEdit, Schedule

    g = torch.Generator().manual_seed(seed)
    unit = torch.randn(d, generator=g)
    unit = (unit / unit.norm()).to(adapter.device, adapter.dtype)
    every = Schedule()
    variants = {"plain": {},
                "probe-both": {h: AddEdit(unit, 4.0, every, "both", relative=False) for h in layers},
                "probe-cond": {h: AddEdit(unit, 4.0, every, "cond", relative=False) for h in layers},
                "relative": {h: AddEdit(unit, 0.1, every, "both", relative=True) for h in layers}}
    for arch, k in (("relu", None), ("topk", 32)):
        sae = SparseAutoencoder.create(SAESpec(arch=arch, d_in=d, d_sae=d_sae, k=k), seed=seed).to(adapter.device)
        variants[f"sae-{arch}"] = {sae_layer: LatentEdit(sae.eval(), [123], "clamp", [5.0], every, "both")}
    return variants


def sweep_split(adapter, texts: list[str], seconds: float, guidance: float, layer: str, judge: str) -> dict:
    """Run a small steer sweep on `adapter` in a temporary folder; its result (with `timing`)."""
    import tempfile

    import numpy as np

    from musicsae_cli.audio.concepts import make_concept_dataset
    from musicsae_cli.audio.synth import SynthConfig
    from musicsae_cli.probes import ProbeSet
    from musicsae_cli.steering.config import SteerSweepConfig
    from musicsae_cli.steering.sweep import steer_sweep

    rng = np.random.default_rng(0)
    d = adapter.hookpoint_widths[layer]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "direction.npz", **{layer: rng.standard_normal(d).astype(np.float32)})
        probe = ProbeSet(task="classification", label="concept", classes=["notes", "tempos"],
                         hookpoints=[layer, judge], pooling="mean", model=adapter.describe(),
                         weight=rng.standard_normal((2, 2, d)) / np.sqrt(d), bias=np.zeros((2, 2)),
                         mean=np.zeros((2, d)), std=np.ones((2, d)))
        (tmp / "probe").mkdir()
        probe.save(tmp / "probe")
        make_concept_dataset(tmp / "concepts", SynthConfig(concepts=["notes", "tempos"], timbres=["sine"],
                                                           max_per_concept=3, duration_s=1.5))
        cfg = SteerSweepConfig(model=adapter.model_id, prompts=texts, duration_s=seconds, batch_size=len(texts),
                               generation={"guidance_scale": guidance, "top_k": 250}, layers=layer,
                               direction={"file": str(tmp / "direction.npz")}, score_probe=str(tmp / "probe"),
                               score_target="notes", score_hookpoint=layer, strengths=[0, 4], seeds=[0],
                               random_controls=1, judge_probe=str(tmp / "probe"), judge_hookpoint=judge,
                               judge_data=str(tmp / "concepts"), resamples=2000, frechet_resamples=200)
        return steer_sweep(cfg, tmp / "sweep", adapter=adapter)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seconds", type=float, default=2.0, help="audio per clip (default 2)")
    p.add_argument("--batch", type=int, default=1, help="prompts per generation (default 1; rows = 2x with guidance)")
    p.add_argument("--guidance", type=float, default=3.0, help="guidance scale (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--d-sae", type=int, default=16384, help="SAE width (default 16384)")
    p.add_argument("--variants", help="comma-separated subset to run (plain is always included)")
    p.add_argument("--small", action="store_true", help="tiny dimensions: checks the script in seconds")
    p.add_argument("--no-sweep", action="store_true", help="skip the steer sweep timing split")
    a = p.parse_args()
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    device = torch.device(a.device)
    dims = SMALL if a.small else REAL
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    adapter = build_adapter(dims, device, torch.float32)
    build_s = time.perf_counter() - t0
    n_layers, d = dims["layers"], dims["d"]
    layers = [f"layers.{i}" for i in (n_layers // 2 - 1, n_layers // 2, n_layers // 2 + 1)]
    variants = make_variants(adapter, d, layers, f"layers.{n_layers // 2}", a.d_sae if not a.small else 1024)
    if a.variants:
        keep = {"plain", *a.variants.split(",")}
        variants = {k: v for k, v in variants.items() if k in keep}
    texts = (["calm jazz piano with soft drums", "fast rock guitar"] * a.batch)[: a.batch]
    times: dict[str, list[float]] = {name: [] for name in variants}
    steps = None
    ticks0 = cpu_ticks()
    for rnd in range(a.repeats + 1):  # round 0 warms up
        for name, edits in variants.items():
            sync()
            t = time.perf_counter()
            with adapter.intervene(edits):
                res = adapter.generate(texts, a.seconds, [], seed=0, guidance_scale=a.guidance, top_k=250)
            sync()
            if rnd:
                times[name].append(time.perf_counter() - t)
            steps = res.settings["max_new_tokens"]
    ticks = cpu_ticks() - ticks0
    steal = ticks[7] / max(1, ticks.sum())
    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}; fp32 matmul peak {matmul_peak(device):.0f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.2f}; CPU steal during the runs {100 * steal:.1f} %")
    params = sum(p.numel() for p in adapter.model.decoder.parameters()) / 1e6
    print(f"model: random MusicGen d={d}, {n_layers} layers, {dims['heads']} heads, ffn {dims['ffn']}, "
          f"{dims['codes']} codes x 4 books ({params:.1f} M decoder parameters; built in {build_s:.1f} s)")
    print(f"generation: {a.seconds:g} s of audio = {steps} steps, batch {a.batch} ({2 * a.batch} rows with guidance "
          f"{a.guidance:g}), fp32; steered layers {', '.join(layers)}; SAE at layers.{n_layers // 2}, "
          f"d_sae {a.d_sae if not a.small else 1024}; {a.repeats} timed rounds after a warm-up")
    base = statistics.median(times["plain"])
    print(f"{'variant':<12} {'median s':>9} {'best s':>8} {'ms/step':>8} {'overhead':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        over = "" if name == "plain" else f"{100 * (med / base - 1):+8.1f}%"
        print(f"{name:<12} {med:9.3f} {min(ts):8.3f} {1000 * med / steps:8.2f} {over:>9}")
    worst = max(statistics.median(ts) / base - 1 for n, ts in times.items() if n != "plain")
    print(f"worst overhead {100 * worst:+.1f}% (goal <= 5 %)")
    if a.no_sweep:
        return
    res = sweep_split(adapter, texts, a.seconds, a.guidance, f"layers.{n_layers // 2}", f"layers.{n_layers - 1}")
    timing = res["timing"]
    print(f"steer sweep: {res['clips']} clips ({a.seconds:g} s each; strengths 0, 4; 1 seed; 1 random control; "
          f"probe judge at layers.{n_layers - 1}; data judge on 6 concept clips), total {timing['total_s']:.2f} s")
    print(f"{'phase':<13} {'s':>8} {'share':>7}")
    phases = ("generation", "reextraction", "scoring", "embedding", "judge_fit", "evaluation")
    for phase in phases:
        print(f"{phase:<13} {timing[f'{phase}_s']:8.3f} {100 * timing[f'{phase}_s'] / timing['total_s']:6.1f}%")
    rest = timing["total_s"] - sum(timing[f"{k}_s"] for k in phases)
    print(f"{'other':<13} {rest:8.3f} {100 * rest / timing['total_s']:6.1f}%  (loading the probes, the pitch tracker, "
          "directions, writing)")
    print(f"generation per clip {timing['generation_s'] / (res['clips'] / len(texts)):.3f} s per batch of "
          f"{len(texts)} vs the plain variant above {base:.3f} s")


if __name__ == "__main__":
    main()
