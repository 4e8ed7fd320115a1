"""Audio-token LM (yue family): teacher-forced extraction of every layer against a bare forward, in one run.

    .venv/bin/python bench/yue_bench.py              # a 1.2 B-parameter LLaMA, a few minutes on 2 CPU cores
    .venv/bin/python bench/yue_bench.py --quick      # a small model: does it work

The model: a LLaMA-architecture causal LM at the size class of YuE's stage 2 (1 B: hidden 2048, 18 layers, 16
heads of which 8 key/value, MLP 5632, YuE's 83734-id vocabulary; random weights, fp32, CPU), loaded through the yue
family (the adapter wraps the transformers model as its loader would). Input: --seconds of two-track codes (vocal
and instrumental interleaved, 100 tokens per second, plus YuE's 3 layout tokens). Paths, on the same code file,
timed after a warm-up, medians of --repeats interleaved rounds:
  bare forward             model(input_ids, use_cache=False) under inference_mode (the reference)
  extract, all layers      adapter.sequence_activations: the same forward with a capture hook on every decoder
                           layer, rows cut to the code tokens, as `musicsae extract` stores them
Goal (the issue's): extraction within 10% of the bare forward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timing import interleaved  # noqa: E402  (bench/, beside this file)

GOAL = 0.10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0, help="Seconds of codes (default 4: 403 tokens).")
    p.add_argument("--repeats", type=int, default=5, help="Interleaved timed rounds (default 5).")
    p.add_argument("--quick", "--small", action="store_true", help="A small model, 2 s, one round.")
    p.add_argument("--json", type=Path, help="Also write the figures here.")
    a = p.parse_args()

    import torch

    from musicsae_cli.models.base import Sequence
    from musicsae_cli.models.tiny_yue import build_tiny_yue
    from musicsae_cli.models.yue import YueAdapter
    from musicsae_cli.models.yue_layout import TokenLayout

    if a.quick:
        sizes, seconds, repeats = {"hidden_size": 128, "num_layers": 4, "num_heads": 4}, 2.0, 1
    else:
        sizes, seconds, repeats = {"hidden_size": 2048, "num_layers": 18, "num_heads": 16}, a.seconds, a.repeats
    started = time.perf_counter()
    model = build_tiny_yue(0, **sizes)
    if not a.quick:  # the MLP of the 1 B class (build_tiny_yue's default is twice the width)
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**{**model.config.to_dict(), "intermediate_size": 5632})
        del model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg).eval()
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters()) / 1e9
    adapter = YueAdapter(model, "bench-yue", TokenLayout(), device=torch.device("cpu"), dtype=torch.float32)
    hookpoints = adapter.resolve_hookpoints("all")
    frames = int(seconds * adapter.frame_rate)
    codes = np.random.default_rng(0).integers(0, 1024, (2, frames))
    seq = Sequence(codes, 2 * frames)
    ids = torch.from_numpy(adapter.input_ids(codes))[None]

    def bare():
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    def extract():
        adapter.sequence_activations([seq], hookpoints)

    paths = {"bare forward": bare, "extract, all layers": extract}
    times, med = interleaved(paths, repeats)
    ref = med["bare forward"]
    print(f"\nLLaMA causal LM: {params:.2f} B params ({sizes['hidden_size']} wide, {sizes['num_layers']} layers), "
          f"vocabulary {model.config.vocab_size}; {seconds:g} s of two-track codes = {ids.shape[1]} tokens; torch "
          f"{torch.__version__}, cpu, {torch.get_num_threads()} threads; built in {build_s:.1f} s (untimed); "
          f"median of {repeats} interleaved round(s) after a warm-up")
    header = f"{'path':<22}{'median s':>10}{'min-max s':>18}{'tokens/s':>10}{'x bare':>9}{'goal':>18}"
    print(header + "\n" + "-" * len(header))
    rows = []
    for name, m in med.items():
        ratio = m / ref
        verdict = "" if name == "bare forward" else f"<= +{GOAL:.0%}: {'met' if ratio - 1 <= GOAL else 'NOT met'}"
        print(f"{name:<22}{m:>10.3f}{f'{min(times[name]):.3f}-{max(times[name]):.3f}':>18}"
              f"{ids.shape[1] / m:>10.1f}{ratio:>9.3f}{verdict:>18}")
        rows.append({"path": name, "median_s": m, "runs_s": times[name], "x_bare": ratio})
    if a.json:
        a.json.write_text(json.dumps({"tokens": int(ids.shape[1]), "params_B": params, "rows": rows}, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
