"""Extraction throughput and the cost of capture + store writing, on a random MusicGen of musicgen-small size.

    .venv/bin/python bench/extract_bench.py                                  # CPU, fp32, 60 s of audio
    .venv/bin/python bench/extract_bench.py --device cuda --dtype bf16 --seconds 600 --batch-size 8
    .venv/bin/python bench/extract_bench.py --small                          # seconds: does it work

Same windows, same batches in every phase; an untimed warm-up batch, then --repeats interleaved rounds (medians):
  1 encode        adapter.encode (EnCodec); its codes feed 2 and 3
  2 bare forward  delayed inputs + unconditional states + decoder forward, all layers, use_cache=False, no hooks
  3 capture       adapter.code_activations(all hookpoints) + to_store of every item (store dtype, numpy)
  4 store write   open_store + add_item + close with the arrays of 3 (npy + parquet + fsync), no model
  5 extract       extract_audio on wav files of the same audio (model rate), with the pre-built adapter
The issue's overhead of capture + store writing is 5 vs 1+2; timing wrappers around musicsae's functions
(exclusive seconds, GPU synchronised) split 5.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SR, HOP, K = 32000, 640, 4
# musicgen-small decoder and 32 kHz EnCodec; text encoder t5-base width, one layer (unconditional: never run)
REAL = dict(d=1024, layers=24, heads=16, ffn=4096, codes=2048, filters=64, enc_d=128, lstm=2, text_d=768,
            text_ff=3072, text_heads=12, text_vocab=32128)
SMALL = dict(d=128, layers=4, heads=4, ffn=512, codes=256, filters=8, enc_d=32, lstm=1, text_d=32, text_ff=64,
             text_heads=4, text_vocab=64)


def build_adapter(dims: dict, device, dtype, seed: int = 0):
    """A random MusicGen of `dims` placed as MusicGenAdapter.load places one (language model in dtype, EnCodec fp32)."""
    import torch
    import transformers as hf

    from musicsae_cli.models.musicgen import MusicGenAdapter
    from musicsae_cli.models.musicgen_hub import quiet_transformers
    from musicsae_cli.models.tiny import build_tiny_processor, init_codebooks

    quiet_transformers()
    c = dims["codes"]
    text = hf.T5Config(vocab_size=dims["text_vocab"], d_model=dims["text_d"], d_kv=64, d_ff=dims["text_ff"],
                       num_layers=1, num_heads=dims["text_heads"])
    audio = hf.EncodecConfig(sampling_rate=SR, upsampling_ratios=[8, 5, 4, 4], codebook_size=c,
                             num_filters=dims["filters"], hidden_size=dims["enc_d"], audio_channels=1,
                             num_lstm_layers=dims["lstm"], normalize=False, chunk_length_s=None, overlap=None,
                             target_bandwidths=[K * SR / HOP * math.log2(c) / 1000])  # 2.2 for 2048 codes
    decoder = hf.MusicgenDecoderConfig(
        vocab_size=c, max_position_embeddings=2048, num_hidden_layers=dims["layers"], ffn_dim=dims["ffn"],
        num_attention_heads=dims["heads"], hidden_size=dims["d"], num_codebooks=K, pad_token_id=c,
        bos_token_id=c, decoder_start_token_id=c)
    torch.manual_seed(seed)
    model = hf.MusicgenForConditionalGeneration(hf.MusicgenConfig(text_encoder=text, audio_encoder=audio,
                                                                  decoder=decoder)).eval()
    assert model.audio_encoder.config.num_quantizers == K
    init_codebooks(model, seed)
    return MusicGenAdapter(model, build_tiny_processor(), "random-musicgen-small", None).placed(device, dtype)


def synth(n_windows: int, n_samples: int, seed: int = 0) -> list[np.ndarray]:
    """Windows of a three-harmonic melody (a note every 0.5 s) with a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_windows):
        notes = 110 * 2 ** (rng.integers(0, 36, -(-n_samples // (SR // 2))) / 12)
        phase = 2 * np.pi * np.cumsum(np.repeat(notes, SR // 2)[:n_samples]) / SR
        x = 0.2 * sum(np.sin(h * phase) / h for h in (1, 2, 3)) + 0.02 * rng.standard_normal(n_samples)
        out.append(x.astype(np.float32))
    return out


def cpu_ticks() -> np.ndarray:
    """CPU jiffies from /proc/stat (index 7: steal, time the hypervisor gave our vCPUs to others)."""
    stat = Path("/proc/stat")
    return np.array([int(x) for x in stat.read_text().split()[1:9]] if stat.exists() else [0] * 8)


@contextmanager
def instrument(spots: dict, sync):
    """Wrap owner.attr for each name -> (owner, attr); yields name -> exclusive seconds; restores after."""
    acc, stack = dict.fromkeys(spots, 0.0), []

    def wrap(name, fn):
        def timed(*args, **kwargs):
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
                dt, child = time.perf_counter() - t0, stack.pop()
                acc[name] += dt - child
                if stack:
                    stack[-1] += dt
        return timed

    saved = [(owner, attr, vars(owner).get(attr)) for owner, attr in spots.values()]  # None: instance attr
    try:
        for name, (owner, attr) in spots.items():
            setattr(owner, attr, wrap(name, getattr(owner, attr)))
        yield acc
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn) if fn else delattr(owner, attr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="model precision")
    p.add_argument("--seconds", type=float, help="audio to extract (default 60; 4 with --small)")
    p.add_argument("--batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument("--window-s", type=float, help="window length (default 10; 2 with --small)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; medians are reported (default 3)")
    p.add_argument("--store-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--out", type=Path, help="scratch folder, new or empty (default: a temp folder); removed")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--small", action="store_true", help="tiny dimensions: checks the script in seconds")
    a = p.parse_args()
    import soundfile as sf
    import torch

    from musicsae_cli.extract import audio as extract_module
    from musicsae_cli.extract.common import open_store, store_config, to_store
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.store import ActivationStore, StoreWriter
    from musicsae_cli.store import writer as writer_module

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    device = torch.device(a.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = (a.out or Path(tempfile.mkdtemp(prefix="extract-bench-"))).resolve()
    if out.exists() and any(out.iterdir()):
        p.error(f"{out} is not empty; pass a new or empty folder (it is deleted at the end)")
    (out / "wavs").mkdir(parents=True)
    (out / "warm").mkdir()
    runs: dict[str, list[float]] = {k: [] for k in ("encode", "forward", "capture", "hooks", "to_store", "store",
                                                     "extract")}
    try:
        t0 = time.perf_counter()
        adapter = build_adapter(SMALL if a.small else REAL, device, dtype)
        build_s, hookpoints = time.perf_counter() - t0, adapter.resolve_hookpoints("all")
        win = max(1, round((a.window_s or (2.0 if a.small else 10.0)) * SR / HOP)) * HOP
        n_win = max(1, round((a.seconds or (4.0 if a.small else 60.0)) * SR / win))
        audio_s, clips, bs = n_win * win / SR, synth(n_win, win), a.batch_size
        batches = [clips[i:i + bs] for i in range(0, n_win, bs)]
        for i, x in enumerate(clips):
            sf.write(out / "wavs" / f"w{i:04d}.wav", x, SR, subtype="FLOAT")  # float: loads back bit-exact
        shutil.copy(out / "wavs" / "w0000.wav", out / "warm" / "w0000.wav")
        cfg = ExtractConfig(model="random-musicgen-small", device=a.device, dtype=a.dtype, window_s=win / SR,
                            batch_size=bs, hookpoints="all", store_dtype=a.store_dtype)
        codes = [adapter.encode(b) for b in batches]
        captured, parts, result = [], [], {}
        spots = {"load": (extract_module, "load_audio"), "encode": (adapter, "encode"),
                 "forward+hooks": (adapter, "code_activations"), "to_store": (extract_module, "to_store"),
                 "add_item": (StoreWriter, "add_item"), "shard commit": (writer_module, "write_shard")}

        def forward(cs):
            for c in cs:
                ids, _ = adapter.delayed_inputs(c)
                states, mask = adapter.conditioning([None] * len(c))
                with torch.inference_mode():
                    adapter.model.decoder.model.decoder(input_ids=ids, encoder_hidden_states=states,
                                                        encoder_attention_mask=mask, use_cache=False)

        def capture(cs):
            captured.clear()
            hooks = conv = 0.0
            for c in cs:
                t = time.perf_counter()
                acts = adapter.code_activations(c, hookpoints)
                sync()
                t1 = time.perf_counter()
                captured.extend({h: to_store(item[h], a.store_dtype) for h in hookpoints} for item in acts)
                hooks, conv = hooks + t1 - t, conv + time.perf_counter() - t1
            return hooks, conv

        def write_store(path):
            with open_store(path, adapter, hookpoints, cfg, store_config(cfg, "audio", str(out / "wavs")),
                            overwrite=False) as writer:
                for i, item in enumerate(captured):
                    meta = {"source_item": f"w{i:04d}", "source_path": str(out / "wavs" / f"w{i:04d}.wav"),
                            "group": f"w{i:04d}", "window": 0, "window_start_s": 0.0}
                    n = len(item[hookpoints[0]])
                    writer.add_item(f"w{i:04d}", item, item_meta=meta, time_s=np.arange(n) / adapter.frame_rate)

        def timed(name, fn):
            sync()
            t = time.perf_counter()
            value = fn()
            sync()
            runs[name].append(time.perf_counter() - t)
            return value

        print(f"warm-up and {a.repeats} rounds of {n_win} windows ...", file=sys.stderr, flush=True)
        adapter.encode(batches[0])  # warm-up: one batch of each, untimed
        forward(codes[:1])
        capture(codes[:1])
        extract_module.extract_audio(out / "warm", out / "warm-store", cfg, adapter=adapter)
        steal0 = cpu_ticks()
        for r in range(a.repeats):
            timed("encode", lambda: [adapter.encode(b) for b in batches])
            timed("forward", lambda: forward(codes))
            for name, seconds in zip(("hooks", "to_store"), timed("capture", lambda: capture(codes)), strict=True):
                runs[name].append(seconds)
            timed("store", lambda: write_store(out / f"store-{r}"))  # noqa: B023 (called at once)
            shutil.rmtree(out / f"store-{r}")
            with instrument(spots, sync) as acc:
                timed("extract", lambda: result.update(
                    extract_module.extract_audio(out / "wavs", out / "extract", cfg, adapter=adapter)))
            parts.append({**acc, "other": runs["extract"][-1] - sum(acc.values())})
            store = ActivationStore.open(out / "extract")
            size = sum(f.stat().st_size for f in (out / "extract").rglob("*") if f.is_file())
            last, n0 = hookpoints[-1], len(captured[0][hookpoints[-1]])
            same, n_shards = np.array_equal(store.array(last, 0)[:n0], captured[0][last]), store.n_shards
            del store
            shutil.rmtree(out / "extract")
        steal1 = cpu_ticks()
    finally:
        if a.keep:
            print(f"kept {out}", file=sys.stderr)
        else:
            shutil.rmtree(out, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in runs.items()}
    over_capture = med["capture"] / med["forward"] - 1
    over_cs = (med["capture"] + med["store"]) / med["forward"] - 1
    over_extract = med["extract"] / (med["encode"] + med["forward"]) - 1
    steal = (steal1 - steal0)[7] / max(1, (steal1 - steal0).sum())
    dec = adapter.model.decoder
    gpu = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    print(f"\nextraction benchmark: random MusicGen, decoder d={dec.config.hidden_size} x {adapter.n_layers} layers "
          f"({sum(t.numel() for t in dec.parameters()) / 1e6:.1f} M params), EnCodec 32 kHz {K} x "
          f"{adapter.model.config.audio_encoder.codebook_size} codes; text encoder 1 layer (never run: "
          f"unconditional); built in {build_s:.1f} s")
    print(f"machine: {gpu}{cores} of {os.cpu_count()} CPU cores used (CPU steal while timing {steal:.1%}), torch "
          f"{torch.__version__}, device {device}, dtype {a.dtype}, store {a.store_dtype}; audio {audio_s:g} s = "
          f"{n_win} windows of {win / SR:g} s, batch {bs}, all {len(hookpoints)} hookpoints; median of "
          f"{a.repeats} rounds after a warm-up batch\n")
    header = f"{'phase':<40}{'median s':>10}{'min-max s':>16}{'audio s/s':>11}{'x fwd':>8}"
    print(header + "\n" + "-" * len(header))
    runs["both"] = [e + f for e, f in zip(runs["encode"], runs["forward"], strict=True)]
    for key, label in (("encode", "1 encode (EnCodec)"), ("forward", "2 bare forward (all layers, no hooks)"),
                       ("capture", "3 capture (hooks + to_store)"), ("hooks", "  3a code_activations (hooks)"),
                       ("to_store", f"  3b to_store ({a.store_dtype}, numpy)"),
                       ("store", "4 store write alone (arrays of 3)"), ("extract", "5 full extract_audio"),
                       ("both", "  1+2 encode + bare forward")):
        v = runs[key]
        m = statistics.median(v)
        print(f"{label:<40}{m:>10.3f}{f'{min(v):.3f}-{max(v):.3f}':>16}{audio_s / m:>11.1f}"
              f"{m / med['forward']:>8.2f}")
    inside = {k: statistics.median(d[k] for d in parts) for k in parts[0]}
    print("\ninside 5 (exclusive seconds, median): " + ", ".join(f"{k} {v:.3f}" for k, v in inside.items()))
    print(f"store: {result['rows_written']:,} rows x {len(hookpoints)} hookpoints in {result['store_items']} items, "
          f"{n_shards} shard(s), {size / 1e6:.1f} MB on disk; store write alone {size / 1e6 / med['store']:.0f} "
          f"MB/s; deepest layer of the first item identical to phase 3's capture: {same}")
    print(f"overhead: capture vs bare forward {over_capture:+.1%}; capture + store write (3+4) vs bare forward "
          f"{over_cs:+.1%}; full extract (5) vs encode + bare forward (1+2) {over_extract:+.1%}")
    print(f"summary: extraction {audio_s / med['extract']:.1f} audio s/s on {device} {a.dtype} (bare forward "
          f"{audio_s / med['forward']:.1f}, EnCodec encode {audio_s / med['encode']:.1f}); capture + store writing "
          f"cost {over_extract:+.1%} over encode + bare forward of the same batches (goal <= 10%: "
          f"{'met' if over_extract <= 0.10 else 'NOT met'}); capture alone {over_capture:+.1%} over the bare forward")


if __name__ == "__main__":
    main()
