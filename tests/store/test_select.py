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
