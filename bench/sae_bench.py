"""TopK SAE training-step throughput: the sparse kernels vs a dense reference, against this machine's matmul peak.

    .venv/bin/python bench/sae_bench.py                          # d_in 1024, 16x (16384 latents), k 32, batch 4096
    .venv/bin/python bench/sae_bench.py --batch 1024 --steps 3   # quicker

A training step is forward + backward + Adam step + decoder-gradient projection + decoder renormalisation, on
batches already in memory. Rows:
  sparse  musicsae's TopK path: dense encoder matmul, TopK selection, kept pre-activations with a sparse backward,
          embedding_bag decode (kernels.py)
  dense   the straightforward version of the same step: dense encode, torch.topk, scatter into a (B, d_sae)
          matrix, dense decode, plain autograd
each in fp32 and under bf16 autocast (fp32 master weights). Peak = best of repeated 4096^3 matmuls; the encoder
matmul's rate is measured alone at the benchmark's shapes. Timings are medians over --steps (best in brackets):
other processes on a shared machine inflate single steps.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder, TrainStep  # noqa: E402
from musicsae_cli.sae.archs.topk import TopKSAE  # noqa: E402
from musicsae_cli.sae.loop import adam  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


class DenseTopKReference(TopKSAE):
    """The same SAE trained the straightforward way: every tensor dense, autograd does the rest."""

    def training_loss(self, x, sparsity_coef=0.0, dead_mask=None, auxk_coef=1 / 32, auxk_k=None) -> TrainStep:
        x_n = self.normalise(x)
        pre = (x_n - self.b_dec) @ self.W_enc + self.b_enc  # (B, d_sae)
        top = pre.topk(self.spec.k, dim=1)
        f = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))  # (B, d_sae), k nonzeros a row
        x_hat_n = (f @ self.W_dec).float() + self.b_dec  # (B, d_in)
        mse_row = (x_n - x_hat_n).pow(2).sum(1).mean()
        fired = (f > 0).any(0)
        return TrainStep(mse_row / self.spec.d_in, x_hat_n.detach(), {"mse": mse_row.detach() / self.spec.d_in},
                         fired, (f > 0).sum(1).float().mean())


def make_optimizer(sae) -> torch.optim.Optimizer:
    """Adam as musicsae's trainer makes it (fused where torch has the kernel), the same for every row."""
    return adam(sae.parameters(), 1e-4, (0.9, 0.999))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------------------
# REUSABLE: time full training steps of any SAE over any iterable of (B, d_in) batches (in memory or a store).
# ------------------------------------------------------------------------------------------------------------
def train_step_rate(sae, batches: Iterable[torch.Tensor], steps: int, warmup: int = 1,
                    autocast_dtype: torch.dtype | None = None, optimizer=None, device=None,
                    dead_mask: torch.Tensor | None = None) -> dict:
    """Samples/s of full training steps (fetch batch + forward + backward + Adam + decoder hooks).

    `batches` yields (B, d_in) tensors (moved to `device`, default the SAE's); it must yield warmup + steps
    batches. `dead_mask` (d_sae,) marks latents dead on every step (the AuxK regime). The batch fetch is inside
    the timed region, so a store-backed iterator measures loading too.
    Returns {"samples_per_s" (median step), "best_samples_per_s", "step_s" (median), "best_step_s", "steps"}.
    """
    device = torch.device(device) if device is not None else sae.W_enc.device
    optimizer = optimizer or make_optimizer(sae)
    times, rows, it = [], [], iter(batches)
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        x = next(it).to(device, non_blocking=True)
        amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
        with amp:
            out = sae.training_loss(x, 0.0, dead_mask=dead_mask)
        out.loss.backward()
        sae.before_optimizer_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sae.after_optimizer_step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            rows.append(x.shape[0])
    median, best = statistics.median(times), min(times)
    return {"samples_per_s": rows[0] / median, "best_samples_per_s": rows[0] / best, "step_s": median,
            "best_step_s": best, "steps": steps}


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, device, repeats: int = 5) -> float:
    """Best GFLOP/s of an (m, k) @ (k, n) matmul with a bias (addmm), as the encoder does it."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device, dtype)
    b = torch.randn(k, n, generator=gen).to(device, dtype)
    bias = torch.zeros(n, device=device, dtype=dtype)
    torch.addmm(bias, a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.addmm(bias, a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-in", type=int, default=1024)
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per row (after one warmup step)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--dead-fraction", type=float, default=0.25, help="latents marked dead in the AuxK rows")
    ap.add_argument("--encode-rows", type=int, default=32768, help="rows per encoding round (0: skip encoding)")
    args = ap.parse_args()
    device = torch.device(args.device)
    d_in, d_sae, k, batch = args.d_in, args.d_in * args.expansion, args.k, args.batch
    dtypes = args.dtypes.split(",")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# TopK SAE d_in={d_in} d_sae={d_sae} k={k} batch={batch}; {name}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")

    gen = torch.Generator().manual_seed(0)
    pool = [torch.randn(batch, d_in, generator=gen) * 2.0 + 1.0 for _ in range(2)]  # in memory, reused
    spec = SAESpec("topk", d_in, d_sae, k=k)

    # the two implementations compute the same step: check once before timing
    sparse = SparseAutoencoder.create(spec, sample=pool[0], init_b_dec="mean").to(device)
    dense = DenseTopKReference.create(spec, sample=pool[0], init_b_dec="mean").to(device)
    x = pool[1][:256].to(device)
    a, b = sparse.training_loss(x, 0.0), dense.training_loss(x, 0.0)
    a.loss.backward()
    b.loss.backward()
    grad_diff = max(float((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-30))
                    for p, q in zip(sparse.parameters(), dense.parameters(), strict=True))
    print(f"# check: loss sparse {float(a.loss.detach()):.6f} dense {float(b.loss.detach()):.6f}, "
          f"max relative gradient difference {grad_diff:.1e}")
    del a, b

    def batches():
        while True:
            yield from pool

    peak = {d: matmul_rate(4096, 4096, 4096, DTYPES[d] or torch.float32, device) for d in dtypes}
    enc = {d: matmul_rate(batch, d_in, d_sae, DTYPES[d] or torch.float32, device) for d in dtypes}
    results = {}
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[torch.randperm(d_sae, generator=gen)[:int(args.dead_fraction * d_sae)]] = True
    for impl, cls, mask in (("sparse", SparseAutoencoder, None), ("dense", DenseTopKReference, None),
                            (f"sparse auxk {args.dead_fraction:.0%} dead", SparseAutoencoder, dead.to(device))):
        for d in dtypes:
            sae = cls.create(spec, sample=pool[0], init_b_dec="mean").to(device)
            results[impl, d] = train_step_rate(sae, batches(), args.steps, autocast_dtype=DTYPES[d], device=device,
                                               dead_mask=mask)
            del sae

    # Training from an activation store: the same steps fed by the trainer's shuffled stream (fp16 on disk).
    with tempfile.TemporaryDirectory(prefix="sae-bench-store-") as tmp:
        store = _write_store(Path(tmp) / "store", pool, (args.steps + 1) * batch * 2)
        for d in dtypes:
            sae = SparseAutoencoder.create(spec, sample=pool[0], init_b_dec="mean").to(device)
            stream = (torch.from_numpy(b.acts["x"]) for b in store.stream(["x"], batch, shuffle=True, seed=0,
                                                                          drop_last=True))
            results["sparse from store", d] = train_step_rate(sae, stream, args.steps, autocast_dtype=DTYPES[d],
                                                              device=device)
            del sae

    print(f"\n{'row':<28}{'step ms':>16}{'samples/s':>22}{'vs dense':>10}")
    for (impl, d), r in results.items():
        ratio = r["samples_per_s"] / results["dense", d]["samples_per_s"]
        print(f"{impl + ' ' + d:<28}{r['step_s'] * 1e3:>9.0f} [{r['best_step_s'] * 1e3:>4.0f}]"
              f"{r['samples_per_s']:>13.0f} [{r['best_samples_per_s']:>6.0f}]{ratio:>9.2f}x")
    print(f"\n{'matmul':<28}{'GFLOP/s':>16}{'of peak':>22}")
    for d in dtypes:
        print(f"{'peak 4096^3 ' + d:<28}{peak[d]:>16.0f}{'':>22}")
        print(f"{'encoder ' + d + f' ({batch}x{d_in}x{d_sae})':<28}{enc[d]:>16.0f}{enc[d] / peak[d]:>21.0%}")
    for d in dtypes:
        r = results["sparse", d]
        enc_ms = 2 * batch * d_in * d_sae / enc[d] / 1e6
        print(f"# {d}: encoder matmul alone {enc_ms:.0f} ms = {enc_ms / (r['step_s'] * 1e3):.0%} of the sparse step")
    for d in dtypes:
        aux = results[f"sparse auxk {args.dead_fraction:.0%} dead", d]["step_s"] / results["sparse", d]["step_s"]
        print(f"# {d}: AuxK step with {args.dead_fraction:.0%} of latents dead = {aux:.2f}x the plain step")
    encoding = {}
    if args.encode_rows:
        with tempfile.TemporaryDirectory(prefix="sae-bench-encode-") as tmp:
            encoding = encode_rates(spec, pool, args.encode_rows, dtypes, device, Path(tmp))
    rate = {key: r["samples_per_s"] for key, r in results.items()}
    summary = "; ".join(f"{d}: sparse {rate['sparse', d]:.0f}/s vs dense {rate['dense', d]:.0f}/s = "
                        f"{rate['sparse', d] / rate['dense', d]:.2f}x, from a store "
                        f"{rate['sparse from store', d]:.0f}/s "
                        f"({rate['sparse from store', d] / rate['sparse', d]:.2f}x of in-memory), encoder matmul "
                        f"{enc[d] / peak[d]:.0%} of peak, AuxK step "
                        f"{rate['sparse', d] / rate[f'sparse auxk {args.dead_fraction:.0%} dead', d]:.2f}x the plain"
                        + (f", encode {encoding[d]['encode'] / encoding[d]['reference']:.2f}x and sae encode "
                           f"{encoding[d]['sae encode'] / encoding[d]['reference']:.2f}x the addmm+topk reference"
                           if d in encoding else "") for d in dtypes)
    print(f"SUMMARY TopK k={k} d_sae={d_sae} batch={batch} ({device.type}): {summary}")


def encode_rates(spec: SAESpec, pool: list[torch.Tensor], rows: int, dtypes: list[str], device: torch.device,
                 tmp: Path, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Rows/s of TopK encoding, per dtype, in interleaved rounds over the same `rows` rows:
      reference   the plain computation on fp32 rows in memory: addmm(b_enc, x_n - b_dec, W_enc), topk, relu
      encode      musicsae's SparseAutoencoder.encode_sparse on the same rows (row blocks, fused centring)
      sae encode  the `sae encode` service end to end: read an fp32 store, encode, write the CSR latent store
    """
    from timing import interleaved

    from musicsae_cli.sae.encode import encode_store

    sae = SparseAutoencoder.create(spec, sample=pool[0], init_b_dec="mean").to(device).requires_grad_(False)
    store = _write_store(tmp / "store", pool, rows, dtype="float32")
    data = torch.from_numpy(store.read_rows("x", np.arange(rows)))  # (rows, d_in) fp32, as the store holds them
    batch = pool[0].shape[0]
    out = {}
    for d in dtypes:
        dtype = DTYPES[d]
        amp = functools.partial(torch.autocast, device.type, dtype=dtype) if dtype else contextlib.nullcontext
        runs = itertools.count()

        def reference(dtype=dtype):
            with torch.inference_mode():
                for s in range(0, rows, batch):
                    x_c = sae.normalise(data[s:s + batch].to(device)) - sae.b_dec
                    w, b = sae.W_enc, sae.b_enc
                    if dtype is not None:
                        x_c, w, b = x_c.to(dtype), w.to(dtype), b.to(dtype)
                    values, indices = torch.addmm(b, x_c, w).topk(spec.k, dim=1)
                    torch.relu(values).float().cpu(), indices.cpu()

        def encode(amp=amp):
            with torch.inference_mode(), amp():
                for s in range(0, rows, batch):
                    values, indices = sae.encode_sparse(data[s:s + batch].to(device))
                    values.cpu(), indices.cpu()

        def service(d=d, runs=runs):
            encode_store(sae, store.path, tmp / f"latents-{d}-{next(runs)}", batch_size=batch, device=str(device),
                         precision=d)

        with torch.inference_mode():  # the two in-memory paths pick the same latents
            x = data[:batch].to(device)
            with amp():
                ours = sae.encode_sparse(x)
            x_c = sae.normalise(x) - sae.b_dec
            ref = torch.addmm(*(t.to(dtype or torch.float32) for t in (sae.b_enc, x_c, sae.W_enc))).topk(spec.k)
            agree = float((torch.sort(ours[1], 1).values == torch.sort(ref.indices, 1).values).float().mean())
        _, median = interleaved({"reference": reference, "encode": encode, "sae encode": service}, rounds)
        out[d] = {name: rows / t for name, t in median.items()}
        print(f"\n# encoding {rows} rows, {d}: index agreement with the reference {agree:.4f}")
        for name, r in out[d].items():
            print(f"{name:<28}{r:>16.0f} rows/s{r / out[d]['reference']:>9.2f}x")
    return out


def _write_store(path: Path, pool: list[torch.Tensor], rows: int, dtype: str = "float16"):
    """An activation store (fp16 by default) of `rows` rows cycled from the in-memory pool, in 512-row items."""
    from musicsae_cli.store import ActivationStore, StoreWriter

    data = torch.cat(pool).numpy()
    with StoreWriter.create(path, {"x": data.shape[1]}, dtype) as writer:
        for i, start in enumerate(range(0, rows, 512)):
            idx = np.arange(start, min(start + 512, rows)) % data.shape[0]
            writer.add_item(f"item{i}", {"x": data[idx]})
    return ActivationStore.open(path)


if __name__ == "__main__":
    main()
