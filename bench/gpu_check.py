"""GPU check: every CUDA path of musicsae run once at musicgen-small size, timed against a bare reference.

    bench/gpu_check.sh                                        # CUDA, bf16 then fp32, about 3-4 min on one H200
    bench/gpu_check.sh --dtypes bf16 --json figures.json      # one precision; all figures also as JSON
    .venv/bin/python bench/gpu_check.py --device cpu --small  # the same code path on tiny sizes, in seconds

Without a CUDA device (and --device cuda) it prints one line saying so and runs nothing (exit 0). Otherwise a
random-weight MusicGen of musicgen-small size (d 1024, 24 layers, 16 heads, 4 codebooks x 2048 codes) is built
per dtype the way `MusicGenAdapter.load` prepares one (the language model in the dtype, EnCodec in fp32), and
these phases run, each after an untimed warm-up, CUDA synchronised around every timing (medians of --repeats):
  peak         a large square matmul per dtype: this machine's own yardstick (TFLOP/s)
  build        the model; parameters and seconds
  extract      teacher forcing over synthesised audio: the bare decoder forward (all layers, no hooks) vs
               adapter.code_activations (all hookpoints) vs the extract_audio service writing a store; audio s/s
  generate     model.generate (guidance 3, top-k 250) vs adapter.generate capturing every hookpoint vs the same
               under an AddEdit at the middle layer; frames/s. Checks: teacher-forcing the generated codes
               reproduces the captured activations (fp32: max abs diff <= 1e-3, else the phase fails), and the
               steered layer equals the clean one plus the edit
  sae          the `sae train` service (TopK) on the middle layer of the store from extract, vs the same SAE's
               step and a plain dense-torch TopK step on in-memory batches (bench/sae_bench.py), as a fraction
               of the matmul peak; then the `sae encode` service vs a bare in-memory matmul + topk encode
  probe        the `probe train` service on every layer of that store, with a planted label (low/high register)
  dist         with 2 or more GPUs only: `sae train` on that store in one process and on every GPU (torchrun,
               nccl, DDP) on the same global batches; rows/s of both and the largest weight difference
A failing phase prints `FAILED <phase>: <error>` and its traceback to stderr and the next phase runs; phases that
need it are skipped, as are phases that would start after --budget-s. Exit code 1 when any phase failed.
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
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

NO_CUDA = "gpu_check: no CUDA device (torch.cuda.is_available() is False), so nothing was run"
PROMPTS = ["calm jazz piano with soft drums", "fast rock guitar", "ambient synth pad", "string quartet"]
SR, HOP, GUIDANCE, SEED, TF_TOL, STRENGTH = 32000, 640, 3.0, 0, 1e-3, 4.0
# name: (full size on a GPU, --small on a CPU)
SIZES = {"seconds": (300.0, 6.0), "window_s": (10.0, 0.3), "batch": (8, 4), "gen_seconds": (4.0, 0.4),
         "gen_batch": (4, 2), "repeats": (2, 1), "sae_width": (16384, 512), "sae_k": (64, 16),
         "sae_batch": (4096, 128), "sae_steps": (200, 20), "ref_steps": (20, 4), "peak_n": (8192, 512)}


class Skip(Exception):
    """A phase that cannot run (a phase it needs did not complete, or the time budget is spent)."""


class CheckFailed(Exception):
    """A correctness check failed; the phase's figures are already recorded."""


@dataclass
class Check:
    """Settings, shared state between phases and every phase's outcome."""

    args: argparse.Namespace
    device: object
    scratch: Path
    state: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    def sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def timed(self, fn):
        """(seconds, value) of fn(), synchronised on both sides."""
        self.sync()
        t = time.perf_counter()
        value = fn()
        self.sync()
        return time.perf_counter() - t, value

    def median(self, fn) -> float:
        """Median seconds of --repeats calls of fn."""
        return statistics.median(self.timed(fn)[0] for _ in range(self.args.repeats))

    def need(self, key: str, phase: str):
        if key not in self.state:
            raise Skip(f"needs {phase}, which did not complete")
        return self.state[key]

    def run(self, name: str, fn) -> None:
        """Run one phase: one figures line on stdout; a failure is reported and the check goes on."""
        import torch

        rec = self.phases[name] = {"status": "ok", "seconds": None, "max_mem_gb": None, "figures": {}}
        try:
            if time.perf_counter() - self.t0 > self.args.budget_s:
                raise Skip(f"the budget of {self.args.budget_s:g} s is spent")
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            t = time.perf_counter()
            line = fn(rec["figures"])
            self.sync()  # an asynchronous CUDA error surfaces in the phase that caused it
            rec["seconds"] = time.perf_counter() - t
        except Skip as exc:
            rec.update(status="SKIPPED", error=str(exc))
            print(f"SKIPPED {name}: {exc}", flush=True)
            return
        except Exception as exc:  # report every failure, then go on
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            rec.update(status="FAILED", error=f"{type(exc).__name__}: {first}")
            print(f"FAILED {name}: {rec['error']}", file=sys.stderr, flush=True)
            traceback.print_exc(file=sys.stderr)
            return
        finally:
            if self.device.type == "cuda":
                try:
                    rec["max_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
                except RuntimeError:  # a broken CUDA context: the failure above says why
                    pass
        mem = f", max GPU memory {rec['max_mem_gb']:.2f} GB" if rec["max_mem_gb"] is not None else ""
        print(f"{name:<15} {line}  [{rec['seconds']:.1f} s{mem}]", flush=True)


# ---- inputs -----------------------------------------------------------------------------------------------
def labelled_windows(n: int, n_samples: int, seed: int = SEED) -> tuple[list[np.ndarray], list[str]]:
    """Three-harmonic melodies (a note every 0.5 s), alternately in a low and a high register, and the labels."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(n):
        label = ("low", "high")[i % 2]
        notes = (110 if label == "low" else 880) * 2 ** (rng.integers(0, 12, -(-n_samples // (SR // 2))) / 12)
        phase = 2 * np.pi * np.cumsum(np.repeat(notes, SR // 2)[:n_samples]) / SR
        x = 0.2 * sum(np.sin(h * phase) / h for h in (1, 2, 3)) + 0.02 * rng.standard_normal(n_samples)
        clips.append(x.astype(np.float32))
        labels.append(label)
    return clips, labels


def write_dataset(ck: Check) -> None:
    """Wav files in class folders (the `label` column of the store) and the same windows in store order."""
    import soundfile as sf

    a = ck.args
    win = max(1, round(a.window_s * SR / HOP)) * HOP
    n = max(2, round(a.seconds * SR / win))
    clips, labels = labelled_windows(n, win)
    names = [f"{lab}/w{i:04d}" for i, lab in enumerate(labels)]
    for name, x in zip(names, clips, strict=True):
        (ck.scratch / "wavs" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(ck.scratch / "wavs" / f"{name}.wav", x, SR, subtype="FLOAT")  # float: loads back bit-exact
    (ck.scratch / "warm").mkdir()
    shutil.copy(ck.scratch / "wavs" / f"{names[0]}.wav", ck.scratch / "warm" / "w.wav")
    order = sorted(range(n), key=names.__getitem__)  # the manifest's (and so the store's) item order
    clips = [clips[i] for i in order]
    ck.state["batches"] = [clips[i:i + a.batch] for i in range(0, n, a.batch)]
    ck.state["win_s"], ck.state["audio_s"] = win / SR, n * win / SR


# ---- phases -----------------------------------------------------------------------------------------------
def phase_peak(ck: Check, dtypes: list[str], fig: dict) -> str:
    """Best TFLOP/s of an n^3 matmul per dtype, `iters` back to back between synchronisations."""
    import torch

    from musicsae_cli.runtime import resolve_dtype

    n, iters = ck.args.peak_n, 10 if ck.device.type == "cuda" else 2
    for dt in dtypes:
        a = torch.randn(n, n, device=ck.device, dtype=resolve_dtype(dt))
        b = torch.randn(n, n, device=ck.device, dtype=resolve_dtype(dt))
        a @ b  # warm-up
        best = min(ck.timed(lambda: [a @ b for _ in range(iters)])[0] for _ in range(3))  # noqa: B023
        fig[dt] = ck.state[f"peak {dt}"] = 2 * n**3 * iters / best / 1e12
    fig["headline"] = ", ".join(f"{dt} {fig[dt]:.3g} TFLOP/s" for dt in dtypes)
    return f"{fig['headline']} ({n}^3 matmul)"


def phase_build(ck: Check, dt: str, fig: dict) -> str:
    """The random musicgen-small-sized MusicGen, prepared as MusicGenAdapter.load does for this dtype."""
    from extract_bench import REAL, SMALL, build_adapter

    from musicsae_cli.runtime import resolve_dtype

    t = time.perf_counter()
    adapter = build_adapter(SMALL if ck.args.small else REAL, ck.device, resolve_dtype(dt))  # EnCodec stays fp32
    ck.sync()
    ck.state[f"adapter {dt}"] = adapter
    fig["decoder_params_m"] = sum(p.numel() for p in adapter.model.decoder.parameters()) / 1e6
    fig["build_s"] = time.perf_counter() - t
    cfg = adapter.model.decoder.config
    fig["headline"] = f"{fig['decoder_params_m']:.1f} M decoder params"
    return (f"decoder d={cfg.hidden_size} x {adapter.n_layers} layers, {cfg.num_attention_heads} heads, "
            f"{fig['decoder_params_m']:.1f} M params in {adapter.dtype}, EnCodec {adapter.model.audio_encoder.dtype}"
            f"; built in {fig['build_s']:.1f} s")


def phase_extract(ck: Check, dt: str, fig: dict) -> str:
    """Teacher forcing: bare decoder forward vs capture of every hookpoint vs extract_audio writing a store."""
    import torch

    from musicsae_cli.extract.audio import extract_audio
    from musicsae_cli.extract.common import to_store
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.store import ActivationStore

    adapter = ck.need(f"adapter {dt}", f"build[{dt}]")
    batches, hooks = ck.state["batches"], adapter.resolve_hookpoints("all")
    codes = [adapter.encode(b) for b in batches]  # per batch: a list of (K, T) codes
    cfg = ExtractConfig(model="random-musicgen-small", device=str(ck.device), dtype=dt, window_s=ck.state["win_s"],
                        batch_size=ck.args.batch, hookpoints="all", store_dtype="float16")
    store, first = ck.scratch / f"store-{dt}", {}

    def bare(cs=codes):
        for c in cs:
            ids, _ = adapter.delayed_inputs(c)  # (B*K, T+1)
            states, mask = adapter.conditioning([None] * len(c))
            with torch.inference_mode():
                adapter.model.decoder.model.decoder(input_ids=ids, encoder_hidden_states=states,
                                                    encoder_attention_mask=mask, use_cache=False)

    def capture(cs=codes):
        for i, c in enumerate(cs):
            acts = adapter.code_activations(c, hooks)  # per item: hookpoint -> (T, d)
            if i == 0:
                first["acts"] = acts[0][hooks[-1]]  # (T, d), compared with the store below

    def extract(src=ck.scratch / "wavs", out=store):
        return extract_audio(src, out, cfg, adapter=adapter)

    adapter.encode(batches[0])  # warm-up: one batch of each, untimed
    bare(codes[:1])
    capture(codes[:1])
    extract(ck.scratch / "warm", ck.scratch / f"warm-store-{dt}")
    t_enc = ck.median(lambda: [adapter.encode(b) for b in batches])
    t_bare, t_cap = ck.median(bare), ck.median(capture)
    t_ext = []
    for _ in range(ck.args.repeats):
        shutil.rmtree(store, ignore_errors=True)  # untimed: extract_audio refuses an existing store
        t_ext.append(ck.timed(extract)[0])
    t_ext = statistics.median(t_ext)
    opened, captured = ActivationStore.open(store), to_store(first["acts"], "float16").astype(np.float32)
    stored = np.asarray(opened.array(hooks[-1], 0)[:len(captured)], np.float32)  # the store's first item
    fig.update(audio_s=ck.state["audio_s"], rows=opened.n_rows, hookpoints=len(hooks), encode_s=t_enc, bare_s=t_bare,
               capture_s=t_cap, extract_s=t_ext, store_vs_capture_max_diff=float(np.abs(stored - captured).max()))
    ck.state[f"store {dt}"] = store
    rate = {k: ck.state["audio_s"] / fig[f"{k}_s"] for k in ("bare", "capture", "extract", "encode")}
    fig.update({f"{k}_audio_s_per_s": v for k, v in rate.items()}, capture_vs_bare=t_cap / t_bare,
               extract_vs_bare=t_ext / t_bare, extract_vs_encode_bare=t_ext / (t_enc + t_bare))
    fig["headline"] = f"extract {rate['extract']:.1f} audio s/s ({fig['extract_vs_bare']:.2f}x bare)"
    return (f"{fig['audio_s']:g} s audio, {len(hooks)} hookpoints: bare forward {rate['bare']:.1f} audio s/s | "
            f"capture {rate['capture']:.1f} ({fig['capture_vs_bare']:.2f}x bare time) | extract_audio "
            f"{rate['extract']:.1f} ({fig['extract_vs_bare']:.2f}x bare, {fig['extract_vs_encode_bare']:.2f}x "
            f"encode+bare; encode alone {rate['encode']:.1f}) | store {opened.n_rows} rows, first item vs capture "
            f"max diff {fig['store_vs_capture_max_diff']:.1e}")


def bare_generation(adapter, texts: list[str], n_frames: int):
    """Inputs and GenerationConfig for model.generate with the settings adapter.generate uses."""
    from transformers import GenerationConfig

    model, max_new = adapter.model, n_frames + adapter.num_codebooks  # K more steps finish the delay pattern
    tok = adapter.processor(text=texts, padding=True, return_tensors="pt")
    inputs = {k: tok[k].to(adapter.device) for k in ("input_ids", "attention_mask")}
    cfg = GenerationConfig.from_dict({**model.generation_config.to_dict(), "do_sample": True, "top_k": 250,
                                      "top_p": None, "temperature": 1.0, "guidance_scale": GUIDANCE,
                                      "max_new_tokens": max_new, "max_length": None, "min_new_tokens": max_new})
    return inputs, cfg


def forced(adapter, codes: np.ndarray, hooks: list[str], texts) -> dict:
    """Teacher-forced activations (B, T, d) per hookpoint of generated codes (B, K, T)."""
    import torch

    items = adapter.code_activations([torch.from_numpy(c) for c in codes], hooks, texts)
    return {h: torch.stack([it[h] for it in items]) for h in hooks}


def max_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def generation_checks(adapter, texts: list[str], hooks: list[str], plain, steered, mid: str, step) -> dict:
    """Teacher-force generated codes: the clean run must reproduce its captures (both streams); the steered
    run must match upstream of `mid` and equal clean + `step` (d,) at `mid`. Max abs differences."""
    before = f"layers.{int(mid.split('.')[1]) - 1}"
    clean = {s: forced(adapter, plain.tokens, hooks, t) for s, t in (("cond", texts), ("uncond", [None] * len(texts)))}
    ref = forced(adapter, steered.tokens, [before, mid], texts)
    return {"tf_max_diff": {s: max(max_diff(plain.acts[s][h], clean[s][h]) for h in hooks) for s in clean},
            "act_max_abs": max(float(plain.acts["cond"][h].float().abs().max()) for h in hooks),
            "steer_upstream_max_diff": max_diff(steered.acts["cond"][before], ref[before]),
            "steer_edit_max_diff": max_diff(steered.acts["cond"][mid], ref[mid].float() + step.float())}


def phase_generate(ck: Check, dt: str, fig: dict) -> str:
    """model.generate vs adapter.generate with capture, plain and steered; then the teacher-forcing checks."""
    import torch

    from musicsae_cli.steering.edits import AddEdit, Schedule

    adapter = ck.need(f"adapter {dt}", f"build[{dt}]")
    a, hooks = ck.args, adapter.resolve_hookpoints("all")
    texts = (PROMPTS * a.gen_batch)[:a.gen_batch]
    mid = f"layers.{adapter.n_layers // 2}"
    unit = torch.randn(adapter.hookpoint_widths[mid], generator=torch.Generator().manual_seed(SEED))
    unit = (unit / unit.norm()).to(adapter.device, adapter.dtype)  # (d,)
    edit = AddEdit(unit, STRENGTH, Schedule(), "both", relative=False)  # every position, both guidance streams
    n_frames, out = max(1, round(a.gen_seconds * adapter.frame_rate)), {}

    def bare(frames=n_frames):
        inputs, cfg = bare_generation(adapter, texts, frames)
        torch.manual_seed(SEED)
        with torch.inference_mode():
            adapter.model.generate(**inputs, generation_config=cfg)

    def capture(seconds=a.gen_seconds):
        out["plain"] = adapter.generate(texts, seconds, hooks, seed=SEED, guidance_scale=GUIDANCE)

    def steered(seconds=a.gen_seconds):
        with adapter.intervene({mid: edit}):
            out["steered"] = adapter.generate(texts, seconds, hooks, seed=SEED, guidance_scale=GUIDANCE)

    runs = {"bare": bare, "capture": capture, "steered": steered}
    bare(5)  # warm-up: 5 frames each
    capture(5 / adapter.frame_rate)
    steered(5 / adapter.frame_rate)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.repeats):  # interleaved rounds
        for k, fn in runs.items():
            times[k].append(ck.timed(fn)[0])
    frames = len(texts) * n_frames
    for k, ts in times.items():
        fig[f"{k}_s"] = statistics.median(ts)
        fig[f"{k}_frames_per_s"] = frames / fig[f"{k}_s"]
    fig.update(frames=frames, steps=n_frames + adapter.num_codebooks, capture_vs_bare=fig["capture_s"] / fig["bare_s"],
               steered_vs_bare=fig["steered_s"] / fig["bare_s"])
    fig.update(generation_checks(adapter, texts, hooks, out["plain"], out["steered"], mid, edit.step))
    worst = max(*fig["tf_max_diff"].values(), fig["steer_upstream_max_diff"], fig["steer_edit_max_diff"])
    fig["check"] = "ok" if worst <= TF_TOL else ("over 1e-3 (bf16: reported only)" if dt == "bf16" else "FAILED")
    fig["headline"] = (f"capture {fig['capture_frames_per_s']:.0f} frames/s ({fig['capture_vs_bare']:.2f}x bare), "
                       f"tf diff {max(fig['tf_max_diff'].values()):.1e}")
    line = (f"{len(texts)} prompts x {n_frames} frames, guidance {GUIDANCE:g}: bare {fig['bare_frames_per_s']:.1f} "
            f"frames/s | capture all {len(hooks)} {fig['capture_frames_per_s']:.1f} ({fig['capture_vs_bare']:.2f}x "
            f"bare time) | steered {mid} {fig['steered_frames_per_s']:.1f} ({fig['steered_vs_bare']:.2f}x) | "
            f"teacher forcing max diff cond {fig['tf_max_diff']['cond']:.1e} uncond {fig['tf_max_diff']['uncond']:.1e}"
            f" (max |h| {fig['act_max_abs']:.1f}); steered: upstream {fig['steer_upstream_max_diff']:.1e}, "
            f"{mid} - (clean + a*v) {fig['steer_edit_max_diff']:.1e}: {fig['check']}")
    if fig["check"] == "FAILED":
        print(f"generate[{dt}]  {line}", flush=True)
        raise CheckFailed(f"teacher forcing differs from the captured activations by {worst:.2e} > {TF_TOL:g}")
    return line


def in_memory_steps(ck: Check, spec, sample, pool: list, amp) -> dict:
    """Training-step rows/s on in-memory batches: musicsae's TopK step and a plain dense-torch one (sae_bench)."""
    from sae_bench import DenseTopKReference, train_step_rate

    from musicsae_cli.sae.architectures import SparseAutoencoder

    def cycle():
        while True:
            yield from pool

    out = {}
    for name, cls in (("kernel", SparseAutoencoder), ("dense", DenseTopKReference)):
        sae = cls.create(spec, sample=sample, init_b_dec="mean").to(ck.device)
        out[f"{name}_rows_per_s"] = train_step_rate(sae, cycle(), ck.args.ref_steps, autocast_dtype=amp,
                                                    device=ck.device)["samples_per_s"]
    return out


def phase_sae(ck: Check, dt: str, fig: dict) -> str:
    """The sae train and sae encode services on the store of extract, against bare in-memory references."""
    import torch
    from sae_bench import matmul_rate

    from musicsae_cli.runtime import resolve_dtype
    from musicsae_cli.sae.architectures import SAESpec
    from musicsae_cli.sae.config import SAETrainConfig
    from musicsae_cli.sae.encode import encode_store
    from musicsae_cli.sae.io import load_sae
    from musicsae_cli.sae.train import train_sae
    from musicsae_cli.store import ActivationStore

    store = ck.need(f"store {dt}", f"extract[{dt}]")
    a, src = ck.args, ActivationStore.open(store)
    mid = f"layers.{len(src.hookpoints) // 2}"
    d, width, k, bs = src.widths[mid], a.sae_width, a.sae_k, a.sae_batch
    amp = resolve_dtype(dt) if dt == "bf16" else None  # autocast, fp32 master weights (as sae train does)
    cfg = SAETrainConfig(hookpoint=mid, architecture="topk", d_sae=width, k=k, batch_size=bs, max_steps=a.sae_steps,
                         autocast="bf16" if amp else "none", device=str(ck.device), lr_warmup_steps=10,
                         log_every=10**6, eval_every=10**9, checkpoint_every=10**9, val_fraction=0.1)
    train_sae(store, ck.scratch / f"sae-warm-{dt}", cfg.model_copy(update={"max_steps": 2}))  # warm-up
    t_train, res = ck.timed(lambda: train_sae(store, ck.scratch / f"sae-{dt}", cfg))
    rows = torch.from_numpy(src.read_rows(mid, np.arange(2 * bs) % src.n_rows))  # (2B, d), with repeats if few
    pool = [rows[:bs].to(ck.device), rows[bs:].to(ck.device)]  # two (B, d) batches, in memory
    fig.update(in_memory_steps(ck, SAESpec("topk", d, width, k=k), rows, pool, amp))
    enc_flop = 2 * d * width  # per row: the encoder matmul, the one dense product of a TopK step
    peak = ck.state.get(f"peak {dt}")
    enc_rate = matmul_rate(bs, d, width, resolve_dtype(dt), ck.device) / 1e3  # TFLOP/s at the encoder's shape
    fig.update(train_rows_per_s=res["rows_per_s"], train_wall_s=t_train, steps=res["steps"], peak_tflops=peak,
               encoder_matmul_tflops=enc_rate)
    of_peak = {k: fig[f"{k}_rows_per_s"] * enc_flop / 1e12 / peak if peak else float("nan")
               for k in ("train", "kernel", "dense")}
    fig.update({f"{k}_encoder_share_of_peak": v for k, v in of_peak.items()})
    sae, _ = load_sae(ck.scratch / f"sae-{dt}")  # one SAE: in the run folder
    encode_store(sae, store, ck.scratch / f"latents-warm-{dt}", hookpoint=mid, batch_size=bs, device=str(ck.device))
    t_enc, enc = ck.timed(lambda: encode_store(sae, store, ck.scratch / f"latents-{dt}", hookpoint=mid,
                                               batch_size=bs, device=str(ck.device)))
    sae = sae.to(ck.device)

    def bare_encode():  # fp32, as the service encodes
        with torch.inference_mode():
            for x in pool:
                ((sae.normalise(x) - sae.b_dec) @ sae.W_enc + sae.b_enc).topk(k, dim=1)  # (B, k)

    bare_encode()
    t_bare = ck.median(bare_encode)
    fig.update(encode_rows_per_s=enc["rows_encoded"] / t_enc, bare_encode_rows_per_s=2 * bs / t_bare,
               encode_mean_l0=enc["mean_l0"])
    fig["headline"] = f"train {fig['train_rows_per_s']:.0f} rows/s, encode {fig['encode_rows_per_s']:.0f} rows/s"
    return (f"TopK d_in {d} x {width}, k {k}, batch {bs}, {res['steps']} steps on {mid}: sae train "
            f"{fig['train_rows_per_s']:.0f} tokens/s ({of_peak['train']:.1%} of the {peak or float('nan'):.3g} "
            f"TFLOP/s peak as encoder FLOPs; whole service {t_train:.1f} s) | in memory: musicsae step "
            f"{fig['kernel_rows_per_s']:.0f} ({of_peak['kernel']:.1%}), dense torch step "
            f"{fig['dense_rows_per_s']:.0f} ({of_peak['dense']:.1%}) | "
            f"encoder matmul alone {enc_rate:.3g} TFLOP/s | sae encode {fig['encode_rows_per_s']:.0f} rows/s vs bare "
            f"matmul+topk {fig['bare_encode_rows_per_s']:.0f} (L0 {enc['mean_l0']:.1f})")


def phase_probe(ck: Check, dt: str, fig: dict) -> str:
    """The probe train service on every layer of the store of extract (label: low/high register)."""
    from musicsae_cli.probes.config import ProbeConfig
    from musicsae_cli.probes.train import train_probes

    store = ck.need(f"store {dt}", f"extract[{dt}]")
    cfg = ProbeConfig(label="label", device=str(ck.device))
    train_probes(store, ck.scratch / f"probes-warm-{dt}", cfg.model_copy(update={"hookpoints": ["layers.0"]}))
    t, res = ck.timed(lambda: train_probes(store, ck.scratch / f"probes-{dt}", cfg))
    best = res["best"]
    fig.update(seconds=t, read_s=res["timing_s"]["read"], fit_s=res["timing_s"]["fit"], layers=len(res["hookpoints"]),
               samples=res["split"]["samples"], iterations=res["iterations"], best_hookpoint=best["hookpoint"],
               best_metric=best["metric"], best_value=best["value"])
    fig["headline"] = f"{t:.2f} s, best {best['metric']} {best['value']:.2f}"
    return (f"{fig['layers']} layers x {fig['samples']} items: probe train {t:.2f} s (read {fig['read_s']:.2f} s, "
            f"fit {fig['fit_s']:.2f} s, {res['iterations']} L-BFGS iterations); best {best['hookpoint']} "
            f"{best['metric']} {best['value']:.2f} (chance 0.50)")


def phase_dist(ck: Check, dt: str, fig: dict) -> str:
    """With 2 or more GPUs: `sae train` on the extract store in one process and on every GPU (torchrun, nccl, DDP),
    on the same global batches: rows/s of each and the largest weight difference."""
    import subprocess

    import torch
    from safetensors.numpy import load_file

    store = ck.need(f"store {dt}", f"extract[{dt}]")
    n = torch.cuda.device_count()
    rates, weights = {}, {}
    for procs in (1, n):
        run = ck.scratch / f"dist-sae-{procs}"
        res = subprocess.run([sys.executable, "-m", "musicsae_cli", "sae", "train", str(store), "-o", str(run),
                              "--hookpoint", "layers.0", "--architecture", "topk", "--k", "32", "--steps", "60",
                              "--batch-size", str(1024 * n), "--device", "cuda", "--nproc", str(procs), "--json"],
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if res.returncode != 0:
            raise RuntimeError(f"sae train --nproc {procs}: {res.stderr.strip().splitlines()[-1:]}")
        rates[procs] = json.loads(res.stdout)["rows_per_s"]
        weights[procs] = load_file(str(run / "sae_weights.safetensors"))
    diff = max(float(np.abs(weights[1][k] - weights[n][k]).max()) for k in weights[1])
    fig.update(gpus=n, rows_per_s_1=rates[1], rows_per_s_n=rates[n], speedup=rates[n] / rates[1], max_weight_diff=diff)
    fig["headline"] = f"{n} GPUs {rates[n] / rates[1]:.2f}x one, weights within {diff:.1e}"
    return (f"sae train on {n} GPUs (nccl, DDP): {rates[n]:,.0f} rows/s against {rates[1]:,.0f} on one "
            f"({rates[n] / rates[1]:.2f}x); largest weight difference {diff:.1e}")


# ---- main -------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--dtypes", default="bf16,fp32", help="model precisions, in order (default bf16,fp32)")
    p.add_argument("--small", action="store_true", help="tiny sizes: the same code path in seconds (for CPU)")
    p.add_argument("--phases", default="extract,generate,sae,probe,dist",
                   help="subset to run (build always runs; dist needs 2 or more GPUs and is left out otherwise)")
    p.add_argument("--budget-s", type=float, default=300.0, help="start no phase after this many seconds")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--out", type=Path, help="scratch folder, new or empty (default: a temp folder); removed")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    for name, (full, small) in SIZES.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(full), help=f"default {full:g}; {small:g} with --small")
    a = p.parse_args(argv)
    for option, value, valid in (("--dtypes", a.dtypes, ("bf16", "fp32")),
                                 ("--phases", a.phases, ("extract", "generate", "sae", "probe", "dist"))):
        if not value or any(v not in valid for v in value.split(",")):
            p.error(f"{option} takes a comma-separated subset of {','.join(valid)}, not {value!r}")
    for name, (full, small) in SIZES.items():
        if getattr(a, name) is None:
            setattr(a, name, small if a.small else full)
    return a


def header(ck: Check) -> dict:
    """Versions and the machine, printed and returned."""
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "device": str(ck.device), "cpu_threads": torch.get_num_threads()}
    if ck.device.type == "cuda":
        props = torch.cuda.get_device_properties(ck.device)
        info.update(gpu=props.name, gpu_memory_gb=props.total_memory / 1e9, capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    fp32_matmul_precision=torch.get_float32_matmul_precision())
    print("gpu_check: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    return info


def summary(ck: Check) -> None:
    print(f"\n{'phase':<16}{'status':<9}{'s':>8}{'mem GB':>8}  figures")
    for name, rec in ck.phases.items():
        s = f"{rec['seconds']:.1f}" if rec["seconds"] is not None else "-"
        mem = f"{rec['max_mem_gb']:.2f}" if rec["max_mem_gb"] is not None else "-"
        what = rec["figures"].get("headline", "") if rec["status"] == "ok" else rec.get("error", "")
        print(f"{name:<16}{rec['status']:<9}{s:>8}{mem:>8}  {what}")


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    if torch.device(a.device).type == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, flush=True)
        return 0
    dtypes, phases = a.dtypes.split(","), a.phases.split(",")
    # Tiny ops on a shared CPU: a second thread that is descheduled makes every op wait for it (milliseconds each).
    torch.set_num_threads(1 if a.small and a.device == "cpu" else len(os.sched_getaffinity(0)))
    scratch = (a.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))).resolve()
    if scratch.exists() and any(scratch.iterdir()):
        raise SystemExit(f"{scratch} is not empty; pass a new or empty folder (it is deleted at the end)")
    scratch.mkdir(parents=True, exist_ok=True)
    ck = Check(a, torch.device(a.device), scratch)
    info = header(ck)
    funcs = {"extract": phase_extract, "generate": phase_generate, "sae": phase_sae, "probe": phase_probe}
    if ck.device.type == "cuda" and torch.cuda.device_count() >= 2:  # nccl needs a GPU per process
        funcs["dist"] = phase_dist
    try:
        write_dataset(ck)
        ck.run("peak", lambda fig: phase_peak(ck, dtypes, fig))
        for dt in dtypes:
            ck.run(f"build[{dt}]", lambda fig, dt=dt: phase_build(ck, dt, fig))
            for name in (p for p in funcs if p in phases):
                ck.run(f"{name}[{dt}]", lambda fig, fn=funcs[name], dt=dt: fn(ck, dt, fig))
            ck.state.pop(f"adapter {dt}", None)  # free the model before the next dtype
    finally:
        if a.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - ck.t0
    summary(ck)
    failed = [n for n, r in ck.phases.items() if r["status"] == "FAILED"]
    print(f"total {total:.1f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "no phase failed"))
    if a.json:
        a.json.write_text(json.dumps({"machine": info, "settings": {k: str(v) for k, v in vars(a).items()},
                                      "phases": ck.phases, "failed": failed, "total_s": total}, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
