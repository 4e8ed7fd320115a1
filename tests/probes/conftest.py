"""A synthetic store whose label is linearly encoded in some hookpoints and absent from the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GENRES = ["classical", "electronic", "jazz", "rock"]
INFORMATIVE = ("layers.1", "layers.3")
HOOKPOINTS = ("layers.0", "layers.1", "layers.2", "layers.3")
D = 16
MODEL = {"family": "synthetic", "id": "synthetic-model", "hidden_size": D}


def write_planted_store(path: Path, n_groups: int = 80, items_per_group: int = 2, frames: int = 5, seed: int = 0,
                        model: dict | None = None, missing: tuple[int, ...] = (), shard_rows: int | None = 200) -> Path:
    """Items of 4 genres (balanced), 2 items per group (track); genre and bpm planted in INFORMATIVE layers.

    In informative layers an item's frames are genre_mean + 0.8 * item direction + noise, and bpm is linear in
    the item direction; uninformative layers hold independent noise. Items in `missing` have no genre/bpm.
    """
    from musicsae_cli.store import StoreWriter

    rng = np.random.default_rng(seed)
    # Genre lives in the first half of the dimensions and bpm in the second, so neither hides the other.
    genre_means = np.zeros((len(GENRES), D))
    genre_means[:, :D // 2] = rng.normal(size=(len(GENRES), D // 2)) * 1.5
    bpm_axis = np.zeros(D)
    bpm_axis[D // 2:] = rng.normal(size=D - D // 2)
    bpm_axis /= np.linalg.norm(bpm_axis)
    with StoreWriter.create(path, dict.fromkeys(HOOKPOINTS, D), "float32", frame_rate=50.0,
                            model=model or MODEL, shard_rows=shard_rows) as w:
        index = 0
        for g in range(n_groups):
            for _ in range(items_per_group):
                genre = index % len(GENRES)
                style = rng.normal(size=D)
                bpm = 120.0 + 20.0 * float(style @ bpm_axis)
                acts = {}
                for hp in HOOKPOINTS:
                    if hp in INFORMATIVE:
                        base = genre_means[genre] + 0.8 * style
                    else:
                        base = rng.normal(size=D) * 1.5
                    acts[hp] = (base + 0.3 * rng.normal(size=(frames, D))).astype(np.float32)
                meta = {"group": f"track{g:03d}", "genre": GENRES[genre], "bpm": bpm}
                if index in missing:
                    meta = {"group": f"track{g:03d}", "genre": None, "bpm": None}
                w.add_item(f"item{index:04d}", acts, item_meta=meta)
                index += 1
    return path


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory) -> Path:
    return write_planted_store(tmp_path_factory.mktemp("probe-stores") / "planted")


def write_stream_store(path: Path, n_items: int = 20, frames: int = 3, seed: int = 0) -> tuple[Path, dict]:
    """Items laid out as `extract --prompts` writes them: `frames` cond rows, then `frames` uncond rows.

    Genre (two values) is planted in the cond rows; the uncond rows are the cond ones shifted and scaled, so any
    pooling of the two streams shows. Returns the path and {stream: {hookpoint: (n_items, frames, D)}}.
    """
    from musicsae_cli.store import StoreWriter

    rng = np.random.default_rng(seed)
    genres = GENRES[:2]
    means = rng.normal(size=(2, D)) * 2
    acts = {s: {hp: np.empty((n_items, frames, D), np.float32) for hp in HOOKPOINTS[:2]} for s in ("cond", "uncond")}
    with StoreWriter.create(path, dict.fromkeys(HOOKPOINTS[:2], D), "float32", frame_rate=50.0, model=MODEL) as w:
        for i in range(n_items):
            for hp in HOOKPOINTS[:2]:
                acts["cond"][hp][i] = means[i % 2] + 0.3 * rng.normal(size=(frames, D))
                acts["uncond"][hp][i] = 3.0 * acts["cond"][hp][i] + 5.0
            x = {hp: np.concatenate([acts["cond"][hp][i], acts["uncond"][hp][i]]) for hp in HOOKPOINTS[:2]}
            w.add_item(f"clip{i:02d}-s0", x, item_meta={"group": f"clip{i:02d}", "genre": genres[i % 2]},
                       frames=np.tile(np.arange(frames), 2),
                       frame_meta={"stream": np.repeat(["cond", "uncond"], frames)})
    return path, acts
