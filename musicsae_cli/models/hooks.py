"""Scoped forward hooks: attached in a context manager and always removed, even when the run fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class StopForward(Exception):
    """Raised by a capture hook after the deepest requested layer, to skip the rest of the forward."""


@contextmanager
def scoped_hooks(registrations) -> Iterator[None]:
    """Register hooks lazily from (module, kind, fn, with_kwargs) and remove every handle on exit."""
    handles = []
    try:
        for module, kind, fn, with_kwargs in registrations:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))
            elif kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))
            else:
                raise ValueError(f"unknown hook kind {kind!r}")
        yield
    finally:
        for handle in handles:
            handle.remove()
