"""Frechet distance between two sets of embedding frames, each summarised as a Gaussian (mean, covariance).

    FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

the distance FAD computes, here on the generating model's own audio embeddings (no FAD library runs offline, and
their reference statistics belong to other embedding models). The matrix square root is scipy's `sqrtm`; when
S_a S_b is singular enough that it is not finite, `RING` times the identity is added to both covariances (the
usual remedy), and the numerically tiny imaginary part of the root is dropped.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

RING = 1e-6  # added to the covariances' diagonals when the square root of their product is not finite


def gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), covariance (d, d)) of frames x (n, d), unbiased covariance as FAD computes it."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"a Frechet distance needs at least 2 embedding frames, got shape {x.shape}",
                         "generate longer clips or more of them")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """The Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    from scipy import linalg

    diff = np.asarray(mu_a, np.float64) - np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        ring = RING * np.eye(cov_a.shape[0])
        root = linalg.sqrtm((cov_a + ring) @ (cov_b + ring))
    root = np.real(root)  # sqrtm of a product of PSD matrices: any imaginary part is round-off
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root), 0.0))


def frechet_between(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between the Gaussians of frames x (n, d) and y (m, d)."""
    return frechet_distance(*gaussian(x), *gaussian(y))


class PooledFrames:
    """Per unit (e.g. a prompt and seed), the sums that pool its frames into a Gaussian without keeping them: a
    bootstrap resample of units is then pooled by adding sums, not by stacking frames."""

    def __init__(self, frames: list[np.ndarray]):
        self.count = np.array([f.shape[0] for f in frames], dtype=np.float64)  # (U,)
        self.sums = np.stack([f.astype(np.float64).sum(0) for f in frames])  # (U, d)
        self.outer = np.stack([f.astype(np.float64).T @ f.astype(np.float64) for f in frames])  # (U, d, d)

    def gaussian(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, unbiased covariance) of the frames of `units` (indices, repeats counted)."""
        n = self.count[units].sum()
        if n < 2:
            raise InputError("a Frechet distance needs at least 2 embedding frames", "generate longer clips")
        mu = self.sums[units].sum(0) / n  # (d,)
        cov = (self.outer[units].sum(0) - n * np.outer(mu, mu)) / (n - 1)  # (d, d)
        return mu, cov
