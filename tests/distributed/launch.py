"""What the distributed tests share: killing a whole launch as a lost node would be."""

from __future__ import annotations


def kill_launch(proc) -> None:
    """SIGKILL the launcher and every process below it (torchrun starts ranks in their own process groups, so
    each is killed by pid), then reap the launcher."""
    import psutil

    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
