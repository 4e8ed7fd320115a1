"""Probe training over every layer of a musicgen-small-sized store: is it bounded by reading the store once?

    .venv/bin/python bench/probe_bench.py                 # 2,000 items x 50 frames x 24 layers x 1024, fp16
    .venv/bin/python bench/probe_bench.py --small         # seconds: does it work

The store is written with StoreWriter from random data plus a planted 4-class label in layers 8-15. Timed
(warm page cache: the store was just written; every phase reads it from the same cache):
  a read+pool   store.pool(all hookpoints, "mean"): the one pass over the store that training needs
  b train       the whole `probe train` service (reads the store once, splits by group, fits 24 probes plus
                24 shuffled-label controls as one batched L-BFGS problem, writes the artefact)
The figure of merit is b / a: 1.0 would mean fitting costs nothing beside the read. The machine's fp32 matmul
peak is printed so the fit's arithmetic can be read as a fraction of it.

  c mixed widths  hookpoints of different widths probed together (CREPE-tiny's 128/16/16/16/32/64/360, 8,000
                  frames, 12 classes, probe + shuffled control, 4 L-BFGS fits as in a 4-fold run): the fit at each
                  block's own width against the same problem zero-padded to the widest (the reference)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

GENRES = ("classical", "electronic", "jazz", "rock")


def write_store(path: Path, items: int, frames: int, layers: int, d: int, seed: int = 0) -> float:
    """A fp16 store of random activations; genre shifts layers [L/3, 2L/3) along a per-genre direction."""
    from musicsae_cli.store import StoreWriter

    rng = np.random.default_rng(seed)
    informative = range(layers // 3, 2 * layers // 3)
    directions = rng.standard_normal((len(GENRES), d), dtype=np.float32) * 0.08
    start = time.perf_counter()
    hookpoints = {f"layers.{i}": d for i in range(layers)}
    with StoreWriter.create(path, hookpoints, "float16", frame_rate=50.0,
                            model={"family": "musicgen", "id": "bench/random-musicgen-small", "hidden_size": d,
                                   "n_layers": layers}) as w:
        for i in range(items):
            genre = i % len(GENRES)
            acts = {}
            for layer in range(layers):
                x = rng.standard_normal((frames, d), dtype=np.float32)
                if layer in informative:
                    x += directions[genre]
                acts[f"layers.{layer}"] = x.astype(np.float16)
            w.add_item(f"item{i:05d}", acts, item_meta={"group": f"track{i // 2:05d}", "genre": GENRES[genre]})
    return time.perf_counter() - start


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a square torch matmul (best of `repeats`)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def mixed_widths(rows: int = 8000, classes: int = 12, fits: int = 4, seed: int = 0) -> None:
    """(c): blocked fit vs the zero-padded one, same data, same optimum."""
    from musicsae_cli.probes.fit import fit_probes

    widths = [128, 16, 16, 16, 32, 64, 360]
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    x = np.zeros((len(widths), rows, max(widths)), np.float32)
    for j, w in enumerate(widths):
        centres = rng.standard_normal((classes, w)).astype(np.float32) * 0.5
        x[j, :, :w] = rng.standard_normal((rows, w)).astype(np.float32) + centres[y]
    targets = np.stack([y, rng.permutation(y)])
    took, fitted = {}, {}
    for name, given in (("zero-padded (reference)", None), ("blocks of own width", widths)):
        t = time.perf_counter()
        for _ in range(fits):
            fitted[name] = fit_probes(x, targets, classes, "ce", widths=given)
        took[name] = time.perf_counter() - t
    ref, new = took["zero-padded (reference)"], took["blocks of own width"]
    diff = np.abs(fitted["zero-padded (reference)"].weight - fitted["blocks of own width"].weight).max()
    print(f"(c) mixed widths {'/'.join(map(str, widths))}, {rows} rows, {classes} classes, {fits} fits: "
          f"zero-padded {ref:.2f} s, own widths {new:.2f} s, ratio {ref / new:.2f}x (max weight difference "
          f"{diff:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--small", action="store_true", help="200 items x 10 frames x 4 layers x 64")
    parser.add_argument("--keep", type=Path, help="Write the store here and keep it (default: a temp folder).")
    args = parser.parse_args()
    if args.small:
        args.items, args.frames, args.layers, args.d = 200, 10, 4, 64

    import torch

    from musicsae_cli.probes.config import ProbeConfig
    from musicsae_cli.probes.train import train_probes
    from musicsae_cli.store import ActivationStore

    root = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    store_path = args.keep or root / "store"
    try:
        write_s = write_store(store_path, args.items, args.frames, args.layers, args.d)
        store = ActivationStore.open(store_path)
        nbytes = store.n_rows * args.layers * args.d * 2
        print(f"store: {args.items} items x {args.frames} frames x {args.layers} layers x {args.d} fp16 = "
              f"{nbytes / 1e9:.2f} GB ({store.n_shards} shards), written in {write_s:.1f} s")
        print(f"machine: {torch.get_num_threads()} torch threads, fp32 matmul peak {matmul_peak():.0f} GFLOP/s, "
              f"load average {os.getloadavg()[0]:.1f} (other processes share the cores when > 0)")
        t = time.perf_counter()
        _, pooled = store.pool(store.hookpoints, "mean")
        read_s = time.perf_counter() - t
        del pooled
        print(f"(a) read+pool once: {read_s:.2f} s ({nbytes / read_s / 1e9:.2f} GB/s)")
        res = None
        threads_before = torch.get_num_threads()
        for threads in dict.fromkeys([torch.get_num_threads(), 1]):
            # One torch thread as well: on a shared machine, each small L-BFGS vector op can wait milliseconds
            # for a descheduled second thread.
            torch.set_num_threads(threads)
            t = time.perf_counter()
            out = root / f"probes-{threads}"
            res = train_probes(store_path, out, ProbeConfig(label="genre", device="cpu"))
            train_s = time.perf_counter() - t
            timing = res["timing_s"]
            print(f"(b) probe train service, {threads} torch thread(s): {train_s:.2f} s  [its read "
                  f"{timing['read']:.2f} s, fit {timing['fit']:.2f} s ({res['iterations']} L-BFGS iterations, "
                  f"{2 * args.layers} probes incl. controls), save/report "
                  f"{train_s - timing['read'] - timing['fit']:.2f} s]")
            print(f"    ratio (b)/(a): {train_s / read_s:.2f}   (load average now {os.getloadavg()[0]:.1f})")
        print(f"bytes read by the service: {res['bytes_read'] / 1e9:.2f} GB (the whole store once: "
              f"{res['bytes_read'] == nbytes})")
        rows = {r["hookpoint"]: r for r in res["layers"]}
        acc = [f"{rows[f'layers.{i}']['accuracy']:.2f}" for i in range(args.layers)]
        print(f"test accuracy per layer ({res['split']['test_samples']} test items, chance 0.25): {' '.join(acc)}")
        ctrl = max(r["control_accuracy"] for r in res["layers"])
        print(f"best: {res['best']['hookpoint']} balanced accuracy {res['best']['value']:.3f}; max control "
              f"accuracy {ctrl:.3f}")
        torch.set_num_threads(threads_before)
        mixed_widths()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
