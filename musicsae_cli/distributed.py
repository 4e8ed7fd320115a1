"""Running on PyTorch's distributed runtime: `torchrun ... -m musicsae_cli <command>`, or `--nproc N` on one machine.

torchrun starts one process per rank with RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in the environment; a
command that supports it (extract, sae train, sae encode, probe train) joins the process group: backend nccl on
CUDA, gloo on CPU (MUSICSAE_DIST_BACKEND overrides), each rank on device cuda:LOCAL_RANK when it uses CUDA. Only
rank 0 prints results and draws progress.

Errors: a command's set-up and its end are agreement points (`agree`): every rank reports what it hit, and rank 0
prints the first error in one line (naming the rank when it was another's), then every rank exits with its code.
A rank that fails while the others are inside a collective (a training step) prints its own error and exits;
torchrun then stops the rest. What was committed stays resumable.

`--nproc N` relaunches the same command line under torch.distributed's elastic launcher (standalone rendezvous on
this machine, no restarts), so `musicsae extract ... --nproc 2` is `torchrun --standalone --nproc-per-node 2 -m
musicsae_cli extract ...`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import MusicSAEError, UsageError

SUPPORTED = ("extract", "sae train", "sae encode", "probe train")
BACKEND_ENV = "MUSICSAE_DIST_BACKEND"


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size, local rank (its GPU on a node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()
_state: dict[str, Any] = {"dist": None}


def launched() -> Dist:
    """The rank, world size and local rank torchrun gave this process (world 1 when not launched)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return SINGLE
    return Dist(rank, world, local) if world > 1 else SINGLE


def current() -> Dist:
    """The process group this process has joined (SINGLE outside torchrun)."""
    return _state["dist"] or SINGLE


def check_supported(command: str) -> None:
    """UsageError for a command launched by torchrun that does not run distributed."""
    d = launched()
    if d.active and command not in SUPPORTED:
        exc = UsageError(f"musicsae {command} does not run under torchrun ({d.world} processes)",
                         f"run it as one process; distributed: {', '.join(SUPPORTED)}")
        exc.agreed = True  # every rank raises it; rank 0 prints it
        raise exc


def refusal(what: str) -> UsageError:
    """The error for a part of a supported command that runs in one process only (raised alike on every rank)."""
    exc = UsageError(f"{what} runs in one process", "drop --nproc (or launch it without torchrun)")
    exc.agreed = True
    return exc


def backend_for(device_type: str) -> str:
    """nccl for CUDA, gloo otherwise; MUSICSAE_DIST_BACKEND overrides (UsageError for nccl without CUDA)."""
    import torch

    wanted = os.environ.get(BACKEND_ENV, "").strip().lower()
    problem = None
    if wanted not in ("", "nccl", "gloo"):
        problem = UsageError(f"{BACKEND_ENV}={wanted} is not a backend musicsae runs on", "use nccl or gloo")
    elif wanted == "nccl" and not (torch.cuda.is_available() and torch.distributed.is_nccl_available()):
        problem = UsageError("the nccl backend was asked for, but this machine has no CUDA (or torch no NCCL)",
                             f"unset {BACKEND_ENV} (gloo runs on CPU) or run on GPUs")
    if problem is not None:
        problem.agreed = True  # every rank finds it before the group exists; rank 0 says it
        raise problem
    return wanted or ("nccl" if device_type == "cuda" else "gloo")


def join(device_type: str = "cpu") -> Dist:
    """Join torchrun's process group (once); SINGLE when not launched by torchrun with more than one process."""
    import datetime

    import torch.distributed as td

    if _state["dist"] is not None:
        return _state["dist"]
    d = launched()
    if d.active:
        backend = backend_for(device_type)
        if backend == "nccl":
            import torch

            torch.cuda.set_device(d.local_rank)
        td.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        quiet_rank(d)
    _state["dist"] = d
    return d


def leave(clean: bool = True) -> None:
    """Leave the process group at the end of a command. After success every rank meets at a barrier first, so
    none tears its connections down while another still talks; after an error (the others may be inside another
    collective, or gone) it is left at once."""
    d, _state["dist"] = _state["dist"], None
    if d is None or not d.active:
        return
    import torch.distributed as td

    if td.is_initialized():
        if clean:
            td.barrier()
        td.destroy_process_group()


def exit_now(code: int) -> None:
    """End a torchrun rank with `code` without tearing down C++ state at interpreter exit (the process group's
    threads can abort a process there, turning a clean exit code into SIGABRT)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def quiet_rank(d: Dist) -> None:
    """Ranks other than 0 print nothing on stdout (their results are rank 0's to report)."""
    if not d.main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process


@contextmanager
def alone():
    """Run the body as one process would, inside a distributed run (no collectives): for work a rank does on
    its own, such as training the SAEs of its own hookpoints."""
    saved = _state["dist"]
    _state["dist"] = SINGLE
    try:
        yield
    finally:
        _state["dist"] = saved


# ---- collectives on Python objects (small: configs, errors, statistics) ----

def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    import torch.distributed as td

    d = current()
    if not d.active:
        return [obj]
    out: list = [None] * d.world
    td.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's `obj` on every rank."""
    import torch.distributed as td

    d = current()
    if not d.active:
        return obj
    box = [obj if d.main else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


def _comm_device(t):
    """Where the backend can move `t`: nccl moves CUDA tensors only (this rank's GPU), gloo any."""
    import torch
    import torch.distributed as td

    if td.get_backend() == "nccl" and not t.is_cuda:
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def gather_tensor(t):
    """Every rank's tensor (equal shapes but for dim 0), concatenated in rank order along dim 0, on every rank
    (on `t`'s device)."""
    import torch
    import torch.distributed as td

    d = current()
    if not d.active:
        return t
    sizes = gather(int(t.shape[0]))
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=_comm_device(t))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in sizes]
    td.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, sizes, strict=True)]).to(t.device)


def reduce_(t, op: str = "sum"):
    """All-reduce tensor `t` over the ranks (op sum, mean or max); returns the result (on `t`'s device)."""
    import torch.distributed as td

    d = current()
    if not d.active:
        return t
    moved = t.to(_comm_device(t))
    td.all_reduce(moved, op=td.ReduceOp.MAX if op == "max" else td.ReduceOp.SUM)
    if op == "mean":
        moved = moved / d.world
    return moved.to(t.device)


def barrier() -> None:
    import torch.distributed as td

    if current().active:
        td.barrier()


class RankError(MusicSAEError):
    """Another rank's error, raised on every rank so that all of them exit; rank 0 prints it."""


def agree(error: MusicSAEError | None) -> None:
    """An agreement point: every rank says whether it failed; if any did, every rank raises the first failure
    (rank 0's own, else another's, naming the rank)."""
    d = current()
    if not d.active:
        if error is not None:
            raise error
        return
    reports = gather(None if error is None else (error.message, error.hint, error.exit_code))
    for rank, report in enumerate(reports):
        if report is not None:
            message, hint, code = report
            if rank == d.rank and error is not None:
                error.agreed = True
                raise error
            exc = RankError(message if rank == 0 else f"rank {rank}: {message}", hint)
            exc.exit_code, exc.agreed = code, True
            raise exc


def let_rank_0_speak(seconds: float = 5.0) -> None:
    """A rank other than 0 that stops with an error waits (`seconds`) before it says anything or exits: torchrun
    stops every process as soon as one exits, which must not be before rank 0 has printed the error when it hit it
    too (rank 0 exits at once after it, and the launcher then stops this one, silently); an error of this rank
    alone is said after the wait."""
    import time

    time.sleep(seconds)


def silent(exc: BaseException) -> bool:
    """Whether this process keeps `exc` to itself: a rank other than 0 with an error every rank raised (rank 0
    prints it)."""
    return launched().rank != 0 and bool(getattr(exc, "agreed", False))


def agreed(fn, *args, **kwargs):
    """fn(*args, **kwargs) on every rank, then an agreement point: its result, or every rank raises the first
    rank's error."""
    try:
        result = fn(*args, **kwargs)
    except MusicSAEError as exc:
        agree(exc)
        raise
    agree(None)
    return result


def check_same(what: str, value, hint: str) -> None:
    """UsageError on every rank unless every rank sees the same `value` (a JSON-able config or listing)."""
    d = current()
    if not d.active:
        return
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    digests = gather(digest)
    odd = [r for r, h in enumerate(digests) if h != digests[0]]
    if odd:
        raise UsageError(f"ranks see different {what} (rank {odd[0]} differs from rank 0)", hint)


def block(n: int, d: Dist | None = None) -> range:
    """This rank's contiguous share of n things (rank-major, so concatenating the ranks keeps the order)."""
    d = d or current()
    return range(n * d.rank // d.world, n * (d.rank + 1) // d.world)


# ---- --nproc: relaunch under the elastic launcher ----

def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `python -m musicsae_cli ARGV` as nproc ranks on this machine (torchrun --standalone); returns the exit
    code of the run (a failed rank's, after it printed its error)."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if launched().active:
        raise UsageError("--nproc inside a torchrun launch", "launch either with torchrun or with --nproc")
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a failed rank has said why; the launcher need not
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex[:12],
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "musicsae_cli", *argv)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode]
        return next((c for c in codes if c > 0), 1)
    return 0


def strip_nproc(argv: list[str]) -> list[str]:
    """argv without its --nproc N (or --nproc=N)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


__all__ = ["Dist", "SINGLE", "SUPPORTED", "agree", "agreed", "alone", "backend_for", "barrier", "block", "broadcast",
           "check_same", "check_supported", "current", "exit_now", "gather", "gather_tensor", "join", "launched",
           "leave", "let_rank_0_speak", "reduce_", "refusal", "relaunch", "silent", "strip_nproc"]
