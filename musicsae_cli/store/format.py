"""On-disk layout of an activation store: names, storage dtypes, the bf16 codec and raw .npy access."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from ..artifacts import MANIFEST_NAME
from ..errors import InputError, StoreError

# Version 2 adds CSR hookpoints. Stores without one are still written as version 1, so that older
# musicsae releases keep reading them; this release reads both.
FORMAT_VERSION = 2
DENSE_FORMAT_VERSION = 1
STORE_KIND = "activation_store"
STATUS_WRITING = "writing"
STATUS_COMPLETE = "complete"

SHARDS_DIR = "shards"
META_FILE = "meta.parquet"
SHARD_FILE = "shard.json"
TMP_PREFIX = ".tmp-"
LOCK_FILE = ".writer.lock"
CORRUPT_HINT = "`musicsae info --verify STORE` lists every broken file; recreate the store (rerun what wrote it)"

FORMAT_DENSE = "dense"
FORMAT_CSR = "csr"
HOOKPOINT_FORMATS = (FORMAT_DENSE, FORMAT_CSR)
# A CSR hookpoint <hp> keeps <hp>.indptr.npy (n_rows + 1 int64), <hp>.indices.npy (nnz int32) and
# <hp>.values.npy (nnz, storage dtype); a dense one keeps <hp>.npy (n_rows, width).
CSR_PARTS = ("indptr", "indices", "values")
INDPTR_DTYPE = np.dtype("<i8")
INDEX_DTYPE = np.dtype("<i4")

# bf16 has no numpy dtype: it is stored as the upper 16 bits of a float32, as little-endian uint16.
STORAGE_DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
}

# Hookpoint names become file names (<name>.npy), so keep them to a portable, separator-free alphabet.
_HOOKPOINT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def storage_dtype(dtype: str) -> np.dtype:
    """The numpy dtype the arrays of a store with activation dtype `dtype` are saved in."""
    try:
        return STORAGE_DTYPES[dtype]
    except KeyError:
        raise InputError(f"unsupported activation dtype {dtype!r}",
                         f"use one of: {', '.join(STORAGE_DTYPES)}") from None


def check_hookpoint_name(name: str) -> None:
    """Refuse hookpoint names that cannot be used as file names."""
    if not isinstance(name, str) or not _HOOKPOINT_RE.match(name) or name.endswith(".npy"):
        raise InputError(f"invalid hookpoint name {name!r}",
                         "use letters, digits, '_', '.' and '-' (e.g. 'layers.3')")


def hookpoint_files(name: str, fmt: str) -> list[str]:
    """The file names a hookpoint of format `fmt` occupies in each shard."""
    return [f"{name}.npy"] if fmt == FORMAT_DENSE else [f"{name}.{part}.npy" for part in CSR_PARTS]


def manifest_formats(manifest: dict) -> dict[str, str]:
    """Hookpoint name -> format ("dense" when the entry names none); StoreError for an unknown format."""
    formats = {}
    for name, entry in manifest.get("hookpoints", {}).items():
        fmt = entry.get("format", FORMAT_DENSE)
        if fmt not in HOOKPOINT_FORMATS:
            raise StoreError(f"hookpoint {name!r} has unsupported format {fmt!r}",
                             "the store is corrupt or newer than this musicsae; upgrade musicsae")
        formats[name] = fmt
    return formats


def bf16_encode(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds half to even; overflow into the exponent is the
    # correct rounding of the largest finite values to inf. Only NaN bit patterns can wrap uint32.
    rounded = (bits + (((bits >> 16) & 1) + np.uint32(0x7FFF))) >> 16
    nan = np.isnan(x)
    if nan.any():
        rounded = np.where(nan, (bits >> 16) | np.uint32(0x0040), rounded)  # keep it a quiet NaN
    return rounded.astype(np.uint16)


def bf16_decode(u16: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) -> float32, exactly."""
    return (u16.astype(np.uint32) << 16).view(np.float32)


def encode(x: np.ndarray, dtype: str) -> np.ndarray:
    """Convert activations to a new C-contiguous array in the storage representation of `dtype`.

    Arrays already in the storage dtype (float16; bf16 bit patterns as uint16) are only copied, so callers
    can cast on the GPU and skip the slow CPU conversion; the copy lets them reuse their buffers.
    """
    if x.dtype == STORAGE_DTYPES[dtype]:
        return np.array(x, order="C", copy=True)
    if dtype == "bfloat16":
        return bf16_encode(x)
    return np.ascontiguousarray(x, dtype=STORAGE_DTYPES[dtype])


def decode(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Convert stored arrays back to float32."""
    if dtype == "bfloat16":
        return bf16_decode(raw)
    return raw.astype(np.float32, copy=False)


def shard_dirname(index: int) -> str:
    """The directory name of committed shard `index`."""
    return f"{index:05d}"


def committed_shard_dirs(root: Path) -> list[Path]:
    """Committed shard directories in index order; StoreError when the numbering has holes."""
    shards = root / SHARDS_DIR
    if not shards.is_dir():
        return []
    found = sorted((int(p.name), p) for p in shards.iterdir() if p.is_dir() and p.name.isdigit())
    for expected, (index, path) in enumerate(found):
        if index != expected:
            raise StoreError(f"shard {shard_dirname(expected)} is missing in {shards} (found {path.name})",
                             CORRUPT_HINT)
    return [path for _, path in found]


def tmp_shard_dirs(root: Path) -> list[Path]:
    """Uncommitted shard directories left behind by an interrupted writer."""
    shards = root / SHARDS_DIR
    if not shards.is_dir():
        return []
    return sorted(p for p in shards.iterdir() if p.name.startswith(TMP_PREFIX))


def read_shard_json(shard_dir: Path) -> dict:
    """Read and sanity-check a committed shard's shard.json."""
    path = shard_dir / SHARD_FILE
    try:
        info = json.loads(path.read_text("utf-8"))
        n_rows, items, item_rows = int(info["n_rows"]), list(info["items"]), list(info["item_rows"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"unreadable shard index {path}: {exc}", CORRUPT_HINT) from exc
    if len(items) != len(item_rows) or sum(item_rows) != n_rows:
        raise StoreError(f"inconsistent shard index {path}", CORRUPT_HINT)
    return info


def is_store(path: str | os.PathLike) -> bool:
    """True when `path` is a directory holding an activation-store manifest (complete or not)."""
    manifest = Path(path) / MANIFEST_NAME
    try:
        return json.loads(manifest.read_text("utf-8")).get("kind") == STORE_KIND
    except (OSError, ValueError, AttributeError):
        return False


def npy_layout(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(data offset in bytes, shape, dtype) of a C-ordered .npy file, read from its header only."""
    try:
        with open(path, "rb") as fh:
            major, _minor = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
    except (OSError, ValueError) as exc:
        raise StoreError(f"unreadable activation file {path}: {exc}", CORRUPT_HINT) from exc
    if fortran:
        raise StoreError(f"activation file {path} is Fortran-ordered", CORRUPT_HINT)
    return offset, shape, dtype


def write_npy_header(fh, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Write a .npy header so that the array data can follow in pieces (no concatenated copy)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)


def read_exact(fh, offset: int, out: memoryview) -> None:
    """Fill `out` with the bytes of `fh` starting at `offset`; StoreError on a truncated file."""
    fh.seek(offset)
    done = 0
    while done < len(out):
        got = fh.readinto(out[done:])
        if not got:
            raise StoreError(f"activation file {fh.name} is truncated", CORRUPT_HINT)
        done += got
