"""Hookpoint names as strings, independent of the layer count.

`layers.{i}` is the residual stream after decoder block i. A spec is a comma-separated list of names,
ranges (`layers.0-5`, inclusive), negative indices (`layers.-1` = the last block), or `all`.
"""

from __future__ import annotations

import difflib
import re

from ..errors import UsageError

_LAYER = re.compile(r"^layers\.(-?\d+)$")
_RANGE = re.compile(r"^layers\.(-?\d+)-(-?\d+)$")


def layer_name(i: int) -> str:
    """The hookpoint name of block i."""
    return f"layers.{i}"


def parse_hookpoints(spec: str | list[str], n_layers: int) -> list[str]:
    """Expand a spec into canonical names in layer order; UsageError listing the valid ones otherwise."""
    parts = spec if isinstance(spec, list) else [p for p in str(spec).split(",")]
    parts = [p.strip() for p in parts if p and p.strip()]
    if not parts:
        raise UsageError("no hookpoints given", _valid(n_layers))
    chosen: list[int] = []
    for part in parts:
        if part == "all":
            chosen.extend(range(n_layers))
            continue
        if m := _RANGE.match(part):
            lo, hi = (_index(int(g), part, n_layers) for g in m.groups())
            if lo > hi:
                raise UsageError(f"empty hookpoint range '{part}'", "write low-high, e.g. layers.0-5")
            chosen.extend(range(lo, hi + 1))
        elif m := _LAYER.match(part):
            chosen.append(_index(int(m.group(1)), part, n_layers))
        else:
            names = ["all", *(layer_name(i) for i in range(n_layers))]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UsageError(f"unknown hookpoint '{part}'", hint + _valid(n_layers))
    return [layer_name(i) for i in sorted(set(chosen))]


def layer_index(name: str) -> int:
    """Block index of a canonical hookpoint name."""
    m = _LAYER.match(name)
    if not m or int(m.group(1)) < 0:
        raise UsageError(f"not a canonical hookpoint name: '{name}'", "expected layers.N")
    return int(m.group(1))


def _index(i: int, part: str, n_layers: int) -> int:
    j = i + n_layers if i < 0 else i
    if not 0 <= j < n_layers:
        raise UsageError(f"hookpoint '{part}' is out of range: the model has {n_layers} layers", _valid(n_layers))
    return j


def _valid(n_layers: int) -> str:
    return f"valid: layers.0 .. layers.{n_layers - 1}, ranges like layers.0-{n_layers - 1}, layers.-1, or all"


def resolve_names(spec: str | list[str], names: list[str], what: str = "hookpoint") -> list[str]:
    """Expand a spec over named hookpoints (module paths): names, globs (`encoder.*`, `block?`), comma lists and
    `all`, in the model's order. UsageError naming the nearest valid names otherwise."""
    import fnmatch

    parts = spec if isinstance(spec, list) else str(spec).split(",")
    parts = [p.strip() for p in parts if p and p.strip()]
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    if not parts:
        raise UsageError(f"no {what}s given", f"valid: {shown}, or all")
    chosen: set[str] = set()
    for part in parts:
        if part == "all":
            chosen.update(names)
        elif any(ch in part for ch in "*?["):
            hits = fnmatch.filter(names, part)
            if not hits:
                raise UsageError(f"{what} pattern '{part}' matches nothing", f"valid: {shown}")
            chosen.update(hits)
        elif part in names:
            chosen.add(part)
        else:
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            near = [n for n in names if n.startswith(part + ".")][:3] or close
            hint = f"did you mean {', '.join(repr(n) for n in near)}? " if near else ""
            raise UsageError(f"unknown {what} '{part}'", hint + f"valid: {shown}")
    return [n for n in names if n in chosen]
