"""1 process against N (torchrun, through `--nproc`) for extraction and SAE training, in one run.

    .venv/bin/python bench/dist_bench.py                           # 1 vs 2 processes on this machine's CPUs
    .venv/bin/python bench/dist_bench.py --device cuda --nproc 8   # on 8 GPUs
    .venv/bin/python bench/dist_bench.py --quick                   # a small run: does it work

Workloads (the commands a user runs, as subprocesses; each measured once, the 1-process run first):
  extract     `musicsae extract` of --items synthetic audio files (4 s each) through CREPE full (real weights, 22 M
              parameters, convolutional: compute-bound on CPU), two hookpoints stored; throughput = audio seconds
              per second of the command's own extraction loop (its elapsed_s), and of the whole command (wall)
  sae train   `musicsae sae train` of a TopK SAE (k 32, x8) on a synthetic store of --rows rows of width 256 with
              sparse structure, --steps steps of batch 4096; throughput = rows per second of the training loop
The 1-process runs use every core; each of the N ranks gets cores / N threads (on GPUs, one GPU each). Printed:
throughput, speed-up, scaling efficiency (speed-up / N), and the final results of both (store rows equal; the SAE's
explained variance and L0, which should agree to float rounding since both train on the same global batches).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def musicsae(args: list[str], threads: int) -> tuple[dict, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "musicsae_cli", *args, "--json"], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if res.returncode != 0:
        raise SystemExit(f"failed: musicsae {' '.join(args)}\n{res.stderr}")
    return json.loads(res.stdout), wall


def make_audio(root: Path, items: int) -> float:
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(4 * 16000) / 16000
    for i in range(items):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / f"{i:04d}.wav", x.astype(np.float32), 16000)
    return 4.0 * items


def make_store(path: Path, rows: int) -> None:
    from musicsae_cli.store import StoreWriter

    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((1024, 256)).astype(np.float32)
    per_item = 1000
    with StoreWriter.create(path, {"h": 256}, "float16") as w:
        for i in range(rows // per_item):
            codes = rng.random((per_item, 1024), dtype=np.float32) * (rng.random((per_item, 1024)) < 0.02)
            w.add_item(f"i{i:05d}", {"h": codes @ atoms})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--items", type=int, default=16, help="audio files for extraction")
    ap.add_argument("--rows", type=int, default=200_000, help="store rows for SAE training")
    ap.add_argument("--steps", type=int, default=100, help="SAE training steps")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.items, args.rows, args.steps = 4, 20_000, 20
    cores = os.cpu_count() or 1
    n = args.nproc
    print(f"dist_bench: 1 vs {n} processes on {args.device} ({cores} CPU cores; ranks get {max(1, cores // n)} "
          f"thread(s) each)")
    with tempfile.TemporaryDirectory(prefix="dist-bench-") as folder:
        tmp = Path(folder)
        audio = tmp / "audio"
        audio.mkdir()
        seconds = make_audio(audio, args.items)
        rows = {}
        print(f"\nextract: {args.items} files ({seconds:.0f} s of audio) through crepe-full, 2 hookpoints")
        print(f"  {'processes':>9}  {'loop audio s/s':>14}  {'wall s':>7}  {'speed-up':>8}  {'efficiency':>10}  rows")
        base = None
        for procs in (1, n):
            res, wall = musicsae(["extract", str(audio), "-o", str(tmp / f"store{procs}"), "-m", "crepe-full",
                                  "--hookpoint", "block4,block6", "--device", args.device, "--nproc", str(procs)],
                                 cores if procs == 1 else max(1, cores // n))
            rate = res["audio_seconds"] / res["elapsed_s"]
            base = base or (rate, wall)
            rows[procs] = res["store_rows"]
            print(f"  {procs:>9}  {rate:>14.1f}  {wall:>7.1f}  {rate / base[0]:>7.2f}x  "
                  f"{rate / base[0] / procs:>10.2f}  {res['store_rows']}")
        print(f"  same rows: {rows[1] == rows[n]}")

        make_store(tmp / "sae-store", args.rows)
        print(f"\nsae train: TopK k=32 x8 on {args.rows} rows of width 256, {args.steps} steps of batch 4096")
        print(f"  {'processes':>9}  {'rows/s':>9}  {'wall s':>7}  {'speed-up':>8}  {'efficiency':>10}  "
              f"{'expl. var':>9}  {'L0':>5}")
        base = None
        for procs in (1, n):
            res, wall = musicsae(["sae", "train", str(tmp / "sae-store"), "-o", str(tmp / f"sae{procs}"),
                                  "--hookpoint", "h", "--architecture", "topk", "--k", "32", "--steps",
                                  str(args.steps), "--batch-size", "4096", "--device", args.device,
                                  "--set", "expansion_factor=8", "--nproc", str(procs)],
                                 cores if procs == 1 else max(1, cores // n))
            rate = res["rows_per_s"]
            base = base or (rate, wall)
            m = res["members"]["sae"]
            print(f"  {procs:>9}  {rate:>9,.0f}  {wall:>7.1f}  {rate / base[0]:>7.2f}x  "
                  f"{rate / base[0] / procs:>10.2f}  {m['explained_variance']:>9.4f}  {m['l0']:>5.1f}")


if __name__ == "__main__":
    main()
