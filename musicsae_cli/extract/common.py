"""What both extraction modes share: opening (or resuming) the store, moving tensors into it, OOM errors."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import make_parents
from ..errors import MusicSAEError
from ..results import ABSENT, Result, internal
from ..store import StoreWriter
from ..store.prepare import resume_or_refuse

# Settings that never change what a store holds, so a rerun with other values resumes it; every other setting
# must match. batch_size is one for teacher forcing, where the model tokenises each window alone and the stored rows
# are the same at any batch size (tests/models/test_batch_invariance.py). Generation samples clips batch by batch,
# so there the batch size decides the clips and a resume must match it (open_store tells the modes apart).
_RUNTIME_ONLY = ("device", "batch_size", "strict", "shard_mb")


@dataclass(kw_only=True)
class StoreExtraction(Result):
    """What `extract` of inputs reports: what was written and the inputs skipped. Audio counts windows and audio
    seconds, sequence files count items; the other mode's fields are absent."""

    store: str = internal()  # the store written (the command's output)
    hookpoints: list[str]
    windows_written: int = ABSENT  # audio
    items_written: int = ABSENT  # sequence files
    rows_written: int
    store_items: int
    store_rows: int
    audio_seconds: float = ABSENT  # audio
    elapsed_s: float
    audio_s_per_s: float | None = ABSENT  # audio
    skipped: list[dict]


def store_config(cfg, mode: str, source: str) -> dict:
    """The config recorded in the store: the resolved settings plus the mode and the source.

    Local paths (the source, a model folder) are recorded resolved, so the same job run from another working
    directory, or with the path spelled another way, is recognised (and resumed) as the same job.
    """
    from ..models.identity import canonical_id

    settings = cfg.model_dump(mode="json")
    settings["model"] = canonical_id(settings["model"])
    return {"mode": mode, "source": canonical_id(source), **settings}


def open_store(out: str | Path, adapter, hookpoints: list[str], cfg, record: dict, overwrite: bool) -> StoreWriter:
    """A writer for `out`: new, replacing a store (--overwrite), or resuming an interrupted run of the same job."""
    out = Path(out)
    make_parents(out)
    # Generation seeds clips per batch, so its batch size changes what is stored; teacher forcing's does not.
    runtime_only = _RUNTIME_ONLY if record.get("mode") in ("audio", "sequences") else tuple(
        k for k in _RUNTIME_ONLY if k != "batch_size")
    resume = resume_or_refuse(out, record, runtime_only, "activation store", overwrite)
    return StoreWriter.create(out, **store_arguments(adapter, hookpoints, cfg, record), overwrite=overwrite,
                              resume=resume)


def store_arguments(adapter, hookpoints: list[str], cfg, record: dict) -> dict:
    """What a store of this extraction is created with (beside where and whether to resume)."""
    return {"hookpoints": {h: adapter.hookpoint_widths[h] for h in hookpoints}, "dtype": cfg.store_dtype,
            "model": adapter.describe(), "frame_rate": adapter.frame_rate,
            "position_convention": adapter.position_convention, "config": record,
            "shard_bytes": max(1, int(cfg.shard_mb * 2**20))}


def to_store(t, store_dtype: str) -> np.ndarray:
    """A (n, d) tensor as the array the store keeps, converted on the tensor's device (cheaper on a GPU)."""
    import torch

    if store_dtype == "float16":
        return t.to(torch.float16).cpu().numpy()
    if store_dtype == "bfloat16":  # the store keeps bf16 as its uint16 bit pattern
        return t.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
    return t.to(torch.float32).cpu().numpy()


@contextmanager
def out_of_memory_hint(batch_size: int, generating: bool = False):
    """Turn a device out-of-memory error into a one-line error that suggests a smaller batch.

    Teacher forcing stores the same rows at any batch size, so a smaller batch resumes the run. Generated clips
    depend on the batch size (each batch is sampled with the seed of its number), so a generation run with a
    smaller batch starts over.
    """
    import torch

    try:
        yield
    except torch.OutOfMemoryError as exc:
        smaller = max(1, batch_size // 2)
        how = ("and --overwrite (generated clips depend on the batch size, so the run starts over)" if generating
               else "(the run resumes where it stopped; the store is the same at any batch size)")
        raise MusicSAEError(f"out of memory with batch size {batch_size}",
                            f"retry with --batch-size {smaller} {how}") from exc
