"""`data index` of Hugging Face datasets, built offline with the `datasets` library and read through the real paths:
save_to_disk folders (one split or several), Parquet files and a hub-layout folder of them, an audiofolder;
labels, groups, audio fidelity, resampling, resume, bad input, the offline hub and SynTheory's label names."""

from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import Stop, audio_dataset, stopping_after

datasets = pytest.importorskip("datasets")


def _wav(freq: float, sr: int = 16000, seconds: float = 0.25, channels: int = 1, subtype: str = "PCM_16") -> bytes:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.4 * np.sin(2 * np.pi * freq * t)
    data = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


GENRES = ["rock", "jazz", "folk"]


def _table(n: int = 6, **extra) -> dict:
    """Columns of a small genre dataset: audio (bytes), a class label, an int, a string track, a list column."""
    return {"audio": [{"bytes": _wav(220 + 40 * i, channels=2 if i == 1 else 1), "path": f"clip{i}.wav"}
                      for i in range(n)],
            "genre": [i % 3 for i in range(n)], "bpm": [100 + i for i in range(n)],
            "track": [f"t{i // 2}" for i in range(n)], "tags": [["a", "b"]] * n, **extra}


def _features() -> dict:
    from datasets import ClassLabel, Sequence, Value

    return {"genre": ClassLabel(names=GENRES), "bpm": Value("int32"), "track": Value("string"),
            "tags": Sequence(Value("string"))}


def _dataset(n: int = 6):
    return audio_dataset(_table(n), _features())


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _index(runner, app, *args):
    return runner.invoke(app, ["data", "index", *map(str, args)])


def test_save_to_disk_folder_gives_audio_labels_groups_and_a_record(runner, app, tmp_path):
    ds = _dataset()
    ds.save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "data"
    result = _index(runner, app, tmp_path / "saved", "-o", out, "--group-column", "track")
    assert result.exit_code == 0, result.output
    rows = _rows(out / "manifest.csv")
    assert len(rows) == 6 and [r["genre"] for r in rows] == [GENRES[i % 3] for i in range(6)]  # names, not ints
    assert [r["bpm"] for r in rows] == [str(100 + i) for i in range(6)] and "tags" not in rows[0]
    assert [r["group"] for r in rows] == ["t0", "t0", "t1", "t1", "t2", "t2"] and "track" not in rows[0]
    assert rows[1]["channels"] == "2" and rows[0]["channels"] == "1" and rows[0]["sample_rate"] == "16000"
    assert rows[0]["source_path"] == "clip0.wav"
    for i, row in enumerate(rows):  # the stored samples, bit for bit (16-bit wav -> 16-bit flac)
        got, sr = sf.read(out / row["path"], dtype="int16", always_2d=True)
        want, _ = sf.read(io.BytesIO(ds.with_format(None).cast_column("audio", datasets.Audio(decode=False))[i]
                                     ["audio"]["bytes"]), dtype="int16", always_2d=True)
        assert sr == 16000 and np.array_equal(got, want) and row["path"].endswith(".flac")
    head = json.loads((out / "manifest.json").read_text())
    assert head["kind"] == "dataset" and head["source"] == "hf" and head["n_items"] == 6
    state = json.loads((tmp_path / "saved" / "state.json").read_text())
    assert head["origin"]["split"] == "train" and head["origin"]["fingerprint"] == state["_fingerprint"]
    assert head["origin"]["class_labels"] == {"genre": GENRES} and head["origin"]["audio_column"] == "audio"
    # a musicsae dataset folder: extract and the other commands read it like data synth's
    from musicsae_cli.audio.manifest import load_dataset

    assert len(load_dataset(out)) == 6 and "6 items from" in result.stdout


def test_dataset_dict_splits_are_listed_and_chosen(runner, app, tmp_path):
    dd = datasets.DatasetDict({"train": _dataset(4), "test": _dataset(2)})
    dd.save_to_disk(str(tmp_path / "dd"))
    result = _index(runner, app, tmp_path / "dd", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "holds 2 splits" in result.stderr and "train, test" in result.stderr
    result = _index(runner, app, tmp_path / "dd", "-o", tmp_path / "x", "--split", "valid")
    assert result.exit_code == 2 and "no split 'valid'" in result.stderr and "train, test" in result.stderr
    assert not (tmp_path / "x").exists()
    result = _index(runner, app, tmp_path / "dd", "-o", tmp_path / "x", "--split", "test")
    assert result.exit_code == 0, result.output
    assert [r["item_id"] for r in _rows(tmp_path / "x" / "manifest.csv")] == ["test-000000", "test-000001"]


@pytest.mark.slow
def test_parquet_file_and_hub_layout_folder(runner, app, tmp_path):
    _dataset(3).to_parquet(str(tmp_path / "one.parquet"))
    result = _index(runner, app, tmp_path / "one.parquet", "-o", tmp_path / "a", "--format", "wav", "--limit", 2)
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "a" / "manifest.csv")
    assert len(rows) == 2 and rows[0]["path"].endswith(".wav") and rows[2:] == []
    assert [r["genre"] for r in rows] == ["rock", "jazz"]  # the class names travel in the Parquet metadata
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    _dataset(4).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    _dataset(2).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    result = _index(runner, app, repo, "-o", tmp_path / "b", "--split", "test", "--sample-rate", 8000)
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "b" / "manifest.csv")
    assert len(rows) == 2 and {r["sample_rate"] for r in rows} == {"8000"}
    audio, sr = sf.read(tmp_path / "b" / rows[0]["path"])
    spectrum = np.abs(np.fft.rfft(audio if audio.ndim == 1 else audio[:, 0]))
    assert sr == 8000 and abs(np.argmax(spectrum) * sr / len(audio) - 220) < 8  # resampled, same pitch


def test_a_manifest_parquet_is_still_a_manifest(runner, app, tmp_path):
    from tests.conftest import write_audio

    write_audio(tmp_path / "a.wav")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["a.wav"], "genre": ["jazz"]}), tmp_path / "m.parquet")
    result = _index(runner, app, tmp_path / "m.parquet", "-o", tmp_path / "m.csv")
    assert result.exit_code == 0, result.output and _rows(tmp_path / "m.csv")[0]["genre"] == "jazz"


def test_audiofolder_with_metadata(runner, app, tmp_path):
    folder = tmp_path / "af"
    folder.mkdir()
    lines = ["file_name,mood,bpm"]
    for i in range(3):
        (folder / f"s{i}.wav").write_bytes(_wav(300 + 50 * i))
        lines.append(f"s{i}.wav,{['calm', 'tense', 'calm'][i]},{90 + i}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    result = _index(runner, app, folder, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "out" / "manifest.csv")
    assert sorted(r["mood"] for r in rows) == ["calm", "calm", "tense"] and {r["bpm"] for r in rows} == {"90", "91",
                                                                                                      "92"}


def test_undecodable_rows_are_skipped_and_listed_or_strict(runner, app, tmp_path):
    table = _table(4)
    table["audio"][2] = {"bytes": b"RIFF\x00\x00junk", "path": "broken.wav"}
    audio_dataset(table, _features()).save_to_disk(str(tmp_path / "s"))
    result = _index(runner, app, tmp_path / "s", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "o" / "manifest.csv")) == 3 and "1 skipped:" in result.stdout
    assert "row 2: cannot decode" in result.stdout
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["skipped"][0]["row"] == "row 2"
    result = _index(runner, app, tmp_path / "s", "-o", tmp_path / "strict", "--strict")
    assert result.exit_code == 1 and "row 2" in result.stderr
    assert not (tmp_path / "strict").exists() and not list(tmp_path.glob(".strict*"))  # nothing partial


def test_bad_input_one_line_each(runner, app, tmp_path):
    from datasets import Features, Value

    datasets.Dataset.from_dict({"x": [1, 2]}, features=Features({"x": Value("int32")})).save_to_disk(
        str(tmp_path / "noaudio"))
    result = _index(runner, app, tmp_path / "noaudio", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "no audio column" in result.stderr and "its columns: x" in result.stderr
    _dataset(2).save_to_disk(str(tmp_path / "s"))
    cases = [
        (["-o", tmp_path / "o.csv"], "written as a folder"),
        (["-o", tmp_path / "s" / "inside"], "lies inside the input dataset"),
        (["-o", tmp_path / "o", "--group-column", "nope"], "--group-column 'nope' is not a scalar column"),
        (["-o", tmp_path / "o", "--audio-column", "genre_x"], "no column 'genre_x'"),
        (["-o", tmp_path / "o", "--subset", "notes"], "no subsets"),
        (["-o", tmp_path / "o", "--group-regex", "x"], "--group-regex applies to folders"),
    ]
    for extra, message in cases:
        result = _index(runner, app, tmp_path / "s", *extra)
        assert result.exit_code == 2 and message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.csv").exists()
    result = _index(runner, app, tmp_path / "s", "-o", tmp_path / "o", "--id-column", "track")
    assert result.exit_code == 2 and "repeats item ids" in result.stderr and not list(tmp_path.glob(".o*"))
    result = _index(runner, app, "hf:bad id", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "bad dataset id" in result.stderr
    result = _index(runner, app, tmp_path / "s", "-o", tmp_path / "o", "--sample-rate", "0")
    assert result.exit_code == 2
    from tests.conftest import write_audio

    write_audio(tmp_path / "folder" / "a.wav")
    result = _index(runner, app, tmp_path / "folder", "-o", tmp_path / "f.csv", "--split", "train")
    assert result.exit_code == 2 and "--split applies to datasets" in result.stderr


def test_label_column_of_mixed_types_fails_and_leaves_nothing(tmp_path):
    from musicsae_cli.audio.config import IndexConfig
    from musicsae_cli.audio.hf_datasets import import_dataset
    from musicsae_cli.audio.hf_sources import dataset_source
    from musicsae_cli.errors import InputError

    folder = tmp_path / "af"
    folder.mkdir()
    rows = [{"file_name": "a.wav", "key": 5}, {"file_name": "b.wav", "key": "F#"}]
    for r in rows:
        (folder / r["file_name"]).write_bytes(_wav(330))
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"label column 'key' mixes types: number \(row 0\) and text \(row 1\)"):
        import_dataset(dataset_source(folder), tmp_path / "o", IndexConfig())
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))  # nothing partial
    res = import_dataset(dataset_source(folder), tmp_path / "o", IndexConfig(label_columns=[]))
    assert res["items"] == 2 and res["label_columns"] == ["source_path"]


def test_existing_output_and_overwrite_keep_the_old_until_done(runner, app, tmp_path):
    _dataset(3).save_to_disk(str(tmp_path / "s"))
    out = tmp_path / "o"
    assert _index(runner, app, tmp_path / "s", "-o", out).exit_code == 0
    before = (out / "manifest.csv").read_bytes()
    result = _index(runner, app, tmp_path / "s", "-o", out)
    assert result.exit_code == 2 and "already exists" in result.stderr
    result = _index(runner, app, tmp_path / "s", "-o", out, "--overwrite", "--limit", 2)
    assert result.exit_code == 0 and len(_rows(out / "manifest.csv")) == 2 and before != (out / "manifest.csv"
                                                                                          ).read_bytes()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not musicsae's")
    result = _index(runner, app, tmp_path / "s", "-o", mine, "--overwrite")
    assert result.exit_code == 2 and (mine / "notes.txt").exists()


def test_interrupted_import_resumes_and_matches_an_uninterrupted_one(tmp_path):
    from musicsae_cli.audio.config import IndexConfig
    from musicsae_cli.audio.hf_datasets import import_dataset
    from musicsae_cli.audio.hf_sources import dataset_source

    _dataset(6).save_to_disk(str(tmp_path / "s"))
    src = dataset_source(tmp_path / "s")
    cfg = IndexConfig(group_column="track")
    with pytest.raises(Stop):
        import_dataset(src, tmp_path / "o", cfg, progress=stopping_after("Importing rows", 3))
    assert not (tmp_path / "o").exists() and (tmp_path / ".o.importing" / "rows.jsonl").is_file()
    res = import_dataset(src, tmp_path / "o", cfg)
    assert res["resumed_rows"] == 4 and res["items"] == 6 and not (tmp_path / ".o.importing").exists()
    whole = import_dataset(src, tmp_path / "whole", cfg)
    assert whole["resumed_rows"] == 0
    assert (tmp_path / "o" / "manifest.csv").read_bytes() == (tmp_path / "whole" / "manifest.csv").read_bytes()
    for row in _rows(tmp_path / "o" / "manifest.csv"):
        assert (tmp_path / "o" / row["path"]).read_bytes() == (tmp_path / "whole" / row["path"]).read_bytes()
    # other settings do not resume a stage: it starts over
    with pytest.raises(Stop):
        import_dataset(src, tmp_path / "p", cfg, progress=stopping_after("Importing rows", 2))
    res = import_dataset(src, tmp_path / "p", IndexConfig(group_column="track", audio_format="wav"))
    assert res["resumed_rows"] == 0 and res["items"] == 6


def test_hub_offline_fails_at_once_with_how_to_pass_a_copy(runner, app, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _index(runner, app, "hf:meganwei/syntheory", "--subset", "notes", "-o", tmp_path / "o")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "offline mode" in result.stderr and "save_to_disk" in result.stderr and "then index DIR" in result.stderr
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    result = _index(runner, app, "hf:owner/name@v1.0", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "cannot reach the Hugging Face Hub (127.0.0.1)" in result.stderr
    assert time.monotonic() - start < 10 and not (tmp_path / "o").exists()


def test_syntheory_columns_take_data_synth_names():
    from musicsae_cli.audio.syntheory import map_row, subset_of

    notes = {"root_note_name": "C#", "root_note_pitch_class": 1, "octave": 4, "midi_note_val": 61,
             "midi_program_num": 0, "midi_program_name": "Acoustic Grand Piano", "midi_category": "Piano"}
    assert subset_of(list(notes), None) == "notes"
    assert map_row("notes", notes) == {"concept": "notes", "pitch_class": "C#", "pitch_class_index": 1, "octave": 4,
                                       "midi": 61, "midi_program": 0, "timbre": "Acoustic Grand Piano",
                                       "instrument_family": "Piano"}
    chord = map_row("chords", {"root_note_name": "A", "chord_type": "dim", "inversion": 64})
    assert chord == {"concept": "chords", "chord_root": "A", "chord_quality": "diminished", "chord_inversion": 2}
    interval = map_row("intervals", {"root_note_name": "D", "interval": 7, "play_style": 2,
                                     "play_style_name": "UNISON"})
    assert interval == {"concept": "intervals", "root_pitch_class": "D", "interval_semitones": 7,
                        "interval_name": "P5", "play": "harmonic", "play_direction": "unison"}
    assert map_row("tempos", {"bpm": 120, "click_config_name": "woodblock"}) == {
        "concept": "tempos", "bpm": 120.0, "beat_pattern": "woodblock"}
    assert subset_of(["time_signature", "bpm", "click_config_name"], None) == "time_signatures"
    assert map_row("simple_progressions", {"key_note_name": "Bb", "chord_progression": "ionian-(1, 4, 5, 1)"}) == {
        "concept": "progressions", "key": "A#", "progression": "ionian-(1, 4, 5, 1)"}


@pytest.mark.slow
def test_pitch_probes_move_between_synthesised_notes_and_syntheory(runner, app, tmp_path):
    """The point of SynTheory's names: CREPE pitch-class probes trained on `data synth` notes read SynTheory's
    notes (other instruments, 44.1 kHz stereo, indexed from a local copy of the repository) and back."""
    from tests.conftest import build_syntheory_repo

    repo = build_syntheory_repo(tmp_path)
    assert _index(runner, app, repo, "--subset", "notes", "-o", tmp_path / "syn").exit_code == 0
    syn_rows = _rows(tmp_path / "syn" / "manifest.csv")
    assert {r["concept"] for r in syn_rows} == {"notes"} and len({r["pitch_class"] for r in syn_rows}) == 12
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "notes"), "-c", "crepe", "--set",
                                 "octaves=[3,4]", "--set", "timbres=[sine,strings]"])
    assert result.exit_code == 0, result.output
    for name in ("syn", "notes"):
        result = runner.invoke(app, ["extract", str(tmp_path / name), "-m", "crepe-tiny", "-c", "crepe",
                                     "--hookpoint", "block5", "-o", str(tmp_path / f"{name}-store")])
        assert result.exit_code == 0, result.output
    scores = {}
    for train, test in (("notes", "syn"), ("syn", "notes")):
        result = runner.invoke(app, ["probe", "train", str(tmp_path / f"{train}-store"), "-l", "pitch_class",
                                     "-o", str(tmp_path / f"p-{train}")])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["probe", "evaluate", str(tmp_path / f"p-{train}"),
                                     str(tmp_path / f"{test}-store"), "-o", str(tmp_path / f"e-{train}"), "--json"])
        assert result.exit_code == 0, result.output
        layer = json.loads(result.stdout)["layers"][0]
        scores[train] = layer["balanced_accuracy"]
    print("pitch-class balanced accuracy across datasets:", scores)  # measured 1.00 both ways; chance 1/12
    assert min(scores.values()) > 0.5, scores


def test_local_copy_of_a_repository_lists_its_subsets_and_maps_syntheory(runner, app, tmp_path):
    from tests.conftest import build_syntheory_repo

    repo = build_syntheory_repo(tmp_path)
    for extra, message in ((["--subset", "chords"], "no subset 'chords' (hint: pass --subset, one of: notes, tempos)"),
                           ([], "has 2 subsets (hint: pass --subset, one of: notes, tempos)")):
        result = _index(runner, app, repo, "-o", tmp_path / "o", *extra)
        assert result.exit_code == 2 and message in result.stderr
    result = _index(runner, app, repo, "--subset", "tempos", "-o", tmp_path / "t")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "t" / "manifest.csv")
    assert [(r["concept"], r["bpm"], r["beat_pattern"]) for r in rows] == [("tempos", "60.0", "woodblock"),
                                                                            ("tempos", "120.0", "woodblock")]
    result = _index(runner, app, repo, "--subset", "tempos", "-o", tmp_path / "raw", "--set", "label_map=none")
    assert result.exit_code == 0 and "click_config_name" in _rows(tmp_path / "raw" / "manifest.csv")[0]


def test_output_inside_the_datasets_cache_is_refused(runner, app, tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    _dataset(2).save_to_disk(str(tmp_path / "s"))
    result = _index(runner, app, tmp_path / "s", "-o", cache / "mine")
    assert result.exit_code == 2 and "lies inside the Hugging Face cache" in result.stderr
    assert not (cache / "mine").exists()
