"""Decoder positions of every forward pass during generation, derived from what the decoder is fed.

Capture and position-aware edits need the absolute decoder position of h[:, 0] in each pass. How a library's
`generate` calls the decoder is private and changes between releases (the name of the cache argument, a prefill
that runs twice, the cache built inside the decoder), so nothing here keys on a call count or a keyword name:

- a pass that brings `cache_position` starts there;
- else a pass that brings a non-empty KV cache (any argument with a `get_seq_length()`) starts at its length;
- else the pass attends to nothing earlier, so it starts a sequence at position 0 (a prefill, maybe repeated).

Each start must be 0 or the end of the previous pass (positions contiguous), and after generation every position
0 .. n-1 must have been fed; otherwise generation fails with one line naming the installed transformers version.
"""

from __future__ import annotations

from ..errors import DependencyError

TRANSFORMERS_RANGE = ">=5.0,<6"  # the range pyproject.toml admits (a test keeps the two equal)


def transformers_version() -> str:
    """The installed transformers version ('not installed' when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return "not installed"


def unsupported(what: str) -> DependencyError:
    """The one-line error for a transformers release whose generation does not give capture what it needs."""
    return DependencyError(f"{what} under transformers {transformers_version()}",
                           f"musicsae supports transformers {TRANSFORMERS_RANGE}; install the version in "
                           "the project's lock (make test installs it) or report the new release")


def check_transformers() -> None:
    """DependencyError before any work when the installed transformers lies outside TRANSFORMERS_RANGE."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    installed = transformers_version()
    try:
        ok = Version(installed) in SpecifierSet(TRANSFORMERS_RANGE)
    except InvalidVersion:
        ok = False
    if not ok:
        raise DependencyError(f"transformers {installed} is installed, but musicsae supports {TRANSFORMERS_RANGE}",
                              f"pip install 'transformers{TRANSFORMERS_RANGE}' (or make test, which installs the "
                              "locked version)")


def _past_length(kwargs: dict) -> int | None:
    """Where this pass starts by what it is given: cache_position, else a KV cache's length; None = neither."""
    position = kwargs.get("cache_position")
    if position is not None and getattr(position, "numel", lambda: 0)() > 0:
        return int(position.reshape(-1)[0])
    for value in kwargs.values():
        length = getattr(value, "get_seq_length", None)
        if callable(length):
            return int(length())
    return None


class DecoderPositions:
    """Counts the positions fed to a decoder across the passes of one generation; checks they are contiguous."""

    def __init__(self) -> None:
        self.end = 0  # one past the last position fed so far in the current sequence
        self.fed: set[int] = set()

    def begin(self, kwargs: dict, length: int) -> int:
        """Start position of a pass of `length` positions called with `kwargs`; DependencyError if not contiguous."""
        past = _past_length(kwargs)
        start = 0 if not past else past  # nothing before it: a (re-)prefill from position 0
        if start not in (0, self.end):
            raise unsupported(f"a decoder pass started at position {start} after positions 0..{self.end - 1}")
        self.end = start + length
        self.fed.update(range(start, self.end))
        return start

    def check_covers(self, n_positions: int) -> None:
        """DependencyError unless positions 0 .. n_positions-1 were all fed."""
        missing = sorted(set(range(n_positions)) - self.fed)
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise unsupported(f"generation fed {len(self.fed)} of the {n_positions} decoder positions "
                              f"(missing {shown})")
