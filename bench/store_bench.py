"""Activation-store throughput and memory benchmark.

    .venv/bin/python bench/store_bench.py --out /tmp/store-bench --gb 2.0     # full run
    .venv/bin/python bench/store_bench.py --out /tmp/store-bench --gb 0.1     # quick try

Phases run in separate subprocesses so that each peak RSS (ru_maxrss) is its own:
  1. raw write   sequential ndarray.tofile of the same number of bytes (+ fsync): the disk's ceiling
  2. store write StoreWriter fed ~500-frame float32 items from a pre-generated pool (generation untimed)
  3. raw read    sequential readinto of the raw file
  4. stream      shuffled ActivationStore.stream() over the whole store, batch 4096
Before each read phase the files are evicted from the page cache with posix_fadvise(DONTNEED) (no root
needed) unless --warm; the resident fraction measured with mincore() right before timing is printed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MB = 1e6
ITEM_FRAMES = 500
POOL_ITEMS = 16


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / MB


def data_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and p.suffix in (".bin", ".npy")]


def evict(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache (best effort; the host may still cache them)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(paths: list[Path]) -> float | None:
    """Fraction of the files' pages in the page cache, via mmap + mincore (None when unavailable)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        page = os.sysconf("SC_PAGE_SIZE")
        resident = total = 0
        for path in paths:
            size = path.stat().st_size
            if not size:
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED; pages are not touched
                if addr in (None, ctypes.c_void_p(-1).value):
                    return None
                n_pages = -(-size // page)
                vec = ctypes.create_string_buffer(n_pages)
                ok = libc.mincore(addr, size, vec) == 0
                libc.munmap(addr, size)
                if not ok:
                    return None
                resident += int((np.frombuffer(vec.raw, np.uint8) & 1).sum())
                total += n_pages
            finally:
                os.close(fd)
        return resident / total if total else None
    except (OSError, AttributeError):
        return None


def prepare_cache(out: Path, warm: bool) -> float | None:
    if not warm:
        evict(data_files(out))
    return resident_fraction(data_files(out))


def phase_raw_write(a: dict) -> dict:
    rng = np.random.default_rng(0)
    pool = rng.standard_normal(32 * 2**20, dtype=np.float32).astype(np.float16)  # 64 MiB, before timing
    target, written = a["n_bytes"], 0
    t0 = time.perf_counter()
    with open(a["raw"], "wb") as fh:
        while written < target:
            chunk = pool[: (target - written) // pool.itemsize]
            chunk.tofile(fh)
            written += chunk.nbytes
        fh.flush()
        os.fsync(fh.fileno())
    return {"bytes": written, "seconds": time.perf_counter() - t0}


def phase_store_write(a: dict) -> dict:
    from musicsae_cli.store import StoreWriter
    from musicsae_cli.store.format import encode

    rng = np.random.default_rng(0)
    width, n_rows = a["width"], a["n_rows"]
    # The pool is in the dtype the caller hands over: the store dtype (cast on the GPU) or float32.
    pool = [encode(rng.standard_normal((ITEM_FRAMES, width), dtype=np.float32), a["input"])
            for _ in range(POOL_ITEMS)]
    streams = np.where(np.arange(ITEM_FRAMES) % 2 == 0, "cond", "uncond")
    genres = ["rock", "jazz", "pop", "classical", None]
    t0 = time.perf_counter()
    with StoreWriter.create(a["store"], {"layers.12": width}, a["dtype"], model={"id": "bench"},
                            frame_rate=50.0) as writer:
        done, i = 0, 0
        while done < n_rows:
            n = min(ITEM_FRAMES, n_rows - done)
            writer.add_item(f"item{i:07d}", {"layers.12": pool[i % POOL_ITEMS][:n]},
                            item_meta={"source_path": f"audio/{i}.wav", "genre": genres[i % 5], "bpm": 90 + i % 60},
                            frame_meta={"stream": streams[:n]})
            done, i = done + n, i + 1
    seconds = time.perf_counter() - t0
    if a["discard"]:
        shutil.rmtree(a["store"])
    return {"bytes": n_rows * width * np.dtype(a["np_dtype"]).itemsize, "seconds": seconds,
            "rows": n_rows, "items": i}


def phase_raw_read(a: dict) -> dict:
    cache = prepare_cache(Path(a["out"]), a["warm"])
    buf = bytearray(64 * 2**20)
    view, total = memoryview(buf), 0
    t0 = time.perf_counter()
    with open(a["raw"], "rb", buffering=0) as fh:
        while got := fh.readinto(view):
            total += got
    return {"bytes": total, "seconds": time.perf_counter() - t0, "cache": cache}


def phase_stream(a: dict) -> dict:
    from musicsae_cli.store import ActivationStore

    cache = prepare_cache(Path(a["out"]), a["warm"])
    store = ActivationStore.open(a["store"])
    rss_start, rss_max, rows, check = current_rss_mb(), 0.0, 0, 0.0
    t0 = time.perf_counter()
    for batch in store.stream("layers.12", a["batch"], buffer_rows=a["buffer_rows"], block_rows=a["block_rows"],
                              prefetch=a["prefetch"], raw=a["raw_out"], seed=0):
        rows += len(batch)
        check += float(batch.acts["layers.12"][0, 0])  # touch the data like a consumer would
        if batch.index % 16 == 0:
            rss_max = max(rss_max, current_rss_mb())
    seconds = time.perf_counter() - t0
    assert rows == store.n_rows, (rows, store.n_rows)
    row_bytes = store.widths["layers.12"] * store.storage_dtype.itemsize
    return {"bytes": rows * row_bytes, "seconds": seconds, "rows": rows, "cache": cache,
            "rss_start_mb": rss_start, "rss_sampled_max_mb": rss_max}


# name -> (label, function, argument overrides)
PHASES = {
    "raw_write": ("1 raw write (tofile+fsync)", phase_raw_write, {}),
    "store_write": ("2 store write (store dtype in)", phase_store_write, {}),
    "store_write_f32": ("2b store write (float32 in)", phase_store_write, {"input": "float32", "discard": True}),
    "raw_read": ("3 raw read (sequential)", phase_raw_read, {}),
    "stream": ("4 stream shuffled -> float32", phase_stream, {}),
    "stream_raw": ("4b stream shuffled, raw=True", phase_stream, {"raw_out": True}),
}


def run_phase(name: str, args: dict) -> dict:
    """Run one phase in a fresh interpreter and return its result (with its own peak RSS)."""
    args = {**args, **PHASES[name][2]}
    if name == "store_write_f32":
        args["store"] += "_f32"
    proc = subprocess.run([sys.executable, __file__, "--phase", name, "--phase-args", json.dumps(args)],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"phase {name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_cache(fraction: float | None) -> str:
    return "unknown" if fraction is None else f"{fraction:.0%} resident"


def report(results: dict, a: dict, store_bytes: int) -> None:
    rows = [(PHASES[name][0], result) for name, result in results.items()]
    print(f"\nactivation store benchmark: {a['n_rows']:,} rows x {a['width']} {a['dtype']} "
          f"= {a['n_bytes'] / 1e9:.2f} GB of activations; store on disk {store_bytes / 1e9:.2f} GB")
    print(f"stream settings: buffer_rows={a['buffer_rows']}, block_rows={a['block_rows']}, "
          f"batch={a['batch']}, prefetch={a['prefetch']}; page cache before read phases: "
          f"{'left warm (--warm)' if a['warm'] else 'evicted with posix_fadvise(DONTNEED)'}\n")
    header = f"{'phase':<32}{'GB':>7}{'seconds':>9}{'MB/s':>9}{'rows/s':>12}{'peak RSS MB':>13}  page cache"
    print(header)
    print("-" * len(header))
    for label, r in rows:
        mbps = r["bytes"] / MB / r["seconds"]
        rows_s = f"{r['rows'] / r['seconds']:,.0f}" if "rows" in r else "-"
        cache = fmt_cache(r["cache"]) if "cache" in r else "-"
        print(f"{label:<32}{r['bytes'] / 1e9:>7.2f}{r['seconds']:>9.2f}{mbps:>9.0f}{rows_s:>12}"
              f"{r['peak_rss_mb']:>13.0f}  {cache}")
    rate = {k: r["bytes"] / MB / r["seconds"] for k, r in results.items()}
    s, s_raw = results["stream"], results["stream_raw"]
    print(f"\nstream RSS (float32 out): {s['rss_start_mb']:.0f} MB after open, sampled max "
          f"{s['rss_sampled_max_mb']:.0f} MB, peak {s['peak_rss_mb']:.0f} MB = "
          f"{s['peak_rss_mb'] * MB / store_bytes:.1%} of the store; raw=True peak {s_raw['peak_rss_mb']:.0f} MB")
    print(f"summary: store write {rate['store_write']:.0f} MB/s = {rate['store_write'] / rate['raw_write']:.2f}x "
          f"raw write ({rate['store_write_f32']:.0f} MB/s from float32 input); shuffled stream "
          f"{rate['stream']:.0f} MB/s = {s['rows'] / s['seconds']:,.0f} rows/s = "
          f"{rate['stream'] / rate['raw_read']:.2f}x raw read ({rate['stream_raw']:.0f} MB/s raw); "
          f"stream peak RSS {s['peak_rss_mb']:.0f} MB = {s['peak_rss_mb'] * MB / store_bytes:.1%} "
          f"of a {store_bytes / 1e9:.2f} GB store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="scratch folder (must be new or empty); removed at the end")
    parser.add_argument("--gb", type=float, default=2.0, help="gigabytes of activations (default 2.0)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--buffer-rows", type=int, default=65536)
    parser.add_argument("--block-rows", type=int, default=2048)
    parser.add_argument("--no-prefetch", action="store_true", help="stream without reading ahead")
    parser.add_argument("--warm", action="store_true", help="do not evict the files from the page cache")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--phase-args", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.phase:  # a child process: run one phase, print its result as JSON
        result = PHASES[opts.phase][1](json.loads(opts.phase_args))
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    if opts.out is None:
        parser.error("--out is required")
    out = opts.out.resolve()
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty; pass a new or empty folder (it is deleted at the end)")
    out.mkdir(parents=True, exist_ok=True)
    np_dtype = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}[opts.dtype]
    row_bytes = opts.width * np.dtype(np_dtype).itemsize
    n_rows = -(-int(opts.gb * 1e9) // row_bytes)
    a = {"out": str(out), "raw": str(out / "raw.bin"), "store": str(out / "store"), "width": opts.width,
         "dtype": opts.dtype, "np_dtype": np_dtype, "n_rows": n_rows, "n_bytes": n_rows * row_bytes,
         "batch": opts.batch, "buffer_rows": opts.buffer_rows, "block_rows": opts.block_rows,
         "prefetch": not opts.no_prefetch, "warm": opts.warm, "input": opts.dtype, "discard": False,
         "raw_out": False}
    try:
        results = {}
        for name in PHASES:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = run_phase(name, a)
        store_bytes = sum(p.stat().st_size for p in Path(a["store"]).rglob("*") if p.is_file())
        report(results, a, store_bytes)
    finally:
        if opts.keep:
            print(f"kept {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
