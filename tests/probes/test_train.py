"""probe training on a store with a planted label: informative layers found, controls at chance, leak-free."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.probes import ProbeSet
from musicsae_cli.probes.config import ProbeConfig
from musicsae_cli.probes.train import train_probes

from .conftest import GENRES, INFORMATIVE, write_planted_store


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """120 tracks x 2 items, so the test part (about 48 items) measures chance reasonably well."""
    return write_planted_store(tmp_path_factory.mktemp("probe-big") / "s", n_groups=120, missing=(3, 7, 11))


def _split(folder) -> np.ndarray:
    """split.csv as a string array (item_id, [frame], group, side or fold)."""
    with (folder / "split.csv").open(newline="") as fh:
        return np.array(list(csv.reader(fh))[1:], dtype=str)


def _rows(res):
    return {row["hookpoint"]: row for row in res["layers"]}


@pytest.mark.smoke
@pytest.mark.slow
def test_finds_informative_layers_and_controls_sit_at_chance(big_store, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="musicsae"):
        res = train_probes(big_store, tmp_path / "p", ProbeConfig(label="genre", device="cpu"))
    rows = _rows(res)
    assert res["best"]["hookpoint"] in INFORMATIVE
    for hp, row in rows.items():
        if hp in INFORMATIVE:
            assert row["accuracy"] >= 0.95 and row["balanced_accuracy"] >= 0.95 and row["macro_f1"] >= 0.95
        else:
            assert row["balanced_accuracy"] < 0.5  # chance is 0.25
        assert row["control_balanced_accuracy"] < 0.5
    # Majority baseline: the most common training class predicted for every test item.
    split = _split(tmp_path / "p")
    probes = ProbeSet.load(tmp_path / "p")
    assert probes.classes == GENRES
    genre_of = {f"item{i:04d}": GENRES[i % 4] for i in range(240)}
    train_genres = [genre_of[i] for i, side in zip(split[:, 0], split[:, 2], strict=True) if side == "train"]
    test_genres = [genre_of[i] for i, side in zip(split[:, 0], split[:, 2], strict=True) if side == "test"]
    values, counts = np.unique(train_genres, return_counts=True)
    majority = values[np.argmax(counts)]
    assert rows["layers.0"]["baseline_accuracy"] == pytest.approx(np.mean(np.array(test_genres) == majority))
    assert rows["layers.0"]["baseline_balanced_accuracy"] == pytest.approx(1 / len(set(test_genres)))
    # Missing labels: reported with count and examples, and those items are not in the split.
    assert res["missing_labels"] == {"rows": 15, "items": 3, "examples": ["item0003", "item0007", "item0011"]}
    assert "missing for 3 item(s)" in caplog.text
    assert not {"item0003", "item0007", "item0011"} & set(split[:, 0])
    assert (tmp_path / "p" / "per_layer.png").stat().st_size > 0 and (tmp_path / "p" / "metrics.csv").is_file()


@pytest.mark.slow
def test_split_is_by_group_and_standardisation_uses_training_rows_only(planted_store, tmp_path):
    from musicsae_cli.store import ActivationStore

    train_probes(planted_store, tmp_path / "p", ProbeConfig(label="genre", device="cpu", seed=5))
    split = _split(tmp_path / "p")
    train_groups, test_groups = set(split[split[:, 2] == "train", 1]), set(split[split[:, 2] == "test", 1])
    assert train_groups and test_groups and not train_groups & test_groups
    # Stratified by genre: a fifth of the groups tested, each genre's share of the test side as in the store.
    genre_of = {f"item{i:04d}": GENRES[i % 4] for i in range(160)}
    assert len(test_groups) == 16
    test_genres = [genre_of[i] for i in split[split[:, 2] == "test", 0]]
    assert {g: test_genres.count(g) for g in GENRES} == dict.fromkeys(GENRES, 8)
    # Standardisation: mean/std of the mean-pooled training items only, computed with numpy from raw rows.
    store = ActivationStore.open(planted_store)
    items = store.metadata(["item_id"]).column("item_id").to_numpy(zero_copy_only=False)
    train_items = split[split[:, 2] == "train", 0]
    probes = ProbeSet.load(tmp_path / "p")
    for h, hp in enumerate(probes.hookpoints):
        acts = store.read_rows(hp, np.arange(store.n_rows))
        pooled = np.stack([acts[items == i].mean(axis=0) for i in train_items])
        np.testing.assert_allclose(probes.mean[h], pooled.mean(axis=0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(probes.std[h], pooled.std(axis=0), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_folds_partition_groups_and_report_spread(planted_store, tmp_path):
    res = train_probes(planted_store, tmp_path / "p", ProbeConfig(label="genre", device="cpu", folds=4))
    split = _split(tmp_path / "p")
    fold_of_group: dict[str, set] = {}
    for _, group, fold in split:
        fold_of_group.setdefault(group, set()).add(fold)
    assert all(len(f) == 1 for f in fold_of_group.values())
    assert {f for fs in fold_of_group.values() for f in fs} == {"0", "1", "2", "3"}
    row = _rows(res)["layers.1"]
    assert row["accuracy"] >= 0.95 and "accuracy_std" in row and res["split"]["probes_trained_on"] == \
        "all labelled groups"


def test_onehot_mse_learns_a_row_per_class(planted_store, tmp_path):
    res = train_probes(planted_store, tmp_path / "p", ProbeConfig(label="genre", loss="mse", device="cpu"))
    assert res["loss"] == "onehot_mse" and _rows(res)["layers.3"]["accuracy"] >= 0.95
    probes = ProbeSet.load(tmp_path / "p")
    from musicsae_cli.store import ActivationStore

    items, acts = ActivationStore.open(planted_store).pool(["layers.3"])
    predicted = set(probes.predict("layers.3", acts["layers.3"]))
    assert predicted == set(GENRES)  # regressing the class index would collapse onto one or two classes
    h = probes.hookpoints.index("layers.3")
    cos = np.corrcoef(probes.weight[h])  # (C, C): class rows point in different directions
    assert np.all(cos[~np.eye(4, dtype=bool)] < 0.9)


def test_regression_recovers_a_linear_target(planted_store, tmp_path):
    res = train_probes(planted_store, tmp_path / "p", ProbeConfig(label="bpm", task="regression", device="cpu"))
    rows = _rows(res)
    for hp in INFORMATIVE:
        assert rows[hp]["r2"] > 0.9 and rows[hp]["mae"] < rows[hp]["baseline_mae"] / 2
    assert rows["layers.0"]["r2"] < 0.3 and rows["layers.1"]["control_r2"] < 0.3
    probes = ProbeSet.load(tmp_path / "p")
    assert probes.weight.shape[1] == 1 and probes.manifest["target_std"] > 0


def test_label_errors(planted_store, tmp_path):
    with pytest.raises(InputError, match=r"no label column 'genr'.*did you mean 'genre'"):
        train_probes(planted_store, tmp_path / "p", ProbeConfig(label="genr", device="cpu"))
    with pytest.raises(InputError, match="regression needs numbers"):
        train_probes(planted_store, tmp_path / "p", ProbeConfig(label="genre", task="regression", device="cpu"))
    with pytest.raises(InputError, match="a probe needs 2"):
        train_probes(planted_store, tmp_path / "p", ProbeConfig(label="genre", where=["genre=jazz"], device="cpu"))
    with pytest.raises(InputError, match="hookpoint 'layers.9' is not in the store"):
        train_probes(planted_store, tmp_path / "p", ProbeConfig(label="genre", hookpoints=["layers.9"]))
    assert not (tmp_path / "p").exists()


def test_hookpoint_globs_and_frame_pooling(planted_store, tmp_path):
    cfg = ProbeConfig(label="genre", pooling="frame", hookpoints=["layers.[13]"], device="cpu", max_rows=300)
    res = train_probes(planted_store, tmp_path / "p", cfg)
    assert res["hookpoints"] == ["layers.1", "layers.3"] and res["sampled_from_rows"] == 800
    assert res["split"]["samples"] == 300 and min(r["accuracy"] for r in res["layers"]) >= 0.9
    split = _split(tmp_path / "p")
    assert not set(split[split[:, 3] == "train", 2]) & set(split[split[:, 3] == "test", 2])
