"""The `musicsae` application: command groups are added here; heavy services load only when a command runs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import __version__
from . import analyze, concept, data, extract, info, model, probe, sae, steer
from ._help import MusicsaeGroup

app = typer.Typer(
    cls=MusicsaeGroup,
    rich_markup_mode="rich",
    name="musicsae",
    help="Look inside music models: prepare audio, extract activations, train sparse autoencoders and probes, "
         "steer generation and analyse what layers encode.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# In pipeline order: the root help lists them so.
app.add_typer(data.app, name="data")
extract.extract.register(app)
app.add_typer(sae.app, name="sae")
app.add_typer(probe.app, name="probe")
app.add_typer(steer.app, name="steer")
app.add_typer(concept.app, name="concept")
app.add_typer(analyze.app, name="analyze")
info.info.register(app)
app.add_typer(model.app, name="model")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"musicsae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                          help="Print the version and exit.")] = False,
) -> None:
    """Look inside music models from the shell."""


def main() -> None:
    """Console-script entry point: parser errors get the same one-line format as every other error."""
    try:
        code = app(prog_name="musicsae", standalone_mode=False)
    except Exception as exc:
        # Usage errors from the argument parser (missing argument, unknown option or command) carry
        # `format_message()`, `exit_code` and the failing `ctx`; anything else is not ours to format.
        if not (callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        ctx = getattr(exc, "ctx", None)
        where = getattr(ctx, "command_path", None) or "musicsae"
        message = exc.format_message().strip()
        if message:  # empty when a bare group was called: its help has been shown already
            sys.stderr.write(f"error: {message} (hint: see '{where} --help')\n")
        sys.exit(exc.exit_code)
    code = code if isinstance(code, int) else 0
    from ..distributed import exit_now, launched

    if launched().active:  # a torchrun rank: its exit code must survive the process group's teardown
        exit_now(code)
    sys.exit(code)
