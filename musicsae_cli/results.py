"""Typed results: what a service hands its command, as lines for people and as the fields --json prints.

A service returns a `Result` (never prints); its command shows it through the command's output object
(`ui.show(result)`): `lines()` on stdout, or with --json `to_json()` inside the command's envelope (`command`,
`out`, `elapsed_s`, then the result's own fields). The fields of a result are declared in the order --json prints
them. A field that is there only sometimes defaults to `ABSENT` and is left out while it is; a field declared with
`internal()` is for Python callers (benchmarks, tests) and is not printed.

Results read like the dictionaries they replace, so `res["layers"]` and `res.get("stream")` keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # a field the result does not have this time (left out of to_json and of reads by key)


def internal(default: Any = dataclasses.MISSING) -> Any:
    """A field kept for Python callers and not printed by --json."""
    return dataclasses.field(default=default, metadata={"json": False})


@dataclasses.dataclass(kw_only=True)
class Result:
    """The base of every typed result: subclasses declare fields and say how they read (`lines`)."""

    def lines(self) -> list[str]:
        """The human output, one string a line."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The fields --json prints, in declaration order (absent and internal fields left out)."""
        return {f.name: value for f in dataclasses.fields(self)
                if f.metadata.get("json", True) and (value := getattr(self, f.name)) is not ABSENT}

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, ABSENT) if key in self._names() else ABSENT
        if value is ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._names() and getattr(self, str(key)) is not ABSENT

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def keys(self) -> list[str]:
        """The fields present (internal ones too), so `dict(res)`, `{**res}` and `d.update(res)` work."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not ABSENT]

    def _names(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self)}


def skipped_lines(skipped: Iterable[dict | tuple]) -> list[str]:
    """'N skipped:' and one '  path: reason' line per skipped input ({"path", "reason"} or (path, reason));
    nothing when none were."""
    pairs = [(s["path"], s["reason"]) if isinstance(s, dict) else tuple(s) for s in skipped]
    return [f"{len(pairs)} skipped:", *(f"  {path}: {reason}" for path, reason in pairs)] if pairs else []
