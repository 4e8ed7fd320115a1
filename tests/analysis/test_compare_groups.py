"""`analyze compare`'s permutation test moves whole tracks (the store's `group` column): near-identical windows of
one track must not pass for independent evidence."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from musicsae_cli.analysis.compare import compare, grouped_permutation_masks, permutation_masks
from musicsae_cli.analysis.config import CompareConfig
from musicsae_cli.errors import InputError
from musicsae_cli.store import StoreWriter

WIDTH = 16


def write_track_store(path, tracks: dict[str, str], windows: int = 10, seed: int = 0, both: tuple[str, ...] = ()):
    """One item per window; every window of a track is the track's random vector plus tiny noise. No set
    difference beyond the tracks themselves. `tracks` maps a track to its set; a track in `both` has half of
    its windows in each set."""
    rng = np.random.default_rng(seed)
    with StoreWriter.create(path, {"layers.0": WIDTH}, "float32", frame_rate=50.0, model={"id": "test/model"}) as w:
        for track, kind in tracks.items():
            centre = rng.standard_normal(WIDTH) * 3
            for k in range(windows):
                x = centre + 0.01 * rng.standard_normal((2, WIDTH))
                kind_k = ("a" if k < windows // 2 else "b") if track in both else kind
                w.add_item(f"{track}-w{k:02d}", {"layers.0": x.astype(np.float32)},
                           item_meta={"kind": kind_k, "group": track})
    return path


def _compare(store, out, **kw):
    cfg = CompareConfig(label="kind", a="a", b="b", n_permutations=kw.pop("n_permutations", 500), seed=0, **kw)
    return compare(store, out, cfg)


@pytest.mark.slow
def test_windows_of_a_track_are_not_independent_evidence(tmp_path):
    tracks = {f"t{i}": "a" if i < 4 else "b" for i in range(8)}  # 4 vs 4 tracks of 10 windows, no real difference
    store = write_track_store(tmp_path / "store", tracks)
    by_item = _compare(store, tmp_path / "items", group_column="item_id")
    by_group = _compare(store, tmp_path / "groups")
    (item_row,), (group_row,) = by_item["layers"], by_group["layers"]
    # per window, 40 vs 40 near-copies look like overwhelming evidence: a falsely tiny p-value
    assert by_item["permutation_unit"] == "item" and by_item["permutation_units"] == 80
    assert item_row["p_value"] < 0.01
    # per track: 8 units, C(8, 4) = 70 relabellings enumerated; the p-value is that of 4 vs 4 random tracks
    assert by_group["permutation_unit"] == "group" and by_group["permutation_units"] == 8
    assert by_group["permutation"] == {"unit": "group", "column": "group", "units": 8, "units_a": 4, "units_b": 4,
                                       "mixed_groups": 0, "mixed_examples": [], "distinct_permutations": 70,
                                       "exact": True}
    assert group_row["permutation_exact"] is True and group_row["n_permutations"] == 70
    assert group_row["p_value"] > 0.05
    assert group_row["diff_norm"] == pytest.approx(item_row["diff_norm"])  # the statistic itself is unchanged
    report = json.loads((tmp_path / "groups" / "compare.json").read_text())
    assert report["permutation_unit"] == "group" and any("permutation_unit" in n for n in report["notes"])


def test_random_group_permutations_keep_tracks_whole(tmp_path):
    tracks = {f"t{i}": "a" if i % 2 else "b" for i in range(24)}  # C(24, 12) relabellings: sampled
    store = write_track_store(tmp_path / "store", tracks, windows=3, seed=1)
    res = _compare(store, tmp_path / "out", n_permutations=200)
    (row,) = res["layers"]
    assert row["permutation_exact"] is False and row["n_permutations"] == 200 and row["p_value"] > 0.01
    groups_a = [f"t{i}" for i in range(24) if i % 2 for _ in range(3)]
    groups_b = [f"t{i}" for i in range(24) if not i % 2 for _ in range(3)]
    masks, exact, record = grouped_permutation_masks(groups_a, groups_b, 200, seed=0)
    labels = np.asarray(groups_a + groups_b)
    for m in masks[:20]:  # every track wholly on one side, 12 tracks (36 windows) in a
        assert all(len(set(m[labels == t])) == 1 for t in set(labels)) and m.sum() == 36
    assert not exact and record["units"] == 24


def test_one_sample_per_group_is_the_item_test():
    groups = [f"g{i}" for i in range(12)]
    for n_permutations in (50, 10**6):  # sampled, then exact (C(12, 5) = 792)
        grouped, exact, _ = grouped_permutation_masks(groups[:5], groups[5:], n_permutations, seed=3)
        plain, plain_exact = permutation_masks(5, 7, n_permutations, seed=3)
        assert exact == plain_exact and np.array_equal(grouped, plain)


@pytest.mark.slow
def test_tracks_in_both_sets_are_shuffled_within_and_few_permutations_warn(tmp_path, caplog):
    tracks = {"t0": "a", "t1": "a", "t2": "b", "t3": "b", "t4": "a"}
    store = write_track_store(tmp_path / "store", tracks, windows=4, both=("t4",))
    with caplog.at_level(logging.WARNING, logger="musicsae"):
        res = _compare(store, tmp_path / "out")
    perm = res["permutation"]
    # t4 holds 2 windows of each set: its windows shuffle within it (C(4, 2) = 6), the 4 pure tracks move whole
    # (C(4, 2) = 6): 36 relabellings
    assert perm["mixed_groups"] == 1 and perm["mixed_examples"] == ["t4"] and perm["distinct_permutations"] == 36
    assert "hold samples of both sets (e.g. t4)" in caplog.text
    assert "distinct permutations" not in caplog.text
    caplog.clear()
    small = write_track_store(tmp_path / "small", {"t0": "a", "t1": "a", "t2": "b", "t3": "b"}, windows=3)
    with caplog.at_level(logging.WARNING, logger="musicsae"):
        res = _compare(small, tmp_path / "small-out")
    assert res["permutation"]["distinct_permutations"] == 6 and res["layers"][0]["p_value"] >= 1 / 6
    assert "only 6 distinct permutations of 4 groups (2 in a, 2 in b)" in caplog.text
    assert "smallest p-value is 0.17" in caplog.text


@pytest.mark.slow
def test_frame_pooling_moves_frames_of_a_track_together_and_bad_column_is_refused(tmp_path):
    tracks = {f"t{i}": "a" if i < 4 else "b" for i in range(8)}
    store = write_track_store(tmp_path / "store", tracks, windows=4)
    res = _compare(store, tmp_path / "frames", pooling="frame")
    assert res["permutation_unit"] == "group" and res["permutation_units"] == 8 and res["n_a"] == 4 * 4 * 2
    assert res["layers"][0]["p_value"] > 0.05
    with pytest.raises(InputError, match="no column 'track'"):
        _compare(store, tmp_path / "bad", group_column="track")
    assert not (tmp_path / "bad").exists()


class Recorder:
    """A progress factory that records (description, total, advanced) of every task."""

    def __init__(self):
        self.tasks: list[list] = []

    def __call__(self, description, total=None):
        from contextlib import contextmanager

        task = [description, total, 0]
        self.tasks.append(task)

        @contextmanager
        def run():
            class Tracker:
                def advance(self, n=1):
                    task[2] += n

            yield Tracker()

        return run()


def test_the_permutation_test_reports_progress(tmp_path):
    tracks = {f"t{i}": "a" if i % 2 else "b" for i in range(24)}
    store = write_track_store(tmp_path / "store", tracks, windows=2)
    progress = Recorder()
    cfg = CompareConfig(label="kind", a="a", b="b", n_permutations=300, seed=0)
    compare(store, tmp_path / "out", cfg, progress=progress)
    (task,) = [t for t in progress.tasks if t[0] == "Comparing"]
    assert task[1] == 1 * (1 + 3) and task[2] == task[1]  # 300 permutations in 3 chunks of 128, plus the cosines


@pytest.mark.slow
def test_separation_reports_its_long_phases(tmp_path):
    from musicsae_cli.analysis.config import SeparationConfig
    from musicsae_cli.analysis.separation import separation
    from tests.analysis.test_separation import FAST, write_latent_store

    store = write_latent_store(tmp_path / "latents", n_items=24, frames=6)
    progress = Recorder()
    cfg = SeparationConfig(labels=["pitch_class"], projections=["tsne"], folds=3, **FAST)
    separation(store, tmp_path / "out", cfg, progress=progress)
    names = [t[0] for t in progress.tasks]
    assert "Reading features" in names and "Cross-validating" in names
    assert any(n.startswith("Silhouette") for n in names)
    assert any(n.startswith("t-SNE of") for n in names) and any(n.startswith(("SVD of", "PCA of")) for n in names)
    assert all(t[2] == t[1] for t in progress.tasks), progress.tasks  # every task runs to its total
