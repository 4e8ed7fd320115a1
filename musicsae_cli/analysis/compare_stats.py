"""The statistics of `analyze compare` (analysis/compare.py) for one hookpoint: pair cosines and their summaries,
the separation, and the permutation test (plain and group-preserving relabellings, and its null distribution)."""

from __future__ import annotations

import itertools
import math

import numpy as np

_EPS = 1e-12
_QUANTILES = (0.05, 0.5, 0.95)
_PERM_CHUNK = 128


def cosine_summary(values: np.ndarray) -> dict:
    """mean, std and the 5/50/95% quantiles of a set of cosines."""
    q = np.quantile(values, _QUANTILES)
    return {"mean": float(values.mean()), "std": float(values.std()), "q05": float(q[0]), "q50": float(q[1]),
            "q95": float(q[2])}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def pair_cosines(xa: np.ndarray, xb: np.ndarray) -> dict[str, np.ndarray]:
    """Cosines a x b (every pair), and a x a and b x b (pairs i<j), flattened."""
    ua, ub = _unit(xa), _unit(xb)
    ia = np.triu_indices(ua.shape[0], 1)
    ib = np.triu_indices(ub.shape[0], 1)
    return {"ab": (ua @ ub.T).ravel(), "aa": (ua @ ua.T)[ia], "bb": (ub @ ub.T)[ib]}


def permutation_masks(n_a: int, n_b: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """((P, n_a + n_b) bool, exact): True where a relabelling puts the sample in set a (n_a per row).

    When there are no more distinct splits than `n_permutations`, every split is enumerated (exact test);
    otherwise P = n_permutations seeded random relabellings.
    """
    n = n_a + n_b
    if math.comb(n, n_a) <= n_permutations:
        masks = np.zeros((math.comb(n, n_a), n), dtype=bool)
        for i, chosen in enumerate(itertools.combinations(range(n), n_a)):
            masks[i, list(chosen)] = True
        return masks, True
    rng = np.random.default_rng([seed, 7])
    ranks = np.argsort(rng.random((n_permutations, n)), axis=1)  # a uniform permutation per row
    return ranks < n_a, False


def grouped_permutation_masks(groups_a, groups_b, n_permutations: int, seed: int) -> tuple[np.ndarray, bool, dict]:
    """((P, n_a + n_b) bool, exact, record): relabellings that keep each group's samples together.

    A group whose samples all lie in one set moves as a unit: the relabelling picks as many such groups for a as
    a has. A group holding samples of both sets (mixed) keeps its number of a samples and shuffles them within
    itself. With one sample per group this is permutation_masks (the same masks for the same seed). When there
    are no more distinct relabellings than `n_permutations`, every one is enumerated (exact).
    """
    labels = np.asarray([str(g) for g in [*groups_a, *groups_b]])
    in_a = np.r_[np.ones(len(groups_a), bool), np.zeros(len(groups_b), bool)]
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # number the groups in order of appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[codes.ravel()]
    size = np.bincount(codes)
    n_in_a = np.bincount(codes, weights=in_a, minlength=size.size).astype(np.int64)
    mixed = np.flatnonzero((n_in_a > 0) & (n_in_a < size))
    pure = np.flatnonzero((n_in_a == 0) | (n_in_a == size))
    k = int((n_in_a[pure] > 0).sum())  # pure groups in set a
    members = {int(g): np.flatnonzero(codes == g) for g in mixed}
    distinct = math.comb(pure.size, k) * math.prod(math.comb(int(size[g]), int(n_in_a[g])) for g in mixed)
    record = {"units": int(size.size), "units_a": int(np.unique(codes[in_a]).size),
              "units_b": int(np.unique(codes[~in_a]).size), "mixed_groups": int(mixed.size),
              "mixed_examples": [str(labels[first[order[g]]]) for g in mixed[:3]],
              "distinct_permutations": distinct if distinct <= 10**15 else ">1e15"}
    n = labels.size
    if distinct <= n_permutations:
        choices = [itertools.combinations(range(pure.size), k),
                   *(itertools.combinations(members[int(g)].tolist(), int(n_in_a[g])) for g in mixed)]
        masks = np.zeros((distinct, n), dtype=bool)
        for i, (chosen, *within) in enumerate(itertools.product(*choices)):
            masks[i] = np.isin(codes, pure[list(chosen)])
            for picked in within:
                masks[i, list(picked)] = True
        return masks, True, record
    rng = np.random.default_rng([seed, 7])
    group_in_a = np.zeros((n_permutations, size.size), dtype=bool)
    group_in_a[:, pure] = np.argsort(rng.random((n_permutations, pure.size)), axis=1) < k
    masks = group_in_a[:, codes]
    for g in mixed:
        idx = members[int(g)]
        masks[:, idx] = np.argsort(rng.random((n_permutations, idx.size)), axis=1) < n_in_a[g]
    return masks, False, record


def permutation_null(x: np.ndarray, masks: np.ndarray, tracker=None) -> np.ndarray:
    """(P,) ||mean of the masked rows - mean of the others|| of `x` (n, d) for each permutation mask.

    Set sizes may differ between masks (whole groups of unequal sizes move); `tracker` advances per chunk.
    """
    out = np.empty(masks.shape[0])
    for lo in range(0, masks.shape[0], _PERM_CHUNK):
        m = masks[lo:lo + _PERM_CHUNK]
        n_a = m.sum(1, keepdims=True)
        w = np.where(m, 1.0 / n_a, -1.0 / (m.shape[1] - n_a))  # (chunk, n): mean over a minus mean over b
        out[lo:lo + _PERM_CHUNK] = np.linalg.norm(w @ x, axis=1)
        if tracker is not None:
            tracker.advance(1)
    return out


def permutation_chunks(masks: np.ndarray | None) -> int:
    """How many steps permutation_null reports for `masks`."""
    return 0 if masks is None else -(-masks.shape[0] // _PERM_CHUNK)


def compare_sets(xa, xb, masks: np.ndarray | None = None, exact: bool = False,
                 tracker=None) -> tuple[dict, np.ndarray]:
    """Every statistic of one hookpoint for samples `xa` (n_a, d) and `xb` (n_b, d), and mean_a - mean_b.

    `masks` (from permutation_masks) drive the permutation test; None skips it (p_value None). With `exact`
    the masks are every split (the observed one included): p = #null >= observed / #splits; otherwise
    p = (1 + #null >= observed) / (1 + #permutations).
    """
    xa = np.asarray(xa, dtype=np.float64)
    xb = np.asarray(xb, dtype=np.float64)
    n_a, n_b = xa.shape[0], xb.shape[0]
    mean_a, mean_b = xa.mean(0), xb.mean(0)
    diff = mean_a - mean_b
    row: dict = {"width": int(xa.shape[1]), "n_a": n_a, "n_b": n_b}
    for prefix, (ca, cb) in (("", (xa, xb)), ("centred_", _centre(xa, xb))):
        for pair, values in pair_cosines(ca, cb).items():
            row.update({f"{prefix}cos_{pair}_{k}": v for k, v in cosine_summary(values).items()})
    diff_norm = float(np.linalg.norm(diff))
    within = float(np.sqrt((((xa - mean_a) ** 2).sum() + ((xb - mean_b) ** 2).sum()) / (n_a + n_b - 2)))
    norm_a, norm_b = float(np.linalg.norm(mean_a)), float(np.linalg.norm(mean_b))
    row.update(cos_means=float(mean_a @ mean_b / max(norm_a * norm_b, _EPS)), norm_mean_a=norm_a,
               norm_mean_b=norm_b, diff_norm=diff_norm, within_rms=within,
               separation=diff_norm / within if within > 0 else None,
               p_value=None, n_permutations=0, permutation_exact=None, null_diff_norm_mean=None,
               null_diff_norm_q95=None)
    if masks is not None and masks.shape[0]:
        null = permutation_null(np.concatenate([xa, xb]), masks, tracker)
        # a relative tolerance: a permutation equal to the observed split must count despite rounding
        hits = int((null >= diff_norm * (1 - 1e-9)).sum())
        p_value = hits / null.size if exact else (1 + hits) / (1 + null.size)
        row.update(p_value=p_value, n_permutations=int(null.size), permutation_exact=bool(exact),
                   null_diff_norm_mean=float(null.mean()), null_diff_norm_q95=float(np.quantile(null, 0.95)))
    return row, diff.astype(np.float32)


def _centre(xa: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grand = np.concatenate([xa, xb]).mean(0)
    return xa - grand, xb - grand
