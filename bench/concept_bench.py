"""`concept learn` training steps per second at musicgen-small size (random weights): codes cached once (what
`concept learn` does) against the same steps re-encoding each batch's audio with EnCodec first.

    python bench/concept_bench.py            # musicgen-small size: 24 layers, d 1024, 5 s chunks, batch 4
    python bench/concept_bench.py --small    # tiny dimensions: checks the script in seconds

Both variants run the same optimiser step (the concept rows, Adam, MusicGen's loss through the frozen decoder and
text encoder), interleaved over rounds after a warm-up; the re-encoding variant adds EnCodec's encode of the batch.
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

from extract_bench import REAL, SMALL, build_adapter, synth  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny dimensions: checks the script in seconds")
    p.add_argument("--chunk-s", type=float, default=5.0, help="chunk length (seconds)")
    p.add_argument("--batch", type=int, default=4, help="chunks per step")
    p.add_argument("--tokens", type=int, default=8, help="tokens of the concept")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (one step per variant each) after a warm-up")
    a = p.parse_args()
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    dims = SMALL if a.small else REAL
    adapter = build_adapter(dims, torch.device("cpu"), torch.float32)
    ids = adapter.add_concepts({"bench": a.tokens})["bench"]
    g = torch.Generator().manual_seed(0)
    rows = torch.nn.Parameter(adapter.initial_concept_rows(a.tokens, 0.1, g).float())
    opt = torch.optim.Adam([rows], lr=0.1)
    n = int(round(a.chunk_s * adapter.sample_rate))
    audio = synth(a.batch, n, seed=1)  # (batch) chunks of synthetic music-like audio
    cached = torch.stack([torch.as_tensor(c) for c in adapter.tokenize(audio)]).long()  # encoded once
    prompts = ["<bench>"] * a.batch

    def step(codes):
        loss = adapter.concept_loss(codes, prompts, ids, rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def reencode():
        return step(torch.stack([torch.as_tensor(c) for c in adapter.tokenize(audio)]).long())

    times: dict[str, list[float]] = {"cached codes": [], "re-encoding audio": []}
    for rnd in range(a.rounds + 1):  # round 0 warms up
        for name, fn in (("cached codes", lambda: step(cached)), ("re-encoding audio", reencode)):
            t = time.perf_counter()
            fn()
            if rnd:
                times[name].append(time.perf_counter() - t)
    params = sum(q.numel() for q in adapter.model.decoder.parameters()) / 1e6
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; load "
          f"average {os.getloadavg()[0]:.2f}")
    print(f"model: random MusicGen d={dims['d']}, {dims['layers']} layers ({params:.1f} M decoder parameters); "
          f"{a.tokens} concept tokens; batch {a.batch} x {a.chunk_s:g} s chunks ({cached.shape[-1]} frames); "
          f"{a.rounds} timed rounds after a warm-up")
    base = statistics.median(times["re-encoding audio"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<18} {med:8.2f} s/step  {1 / med:7.3f} steps/s  ({base / med:.2f}x the re-encoding steps)")
    print(f"encoding share of a re-encoding step: "
          f"{100 * (1 - statistics.median(times['cached codes']) / base):.0f}%")


if __name__ == "__main__":
    main()
