"""Device, dtype and seeding in one place ("auto" device = cuda > mps > cpu)."""

from __future__ import annotations

import random

from .errors import UsageError

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def resolve_device(name: str = "auto"):
    """A torch.device for 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; UsageError when it is not available."""
    import torch

    from .distributed import launched

    name = (name or "auto").lower()
    local = launched()  # under torchrun, each rank takes the GPU of its local rank
    if name == "auto":
        if torch.cuda.is_available():
            return _rank_gpu(local) if local.active else torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device '{name}'", "use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' requested but CUDA is not available", "use --device cpu or auto")
    if device.type == "cuda" and device.index is None and local.active:
        device = _rank_gpu(local)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available", "use --device cpu or auto")
    return device


def _rank_gpu(local):
    """The GPU of a torchrun rank: cuda:LOCAL_RANK, refused when the node has fewer GPUs than processes."""
    import torch

    count = torch.cuda.device_count()
    if local.local_rank >= count:
        raise UsageError(f"process {local.local_rank} of this node has no GPU of its own ({count} GPU(s))",
                         f"launch at most {count} processes per node (--nproc {count})")
    return torch.device("cuda", local.local_rank)


def resolve_dtype(name: str = "fp32"):
    """A torch dtype for fp32/fp16/bf16 (or their long names)."""
    import torch

    canonical = DTYPES.get((name or "fp32").lower())
    if canonical is None:
        raise UsageError(f"unknown dtype '{name}'", "use fp32, fp16 or bf16")
    return getattr(torch, canonical)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
