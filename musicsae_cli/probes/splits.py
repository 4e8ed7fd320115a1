"""Train/test splits by group (track), stratified by class, shared by `probe train` and `analyze separation`.

Whole groups sit on one side of every split (no track leaks from training into testing), and class shares are
kept as close as the groups allow: scikit-learn's StratifiedGroupKFold. Regression targets are stratified by
their quantile bins. A single holdout split is the best fold of a StratifiedGroupKFold with
round(1 / test_fraction) folds: every class on both sides when the groups allow it, then the fold whose size is
closest to test_fraction, then the one whose class shares are closest to the whole set's.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..errors import InputError

log = logging.getLogger("musicsae")
MIN_TEST_SAMPLES = 5  # fewer test samples of a class than this make its scores noisy: said so
N_TARGET_BINS = 5  # regression: quantile bins of the target the split is stratified by
TRIES = 20


def grouped_folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int, label: str, tries: int = TRIES,
                  accept=None):
    """Stratified group k-fold splits whose every training side holds every class, and the seed that gave them.

    StratifiedGroupKFold is greedy: with few groups per class it can put all of a class's groups in one test fold
    (how often depends on the scikit-learn release), leaving a training side without that class. The next seeds
    are tried in order, so the result stays deterministic. `accept(splits) -> bool` replaces that rule.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    classes = np.unique(y)
    if accept is None:
        def accept(splits):
            return all(np.unique(y[train]).size == classes.size for train, _ in splits)
    for attempt in range(tries):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + attempt)
        with warnings.catch_warnings():
            # "The least populated class in y has only k members": callers check and report class sizes.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            try:
                splits = list(splitter.split(np.zeros(y.size), y, groups))
            except ValueError as err:  # e.g. more folds than samples in every class
                raise InputError(f"cannot split '{label}' into {folds} folds by group: {err}",
                                 "use fewer folds or more groups per class") from None
        if accept(splits):
            return splits, seed + attempt
    raise InputError(f"no {folds}-fold split by group keeps every class of '{label}' on each training side "
                     f"(tried seeds {seed}..{seed + tries - 1})", "use fewer folds or more groups per class")


def strata(task: str, y: np.ndarray, n_splits: int) -> np.ndarray:
    """(n,) int64 codes a split is stratified by: the class, or the quantile bin of a regression target.

    Bins hold about n / n_bins samples each, with n_bins at most N_TARGET_BINS and small enough that a bin can
    spread over the n_splits folds."""
    if task == "classification":
        return np.asarray(y, dtype=np.int64)
    n_bins = max(1, min(N_TARGET_BINS, y.size // n_splits))
    edges = np.unique(np.quantile(y, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, y, side="right").astype(np.int64)


def holdout_split(task: str, y: np.ndarray, groups: np.ndarray, test_fraction: float, seed: int, label: str,
                  split_column: str) -> tuple[np.ndarray, int]:
    """((n,) bool test side, seed used): whole groups per side, classes on both sides (see the module docstring)."""
    groups = groups.astype(str)
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise InputError(f"the split needs at least 2 groups, found {n_groups} in column '{split_column}'",
                         "probe a store with more groups, or split by another column")
    n_splits = int(min(max(2, round(1.0 / test_fraction)), n_groups))
    codes = strata(task, y, n_splits)
    counts = np.bincount(codes)
    # StratifiedGroupKFold refuses more folds than the largest class has samples: fewer, larger folds instead.
    n_splits = int(max(2, min(n_splits, counts.max())))
    classes = np.flatnonzero(counts)
    shares = counts / codes.size

    def score(train: np.ndarray, test: np.ndarray) -> tuple:
        test_shares = np.bincount(codes[test], minlength=shares.size) / max(test.size, 1)
        return (np.unique(codes[train]).size == classes.size, np.unique(codes[test]).size,
                -abs(test.size / codes.size - test_fraction), -float(np.abs(test_shares - shares).sum()))

    def covered(splits) -> bool:  # some fold has every class on both of its sides
        return any(s[0] and s[1] == classes.size for s in (score(tr, te) for tr, te in splits))

    # A class of one group can never sit on both sides: no use trying seeds for that.
    pairs = np.unique(np.stack([np.unique(groups, return_inverse=True)[1], codes]), axis=1)  # (2, group-class pairs)
    coverable = np.bincount(pairs[1], minlength=counts.size)[classes].min() >= 2
    splits = None
    if coverable:
        try:
            splits, used = grouped_folds(codes, groups, n_splits, seed, label, accept=covered)
        except InputError:
            pass
    if splits is None:  # the groups cannot cover every class twice: the best fold of the seed's own split
        splits, used = grouped_folds(codes, groups, n_splits, seed, label, accept=lambda _: True)
    best = max(range(len(splits)), key=lambda f: score(*splits[f]))  # ties: the first such fold
    test = np.zeros(codes.size, dtype=bool)
    test[splits[best][1]] = True
    return test, used


def kfold_split(task: str, y: np.ndarray, groups: np.ndarray, folds: int, seed: int,
                label: str) -> tuple[np.ndarray, int]:
    """((n,) fold of each sample, seed used): stratified group folds; classification keeps every class in training."""
    groups = groups.astype(str)
    n_groups = np.unique(groups).size
    if n_groups < folds:
        raise InputError(f"{folds}-fold cross-validation needs at least {folds} groups, found {n_groups}",
                         "lower folds, or use a single split (folds: null)")
    accept = None if task == "classification" else (lambda _: True)
    splits, used = grouped_folds(strata(task, y, folds), groups, folds, seed, label, accept=accept)
    fold_of = np.empty(y.size, dtype=np.int64)
    for f, (_, test) in enumerate(splits):
        fold_of[test] = f
    return fold_of, used


def split_warnings(classes: list[str], y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Warnings (also logged) for classes missing from a training or test side, or with few test samples."""
    out = []

    def folds(fs: list[int]) -> str:
        return f" in fold(s) {', '.join(map(str, fs))}" if len(splits) > 1 else ""

    for ci, name in enumerate(classes):
        no_train, no_test, few = [], [], []
        for f, (train, test) in enumerate(splits):
            n_test = int((y[test] == ci).sum())
            if not (y[train] == ci).any():
                no_train.append(f)
            if n_test == 0:
                no_test.append(f)
            elif n_test < MIN_TEST_SAMPLES:
                few.append((f, n_test))
        if no_train:
            out.append(f"class '{name}' has no training samples{folds(no_train)}: the probe never predicts it")
        if no_test:
            out.append(f"class '{name}' has no test samples{folds(no_test)}: its recall is not measured")
        if few:
            counts = ", ".join(str(n) for _, n in few)
            out.append(f"class '{name}' has only {counts} test sample(s){folds([f for f, _ in few])}, fewer than "
                       f"{MIN_TEST_SAMPLES} test samples: its per-class scores are noisy")
    for text in out:
        log.warning(text)
    return out
