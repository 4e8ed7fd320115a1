"""Dataset manifests and `data index`: folders, CSV/JSONL, groups, skipped files, refusals."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from musicsae_cli.audio.manifest import Manifest, read_manifest_file
from tests.conftest import write_audio


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_of_classes_gives_labels_groups_and_durations(runner, app, class_folder, tmp_path):
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out),
                                 "--label", "genre", "--group-regex", r"^(.+)_part\d+$"])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 6 and {r["genre"] for r in rows} == {"jazz", "rock"}
    assert {r["group"] for r in rows if r["genre"] == "jazz"} == {"jazz/track0", "jazz/track1"}
    assert all(float(r["duration_s"]) == 0.5 and r["sample_rate"] == "16000" for r in rows)
    # paths are absolute when the audio is not under the manifest's folder, and resolve either way
    m = read_manifest_file(out)
    assert all(r["path"].is_file() for r in m.rows) and m.label_columns == ["genre"]


def test_manifest_paths_relative_to_its_folder(runner, app, class_folder):
    out = class_folder / "index.csv"
    assert runner.invoke(app, ["data", "index", str(class_folder), "-o", str(out)]).exit_code == 0
    assert _rows(out)[0]["path"] == "jazz/track0_part0.wav"


def test_csv_source_with_labels_group_and_types(runner, app, tmp_path):
    for i in range(3):
        write_audio(tmp_path / "audio" / f"{i}.wav", freq=200 + 100 * i)
    src = tmp_path / "meta.csv"
    src.write_text("file,genre,bpm,track,notes\n"
                   "audio/0.wav,jazz,120,t1,x\naudio/1.wav,rock,90.5,t1,y\naudio/2.wav,rock,,t2,z\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["data", "index", str(src), "--out", str(out), "--path-column", "file",
                                 "--label", "genre", "--label", "bpm", "--group-column", "track"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["genre"] for r in rows] == ["jazz", "rock", "rock"] and "notes" not in rows[0]
    assert [r["bpm"] for r in rows] == [120.0, 90.5, None]  # numeric column typed, empty cell is missing
    assert [r["group"] for r in rows] == ["t1", "t1", "t2"]


def test_jsonl_and_parquet_sources(tmp_path):
    write_audio(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a.wav", "pitch": 60, "group": "g"}) + "\n")
    m = read_manifest_file(tmp_path / "m.jsonl")
    assert m.rows[0]["pitch"] == 60 and m.rows[0]["group"] == "g" and m.label_columns == ["pitch"]
    m.write(tmp_path / "m.parquet")
    back = read_manifest_file(tmp_path / "m.parquet")
    assert back.rows[0]["path"] == m.rows[0]["path"] and back.rows[0]["pitch"] == 60


def test_missing_path_column_is_a_one_line_error(runner, app, tmp_path):
    src = tmp_path / "meta.csv"
    src.write_text("audio_path,genre\nx.wav,jazz\n")
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["data", "index", str(src), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.strip() == ("error: manifest meta.csv has no path column 'path' (columns: audio_path, genre)"
                                     " (hint: did you mean 'audio_path'? name the right one with --path-column)")


def test_unknown_label_column_names_closest(runner, app, tmp_path):
    write_audio(tmp_path / "a.wav")
    src = tmp_path / "meta.csv"
    src.write_text("path,genre\na.wav,jazz\n")
    result = runner.invoke(app, ["data", "index", str(src), "--out", str(tmp_path / "o.csv"), "--label", "genra"])
    assert result.exit_code == 2 and "no label column 'genra'" in result.stderr and "did you mean 'genre'" in \
        result.stderr


def test_bad_audio_is_skipped_and_listed(runner, app, class_folder, tmp_path):
    (class_folder / "jazz" / "corrupt.wav").write_bytes(b"RIFF\x00\x00WAVEfmt garbage")
    write_audio(class_folder / "rock" / "empty.wav", data=np.zeros((0,), np.float32))
    write_audio(class_folder / "rock" / "silent.wav", data=np.zeros(4000, np.float32))
    src = tmp_path / "list.csv"
    src.write_text(f"path\n{class_folder / 'jazz' / 'track0_part0.wav'}\n{tmp_path / 'gone.wav'}\n")
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(_rows(out)) == 6
    assert "3 skipped:" in result.stdout
    for name, reason in (("corrupt.wav", "cannot decode"), ("empty.wav", "zero-length"), ("silent.wav", "silent")):
        assert any(name in line and reason in line for line in result.stdout.splitlines()), name
    missing = runner.invoke(app, ["data", "index", str(src), "--out", str(tmp_path / "m2.csv")])
    assert missing.exit_code == 0 and "gone.wav: file not found" in missing.stdout
    kept = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(tmp_path / "k.csv"), "--keep-silent"])
    assert "silent.wav" in (tmp_path / "k.csv").read_text() and kept.exit_code == 0


def test_strict_fails_and_leaves_nothing(runner, app, class_folder, tmp_path):
    (class_folder / "jazz" / "corrupt.wav").write_bytes(b"garbage")
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out), "--strict"])
    assert result.exit_code == 1 and "corrupt.wav" in result.stderr and "--strict" in result.stderr
    assert not out.exists() and list(tmp_path.glob(".m.csv*")) == []


def test_empty_folder_and_all_unusable(runner, app, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["data", "index", str(tmp_path / "empty"), "--out", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "no audio files in" in result.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"junk")
    result = runner.invoke(app, ["data", "index", str(tmp_path / "bad"), "--out", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "no usable audio" in result.stderr and not (tmp_path / "m.csv").exists()


def test_existing_output_refused_unless_overwrite(runner, app, class_folder, tmp_path):
    out = tmp_path / "m.csv"
    assert runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out)]).exit_code == 0
    (class_folder / "jazz" / "track0_part0.wav").unlink()
    result = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.stderr and "--overwrite" in result.stderr
    assert len(_rows(out)) == 6
    assert runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out), "--overwrite"]).exit_code == 0
    assert len(_rows(out)) == 5


def test_unsupported_output_format(runner, app, class_folder, tmp_path):
    result = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(tmp_path / "m.txt")])
    assert result.exit_code == 2 and "unsupported manifest format" in result.stderr


def test_output_that_is_a_folder_is_refused(runner, app, class_folder, tmp_path):
    (tmp_path / "m.csv").mkdir()
    result = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(tmp_path / "m.csv"), "--overwrite"])
    assert result.exit_code == 2 and "--out is a folder" in result.stderr and (tmp_path / "m.csv").is_dir()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.slow
def test_overwrite_replaces_only_an_unchanged_index_output(runner, app, class_folder, tmp_path, fmt):
    """--overwrite replaces a manifest file only when `data index` wrote it and nobody edited it since."""
    base = ["data", "index", str(class_folder), "--overwrite"]
    # a file the user wrote is refused, byte for byte untouched, and gets no record beside it
    user = tmp_path / f"user.{fmt}"
    user.write_bytes(b"path,genre\nmine.wav,jazz\n")
    result = runner.invoke(app, [*base, "--out", str(user)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: refusing to replace {user}: musicsae did not write it (or it was "
                                     "edited since) (hint: choose a new --out path, or delete it yourself)")
    assert user.read_bytes() == b"path,genre\nmine.wav,jazz\n" and sorted(tmp_path.iterdir()) == [class_folder, user]
    # an index output is replaced by a second run, and its record follows the new bytes
    out = tmp_path / f"index.{fmt}"
    assert runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out)]).exit_code == 0
    record = tmp_path / f".index.{fmt}.musicsae.json"
    first = json.loads(record.read_text())
    assert first["kind"] == "manifest" and first["file"] == out.name and first["n_items"] == 6
    assert first["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    (class_folder / "rock" / "track1_part0.wav").unlink()
    result = runner.invoke(app, [*base, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_manifest_file(out)) == 5
    second = json.loads(record.read_text())
    assert second["n_items"] == 5 and second["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    # and again (the record stayed in sync), but not once it was edited by hand
    assert runner.invoke(app, [*base, "--out", str(out)]).exit_code == 0
    edited = out.read_bytes() + (b"extra.wav,x\n" if fmt == "csv" else b"\n" if fmt == "jsonl" else b"\0")
    out.write_bytes(edited)
    result = runner.invoke(app, [*base, "--out", str(out)])
    assert result.exit_code == 2 and "musicsae did not write it (or it was edited since)" in result.stderr
    assert out.read_bytes() == edited
    # a record copied beside another file does not vouch for it
    other = tmp_path / f"other.{fmt}"
    other.write_bytes(b"mine\n")
    (tmp_path / f".other.{fmt}.musicsae.json").write_text(record.read_text())
    assert runner.invoke(app, [*base, "--out", str(other)]).exit_code == 2 and other.read_bytes() == b"mine\n"
    # a file that only has a record's name is not replaced either
    fake = tmp_path / f".new.{fmt}.musicsae.json"
    fake.write_text("my notes")
    result = runner.invoke(app, [*base, "--out", str(tmp_path / f"new.{fmt}")])
    assert result.exit_code == 2 and f"refusing to replace {fake}" in result.stderr
    assert fake.read_text() == "my notes" and not (tmp_path / f"new.{fmt}").exists()


def test_info_says_who_wrote_a_manifest_file(runner, app, class_folder, tmp_path):
    out = tmp_path / "index.csv"
    assert runner.invoke(app, ["data", "index", str(class_folder), "--out", str(out)]).exit_code == 0
    data = json.loads(runner.invoke(app, ["info", str(out), "--json"]).stdout)
    assert data["written_by"]["command"] == "data index" and data["written_by"]["edited_since"] is False
    out.write_text(out.read_text() + "jazz/track0_part0.wav,x,y\n")
    data = json.loads(runner.invoke(app, ["info", str(out), "--json"]).stdout)
    assert data["written_by"]["edited_since"] is True


def _float_wav(path, data, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype="FLOAT")
    return path


def test_non_finite_audio_is_skipped_and_listed_or_fails_with_strict(runner, app, tmp_path):
    good = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32) * 0.5
    bad = good.copy()
    bad[12000] = np.nan  # 0.75 s
    worse = good.copy()
    worse[4000:] = np.inf  # 0.25 s
    _float_wav(tmp_path / "in" / "a_nan.wav", bad)
    _float_wav(tmp_path / "in" / "b_good.wav", good)
    _float_wav(tmp_path / "in" / "c_inf.wav", worse)
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "index", str(tmp_path / "in"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    skipped = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in json.loads(result.stdout)["skipped"]}
    assert skipped == {"a_nan.wav": "non-finite samples (NaN/Inf) at 0.75 s",
                       "c_inf.wav": "non-finite samples (NaN/Inf) at 0.25 s"}
    assert [r["item_id"] for r in _rows(out)] == ["b_good"]
    result = runner.invoke(app, ["data", "index", str(tmp_path / "in"), "--out", str(tmp_path / "s.csv"), "--strict"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'in' / 'a_nan.wav'}: non-finite samples (NaN/Inf) at 0.75 s")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("name, content, reason", [
    ("m.parquet", b"PAR1 this is not parquet", "Parquet magic bytes not found"),
    ("t.parquet", None, ""),  # a parquet file cut short
    ("m.csv", b"path,genre\n\xff\xfe.wav,jazz\n", "not UTF-8 text (invalid start byte)"),
    ("q.csv", b'path,genre\na.wav,jazz\n"b.wav,rock\n', "line 3: unexpected end of data"),
    ("r.csv", b"path,genre\na.wav,jazz,extra\n", "row 1 has 3 cells but the header names 2 columns"),
    ("m.jsonl", b'{"path": "a.wav"}\n{"path": \n', "line 2 is not valid JSON"),
    ("n.jsonl", b'{"path": "a.wav"}\n[1, 2]\n', "line 2 is not a JSON object"),
])
def test_unreadable_manifest_is_a_one_line_input_error(runner, app, tmp_path, name, content, reason):
    src = tmp_path / name
    if content is None:
        Manifest([{"path": tmp_path / "a.wav", "item_id": "a", "group": "a"}]).write(src)
        src.write_bytes(src.read_bytes()[:-30])
    else:
        src.write_bytes(content)
    for cmd in (["data", "index", str(src), "--out", str(tmp_path / "o.csv")],
                ["data", "chunk", str(src), "-o", str(tmp_path / "chunks")]):
        result = runner.invoke(app, cmd)
        assert result.exit_code == 2, result.output
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and line.startswith(f"error: cannot read manifest {src}: {reason}"), line
        assert "(hint: " in line and "internal error" not in line
        assert not (tmp_path / "o.csv").exists() and not (tmp_path / "chunks").exists()
