"""musicsae: look inside music models from the shell."""

__version__ = "0.1.0"
