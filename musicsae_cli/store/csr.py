"""CSR rows without scipy: the container sparse hookpoints are written from and read into.

`CSR` mirrors the attributes of `scipy.sparse.csr_matrix` (indptr, indices, data, shape, nnz, toarray,
tocsr) so code written for either works with both; `to_scipy()` converts when scipy is installed.
Rows written to a store are canonical: column indices sorted within each row, no duplicates, no
explicit zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .format import INDEX_DTYPE, INDPTR_DTYPE


@dataclass(eq=False)  # element-wise array equality has no single truth value
class CSR:
    """Rows in compressed sparse row form: row r holds data[indptr[r]:indptr[r+1]] at those indices."""

    indptr: np.ndarray  # (n_rows + 1,) int64, indptr[0] == 0
    indices: np.ndarray  # (nnz,) int32 column of each stored value
    data: np.ndarray  # (nnz,) float32, or the storage dtype for raw reads
    shape: tuple[int, int]  # (n_rows, width)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def __len__(self) -> int:
        return int(self.shape[0])

    def row_nnz(self) -> np.ndarray:
        """(n_rows,) number of stored values in each row."""
        return np.diff(self.indptr)

    def row_ids(self) -> np.ndarray:
        """(nnz,) row of each stored value."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int64), self.row_nnz())

    def toarray(self) -> np.ndarray:
        """The dense (n_rows, width) array, in the dtype of `data`."""
        out = np.zeros(self.shape, dtype=self.data.dtype)
        out[self.row_ids(), self.indices] = self.data
        return out

    def tocsr(self) -> CSR:
        return self

    def to_scipy(self):
        """This matrix as a `scipy.sparse.csr_matrix` (needs scipy; bf16 bit patterns stay uint16)."""
        try:
            from scipy.sparse import csr_matrix
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InputError("scipy is not installed", "pip install scipy, or use the CSR arrays directly") from exc
        return csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)

    def with_data(self, data: np.ndarray) -> CSR:
        """The same sparsity pattern holding `data` (e.g. decoded to float32)."""
        return CSR(self.indptr, self.indices, data, self.shape)

    def take(self, rows: np.ndarray) -> CSR:
        """Rows `rows` (any order, repeats allowed) as a new CSR."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.indptr[rows + 1] - self.indptr[rows]  # (m,)
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        # Position of each output value in the source: its row's source start plus its rank within the row.
        pos = np.repeat(self.indptr[rows] - indptr[:-1], counts) + np.arange(indptr[-1], dtype=np.int64)
        return CSR(indptr, self.indices[pos], self.data[pos], (rows.size, self.shape[1]))

    def slice_rows(self, start: int, stop: int) -> CSR:
        """Rows start..stop-1 (views of the index and value arrays)."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        return CSR(self.indptr[start:stop + 1] - lo, self.indices[lo:hi], self.data[lo:hi],
                   (stop - start, self.shape[1]))


def empty(width: int, dtype: np.dtype = np.float32) -> CSR:
    """A CSR with no rows."""
    return CSR(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype), (0, width))


def vstack(parts: Sequence[CSR]) -> CSR:
    """Stack CSR blocks of one width vertically."""
    if len(parts) == 1:
        return parts[0]
    counts = np.concatenate([p.row_nnz() for p in parts])
    indptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return CSR(indptr, np.concatenate([p.indices for p in parts]), np.concatenate([p.data for p in parts]),
               (counts.size, parts[0].shape[1]))


def from_dense(x: np.ndarray) -> CSR:
    """The non-zero entries of a dense (n, width) array (row-major order, so already canonical)."""
    rows, cols = np.nonzero(x)
    indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=x.shape[0]), out=indptr[1:])
    return CSR(indptr, cols.astype(np.int32), x[rows, cols], (int(x.shape[0]), int(x.shape[1])))


def as_csr(obj, width: int, what: str, bf16_bits: bool = False) -> CSR:
    """Validate and canonicalise writer input: a CSR, a scipy sparse matrix, (indptr, indices, values) or dense.

    InputError names `what` (item and hookpoint) when the shape, the index range or a dtype is wrong.
    """
    shape = None
    if isinstance(obj, CSR) or hasattr(obj, "tocsr"):
        obj = obj.tocsr()
        shape = tuple(int(n) for n in obj.shape)
        indptr, indices, values = obj.indptr, obj.indices, obj.data
    elif isinstance(obj, tuple) and len(obj) == 3:
        indptr, indices, values = obj
    else:
        x = np.asarray(obj)
        if x.ndim != 2 or x.shape[1] != width or not (x.dtype.kind == "f" or (bf16_bits and x.dtype == np.uint16)):
            raise InputError(f"{what}: activations are {x.dtype} {x.shape}, expected float (n_frames, {width}), "
                             "a CSR matrix or (indptr, indices, values)")
        return drop_zeros(from_dense(x), bf16_bits)
    indptr, indices, values = np.asarray(indptr), np.asarray(indices), np.asarray(values)
    nnz = indices.size
    if indptr.ndim != 1 or indptr.size < 1 or indptr.dtype.kind not in "iu" or indices.ndim != 1 \
            or indices.dtype.kind not in "iu" or values.shape != (nnz,):
        raise InputError(f"{what}: sparse activations need 1-D integer indptr and indices and values of the "
                         f"same length, got indptr {indptr.dtype} {indptr.shape}, indices {indices.dtype} "
                         f"{indices.shape}, values {values.dtype} {values.shape}")
    if not (values.dtype.kind == "f" or (bf16_bits and values.dtype == np.uint16)):
        raise InputError(f"{what}: sparse values are {values.dtype}, expected a float dtype")
    n_rows = indptr.size - 1
    if shape is not None and shape != (n_rows, width):
        raise InputError(f"{what}: sparse activations have shape {shape}, expected (n_frames, {width})")
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise InputError(f"{what}: indptr must start at 0, never decrease and end at nnz ({nnz})")
    if nnz and (indices.min() < 0 or indices.max() >= width):
        raise InputError(f"{what}: column indices must lie in [0, {width}), "
                         f"got {indices.min()}..{indices.max()}")
    csr = CSR(indptr.astype(INDPTR_DTYPE), indices.astype(INDEX_DTYPE), values, (n_rows, width))
    return _sort_rows(drop_zeros(csr, bf16_bits), what)


def drop_zeros(csr: CSR, bf16_bits: bool = False) -> CSR:
    """`csr` without explicit zeros (they would count as active latents)."""
    # bf16 bit patterns: 0x0000 is +0.0 and 0x8000 is -0.0.
    keep = (csr.data & 0x7FFF) != 0 if bf16_bits and csr.data.dtype == np.uint16 else csr.data != 0
    if keep.all():
        return csr
    indptr = np.zeros(csr.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(csr.row_ids()[keep], minlength=csr.shape[0]), out=indptr[1:])
    return CSR(indptr, csr.indices[keep], csr.data[keep], csr.shape)


def _sort_rows(csr: CSR, what: str) -> CSR:
    # One int64 key orders values by row, then column; strictly increasing keys mean canonical rows.
    key = csr.row_ids() * csr.shape[1] + csr.indices
    step = np.diff(key)
    if np.all(step > 0):
        return csr
    order = np.argsort(key, kind="stable")
    if np.any(np.diff(key[order]) == 0):
        raise InputError(f"{what}: a row names the same column twice", "give each (row, column) one value")
    return CSR(csr.indptr, csr.indices[order], csr.data[order], csr.shape)
