"""RAVE: extraction of every hookpoint and steered re-synthesis, against the bare export, in one run.

    .venv/bin/python bench/rave_bench.py              # about a minute on 2 CPU cores
    .venv/bin/python bench/rave_bench.py --quick      # a few seconds: does it work
    .venv/bin/python bench/rave_bench.py --seconds 60 --repeats 5 --json rave.json

The model: a RAVE-format export at realistic size (musicsae's tiny_rave builder with 44.1 kHz, 16 bands, 7
stride-2 encoder blocks and 7 stride-2 decoder blocks of 256 channels: encode ratio 2048, a 32-dim full latent of
which 16 are kept, a decoder drawing noise as RAVE's does), random weights, torch.jit.script-ed, torch.jit.save-d
and loaded through musicsae (the rave family) from that file.
Paths, each on the same clip, timed after a warm-up, medians of --repeats interleaved rounds:
  bare encode+decode      torch.jit.load of the file, decode(encode(x)) under inference_mode (the reference)
  bare encode             encode(x) alone
  extract, all hookpoints adapter.audio_activations([audio], pqmf, encoder.0-6, latent.raw, latent, decoder.0-6):
                          musicsae steps through the scripted encode and decode along the hooked paths and pools
                          the finer blocks onto the latent grid
  plain re-synthesis      adapter.outputs(audio) without edits (seeded noise, hook-free encode and decode)
  steer, latent bias      adapter.outputs(audio) inside adapter.intervene with a bias on latent dimension 0 (the
                          re-synthesis steer audio writes): the edit hook plus decode
Goals (the issue's): extraction within 10% of bare encode+decode, steering within 5% of plain re-synthesis (the
ratio is printed against the bare export's encode+decode, the stricter reference, and against musicsae's own plain
re-synthesis in the last column).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timing import interleaved  # noqa: E402  (bench/, beside this file)

GOALS = {"extract, all hookpoints": 0.10, "steer, latent bias": 0.05}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="Seconds of audio (default 20).")
    p.add_argument("--repeats", type=int, default=7, help="Interleaved timed rounds (default 7: 2-core timings are "
                                                          "noisy, about +-10%% round to round).")
    p.add_argument("--quick", "--small", action="store_true", help="2 s, one round: does it work.")
    p.add_argument("--json", type=Path, help="Also write the figures here.")
    a = p.parse_args()
    seconds, repeats = (2.0, 1) if a.quick else (a.seconds, a.repeats)

    import torch

    from musicsae_cli.models import load_adapter
    from musicsae_cli.models.tiny_rave import RaveDims, build_tiny_rave

    dims = RaveDims(sr=44100, bands=16, blocks=7, hidden=256, full_latent=32, latent=16)
    tmp = Path(tempfile.mkdtemp(prefix="rave-bench-"))
    path = tmp / "rave.ts"
    module = build_tiny_rave(dims, seed=0)
    torch.jit.save(torch.jit.script(module), str(path))
    params = sum(p.numel() for p in module.parameters()) / 1e6
    bare = torch.jit.load(str(path)).eval()
    started = time.perf_counter()
    adapter = load_adapter(str(path), device="cpu")
    load_s = time.perf_counter() - started
    hookpoints = adapter.resolve_hookpoints("all")
    n = int(seconds * dims.sr) // dims.ratio * dims.ratio
    rng = np.random.default_rng(0)
    t = np.arange(n) / dims.sr
    audio = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.5 * (t % 1))) + 0.01 * rng.standard_normal(n)).astype(
        np.float32)
    x = torch.from_numpy(audio)[None, None]
    bias = torch.zeros(dims.latent)
    bias[0] = 1.0

    def bare_both():
        with torch.inference_mode():
            bare.decode(bare.encode(x))

    def bare_encode():
        with torch.inference_mode():
            bare.encode(x)

    def extract():
        adapter.audio_activations([audio], hookpoints)

    def plain():
        adapter.outputs(audio)

    def steer():
        with adapter.intervene({"latent": lambda h: h + bias.to(h.dtype)}):
            adapter.outputs(audio)

    paths = {"bare encode+decode": bare_both, "bare encode": bare_encode, "extract, all hookpoints": extract,
             "plain re-synthesis": plain, "steer, latent bias": steer}
    times, med = interleaved(paths, repeats)
    ref = med["bare encode+decode"]
    print(f"\nRAVE-format export: {params:.2f} M params, {dims.sr} Hz, encode ratio {dims.ratio}, latent "
          f"{dims.latent}/{dims.full_latent}, {len(hookpoints)} hookpoints; {n / dims.sr:g} s of audio; torch "
          f"{torch.__version__}, cpu, {torch.get_num_threads()} threads; load + dry run {load_s:.2f} s (untimed); "
          f"median of {repeats} interleaved round(s) after a warm-up")
    header = (f"{'path':<26}{'median s':>10}{'min-max s':>16}{'audio s/s':>11}{'x bare e+d':>12}{'goal':>16}"
              f"{'x plain':>9}")
    print(header + "\n" + "-" * len(header))
    rows = []
    for name, m in med.items():
        ratio = m / ref
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"<= +{goal:.0%}: {'met' if ratio - 1 <= goal else 'NOT met'}"
        print(f"{name:<26}{m:>10.3f}{f'{min(times[name]):.3f}-{max(times[name]):.3f}':>16}"
              f"{n / dims.sr / m:>11.2f}{ratio:>12.3f}{verdict:>16}{m / med['plain re-synthesis']:>9.3f}")
        rows.append({"path": name, "median_s": m, "runs_s": times[name], "x_bare_encode_decode": ratio,
                     "goal": goal})
    if a.json:
        a.json.write_text(json.dumps({"seconds": n / dims.sr, "params_M": params, "rows": rows}, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
