"""Row filters: parse "column<op>value" expressions and evaluate them shard by shard with pyarrow.compute.

Supported: `col=v` (also `==`), `col!=v`, `col<v`, `col<=v`, `col>v`, `col>=v`, `col in a,b,c`,
`col not in a,b`. Values compare as numbers when the column is numeric, as true/false for bool
columns and as strings otherwise. As in SQL, a missing (null) value never satisfies a condition,
not even `!=` or `not in`. Several filters must all hold.

`choose_stream` is the one rule every consumer of a store applies to generation streams: rows of one stream only
(cond by default) unless the user's filters say which.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .schema import NUMERIC_TYPES

_CMP_RE = re.compile(r"^\s*(?P<col>[^\s!<>=]+)\s*(?P<op>!=|>=|<=|==|=|>|<)\s*(?P<val>.*?)\s*$")
_IN_RE = re.compile(r"^\s*(?P<col>[^\s!<>=]+)\s+(?P<op>not\s+in|in)\s+(?P<val>.*?)\s*$")
_CMP_FUNCS = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
              ">": pc.greater, ">=": pc.greater_equal}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
STREAM_COLUMN = "stream"  # generation stream of rows written during generation: "cond" / "uncond"
DEFAULT_STREAM = "cond"
log = logging.getLogger("musicsae")


@dataclass(frozen=True)
class Condition:
    """One parsed filter: `column op values` (several values only for in / not in)."""

    column: str
    op: str
    values: tuple[str, ...]
    text: str


def parse_where(where: Sequence[str] | str | None) -> list[Condition]:
    """Parse filter expressions; InputError for one that is not `column<op>value`."""
    if where is None:
        return []
    if isinstance(where, str):
        where = [where]
    conditions = []
    for text in where:
        match = _CMP_RE.match(text) or _IN_RE.match(text)
        if match is None:
            raise InputError(f"cannot parse filter {text!r}",
                             "write column=value, column!=value, column>=number or 'column in a,b'")
        op = " ".join(match["op"].split())  # "not   in" -> "not in"
        op = "=" if op == "==" else op
        raw = match["val"]
        values = [v.strip() for v in raw.split(",")] if op in ("in", "not in") else [raw]
        values = [_unquote(v) for v in values if v]
        if not values:
            raise InputError(f"filter {text!r} has no value", "write e.g. genre=rock")
        conditions.append(Condition(match["col"], op, tuple(values), text))
    return conditions


def unknown_column_error(name: str, columns: Sequence[str]) -> InputError:
    """The error for a filter on a column the store does not have, naming the closest one."""
    close = difflib.get_close_matches(name, list(columns), n=1, cutoff=0.5)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    return InputError(f"unknown metadata column {name!r}{suggestion}", f"columns: {', '.join(columns)}")


def condition_mask(column: pa.ChunkedArray | pa.Array, type_name: str, cond: Condition) -> np.ndarray:
    """Boolean numpy mask of the rows of `column` that satisfy `cond` (nulls never do)."""
    n = len(column)
    if type_name == "null":  # a column no item has filled in yet
        return np.zeros(n, dtype=bool)
    values = [_convert(v, type_name, cond) for v in cond.values]
    if cond.op in ("in", "not in"):
        if type_name in NUMERIC_TYPES:  # "bpm in 120,120.5": compare as doubles so both kinds fit
            column, values = pc.cast(column, pa.float64()), [float(v) for v in values]
        hit = pc.is_in(column, value_set=pa.array(values, type=column.type))
        if cond.op == "not in":
            hit = pc.and_(pc.invert(hit), pc.is_valid(column))
    else:
        hit = _CMP_FUNCS[cond.op](column, pa.scalar(values[0]))
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)


def select_rows(store, where: Sequence[str] | str | None) -> np.ndarray:
    """Sorted global row indices (int64) of `store` matching every condition in `where`."""
    conditions = parse_where(where)
    if not conditions:
        return np.arange(store.n_rows, dtype=np.int64)
    columns = store.metadata_columns
    for cond in conditions:
        if cond.column not in columns:
            raise unknown_column_error(cond.column, list(columns))
    needed = list(dict.fromkeys(cond.column for cond in conditions))
    selected = [np.empty(0, dtype=np.int64)]
    for shard, table in enumerate(store.iter_metadata(needed)):
        mask = np.ones(table.num_rows, dtype=bool)
        for cond in conditions:
            mask &= condition_mask(table.column(cond.column), columns[cond.column], cond)
        selected.append(np.flatnonzero(mask).astype(np.int64) + store.offsets[shard])
    return np.concatenate(selected)


@dataclass(frozen=True)
class StreamChoice:
    """The row filters a consumer should use, and the generation stream picked for it (None: nothing picked)."""

    where: list[str]  # the user's filters, plus stream=<picked> when a stream was picked
    stream: str | None = None  # the stream picked by default
    streams: tuple[str, ...] = ()  # the streams the rows held before the pick
    note: str | None = None  # the line said on stderr

    def record(self) -> dict | None:
        """What an output's manifest/report keeps of the choice (None when no stream was picked)."""
        if self.stream is None:
            return None
        return {"stream": self.stream, "streams": list(self.streams), "chosen": "by default", "note": self.note}


def choose_stream(store, where: Sequence[str] | str | None, labels: Sequence[str] = ()) -> StreamChoice:
    """One generation stream for the rows `where` selects, so that cond and uncond rows are never pooled together.

    Stores written during generation may hold two generation streams (conditional and unconditional) of every
    clip: two different computations of the same frames. When the selected rows hold more than one stream and
    neither `where` nor `labels` (the columns the consumer analyses) names the stream column, the `cond` stream
    (else the first in sorted order) is added to the filters and a warning says so. A stream filter given by the
    user is kept as is; stores without the column, or with one stream only, are left untouched.
    """
    conditions = parse_where(where)
    where = [c.text for c in conditions]
    if (STREAM_COLUMN not in store.metadata_columns or STREAM_COLUMN in labels
            or any(c.column == STREAM_COLUMN for c in conditions)):
        return StreamChoice(where)
    rows = select_rows(store, where)
    column = store.metadata([STREAM_COLUMN]).column(STREAM_COLUMN)
    values = column.take(pa.array(rows)) if rows.size != store.n_rows else column
    streams = tuple(sorted(str(v) for v in pc.unique(pc.drop_null(values)).to_pylist()))
    if len(streams) < 2:
        return StreamChoice(where)
    picked = DEFAULT_STREAM if DEFAULT_STREAM in streams else streams[0]
    others = [s for s in streams if s != picked]
    other = (f"--where {STREAM_COLUMN}={others[0]} for the other" if len(others) == 1 else
             f"--where {STREAM_COLUMN}=NAME for another: {', '.join(others)}")
    note = f"using {STREAM_COLUMN}={picked} rows of a store with streams {', '.join(streams)} (pass {other})"
    log.warning(note)
    return StreamChoice([*where, f"{STREAM_COLUMN}={picked}"], picked, streams, note)


def _convert(value: str, type_name: str, cond: Condition) -> object:
    if type_name in NUMERIC_TYPES:
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"filter {cond.text!r}: {value!r} is not a number, "
                             f"but column {cond.column!r} is numeric") from None
        # Keep integers integral so that int columns compare exactly, without a float cast.
        return int(number) if type_name != "double" and number.is_integer() else number
    if type_name == "bool":
        try:
            return _BOOLS[value.lower()]
        except KeyError:
            raise InputError(f"filter {cond.text!r}: column {cond.column!r} is true/false, "
                             f"got {value!r}") from None
    return value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
