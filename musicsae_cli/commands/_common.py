"""What every command shares: output, progress and config resolution (options: _options.py; errors: _errors.py,
re-exported here)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import typer

from ..models import EXAMPLES  # noqa: F401  (re-exported for the command modules' help)
from ._command import Alias, command, config_option  # noqa: F401  (re-exported for the command modules)
from ._errors import CURRENT, cli_command  # noqa: F401  (re-exported: every command module imports it from here)


def model_flags(model: str | None, family: str | None, trust: bool, hookpoint: list[str] | None,
                device: str | None) -> dict[str, Any]:
    """The flags of a command that loads a model (-m, --family, --trust-code, --hookpoint, --device)."""
    trust_code(trust)
    return {"model": model, "family": family, "hookpoints": hookpoint_spec(hookpoint), "device": device}


def generation_flags(values: list[str] | None) -> dict[str, Any]:
    """--gen KEY=VALUE pairs as flat config keys (values parsed as YAML), merged like every other flag."""
    from ..config import parse_set
    from ..models import generation_setting_names

    known = generation_setting_names()
    pairs = parse_set(values) if values else {}
    return {(k if k in known else f"generation.{k}"): v for k, v in pairs.items()}


def generation_aliases() -> dict[str, Alias]:
    """`--top-k 50` for `--gen top_k=50`, for every registered family's generation settings."""
    from ..models import generation_setting_names

    return {f"--{name.replace('_', '-')}": Alias(("--gen",), prefix=f"{name}=", warn=False)
            for name in generation_setting_names()}


def trust_code(allowed: bool) -> None:
    """Record --trust-code for this command run (the only way to allow py: model factories)."""
    from ..models import TRUST_CODE

    TRUST_CODE.set(bool(allowed))


def split_csv(value: str | list[str] | None) -> list[str] | None:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c'] (None when empty): repeatable options also take comma lists."""
    if not value:
        return None
    parts = [p.strip() for v in ([value] if isinstance(value, str) else value) for p in str(v).split(",")]
    return [p for p in parts if p] or None


def hookpoint_spec(values: list[str] | None) -> str | None:
    """Repeated --hookpoint values as one spec string ('layers.2,layers.4-6'), for configs that take one."""
    return ",".join(values) if values else None


def legacy_output(out: Path | None, legacy: Path | None, dry_run: bool = False) -> Path:
    """The output of a command whose OUT used to be an argument: -o, or the old argument with a warning."""
    from ..errors import UsageError

    if out is not None and legacy is not None:
        raise UsageError(f"two outputs: {legacy} and -o {out}", "pass the output once, with -o")
    if legacy is not None:
        sys.stderr.write(f"warning: OUT as an argument is deprecated; use -o {legacy}\n")
        return legacy
    if out is None:
        if dry_run:
            return Path(".")
        raise UsageError("missing option '-o' / '--out'", "name the output folder, e.g. -o out/")
    return out


# ---- output ----
class _StderrHandler(logging.Handler):
    """Log lines as 'warning: ...' on whatever sys.stderr is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")


class Output:
    """Where a command's results, messages and progress go, per -q/-v/--json."""

    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: bool = False):
        self.json_mode, self.quiet, self.verbose = json_mode, quiet, verbose
        self.started = time.perf_counter()
        logger = logging.getLogger("musicsae")
        logger.handlers[:] = [_StderrHandler()]
        logger.propagate = False
        logger.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)

    @property
    def show_progress(self) -> bool:
        from ..distributed import launched

        return not (self.quiet or self.json_mode) and launched().rank == 0  # under torchrun, rank 0 draws

    def progress(self, description: str, total: float | None = None):
        """A ProgressFactory: a Rich bar on a terminal, plain lines every ~10 s or 5% when stderr is a log file
        or a pipe (cluster jobs, nohup, CI), nothing with -q or --json."""
        from contextlib import contextmanager

        from ..progress import line_progress, no_progress

        if not self.show_progress:
            return no_progress(description, total)
        if not sys.stderr.isatty():
            return line_progress()(description, total)

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

    def show(self, result: Any, out: Any = None) -> None:
        """A typed result (musicsae_cli.results.Result): its lines, or with --json its fields."""
        self.result(result.to_json(), result.lines(), out=out)

    def result(self, data: dict, lines: list[str] | None = None, out: Any = None) -> None:
        """The command's result on stdout: with --json one envelope (`command`, `out`, `elapsed_s`, then the
        command's own fields), else `lines` (or key: value pairs)."""
        if self.json_mode:
            envelope = {"command": CURRENT.get(), "out": None if out is None else str(out),
                        "elapsed_s": round(time.perf_counter() - self.started, 3)}
            envelope.update((k, v) for k, v in data.items() if k not in envelope)
            sys.stdout.write(json.dumps(envelope, indent=2, default=_json_default) + "\n")
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
            dry_run: bool, out: Output, base: dict | None = None):
    """Resolve a command's config (presets of the running command first; `base` under the preset); with
    --dry-run print it as YAML on stdout and exit 0."""
    from ..config import dump_yaml, resolve_config

    cfg = resolve_config(model, group, preset, sets, flags, command=CURRENT.get().rsplit(" ", 1)[-1] or None,
                         base=base)
    if dry_run:
        if out.json_mode:  # the config itself, not a result: no envelope
            sys.stdout.write(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
        else:
            sys.stdout.write(dump_yaml(cfg))
        raise typer.Exit(0)
    return cfg


def distributed_start(nproc: int, device: str | None) -> None:
    """`--nproc N`: run this command line as N ranks under torchrun and exit with its code; launched by torchrun:
    join its process group (backend by the device)."""
    from .. import distributed

    if nproc > 1:
        raise typer.Exit(distributed.relaunch(nproc, distributed.strip_nproc(sys.argv[1:])))
    if distributed.launched().active:
        from ..runtime import resolve_device

        distributed.join(resolve_device(device or "auto").type)
