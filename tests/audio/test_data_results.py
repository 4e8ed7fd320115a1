"""The typed results of the `data` services read as the command printed them: human lines and --json fields."""

from __future__ import annotations

from musicsae_cli.audio.dataset import IndexSummary
from musicsae_cli.audio.hf_datasets import DatasetImport


def _import(**kw) -> DatasetImport:
    fields = dict(source="hf:meganwei/syntheory", path="o", manifest="o/manifest.csv", items=3,
                  label_columns=["note", "octave"], skipped=[], split="train", subset="notes", resumed_rows=0,
                  label_map="syntheory", seconds_of_audio=1.6)
    return DatasetImport(**{**fields, **kw})


def test_dataset_import_lines_name_the_split_subset_label_map_resume_and_skips():
    res = _import(resumed_rows=4, skipped=[{"row": "row 2", "reason": "zero-length audio"}])
    assert res.lines() == [
        "o/manifest.csv",
        "3 items from hf:meganwei/syntheory (split train, subset notes), 2 s of audio; labels: note, octave "
        "(SynTheory's under data synth's names)",
        "resumed after 4 rows written by an interrupted run",
        "1 skipped:", "  row 2: zero-length audio"]
    plain = _import(subset=None, label_map="none", label_columns=[])
    assert plain.lines()[1] == "3 items from hf:meganwei/syntheory (split train), 2 s of audio; labels: -"
    assert list(res.to_json()) == ["path", "manifest", "items", "label_columns", "skipped", "split", "subset",
                                   "resumed_rows", "label_map", "seconds_of_audio"]  # the source is Python-only
    assert res["skipped"] == [{"row": "row 2", "reason": "zero-length audio"}] and res["source"].startswith("hf:")


def test_index_summary_lines_and_json():
    res = IndexSummary(out="songs.csv", items=2, label_columns=[], skipped=[{"path": "a.wav", "reason": "silent"}])
    assert res.lines() == ["songs.csv", "2 items indexed, labels: -", "1 skipped:", "  a.wav: silent"]
    assert res.to_json() == {"items": 2, "label_columns": [], "skipped": [{"path": "a.wav", "reason": "silent"}]}
