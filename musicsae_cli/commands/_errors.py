"""How a command fails: typed errors, disk trouble and bugs each become one line on stderr and an exit code."""

from __future__ import annotations

import contextvars
import errno
import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer


def _debug() -> bool:
    return os.environ.get("MUSICSAE_DEBUG", "") not in ("", "0")


def fail(message: str, hint: str | None, code: int) -> typer.Exit:
    """Print the one-line error and return the Exit to raise."""
    line = f"error: {message}" + (f" (hint: {hint})" if hint else "")
    sys.stderr.write(line + "\n")
    return typer.Exit(code)


# The command running now ("sae train"): the --json envelope and the choice of presets read it.
CURRENT = contextvars.ContextVar("musicsae_command", default="")


def cli_command(fn: Callable, label: str | None = None) -> Callable:
    """Wrap a command: typed errors -> one line + exit code (2 usage, 1 runtime, 130 Ctrl-C)."""
    from ..errors import MusicSAEError

    label = label or _command_path(fn).removeprefix("musicsae ")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .. import distributed

        token = CURRENT.set(label)
        clean = False
        try:
            distributed.check_supported(label)
            result = fn(*args, **kwargs)
            clean = True
            return result
        except typer.Exit as exc:
            clean = exc.exit_code == 0
            raise
        except MusicSAEError as exc:
            if _debug():
                traceback.print_exc()
            if distributed.silent(exc):  # every rank hit it; rank 0 says it
                distributed.let_rank_0_speak()
                raise typer.Exit(exc.exit_code) from None
            rank = distributed.launched()
            message = exc.message
            if rank.active and not rank.main:  # said only if rank 0 has not failed too (it is stopped then)
                distributed.let_rank_0_speak()
                message = f"rank {rank.rank}: {message}"
            raise fail(message, exc.hint, exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", "rerun the same command to resume where supported", 130) from None
        except Exception as exc:
            storage = _storage_error(exc)
            if storage is not None:  # the disk, not a bug: a full device or a folder that cannot be written
                if _debug():
                    traceback.print_exc()
                raise fail(*storage) from None
            if _debug():
                raise
            # Not a musicsae error: a bug (ours or a library's), never the user's mistake; say so and where.
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raised = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            raise fail(f"internal error in 'musicsae {label}': {raised} ({_versions()})",
                       "rerun with MUSICSAE_DEBUG=1 for the traceback and report it", 1) from None
        finally:
            distributed.leave(clean)
            CURRENT.reset(token)

    return wrapper


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # EDQUOT: a disk quota (not on Windows)
_NO_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)
# Libraries that do their own I/O (safetensors' Rust writer, Arrow) report these without an errno.
_NO_SPACE_TEXT = ("no space left on device", "storagefull", "quota exceeded")
_READ_ONLY_TEXT = ("read-only file system", "readonlyfilesystem")


def _storage_error(exc: BaseException) -> tuple[str, str, int] | None:
    """(message, hint, exit code) when `exc`, or what caused it, is a full disk or a refused write; else None.

    A full disk is a runtime failure (exit 1: the same command succeeds once there is room). A folder that
    cannot be written is a mistake in the command line, like a missing parent folder (exit 2: rerunning it
    unchanged never succeeds; another -o does).
    """
    seen: list[BaseException] = []
    while exc is not None and len(seen) < 8 and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    for err in seen:
        name = getattr(err, "filename", None) if isinstance(err, OSError) else None
        code = err.errno if isinstance(err, OSError) else None
        text = str(err).lower()
        if code in _NO_SPACE or (code is None and any(t in text for t in _NO_SPACE_TEXT)):
            where = f" writing {name}" if name else ""
            return (f"no space left on the device{where}",
                    "free some space, or choose an output (-o) on a disk with more room; a resumable job "
                    "continues where it stopped", 1)
        read_only = code == errno.EROFS or (code is None and any(t in text for t in _READ_ONLY_TEXT))
        if read_only or code in _NO_WRITE or (isinstance(err, PermissionError) and code is None):
            target = f" {name}" if name else ""
            if not read_only and name and os.path.exists(name) and not os.access(name, os.R_OK):
                return (f"cannot read{target}: permission denied", "make it readable, or pass a copy you can "
                        "read", 2)
            why = "read-only file system" if read_only else "permission denied"
            return f"cannot write{target}: {why}", "choose an output folder (-o) you can write to", 2
    return None


def _command_path(fn: Callable) -> str:
    """'musicsae sae train' for the function behind a command (top-level commands share their module's name)."""
    group = fn.__module__.rsplit(".", 1)[-1]
    name = fn.__name__.replace("_", "-")
    return "musicsae " + (name if group == fn.__name__ else f"{group} {name}")


def _versions() -> str:
    """'musicsae X, torch Y, transformers Z' from package metadata (imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    parts = [f"musicsae {__version__}"]
    for package in ("torch", "transformers"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} not installed")
    return ", ".join(parts)
