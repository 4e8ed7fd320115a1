"""Activation patching's cost: forward passes and seconds per patched hookpoint, against one clean + one corrupt run.

    .venv/bin/python bench/patch_bench.py                  # CREPE-full (real weights) and a musicgen-small-sized
                                                           # random MusicGen, 2 pairs each
    .venv/bin/python bench/patch_bench.py --small          # seconds: does it work (CREPE-tiny, tiny MusicGen)

Per model, `analyze patch` runs both directions (clean -> corrupt, corrupt -> clean) at every hookpoint, no
ablations. The reference, measured in the same run on the same pairs: one plain forward pass of the clean input and
one of the corrupt input (what any patching experiment must run first). The ideal experiment is those two passes
plus one pass per hookpoint per direction, so

  passes / patched run   forward passes (model calls) per patched hookpoint and direction; 1.0 one by one, below
                         1 when patched runs share a pass (batch rows)
  time / ideal           the experiment's time in forward passes (its `forward_s`: recording, patched passes,
                         scoring excluded) over (2 + 2 H) x one plain forward's time; 1.0 is the ideal, below it
                         when sharing a pass is cheaper than separate passes. `seconds` is the whole command
                         (reading the pairs, the model's tokenizer, scoring, writing the tables and heatmap).

Rows: the experiment one patched run per pass (batch 1, the reference way) and batched (8 runs per pass, the
default). CREPE reads a probe at its classifier; MusicGen its own loss on the clean input's tokens.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2 * freq * t)).astype(np.float32)


def write_pairs(root: Path, sr: int, seconds: float, n: int) -> Path:
    import soundfile as sf

    lines = ["clean,corrupt"]
    for i in range(n):
        sf.write(root / f"clean{i}.wav", tone(220.0 * 2 ** (i / 12), seconds, sr), sr)
        sf.write(root / f"corrupt{i}.wav", tone(220.0 * 2 ** ((i + 3) / 12), seconds, sr), sr)
        lines.append(f"clean{i}.wav,corrupt{i}.wav")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def random_probe(root: Path, hookpoint: str, width: int) -> Path:
    from musicsae_cli.probes.model import ProbeSet

    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(12)]
    probes = ProbeSet("classification", "pitch_class", classes, [hookpoint], "frame", {},
                      rng.normal(size=(1, 12, width)), np.zeros((1, 12)), np.zeros((1, width)), np.ones((1, width)))
    (root / "probes").mkdir()
    probes.save(root / "probes")
    return root / "probes"


def bench(name: str, adapter, cfg_kw: dict, pairs: Path, repeats: int) -> None:
    from musicsae_cli.analysis.config import PatchConfig
    from musicsae_cli.analysis.patch import patch
    from musicsae_cli.analysis.patch_metric import Metric
    from musicsae_cli.analysis.patch_pairs import read_pairs

    cfg = PatchConfig(model=adapter.model_id, ablations=[], **cfg_kw)
    hookpoints = adapter.resolve_hookpoints(cfg.hookpoints)
    metric = Metric(cfg, adapter, hookpoints, None if cfg.metric != "probe" else _probes(cfg.probe))
    pair_list, _ = read_pairs(pairs, cfg, adapter)

    def plain():
        for p in pair_list:
            for side in (p.clean, p.corrupt):
                metric.run(side, 1, {})

    plain()  # warm-up
    ref = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plain()
        ref.append((time.perf_counter() - t0) / (2 * len(pair_list)))
    one_pass = float(np.median(ref))
    h = len(hookpoints)
    print(f"\n{name}: {len(pair_list)} pairs x {h} hookpoints x 2 directions; one plain forward "
          f"{one_pass * 1e3:.1f} ms (median of {repeats})")
    print(f"  {'experiment':<22} {'passes':>7} {'runs':>6} {'passes/run':>11} {'seconds':>8} {'forward s':>10} "
          f"{'time/ideal':>11}")
    ideal = (2 + 2 * h) * len(pair_list) * one_pass
    for label, batch in (("one by one (ref)", 1), ("batched (8 per pass)", 8)):
        with tempfile.TemporaryDirectory() as tmp:
            res = patch(pairs, Path(tmp) / "out", cfg.model_copy(update={"batch": batch}), adapter=adapter)
        passes = res["forward_passes"] - 2 * len(pair_list)
        runs = res["patched_runs"] - 2 * len(pair_list)
        print(f"  {label:<22} {res['forward_passes']:>7} {res['patched_runs']:>6} {passes / runs:>11.3f} "
              f"{res['elapsed_s']:>8.2f} {res['forward_s']:>10.2f} {res['forward_s'] / ideal:>11.2f}")


def _probes(path):
    from musicsae_cli.probes.model import ProbeSet

    return ProbeSet.load(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CREPE-tiny and the tiny MusicGen (seconds)")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["crepe", "musicgen"], default=None)
    a = ap.parse_args()
    import torch

    from musicsae_cli.models import load_adapter

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if a.only in (None, "crepe"):
            name = "crepe-tiny" if a.small else "crepe-full"
            adapter = load_adapter(name, device="cpu")
            (root / "crepe").mkdir()
            pairs = write_pairs(root / "crepe", 16000, 1.0, a.pairs)
            probes = random_probe(root / "crepe", "classifier", 360)
            bench(f"{name} (trained weights), 1 s clips, metric probe at the classifier", adapter,
                  {"metric": "probe", "probe": str(probes), "target": "c0"}, pairs, a.repeats)
        if a.only in (None, "musicgen"):
            from extract_bench import REAL, SMALL, build_adapter

            adapter = build_adapter(SMALL if a.small else REAL, torch.device("cpu"), torch.float32)
            (root / "mg").mkdir()
            seconds = 2.0
            pairs = write_pairs(root / "mg", 32000, seconds, a.pairs)
            size = "tiny" if a.small else "musicgen-small-sized"
            bench(f"random {size} MusicGen, {seconds:.0f} s clips, metric loss (log p of the clean tokens)", adapter,
                  {"metric": "loss"}, pairs, a.repeats)


if __name__ == "__main__":
    main()
