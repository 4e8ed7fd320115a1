"""`model train-tiny` with its default settings: wall time per phase and the losses it reaches.

    .venv/bin/python bench/train_tiny_bench.py              # the default training (minutes on 2 CPU cores)
    .venv/bin/python bench/train_tiny_bench.py --fast       # the `fast` preset: seconds, does it work
    .venv/bin/python bench/train_tiny_bench.py --threads 1  # torch threads (default: all cores)

Phases (timed inside the service): codec training, encoding every clip to codes once, text encoder + decoder
training. Baselines from the same run: the random model's validation CE (the same model before its decoder
training) and ln(codebook size), the CE of a uniform guess; and the codec's pitch survival before and after
training. The machine's fp32 matmul peak is printed so the times can be read against what the machine can do.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a square torch matmul (best of `repeats`)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the `fast` preset instead of the defaults")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    import torch

    from musicsae_cli.config import resolve_config
    from musicsae_cli.models.tiny_train import train_tiny
    from musicsae_cli.models.tiny_train_config import TrainTinyConfig
    from musicsae_cli.progress import line_progress

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve_config(TrainTinyConfig, "model", "fast" if args.fast else None, command="train-tiny")
    print(f"machine: {torch.get_num_threads()} torch threads, fp32 matmul peak {matmul_peak():.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_tiny(Path(tmp) / "tiny", cfg, progress=line_progress(interval_s=30))
        wall = time.perf_counter() - t0
    s = res.seconds
    print(f"settings: {'fast preset' if args.fast else 'defaults'}; codec {cfg.codec.steps} + "
          f"{cfg.codec.finetune_steps} steps, decoder "
          f"{cfg.decoder.steps} steps x {cfg.decoder.batch_size} clips; {res.clips['train']} train / "
          f"{res.clips['val']} val clips of {res.clips['frames']} frames; {res.parameters:,} parameters")
    print(f"time: total {wall:.1f} s (codec {s['codec']:.1f} s, encoding {s['encoding']:.1f} s, decoder "
          f"{s['decoder']:.1f} s, the rest {wall - sum(s.values()):.1f} s: synthesis, pitch checks, saving)")
    print(f"decoder: {cfg.decoder.steps / max(s['decoder'], 1e-9):.1f} steps/s; codec: "
          f"{(cfg.codec.steps + cfg.codec.finetune_steps) / max(s['codec'], 1e-9):.2f} steps/s")
    print(f"CE (nats/code): uniform ln({round(math.exp(res.uniform_ce))}) = {res.uniform_ce:.3f}, random model "
          f"{res.random_val_ce:.3f} -> trained: val {res.val_ce:.3f}, train {res.train_ce:.3f} "
          f"(val / random = {res.val_ce / res.random_val_ce:.2f})")
    ps = res.pitch_survival
    print("codec pitch survival (median |cents|, within 50 cents): " + "; ".join(
        f"{k} {ps[k]['median_abs_cents']:.0f}, {ps[k]['within_50_cents']:.0%}"
        for k in ("input", "random_codec", "trained_codec")))


if __name__ == "__main__":
    main()
