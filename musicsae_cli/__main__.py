"""`python -m musicsae_cli` runs the command-line application."""

from .commands.app import main

main()
