"""Typed errors: every failure a user can cause carries a one-line message, a hint and an exit code."""

from __future__ import annotations


class MusicSAEError(Exception):
    """Base error: `message` says what went wrong, `hint` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(MusicSAEError):
    """The command line or its arguments are wrong (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A preset, a --set override or a YAML file is invalid (exit 2)."""


class OutputExistsError(UsageError):
    """An output path already exists and --overwrite was not given (exit 2)."""

    def __init__(self, path, what: str = "output"):
        super().__init__(f"{what} already exists: {path}", "pass --overwrite to replace it, or choose another path")
        self.path = path


class InputError(UsageError):
    """An input file or folder is missing, empty or malformed (exit 2)."""


class AudioError(MusicSAEError):
    """An audio file could not be read or decoded (exit 1)."""


class StoreError(MusicSAEError):
    """An activation store is incomplete, corrupt or of an unsupported version (exit 1)."""


class DependencyError(MusicSAEError):
    """An installed library is outside the supported range or no longer behaves as musicsae needs (exit 1)."""
