"""A JSON-ready summary of an activation store, for `musicsae info`."""

from __future__ import annotations

from collections import Counter

import pyarrow.compute as pc

from .format import FORMAT_CSR
from .sparse_read import shard_nnz

TOP_VALUES = 10
MAX_LABEL_VALUES = 1000  # more distinct values than this is not a label column


def describe_store(store) -> dict:
    """Layout, model, sizes and metadata of `store`, with the commonest values of label-like columns."""
    manifest = store.manifest
    return {
        "path": str(store.path),
        "kind": manifest.get("kind"),
        "status": store.status,
        "format_version": manifest.get("format_version"),
        "musicsae_version": manifest.get("musicsae_version"),
        "created": manifest.get("created"),
        "model": store.model,
        "hookpoints": dict(store.widths),
        "hookpoint_formats": dict(store.formats),
        **({"sparse": sparse_summary(store)} if FORMAT_CSR in store.formats.values() else {}),
        "dtype": store.dtype,
        "n_rows": store.n_rows,
        "n_items": store.n_items,
        "n_shards": store.n_shards,
        "frame_rate": store.frame_rate,
        "position_convention": store.position_convention,
        "size_bytes": sum(f.stat().st_size for f in store.path.rglob("*") if f.is_file()),
        "metadata_columns": store.metadata_columns,
        "item_columns": store.item_columns,
        "labels": label_summary(store),
    }


def sparse_summary(store) -> dict[str, dict]:
    """For each CSR hookpoint: stored values and their mean per row (from the file headers only)."""
    out = {}
    for name, fmt in store.formats.items():
        if fmt == FORMAT_CSR:
            nnz = sum(shard_nnz(store, name, shard) for shard in range(store.n_shards))
            out[name] = {"nnz": nnz, "mean_nnz_per_row": round(nnz / store.n_rows, 3) if store.n_rows else 0.0}
    return out


def label_summary(store) -> dict[str, dict]:
    """For string label-like columns: distinct count, missing count and the commonest values.

    Per-item columns are counted once per item, per-frame columns once per row. A column whose
    values are all distinct (a path, an id) is not label-like and is left out.
    """
    strings = [c for c, t in store.metadata_columns.items() if t == "string" and c != "item_id"]
    per_item = [c for c in strings if c in store.item_columns]
    per_frame = [c for c in strings if c not in store.item_columns]
    counters = {c: Counter() for c in strings}
    missing = dict.fromkeys(strings, 0)
    if per_item:
        _count(store.items().select(per_item), counters, missing)
    if per_frame:
        for table in store.iter_metadata(per_frame):  # shard by shard: bounded memory
            _count(table, counters, missing)
    out = {}
    for column, counter in counters.items():
        present = sum(counter.values())
        identifier_like = len(counter) == present and present > TOP_VALUES
        if not counter or identifier_like or len(counter) > MAX_LABEL_VALUES:
            continue
        top = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]
        # Same shape as the label summary of manifests (musicsae_cli.describe.summarise_values).
        out[column] = {"missing": missing[column], "distinct": len(counter), "top": dict(top)}
    return out


def _count(table, counters: dict[str, Counter], missing: dict[str, int]) -> None:
    for column in table.column_names:
        col = table.column(column)
        missing[column] += col.null_count
        for entry in pc.value_counts(col.drop_null()).to_pylist():
            counters[column][entry["values"]] += entry["counts"]
