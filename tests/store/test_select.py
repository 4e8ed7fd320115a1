"""select(): filter rows by metadata, checked against a plain-Python evaluation of the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_cli.errors import InputError
from musicsae_cli.store import ActivationStore, parse_where


def expected(store: ActivationStore, predicate) -> np.ndarray:
    rows = store.metadata().to_pylist()
    return np.array([i for i, row in enumerate(rows) if predicate(row)], dtype=np.int64)


CASES = [
    (["stream=cond"], lambda r: r["stream"] == "cond"),
    (["genre!=rock"], lambda r: r["genre"] is not None and r["genre"] != "rock"),
    (["genre in rock, jazz"], lambda r: r["genre"] in ("rock", "jazz")),
    (["genre not in rock,jazz"], lambda r: r["genre"] is not None and r["genre"] not in ("rock", "jazz")),
    (["bpm>=100", "bpm<140"], lambda r: 100 <= r["bpm"] < 140),
    (["bpm>94.5"], lambda r: r["bpm"] > 94.5),
    (["bpm in 80,94"], lambda r: r["bpm"] in (80, 94)),
    (["bpm in 80, 94.5"], lambda r: r["bpm"] == 80),
    (["bpm==87"], lambda r: r["bpm"] == 87),
    (["bpm<=101", "stream=uncond", "group=g1"],
     lambda r: r["bpm"] <= 101 and r["stream"] == "uncond" and r["group"] == "g1"),
    (["frame<2"], lambda r: r["frame"] < 2),
    (["genre='rock'"], lambda r: r["genre"] == "rock"),
]


@pytest.mark.parametrize(("where", "predicate"), CASES, ids=[" & ".join(w) for w, _ in CASES])
def test_select_matches_python(store_path, where, predicate):
    store = ActivationStore.open(store_path)
    got = store.select(where)
    want = expected(store, predicate)
    assert got.dtype == np.int64 and want.size > 0
    np.testing.assert_array_equal(got, want)


def test_select_without_filters_is_all_rows(store_path):
    store = ActivationStore.open(store_path)
    np.testing.assert_array_equal(store.select(None), np.arange(store.n_rows))
    np.testing.assert_array_equal(store.select([]), np.arange(store.n_rows))
    assert store.select("genre=metal").size == 0


def test_unknown_column_names_the_closest(store_path):
    store = ActivationStore.open(store_path)
    with pytest.raises(InputError) as err:
        store.select(["genr=rock"])
    assert "unknown metadata column 'genr'" in err.value.message
    assert "did you mean 'genre'" in err.value.message
    assert "stream" in err.value.hint and "bpm" in err.value.hint


def test_bad_filters(store_path):
    store = ActivationStore.open(store_path)
    with pytest.raises(InputError, match="not a number"):
        store.select(["bpm>=fast"])
    with pytest.raises(InputError, match="cannot parse filter"):
        store.select(["genre"])
    with pytest.raises(InputError, match="has no value"):
        store.select(["genre="])


def test_parse_where():
    (cond,) = parse_where("genre  not in  a , b")
    assert (cond.column, cond.op, cond.values) == ("genre", "not in", ("a", "b"))
    (cond,) = parse_where("title=rock in space")
    assert (cond.column, cond.op, cond.values) == ("title", "=", ("rock in space",))


# -- the guidance-stream rule shared by every consumer (issue 12, item 11) --------------------------------------
NOTE = "using stream=cond rows of a store with streams cond, uncond (pass --where stream=uncond for the other)"


def test_choose_stream_picks_cond_when_the_rows_mix_streams(store_path, caplog):
    import logging

    from musicsae_cli.store.filters import choose_stream

    store = ActivationStore.open(store_path)
    with caplog.at_level(logging.INFO, logger="musicsae"):
        choice = choose_stream(store, [])
        narrowed = choose_stream(store, ["genre=rock"])
    assert choice.where == ["stream=cond"] and (choice.stream, choice.streams) == ("cond", ("cond", "uncond"))
    assert choice.note == NOTE and caplog.text.count(NOTE) == 2
    assert choice.record() == {"stream": "cond", "streams": ["cond", "uncond"], "chosen": "by default", "note": NOTE}
    np.testing.assert_array_equal(store.select(choice.where), expected(store, lambda r: r["stream"] == "cond"))
    assert narrowed.where == ["genre=rock", "stream=cond"]


@pytest.mark.parametrize(("where", "labels"), [
    (["stream=uncond"], ()),  # the user's choice, kept as is
    (["stream in cond,uncond"], ()),  # both, asked for explicitly
    (["frame<1"], ()),  # rows of one stream only (frame 0 is a cond row in these items)
    ([], ("genre", "stream")),  # the stream is what is analysed
])
def test_choose_stream_leaves_explicit_or_single_stream_selections_alone(store_path, caplog, where, labels):
    import logging

    from musicsae_cli.store.filters import choose_stream

    store = ActivationStore.open(store_path)
    with caplog.at_level(logging.INFO, logger="musicsae"):
        choice = choose_stream(store, where, labels=labels)
    assert choice.where == where and choice.stream is None and choice.record() is None and not caplog.text


def test_choose_stream_ignores_stores_without_the_column(tmp_path, caplog):
    from musicsae_cli.store.filters import choose_stream

    from .helpers import make_items, write_store

    items = make_items(4)
    for item in items:
        del item["frame_meta"]
    store = ActivationStore.open(write_store(tmp_path / "s", items))
    assert choose_stream(store, ["genre=rock"]).where == ["genre=rock"] and not caplog.text


@pytest.mark.parametrize("stream", [None, "uncond"])
def test_sae_training_rows_come_from_one_stream(store_path, caplog, stream):
    """`sae train` takes its rows from sae.data.split_rows: one stream of a mixed store, cond by default."""
    import logging

    from musicsae_cli.sae.data import split_rows

    store = ActivationStore.open(store_path)
    where = [] if stream is None else [f"stream={stream}"]
    with caplog.at_level(logging.INFO, logger="musicsae"):
        split = split_rows(store, where, 0.25, "group", seed=0)
    used = stream or "cond"
    rows = np.sort(np.concatenate([split.train, split.val]))
    np.testing.assert_array_equal(rows, expected(store, lambda r: r["stream"] == used))
    assert split.where == [f"stream={used}"]
    assert (NOTE in caplog.text) == (stream is None) and (split.stream is None) == (stream is not None)


@pytest.mark.slow
def test_sae_train_records_the_stream_it_used(store_path, tmp_path):
    import json

    from musicsae_cli.sae.config import SAETrainConfig
    from musicsae_cli.sae.train import train_sae

    cfg = SAETrainConfig(architecture="topk", k=2, expansion_factor=2, hookpoint="layers.3", max_steps=3,
                         batch_size=8, device="cpu", init_rows=64, val_fraction=0.25)
    res = train_sae(store_path, tmp_path / "run", cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert res["split"]["where"] == manifest["split"]["where"] == ["stream=cond"]
    assert manifest["split"]["stream"] is not None
    saved = json.loads((tmp_path / "run" / "cfg.json").read_text())
    assert "stream=cond" in json.dumps(saved)
