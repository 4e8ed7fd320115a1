"""Row-metadata column types: inference and unification for writers, conformance for readers.

Columns are limited to a few arrow types so that the manifest can name them with short strings and
every shard can be cast to one store-wide schema: an int column that later receives floats becomes
"double", a column first seen as all-None ("null") takes the type of its first real value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import InputError, StoreError

# Columns every row has; callers may not pass metadata with these names. n_frames names the
# per-item frame count in item tables.
BASE_COLUMNS = {"item_id": "string", "frame": "int32", "time_s": "double"}
RESERVED = (*BASE_COLUMNS, "n_frames")

_TYPES = {
    "null": pa.null(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "double": pa.float64(),
    "string": pa.string(),
}
NUMERIC_TYPES = ("int32", "int64", "double")


def arrow_type(name: str) -> pa.DataType:
    """The arrow type a manifest type string stands for."""
    try:
        return _TYPES[name]
    except KeyError:
        raise StoreError(f"unsupported metadata column type {name!r} in the manifest",
                         "the store is corrupt or newer than this musicsae; upgrade musicsae") from None


def check_column_name(name: str) -> None:
    """Refuse metadata column names that clash with the built-in columns."""
    if not isinstance(name, str) or not name:
        raise InputError(f"invalid metadata column name {name!r}", "use a non-empty string")
    if name in RESERVED:
        raise InputError(f"metadata column name {name!r} is reserved",
                         f"rename it; reserved names: {', '.join(RESERVED)}")


def scalar_type(column: str, value: object) -> str:
    """The type string of one per-item metadata value."""
    if value is None:
        return "null"
    # bool before int: bool is a subclass of int.
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int64"
    if isinstance(value, (float, np.floating)):
        return "double"
    if isinstance(value, (str, np.str_)):
        return "string"
    raise InputError(f"item metadata {column!r} has unsupported type {type(value).__name__}",
                     "use str, int, float, bool or None")


def frame_array(column: str, values: object, n_frames: int) -> pa.Array:
    """Normalise one per-frame metadata column (n_frames values) to a supported arrow type."""
    arr = np.asarray(values)
    if arr.shape != (n_frames,):
        raise InputError(f"frame metadata {column!r} has shape {arr.shape}, expected ({n_frames},)",
                         "give one value per frame")
    kind = arr.dtype.kind
    if kind == "b":
        return pa.array(arr, pa.bool_())
    if kind in "iu":
        return pa.array(arr.astype(np.int64), pa.int64())
    if kind == "f":
        return pa.array(arr.astype(np.float64), pa.float64())
    try:
        out = pa.array(arr.tolist())  # strings, possibly with None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"frame metadata {column!r} has mixed or unsupported values: {exc}",
                         "use one of str, int, float or bool per column") from exc
    if str(out.type) not in _TYPES:
        raise InputError(f"frame metadata {column!r} has unsupported type {out.type}",
                         "use str, int, float or bool values")
    return out


def unify(column: str, old: str | None, new: str) -> str:
    """The type of `column` after a value of type `new` joins values of type `old`."""
    if old is None or old == "null":
        return new
    if new == "null" or new == old:
        return old
    if {old, new} == {"int64", "double"}:
        return "double"
    raise InputError(f"metadata column {column!r} holds {old} values, but this item gives {new}",
                     "give each column a single type across items (None is allowed)")


def conform(table: pa.Table, columns: dict[str, str]) -> pa.Table:
    """`table` with exactly `columns` in that order: missing ones all-null, others cast to the store type."""
    n = table.num_rows
    arrays = []
    for name, type_name in columns.items():
        target = arrow_type(type_name)
        if name in table.column_names:
            col = table.column(name)
            arrays.append(col if col.type == target else col.cast(target))
        else:
            arrays.append(pa.nulls(n, target))
    return pa.table(arrays, names=list(columns))
