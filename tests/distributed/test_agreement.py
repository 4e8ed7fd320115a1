"""The agreement points on a real 2-process gloo group (torch.multiprocessing): ranks that see different settings
are refused on every rank, one rank's error reaches every rank naming it, and the row shares of a batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="localhost",
                      MASTER_PORT=str(port))
    from musicsae_cli import distributed
    from musicsae_cli.errors import InputError, MusicSAEError

    d = distributed.join("cpu")
    out = {}
    try:
        distributed.agreed(distributed.check_same, "configs or inputs", {"lr": 0.1 if rank == 0 else 0.2}, "hint")
    except MusicSAEError as exc:  # every rank finds it; each raises rank 0's
        out["different"] = (exc.message, exc.exit_code, bool(getattr(exc, "agreed", False)))

    def fails_on_rank_1():
        if rank == 1:
            raise InputError("cannot write parts/rank-00001", "check the folder")
        return "fine"

    try:
        distributed.agreed(fails_on_rank_1)
    except MusicSAEError as exc:
        out["one"] = (exc.message, exc.exit_code, bool(getattr(exc, "agreed", False)))
    out["same"] = distributed.agreed(distributed.check_same, "configs", {"lr": 0.1}, "hint")
    out["block"] = list(distributed.block(10, d))
    distributed.leave()
    results[rank] = out


def test_agreement_points_on_two_ranks():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    for rank in (0, 1):
        r = results[rank]
        assert r["different"] == ("ranks see different configs or inputs (rank 1 differs from rank 0)", 2, True)
        assert r["same"] is None
    # rank 1's own error reaches rank 0, which prints it naming the rank; rank 1 raises its own, quietly (agreed)
    assert results[0]["one"] == ("rank 1: cannot write parts/rank-00001", 2, True)
    assert results[1]["one"] == ("cannot write parts/rank-00001", 2, True)
    assert results[0]["block"] == [0, 1, 2, 3, 4] and results[1]["block"] == [5, 6, 7, 8, 9]
