"""Helpers for the activation-store tests: small deterministic items and a store writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicsae_cli.store import StoreWriter

WIDTHS = {"layers.0": 16, "layers.3": 8}
GENRES = ["rock", "jazz", None, "pop"]


def make_items(n_items: int = 12, seed: int = 0, widths: dict[str, int] = WIDTHS) -> list[dict]:
    """Items of 3..17 frames with per-item labels (some None) and a cond/uncond per-frame stream."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_items):
        n = int(rng.integers(3, 18))
        items.append({
            "item_id": f"item{i:03d}",
            "acts": {name: rng.standard_normal((n, w)).astype(np.float32) * 3 for name, w in widths.items()},
            "item_meta": {"source_path": f"audio/{i}.wav", "genre": GENRES[i % 4], "bpm": 80 + 7 * i,
                          "group": f"g{i % 3}"},
            "frame_meta": {"stream": np.where(np.arange(n) % 2 == 0, "cond", "uncond")},
        })
    return items


def write_store(path: Path, items: list[dict], dtype: str = "float32", shard_rows: int | None = 40,
                **options) -> Path:
    """Write `items` into a new complete store at `path`."""
    with StoreWriter.create(path, WIDTHS, dtype, frame_rate=50.0, model={"id": "test/model"},
                            shard_rows=shard_rows, **options) as writer:
        for item in items:
            writer.add_item(**item)
    return path


def concat_acts(items: list[dict], hookpoint: str) -> np.ndarray:
    """The source activations of `items` stacked in store order -> (n_rows, width)."""
    return np.concatenate([item["acts"][hookpoint] for item in items])
