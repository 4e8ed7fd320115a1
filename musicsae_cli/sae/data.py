"""Training data from an activation store: a leak-free split by group, shuffled batches, finite checks."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, MusicSAEError
from ..store import ActivationStore

log = logging.getLogger("musicsae")


@dataclass
class Split:
    """Global row indices of the training and validation parts, and the groups on each side."""

    train: np.ndarray  # (n_train,) int64, increasing
    val: np.ndarray  # (n_val,) int64, increasing
    column: str
    n_train_groups: int
    n_val_groups: int
    where: list[str] = field(default_factory=list)  # the filters used (the user's, plus a stream picked by default)
    stream: dict | None = None  # the generation stream picked by default (store.filters.StreamChoice.record())


def pick_hookpoint(store: ActivationStore, hookpoint: str | None) -> str:
    """The requested hookpoint, or the store's only one; InputError listing them otherwise."""
    if hookpoint is None:
        if len(store.hookpoints) != 1:
            raise InputError(f"the store has {len(store.hookpoints)} hookpoints", "choose one with --hookpoint: "
                             + ", ".join(store.hookpoints))
        return store.hookpoints[0]
    if hookpoint not in store.hookpoints:
        raise InputError(f"hookpoint '{hookpoint}' is not in the store", "available: " + ", ".join(store.hookpoints))
    return hookpoint


def split_rows(store: ActivationStore, where: list[str], val_fraction: float, column: str, seed: int) -> Split:
    """Rows matching `where`, split so that every value of `column` (a track) sits on one side only.

    A store with several generation streams gives the rows of one (cond unless `where` names one): see
    store.filters.choose_stream."""
    from ..store.filters import choose_stream

    streams = choose_stream(store, where)
    where = streams.where
    rows = store.select(where) if where else np.arange(store.n_rows, dtype=np.int64)
    if rows.size == 0:
        raise InputError("no rows to train on" + (f" after filters {where}" if where else " (empty store)"),
                         "check --where against `musicsae info STORE`")
    columns = store.metadata_columns
    if column not in columns:
        fallback = "item_id"
        log.warning("store has no '%s' column; splitting by %s instead", column, fallback)
        column = fallback
    keys = np.asarray(store.metadata([column]).column(column).to_numpy(zero_copy_only=False))[rows]
    groups, inverse = np.unique(keys.astype(str), return_inverse=True)
    # A group's side depends only on its name and the seed, never on which other groups exist.
    score = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{g}".encode(), digest_size=8).digest(), "little")
                      for g in groups], dtype=np.float64) / 2.0**64
    val_group = score < val_fraction
    if val_fraction > 0 and not val_group.any() and len(groups) > 1:
        val_group[np.argmin(score)] = True  # tiny stores: keep at least one validation group
    in_val = val_group[inverse]
    return Split(rows[~in_val], rows[in_val], column, int((~val_group).sum()), int(val_group.sum()), where,
                 streams.record())


def check_finite(x, rows: np.ndarray, store: ActivationStore) -> None:
    """Fail on NaN/Inf, naming the first bad rows; training never continues on non-finite input."""
    import torch

    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        bad_rows = rows[bad.cpu().numpy()][:5]
        ids = store.metadata(["item_id"]).column("item_id").take(bad_rows).to_pylist()
        shown = ", ".join(f"row {r} ({i})" for r, i in zip(bad_rows.tolist(), ids, strict=True))
        raise MusicSAEError(f"non-finite activations (NaN/Inf) in {int(bad.sum())} rows of a batch: {shown}",
                            "re-extract those items, or exclude them with --where")


def init_sample(store: ActivationStore, hookpoint: str, rows: np.ndarray, n: int, seed: int,
                share: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` training rows chosen at random: (their row indices, float32 (n, d)); with `share` = (rank,
    world), all the indices but only that rank's contiguous block of the rows."""
    rng = np.random.default_rng([seed, 7])
    pick = np.sort(rng.choice(rows, size=min(n, rows.size), replace=False))
    if share is not None:
        rank, world = share
        return pick, store.read_rows(hookpoint, pick[pick.size * rank // world: pick.size * (rank + 1) // world])
    return pick, store.read_rows(hookpoint, pick)
