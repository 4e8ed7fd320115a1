"""A store written item by item in one process or on several ranks (torchrun): extraction, SAE encoding.

One process: the store's own writer (new, resumed, or replacing a store with --overwrite).

Several ranks: rank 0 opens the store exactly as one process does (creating it, resuming it, or staging its
replacement) and first moves in the parts an interrupted distributed run left. Every rank then takes a contiguous
block of the source (its items, or its shards), in the source's order, skips the items the store holds, and
writes its items into its own part, `<store>/parts/rank-NNNNN` (a store of its own, committed shard by shard;
no rank waits on another). At the end rank 0 moves the parts' shards into the store in rank order (one atomic
rename per shard) and marks it complete. An uninterrupted run therefore holds its rows in the same order as a
one-process run; a resumed one holds what was committed before, then what the resumed run added. A killed rank
or node leaves committed shards in the store and in the parts; the same command, at any world size, moves them
in and does the rest.
"""

from __future__ import annotations

from pathlib import Path

from .. import distributed
from .writer import StoreWriter

PARTS_DIR = "parts"


class StoreRun:
    """Where a loop writes (`writer`), what the store holds already (`done`) and which of the source's items are
    this rank's (`mine`); `finish` completes the store. `open_main()` opens the store as one process does;
    `part_arguments` are StoreWriter.create's arguments for a rank's part (the store's hookpoints, dtype, model,
    ...). Use as a context manager around the loop: an exception leaves everything committed resumable."""

    def __init__(self, open_main, part_arguments: dict, record: dict, inputs: list[str]):
        self.d = distributed.current()
        self.main: StoreWriter | None = None
        if not self.d.active:
            self.d = distributed.SINGLE
            self.main = self.writer = self._open_main(open_main)
            self.done = self.main.done_items
            return
        distributed.agreed(distributed.check_same, "configs or inputs", {"record": record, "inputs": inputs},
                           "launch every rank with the same command line on the same files (a shared filesystem)")
        self.main = distributed.agreed(self._open_main, open_main)
        try:
            path, done = distributed.broadcast((str(self.main.path), sorted(self.main.done_items))
                                               if self.d.main else None)
            self.done = frozenset(done)
            part = Path(path) / PARTS_DIR / f"rank-{self.d.rank:05d}"
            self.writer = distributed.agreed(StoreWriter.create, part, **part_arguments)
        except BaseException:
            if self.main is not None:
                self.main.abandon()
            raise

    def _open_main(self, open_main) -> StoreWriter | None:
        if not self.d.main:
            return None
        main = open_main()
        try:
            absorb_parts(main)  # what an interrupted distributed run committed
        except BaseException:
            main.abandon()
            raise
        return main

    def mine(self, things: list) -> list:
        """This rank's contiguous block of the source's items or shards (all of them in one process)."""
        return [things[i] for i in distributed.block(len(things), self.d)] if self.d.active else list(things)

    def finish(self, stats: dict, skipped: list, nothing) -> tuple[dict, list, int, int]:
        """Complete the store: (stats summed over ranks, every rank's skipped files, items, rows of the store).
        Raises nothing(skipped) (and leaves no store it made) when no rank stored a row."""
        if not self.d.active:
            if stats["rows"] == 0 and self.main.n_rows == 0:
                raise nothing(skipped)
            self.main.close()
            return stats, skipped, self.main.n_items, self.main.n_rows
        distributed.agreed(self.writer.close)
        reports = distributed.gather((stats, skipped))
        total = {k: sum(r[0][k] for r in reports) for k in stats}
        skipped = [s for r in reports for s in r[1]]
        counts = distributed.agreed(self._merge, total, skipped, nothing)
        items, rows = distributed.broadcast(counts)
        return total, skipped, items, rows

    def _merge(self, total: dict, skipped: list, nothing):
        if not self.d.main:
            return None
        absorb_parts(self.main)
        if total["rows"] == 0 and self.main.n_rows == 0:
            self.main.abandon()  # the parts held no row either: no store is left behind
            raise nothing(skipped)
        self.main.close()
        return self.main.n_items, self.main.n_rows

    def __enter__(self) -> StoreRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            return
        if self.writer is not self.main:
            self.writer.abandon(keep=True)
        if self.main is not None:  # on several ranks, the others' parts stay for the resume to move in
            self.main.abandon(keep=self.d.active)


def absorb_parts(main: StoreWriter) -> int:
    """Move every rank part under the store into it, in rank order; returns the rows moved."""
    parts = main.path / PARTS_DIR
    if not parts.is_dir():
        return 0
    rows = sum(main.absorb(p) for p in sorted(parts.iterdir()) if p.is_dir() and p.name.startswith("rank-"))
    if not any(parts.iterdir()):
        parts.rmdir()
    return rows


__all__ = ["PARTS_DIR", "StoreRun", "absorb_parts"]
