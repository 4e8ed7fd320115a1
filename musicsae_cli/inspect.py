"""`musicsae info`: summarise any musicsae artefact (activation store, dataset folder, manifest file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .artifacts import MANIFEST_NAME, read_manifest
from .errors import InputError

_TOP_VALUES = 10


def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of the artefact at `path`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}", "pass a store, a dataset folder or a manifest file")
    if path.is_dir():
        if (path / "cfg.json").is_file():  # an SAE folder (musicsae's or a plain SAELens one)
            from .sae.io import describe_sae

            return describe_sae(path)
        if not (path / MANIFEST_NAME).is_file():
            raise InputError(f"not a musicsae artefact: {path} (no {MANIFEST_NAME})",
                             "info reads activation stores, dataset folders and manifest files")
        manifest = read_manifest(path)
        kind = manifest.get("kind")
        if kind == "activation_store":
            from .store import ActivationStore

            return ActivationStore.open(path, allow_incomplete=True).describe()
        if kind == "sae_run":
            keys = ("status", "members", "steps", "split", "final_metrics")
            return {**_head(manifest, path), **{k: manifest.get(k) for k in keys},
                    "store": manifest.get("config", {}).get("store"),
                    "hookpoint": manifest.get("config", {}).get("hookpoint")}
        if kind == "probes":
            keys = ("task", "label", "classes", "hookpoints", "widths", "pooling", "model", "store", "split",
                    "metrics")
            return {**_head(manifest, path), **{k: manifest.get(k) for k in keys}}
        if kind == "dataset":
            return {**_head(manifest, path), **describe_manifest(path / manifest.get("manifest", "manifest.csv"))}
        # analyses and other outputs: what their manifest records (inputs, sizes, files), without the config
        head = _head(manifest, path)
        return {**head, **{k: v for k, v in manifest.items() if k not in head and k != "config"}}
    from .audio.manifest import MANIFEST_FORMATS

    if path.suffix.lower() in MANIFEST_FORMATS:
        return {"kind": "manifest", "path": str(path), **describe_manifest(path), **_index_record(path)}
    raise InputError(f"not a musicsae artefact: {path}", "info reads activation stores, dataset folders and manifests")


def _head(manifest: dict, path: Path) -> dict[str, Any]:
    return {"kind": manifest.get("kind"), "path": str(path), "format_version": manifest.get("format_version"),
            "musicsae_version": manifest.get("musicsae_version"), "created": manifest.get("created")}


def _index_record(path: Path) -> dict[str, Any]:
    """Who wrote a manifest file, from the record `data index` keeps beside it (nothing without one)."""
    from .audio.manifest_record import manifest_record

    record = manifest_record(path)
    if record is None:
        return {}
    return {"written_by": {"command": "data index", "musicsae_version": record.get("musicsae_version"),
                           "created": record.get("created"), "source": record.get("source"),
                           "edited_since": manifest_record(path, check=True) is None}}


def describe_manifest(path: Path) -> dict[str, Any]:
    """Rows, groups, total duration and per-label value counts (or ranges for numeric labels)."""
    from .audio.manifest import read_manifest_file

    m = read_manifest_file(path)
    out: dict[str, Any] = {"items": len(m.rows), "groups": len({r["group"] for r in m.rows})}
    durations = [r["duration_s"] for r in m.rows if isinstance(r.get("duration_s"), int | float)]
    if durations:
        out["total_duration_s"] = round(float(sum(durations)), 3)
    out["labels"] = {col: summarise_values([r.get(col) for r in m.rows]) for col in m.label_columns}
    return out


def summarise_values(values: list) -> dict[str, Any]:
    """Counts of the most common values, or min/max/mean for numbers; `missing` counts empty cells."""
    present = [v for v in values if v is not None]
    summary: dict[str, Any] = {"missing": len(values) - len(present)}
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        summary.update(min=min(present), max=max(present), mean=round(sum(present) / len(present), 6),
                       distinct=len(set(present)))
    else:
        counts = Counter(str(v) for v in present)
        summary.update(distinct=len(counts), top=dict(counts.most_common(_TOP_VALUES)))
    return summary
