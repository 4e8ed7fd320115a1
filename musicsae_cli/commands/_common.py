"""What every command shares: standard options, output and progress (errors: _errors.py, re-exported here)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._errors import cli_command  # noqa: F401  (re-exported: every command module imports it from here)

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
