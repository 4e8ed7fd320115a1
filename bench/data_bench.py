"""Data preparation speed: Demucs separation through `data split`'s service, and `data chunk` on an hour of audio.

    .venv/bin/python bench/data_bench.py            # default-size HTDemucs on 60 s of stereo audio, 1 h chunked
    .venv/bin/python bench/data_bench.py --small    # tiny model, a minute of audio: seconds, does it work
    .venv/bin/python bench/data_bench.py --device cuda --seconds 300

Separation: a random-weight HTDemucs with the default arguments (drums/bass/other/vocals, 44.1 kHz, stereo,
10 s segments; --small: the tiny test model) is saved into a local model repository; split_dataset loads it
from there through get_model and separates wav files at the model's rate (read, normalise, apply_model,
two-stem sum or not, write 16-bit wav stems, commit). The reference is demucs.apply.apply_model called
directly on the same audio already in memory, with the same shifts, overlap and seed, in the same run. Rounds
are interleaved and the medians reported; the ratio service/reference is what musicsae adds around the model.

Chunking: one wav file (16-bit stereo, 44.1 kHz) of --chunk-hours of noise is cut into 5 s windows
(chunk_dataset, 16-bit wav out), and again resampled to 32 kHz mono with the RMS filter on. The reference is
a plain soundfile read of the same file and a write of the same audio into one file, block by block.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SOURCES = ["drums", "bass", "other", "vocals"]
SR = 44100


def music(seconds: float, seed: int) -> np.ndarray:
    """(2, N) float32: a bass line, a chord pad, clicks and noise, so a real model would have work to do."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    notes = 55 * 2 ** (rng.integers(0, 24, n // (SR // 2) + 1) / 12)
    bass = 0.3 * np.sin(2 * np.pi * np.cumsum(np.repeat(notes, SR // 2)[:n]) / SR)
    pad = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    clicks = (np.mod(t, 0.5) < 0.01) * rng.uniform(-0.5, 0.5, n)
    x = bass + pad + clicks + 0.01 * rng.standard_normal(n)
    return np.stack([x, 0.8 * x + 0.05 * rng.standard_normal(n)]).astype(np.float32)


def build_model(small: bool):
    import torch
    from demucs.htdemucs import HTDemucs

    from musicsae_cli.audio.tiny_demucs import build_tiny_demucs

    if small:
        return build_tiny_demucs(seed=0)
    torch.manual_seed(0)
    return HTDemucs(SOURCES, audio_channels=2, samplerate=SR).eval()


def bench_separation(args, work: Path) -> dict:
    import random

    import soundfile as sf
    import torch
    from demucs.apply import apply_model

    from musicsae_cli.audio.demucs_models import load_separation_model
    from musicsae_cli.audio.split import SplitConfig, split_dataset
    from musicsae_cli.audio.tiny_demucs import save_demucs_model
    from musicsae_cli.runtime import resolve_device

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = resolve_device(args.device)
    model = build_model(args.small)
    params = sum(p.numel() for p in model.parameters())
    repo = work / "repo"
    t0 = time.perf_counter()
    save_demucs_model(model, repo, "bench-htdemucs")
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_separation_model("bench-htdemucs", repo)
    load_s = time.perf_counter() - t0
    n_files = args.files
    clips = [music(args.seconds / n_files, seed=i) for i in range(n_files)]
    src = work / "mixes"
    for i, clip in enumerate(clips):
        src.mkdir(exist_ok=True)
        sf.write(str(src / f"mix{i}.wav"), clip.T, SR, subtype="PCM_16")
    # the reference separates exactly what the service reads: the 16-bit samples of the files
    clips = [sf.read(str(src / f"mix{i}.wav"), dtype="float32", always_2d=True)[0].T.copy() for i in range(n_files)]
    audio_s = sum(c.shape[1] for c in clips) / SR
    cfg = SplitConfig(model="bench-htdemucs", repo=str(repo), shifts=args.shifts, overlap=0.25, device=str(device),
                      two_stems=None)

    def reference() -> float:
        model.to(device)
        t = time.perf_counter()
        for clip in clips:
            wav = torch.from_numpy(clip)
            ref = wav.mean(0)
            random.seed(cfg.seed)
            with torch.no_grad():
                apply_model(model, ((wav - ref.mean()) / (ref.std() + 1e-8))[None], shifts=cfg.shifts,
                            overlap=cfg.overlap, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    runs = [0]

    def service() -> tuple[float, float]:
        runs[0] += 1
        out = work / f"stems{runs[0]}"
        t = time.perf_counter()
        res = split_dataset(src, out, cfg)
        wall = time.perf_counter() - t
        shutil.rmtree(out)
        return res["elapsed_s"], wall

    print(f"separation: HTDemucs {'tiny' if args.small else 'default size'} ({params / 1e6:.1f} M parameters), "
          f"{n_files} files, {audio_s:.0f} s of stereo 44.1 kHz, shifts={cfg.shifts}, overlap={cfg.overlap}, "
          f"device {device}, {torch.get_num_threads()} threads", flush=True)
    warm = clips[0][:, : SR * 2]
    with torch.no_grad():
        apply_model(model, torch.from_numpy(warm)[None], shifts=0, device=device)  # warm-up, untimed
    ref_s, svc_s, wall_s = [], [], []
    for r in range(args.repeats):
        ref_s.append(reference())
        elapsed, wall = service()
        svc_s.append(elapsed)
        wall_s.append(wall)
        print(f"  round {r + 1}: apply_model {ref_s[-1]:.2f} s, data split {svc_s[-1]:.2f} s "
              f"(with model load {wall_s[-1]:.2f} s)", flush=True)
    ref, svc, wall = statistics.median(ref_s), statistics.median(svc_s), statistics.median(wall_s)
    return {"audio_s": audio_s, "params_m": params / 1e6, "reference_s": ref, "service_s": svc, "service_wall_s": wall,
            "reference_x": audio_s / ref, "service_x": audio_s / svc, "overhead": svc / ref, "save_s": save_s,
            "load_s": load_s}


def write_long_wav(path: Path, seconds: float, block_s: float = 60.0) -> None:
    """A 16-bit stereo wav of noise with quiet and silent stretches, written block by block."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", SR, 2, subtype="PCM_16") as fh:
        done = 0.0
        while done < seconds:
            n = int(min(block_s, seconds - done) * SR)
            block = (0.2 * rng.standard_normal((n, 2))).astype(np.float32)
            block[: n // 5] *= 0.0  # a silent stretch in every block, for the RMS filter
            fh.write(block)
            done += n / SR


def bench_chunk(args, work: Path) -> dict:
    import soundfile as sf

    from musicsae_cli.audio.chunk import ChunkConfig, chunk_dataset

    seconds = args.chunk_hours * 3600
    src = work / "long"
    src.mkdir()
    path = src / "hour.wav"
    t0 = time.perf_counter()
    write_long_wav(path, seconds)
    print(f"chunking: {seconds / 60:.0f} min of 16-bit stereo 44.1 kHz ({path.stat().st_size / 2**20:.0f} MiB, "
          f"written in {time.perf_counter() - t0:.1f} s)", flush=True)

    def reference() -> float:
        out = work / "copy.wav"
        t = time.perf_counter()
        with sf.SoundFile(str(path)) as fin, sf.SoundFile(str(out), "w", SR, 2, subtype="PCM_16") as fout:
            for block in fin.blocks(blocksize=1 << 18, dtype="float32"):
                fout.write(block)
        elapsed = time.perf_counter() - t
        out.unlink()
        return elapsed

    def chunk(cfg: ChunkConfig) -> tuple[float, dict]:
        out = work / "chunks"
        t = time.perf_counter()
        res = chunk_dataset(path, out, cfg)
        elapsed = time.perf_counter() - t
        shutil.rmtree(out)
        return elapsed, res

    plain = ChunkConfig(length_s=5.0)
    music_cfg = ChunkConfig(length_s=10.0, hop_s=5.0, sample_rate=32000, mono=True, min_rms_db=-40.0, last="pad")
    ref_s, plain_s, music_s = [], [], []
    for r in range(args.repeats):
        ref_s.append(reference())
        elapsed, plain_res = chunk(plain)
        plain_s.append(elapsed)
        elapsed, music_res = chunk(music_cfg)
        music_s.append(elapsed)
        print(f"  round {r + 1}: read+write {ref_s[-1]:.2f} s, chunk 5 s {plain_s[-1]:.2f} s "
              f"({plain_res['chunks']} files), chunk 10/5 s 32 kHz mono + RMS {music_s[-1]:.2f} s "
              f"({music_res['chunks']} files, {music_res['dropped_silent']} silent dropped)", flush=True)
    return {"audio_s": seconds, "reference_s": statistics.median(ref_s), "plain_s": statistics.median(plain_s),
            "music_s": statistics.median(music_s), "plain_chunks": plain_res["chunks"],
            "music_chunks": music_res["chunks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny model and a minute of audio (seconds)")
    parser.add_argument("--seconds", type=float, default=None, help="audio to separate (default 60, small 8)")
    parser.add_argument("--files", type=int, default=None, help="files the audio is split into (default 3, small 2)")
    parser.add_argument("--shifts", type=int, default=1, help="random shifts (Demucs's default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--chunk-hours", type=float, default=None, help="audio to chunk (default 1.0, small 1/60)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 2, small 1)")
    parser.add_argument("--skip-separation", action="store_true")
    parser.add_argument("--skip-chunk", action="store_true")
    args = parser.parse_args()
    args.seconds = args.seconds or (8.0 if args.small else 60.0)
    args.files = args.files or (2 if args.small else 3)
    args.chunk_hours = args.chunk_hours or (1 / 60 if args.small else 1.0)
    args.repeats = args.repeats or (1 if args.small else 2)
    work = Path(tempfile.mkdtemp(prefix="musicsae-data-bench-"))
    try:
        sep = None if args.skip_separation else bench_separation(args, work)
        chk = None if args.skip_chunk else bench_chunk(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n=== data bench (medians) ===")
    if sep:
        print(f"separation  apply_model directly : {sep['reference_x']:6.2f} audio s/s ({sep['reference_s']:.2f} s for "
              f"{sep['audio_s']:.0f} s)")
        print(f"            data split service   : {sep['service_x']:6.2f} audio s/s ({sep['service_s']:.2f} s; "
              f"{sep['service_wall_s']:.2f} s with loading the model from the repository)")
        print(f"            service / reference  : {sep['overhead']:6.3f}x time  (model save {sep['save_s']:.2f} s, "
              f"load {sep['load_s']:.2f} s)")
    if chk:
        hours = chk["audio_s"] / 3600
        print(f"chunking    read+write reference : {chk['reference_s']:6.2f} s for {hours:g} h")
        print(f"            5 s windows          : {chk['plain_s']:6.2f} s ({chk['plain_s'] / chk['reference_s']:.2f}x "
              f"reference, {chk['plain_chunks']} files)")
        print(f"            10/5 s, 32 kHz mono, RMS filter: {chk['music_s']:6.2f} s "
              f"({chk['music_s'] / chk['reference_s']:.2f}x reference, {chk['music_chunks']} files)")


if __name__ == "__main__":
    main()
