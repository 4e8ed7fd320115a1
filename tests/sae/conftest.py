"""A synthetic store whose activations are sparse combinations of known directions (the answer is known)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsae_cli.store import StoreWriter

D_IN, N_DIRS = 32, 64


def make_sparse_store(path: Path, n_items: int = 48, frames: int = 64, seed: int = 0, nan_row: int | None = None,
                      offset: float = 3.0) -> tuple[Path, np.ndarray]:
    """Rows x = offset + sum of 3 of N_DIRS unit directions with positive weights + small noise; 12 groups."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((N_DIRS, D_IN)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    row = 0
    with StoreWriter.create(path, {"layers.0": D_IN}, "float32", frame_rate=50.0, model={"id": "synthetic"},
                            shard_rows=1024) as w:
        for i in range(n_items):
            codes = np.zeros((frames, N_DIRS), np.float32)
            for f in range(frames):
                codes[f, rng.choice(N_DIRS, 3, replace=False)] = rng.uniform(1.0, 3.0, 3)
            x = offset + codes @ dirs + 0.01 * rng.standard_normal((frames, D_IN)).astype(np.float32)
            if nan_row is not None and row <= nan_row < row + frames:
                x[nan_row - row, 0] = np.nan
            row += frames
            w.add_item(f"item{i:03d}", {"layers.0": x}, item_meta={"group": f"track{i % 12}",
                                                                 "label": ["a", "b"][i % 2]})
    return path, dirs


@pytest.fixture(scope="session")
def sparse_store(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return make_sparse_store(tmp_path_factory.mktemp("sae") / "store")
