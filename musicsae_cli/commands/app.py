"""The `musicsae` application: command groups are added here; heavy services load only when a command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import data, info

app = typer.Typer(
    name="musicsae",
    help="Look inside music models: prepare audio, extract activations, train sparse autoencoders and probes, "
         "steer generation and analyse what layers encode.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data.app, name="data")
app.command("info")(info.info)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"musicsae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Look inside music models from the shell."""


def main() -> None:
    """Console-script entry point."""
    app(prog_name="musicsae")
