"""What every command shares: standard options, one-line errors with exit codes, output and progress."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

# ---- standard options (Annotated aliases keep every command's signature uniform) ----
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config key (repeatable; values parsed as YAML, dotted keys nest).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Only errors on stderr; no progress bars.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug messages on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
WhereOpt = Annotated[list[str] | None, typer.Option("--where", help="Row filter, e.g. stream=cond (repeatable).")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
MemberOpt = Annotated[str | None, typer.Option(help="Which SAE of a sweep run.")]
AllowOtherModelOpt = Annotated[bool, typer.Option(
    "--allow-other-model", help="Accept inputs made with another model (models are compared by a fingerprint of "
                                "their weights; widths must still match).")]


def config_option(group: str):
    """The -c/--config option of a command whose presets live in configs/<group>/."""

    def complete(incomplete: str) -> list[str]:
        from ..config import list_presets

        return [name for name in list_presets(group) if name.startswith(incomplete)]

    return typer.Option("-c", "--config", metavar="PRESET|PATH", autocompletion=complete,
                        help=f"A preset from configs/{group}/ or a YAML file.")


# ---- errors ----
def _debug() -> bool:
    return os.environ.get("MUSICSAE_DEBUG", "") not in ("", "0")


def fail(message: str, hint: str | None, code: int) -> typer.Exit:
    """Print the one-line error and return the Exit to raise."""
    line = f"error: {message}" + (f" (hint: {hint})" if hint else "")
    sys.stderr.write(line + "\n")
    return typer.Exit(code)


def cli_command(fn: Callable) -> Callable:
    """Wrap a command: typed errors -> one line + exit code (2 usage, 1 runtime, 130 Ctrl-C)."""
    from ..errors import MusicSAEError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except MusicSAEError as exc:
            if _debug():
                traceback.print_exc()
            raise fail(exc.message, exc.hint, exc.exit_code) from None
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
            raise fail(f"internal error in '{_command_path(fn)}': {raised} ({_versions()})",
                       "rerun with MUSICSAE_DEBUG=1 for the traceback and report it", 1) from None

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


# ---- output ----
class _StderrHandler(logging.Handler):
    """Log lines as 'warning: ...' on whatever sys.stderr is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")


class Output:
    """Where a command's results, messages and progress go, per -q/-v/--json."""

    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: bool = False):
        self.json_mode, self.quiet, self.verbose = json_mode, quiet, verbose
        logger = logging.getLogger("musicsae")
        logger.handlers[:] = [_StderrHandler()]
        logger.propagate = False
        logger.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.json_mode) and sys.stderr.isatty()

    def progress(self, description: str, total: float | None = None):
        """A ProgressFactory: a Rich bar on stderr, or nothing when quiet, --json or not a terminal."""
        from contextlib import contextmanager

        from ..progress import no_progress

        if not self.show_progress:
            return no_progress(description, total)

        @contextmanager
        def bar():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn()]
            with Progress(*columns, console=Console(stderr=True), transient=True) as prog:
                task = prog.add_task(description, total=total)

                class _Tracker:
                    def advance(self, n: float = 1) -> None:
                        prog.advance(task, n)

                yield _Tracker()

        return bar()

    def info(self, message: str) -> None:
        """A human message on stderr (hidden by -q and --json)."""
        if not (self.quiet or self.json_mode):
            sys.stderr.write(message + "\n")

    def result(self, data: dict, lines: list[str] | None = None) -> None:
        """The command's result on stdout: JSON with --json, else `lines` (or key: value pairs)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
            return
        for line in lines if lines is not None else [f"{k}: {v}" for k, v in data.items()]:
            sys.stdout.write(line + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def resolve(model: type, group: str, preset: str | None, sets: list[str] | None, flags: dict[str, Any],
            dry_run: bool, out: Output):
    """Resolve a command's config; with --dry-run print it as YAML on stdout and exit 0."""
    from ..config import dump_yaml, resolve_config

    cfg = resolve_config(model, group, preset, sets, flags)
    if dry_run:
        if out.json_mode:
            out.result(cfg.model_dump(mode="json"))
        else:
            sys.stdout.write(dump_yaml(cfg))
        raise typer.Exit(0)
    return cfg
