"""Opening a Hugging Face dataset source with the `datasets` library: its rows, features, size and split, checked
against the subsets and splits it has; the hub is checked for reachability first (offline it fails at once)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import InputError
from .hf_sources import DatasetSource
from .io import short_error


def datasets_module():
    """The `datasets` library, its logging and progress bars off; InputError when it is not installed."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a dependency; only a broken install lacks it
        raise InputError("reading Hugging Face datasets needs the `datasets` package",
                         "pip install 'datasets>=4.0'") from exc
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def check_hub_reachable(source: DatasetSource, subset: str | None = None, timeout: float = 3.0) -> None:
    """InputError at once when the hub cannot be reached (offline mode, or no connection), with how to pass a local
    copy instead; datasets itself would retry for minutes."""
    name = f", '{subset}'" if subset else ""
    hint = (f"on a machine with access, save it: python -c \"import datasets; datasets.load_dataset("
            f"'{source.location}'{name}).save_to_disk('DIR')\" (or download the repository with "
            f"huggingface-cli download --repo-type dataset {source.location} --local-dir DIR), then index DIR")
    offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline:
        raise InputError(f"cannot stream {source.label}: Hugging Face offline mode is on (HF_HUB_OFFLINE)", hint)
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Hugging Face Hub ({host}) for {source.label}: {short_error(exc)}",
                         hint) from None


def open_dataset(source: DatasetSource, split: str | None, subset: str | None):
    """(rows: an iterable of dicts, features or None, number of rows or None, split, facts for the manifest).

    The audio column is cast to Audio(decode=False) by the caller (it must be found first)."""
    ds = datasets_module()
    facts: dict[str, Any] = {"kind": source.kind, "dataset": source.label}
    if source.kind == "disk":
        loaded = ds.load_from_disk(source.location)
        if isinstance(loaded, ds.DatasetDict):
            names = list(loaded)
            split = split or (names[0] if len(names) == 1 else None)
            if split not in loaded:
                raise InputError(f"{source.location} has no split {split!r}" if split else
                                 f"{source.location} holds {len(names)} splits", "pass --split, one of: "
                                 + ", ".join(names))
            table = loaded[split]
        else:
            table = loaded
            own = str(table.split) if table.split is not None else None
            if split and own and split != own:
                raise InputError(f"{source.location} holds the split {own!r}, not {split!r}", f"pass --split {own}")
            split = split or own or "train"
        if subset:
            raise InputError("a save_to_disk folder has no subsets (configs)", "drop --subset")
        folder = Path(source.location) / (split if isinstance(loaded, ds.DatasetDict) else "")
        try:
            facts["fingerprint"] = json.loads((folder / "state.json").read_text("utf-8")).get("_fingerprint")
        except (OSError, ValueError):
            facts["fingerprint"] = None
        return table, table.features, len(table), split, facts
    if source.kind == "hub":
        check_hub_reachable(source, subset)
        path, kwargs = source.location, {"revision": source.revision}
    elif source.kind == "audiofolder":
        return _audiofolder(ds, source, split, subset, facts)
    elif Path(source.location).is_dir():
        path, kwargs = source.location, {}
    else:
        path = "arrow" if source.location.endswith(".arrow") else "parquet"
        kwargs = {"data_files": {"train": source.files}}
    split, subset = _check_split_and_subset(ds, source, path, kwargs, split, subset)
    try:
        stream = ds.load_dataset(path, name=subset, split=split, streaming=True, **kwargs)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"cannot open {source.label}: {short_error(exc)}",
                         "check the dataset id, --subset and --split") from None
    except Exception as exc:  # connection and hub errors carry their own types
        raise InputError(f"cannot open {source.label}: {short_error(exc)}",
                         "check the dataset id and your connection, or pass a local copy") from None
    info = stream.info
    splits = getattr(info, "splits", None) or {}
    total = splits[split].num_examples if split in splits and splits[split].num_examples else None
    facts.update(revision=source.revision, commit=_hub_commit(source) if source.kind == "hub" else None)
    return stream, stream.features, total, split, facts | {"subset": subset}


def _audiofolder(ds, source: DatasetSource, split: str | None, subset: str | None, facts: dict):
    """An audiofolder read as its metadata table (datasets' csv / json loader) plus each row's file as the audio.

    The `audiofolder` builder itself encodes every file through torchcodec, which cannot be used here; the
    metadata loaders and soundfile read the same folder without it."""
    folder = Path(source.location)
    if subset:
        raise InputError(f"{source.label} has no subsets (configs)", "drop --subset")
    if split not in (None, "train"):
        raise InputError(f"{source.label} has no split {split!r}", "pass --split train (an audiofolder's only split)")
    meta = folder / "metadata.csv" if (folder / "metadata.csv").is_file() else folder / "metadata.jsonl"
    try:
        table = ds.load_dataset("csv" if meta.suffix == ".csv" else "json", data_files={"train": [str(meta)]},
                                split="train", streaming=True)
    except Exception as exc:
        raise InputError(f"cannot read {meta}: {short_error(exc)}", "check the metadata file") from None
    features = table.features
    if features is not None and "file_name" not in features:
        raise InputError(f"{meta.name} has no file_name column", f"its columns: {', '.join(features)}")
    audio = ds.Audio(decode=False)

    class Rows:
        """The metadata rows, each with its file as the `audio` column (a path, read by soundfile)."""

        def __iter__(self):
            for row in table:
                name = row.pop("file_name", None)
                yield {"audio": {"bytes": None, "path": str(folder / name) if name else None}, **row}

        def cast_column(self, column, feature):
            return self

        def skip(self, n):
            it = iter(self)
            for _ in range(n):
                next(it, None)
            return it

    feats = None if features is None else ds.Features({"audio": audio, **{k: v for k, v in features.items()
                                                                           if k != "file_name"}})
    return Rows(), feats, None, "train", facts


def _check_split_and_subset(ds, source: DatasetSource, path: str, kwargs: dict, split: str | None,
                            subset: str | None) -> tuple[str, str | None]:
    """(split, subset) checked against what the dataset has; InputError listing them otherwise."""
    if source.kind in ("hub",) or (source.kind == "files" and Path(source.location).is_dir()):
        try:
            subsets = ds.get_dataset_config_names(path, **kwargs)
        except Exception as exc:
            raise InputError(f"cannot read the subsets of {source.label}: {short_error(exc)}",
                             "check the dataset id, or pass a local copy") from None
        if subset is None and len(subsets) > 1:
            raise InputError(f"{source.label} has {len(subsets)} subsets", "pass --subset, one of: "
                             + ", ".join(subsets))
        if subset is not None and subset not in subsets:
            raise InputError(f"{source.label} has no subset {subset!r}", "pass --subset, one of: "
                             + ", ".join(subsets))
        subset = subset or (subsets[0] if subsets and subsets[0] != "default" else None)
    elif subset:
        raise InputError(f"{source.label} has no subsets (configs)", "drop --subset")
    try:
        splits = ds.get_dataset_split_names(path, config_name=subset, **kwargs)
    except Exception as exc:
        raise InputError(f"cannot read the splits of {source.label}: {short_error(exc)}",
                         "check the dataset id and --subset") from None
    if split is None:
        if len(splits) != 1:
            raise InputError(f"{source.label} has {len(splits)} splits", "pass --split, one of: " + ", ".join(splits))
        split = splits[0]
    if split not in splits:
        raise InputError(f"{source.label} has no split {split!r}", "pass --split, one of: " + ", ".join(splits))
    return split, subset


def _hub_commit(source: DatasetSource) -> str | None:
    """The commit a hub revision resolves to (None when the hub does not say)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source.location, revision=source.revision).sha
    except Exception:
        return None
