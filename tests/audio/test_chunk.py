"""`data chunk`: window times and contents against numpy, last-piece policies, RMS filter, resampling, mono,
provenance through chained commands and into `extract`, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import soxr

from musicsae_cli.audio.chunk import ChunkConfig, chunk_dataset, cut_stream, plan_chunks, rms_db
from musicsae_cli.audio.manifest import load_dataset
from musicsae_cli.errors import AudioError, InputError, OutputExistsError

SR = 8000


def _noise(seconds: float, channels: int = 1, seed: int = 0, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    """(N, C) noise, the layout soundfile writes."""
    rng = np.random.default_rng(seed)
    return (amp * rng.uniform(-1, 1, (int(round(seconds * sr)), channels))).astype(np.float32)


def _write(path, data, sr=SR, subtype="FLOAT"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _expected_windows(n, sr, length_s, hop_s, last, min_last_s=0.0):
    """(start, content length, written length) of every window, computed directly."""
    length, out, k = int(round(length_s * sr)), [], 0
    while int(round(k * hop_s * sr)) + length <= n:
        out.append((int(round(k * hop_s * sr)), length, length))
        k += 1
    start = int(round(k * hop_s * sr))
    reached = bool(out) and out[-1][0] + length >= n
    if last != "drop" and start < n and not reached and n - start >= min_last_s * sr:
        out.append((start, n - start, length if last == "pad" else n - start))
    return out


@pytest.mark.parametrize("length_s,hop_s,last", [
    (1.0, None, "drop"), (1.0, None, "pad"), (1.0, None, "keep"), (1.0, 0.4, "keep"), (0.75, 0.3, "pad"),
    (0.5, 0.8, "keep"), (1.0, 0.5, "drop"),
])
def test_windows_match_numpy_slices_and_times(tmp_path, length_s, hop_s, last):
    x = _noise(3.3, channels=2)
    src = _write(tmp_path / "in" / "a.wav", x)
    cfg = ChunkConfig(length_s=length_s, hop_s=hop_s, last=last, bit_depth=32)
    res = chunk_dataset(src, tmp_path / "out", cfg)
    expected = _expected_windows(len(x), SR, length_s, hop_s or length_s, last)
    rows = _rows(tmp_path / "out" / "manifest.csv")
    assert res["chunks"] == len(rows) == len(expected)
    for k, (row, (start, n, written)) in enumerate(zip(rows, expected, strict=True)):
        assert int(row["chunk"]) == k and row["item_id"] == f"a/{k:05d}"
        assert float(row["start_s"]) == pytest.approx(start / SR) and float(row["end_s"]) == pytest.approx(
            (start + n) / SR)
        audio, sr = sf.read(tmp_path / "out" / row["path"], dtype="float32", always_2d=True)
        assert sr == SR and len(audio) == written == round(float(row["duration_s"]) * SR)
        np.testing.assert_array_equal(audio[:n], x[start:start + n])  # float wav: exact samples
        assert not audio[n:].any()  # padding is silence
    with_rest = _expected_windows(len(x), SR, length_s, hop_s or length_s, "keep")
    assert res["dropped_short"] == (len(with_rest) - len(expected) if last == "drop" else 0)


def test_plan_and_streaming_are_block_size_independent():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5000)).astype(np.float32)
    for hop_s in (None, 0.037, 0.15, 0.333):
        cfg = ChunkConfig(length_s=0.1, hop_s=hop_s, last="pad")
        whole = list(cut_stream([x], 10000, cfg, lambda p, d: (p, d.copy())))
        cuts = np.sort(rng.choice(np.arange(1, 5000), 25, replace=False))
        pieces = list(cut_stream(np.split(x, cuts, axis=1), 10000, cfg, lambda p, d: (p, d.copy())))
        assert [p for p, _ in whole] == [p for p, _ in pieces] == plan_chunks(5000, 10000, cfg)
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole, pieces, strict=True))
        assert [(p.start, p.length, p.padded) for p, _ in whole] == _expected_windows(5000, 10000, 0.1, hop_s or 0.1,
                                                                                      "pad")


def test_last_piece_policies_and_min_last(tmp_path):
    _write(tmp_path / "in" / "a.wav", _noise(2.3))  # two full 1 s windows and a 0.3 s rest
    _write(tmp_path / "in" / "short.wav", _noise(0.4, seed=2))  # shorter than one window
    lengths = {}
    for last, min_last in (("drop", 0.0), ("pad", 0.0), ("keep", 0.0), ("keep", 0.35)):
        out = tmp_path / f"{last}-{min_last}"
        res = chunk_dataset(tmp_path / "in", out, ChunkConfig(length_s=1.0, last=last, min_last_s=min_last))
        lengths[(last, min_last)] = sorted(float(r["duration_s"]) for r in _rows(out / "manifest.csv"))
        if last == "drop":
            assert res["dropped_short"] == 2 and res["files_without_window"] == 1
    assert lengths[("drop", 0.0)] == [1.0, 1.0]
    assert lengths[("pad", 0.0)] == [1.0, 1.0, 1.0, 1.0]
    assert lengths[("keep", 0.0)] == [0.3, 0.4, 1.0, 1.0]
    assert lengths[("keep", 0.35)] == [0.4, 1.0, 1.0]  # the 0.3 s rest is below min_last_s


def test_rms_filter_drops_exactly_the_quiet_windows(tmp_path):
    levels_db = [-10, -200, -30, -55, -45, -20, -120]  # one window each; -200 stands for digital silence
    x = np.concatenate([_noise(0.5, seed=i, amp=1.0) for i in range(len(levels_db))])
    for i, db in enumerate(levels_db):
        seg = x[i * 4000:(i + 1) * 4000]
        seg *= 0.0 if db <= -200 else 10 ** (db / 20) / np.sqrt(np.mean(seg.astype(np.float64) ** 2))
    _write(tmp_path / "in" / "a.wav", x)
    res = chunk_dataset(tmp_path / "in", tmp_path / "out", ChunkConfig(length_s=0.5, min_rms_db=-50.0, bit_depth=32))
    kept = [int(r["chunk"]) for r in _rows(tmp_path / "out" / "manifest.csv")]
    measured = [rms_db(x[i * 4000:(i + 1) * 4000]) for i in range(len(levels_db))]
    assert kept == [i for i, db in enumerate(measured) if db >= -50.0] == [0, 2, 4, 5]
    assert res["dropped_silent"] == 3
    # numbering keeps its place: chunk k starts at k * hop whatever was dropped before it
    assert [float(r["start_s"]) for r in _rows(tmp_path / "out" / "manifest.csv")] == [0.0, 1.0, 2.0, 2.5]


def test_resample_and_mono_match_a_one_shot_resample(tmp_path, monkeypatch):
    import musicsae_cli.audio.chunk as chunk_mod

    monkeypatch.setattr(chunk_mod, "BLOCK_FRAMES", 3001)  # many blocks: streaming must not change a sample
    x = _noise(2.5, channels=2, sr=22050)
    _write(tmp_path / "in" / "st.wav", x, sr=22050)
    cfg = ChunkConfig(length_s=1.0, hop_s=0.75, last="keep", sample_rate=16000, mono=True, bit_depth=32)
    chunk_dataset(tmp_path / "in", tmp_path / "out", cfg)
    expected = soxr.resample(x.mean(axis=1), 22050, 16000, quality="HQ")
    rows = _rows(tmp_path / "out" / "manifest.csv")
    assert [(float(r["start_s"]), r["sample_rate"], r["channels"]) for r in rows][:2] == [(0.0, "16000", "1"),
                                                                                           (0.75, "16000", "1")]
    for r in rows:
        audio, sr = sf.read(tmp_path / "out" / r["path"], dtype="float32")
        start = round(float(r["start_s"]) * 16000)
        assert sr == 16000 and audio.ndim == 1
        np.testing.assert_allclose(audio, expected[start:start + len(audio)], atol=2e-6)
    assert float(rows[-1]["end_s"]) == pytest.approx(len(expected) / 16000)


def test_labels_group_and_formats_kept(tmp_path, class_folder):
    res = chunk_dataset(class_folder, tmp_path / "out", ChunkConfig(length_s=0.2, format="flac", bit_depth=24))
    m = load_dataset(tmp_path / "out")
    assert res["chunks"] == len(m) == 6 * 2  # 0.5 s clips -> two 0.2 s windows each
    assert m.label_columns == ["label", "source_path", "source_item", "chunk", "start_s", "end_s"]
    row = next(r for r in m.rows if r["item_id"] == "jazz/track0_part1/00001")
    assert row["label"] == "jazz" and row["group"] == "jazz/track0_part1" and row["source_item"] == "jazz/track0_part1"
    assert row["source_path"] == str(class_folder.resolve() / "jazz" / "track0_part1.wav")
    assert sf.info(str(row["path"])).subtype == "PCM_24" and row["path"].suffix == ".flac"


def test_chunk_of_a_chunk_keeps_the_original_recording_and_times(tmp_path):
    _write(tmp_path / "in" / "a.wav", _noise(4.0))
    chunk_dataset(tmp_path / "in", tmp_path / "c1", ChunkConfig(length_s=2.0))
    chunk_dataset(tmp_path / "c1", tmp_path / "c2", ChunkConfig(length_s=0.5))
    rows = _rows(tmp_path / "c2" / "manifest.csv")
    assert len(rows) == 8 and {r["source_item"] for r in rows} == {"a"}
    assert [float(r["start_s"]) for r in rows] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert rows[5]["item_id"] == "a/00001/00001" and rows[5]["group"] == "a"


@pytest.mark.slow
def test_chunks_feed_extract_with_provenance(tmp_path, tiny_adapter):
    from musicsae_cli.extract.audio import extract_audio
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.store import ActivationStore

    _write(tmp_path / "in" / "rock" / "song.wav", _noise(2.2, channels=2, sr=32000), sr=32000)
    _write(tmp_path / "in" / "jazz" / "tune.wav", _noise(1.0, sr=32000), sr=32000)
    chunk_dataset(tmp_path / "in", tmp_path / "chunks", ChunkConfig(length_s=1.0, mono=True))
    extract_audio(tmp_path / "chunks" / "manifest.csv", tmp_path / "store",
                  ExtractConfig(model="tiny-musicgen", device="cpu", store_dtype="float32", hookpoints="layers.1"),
                  adapter=tiny_adapter)
    items = {i["item_id"]: i for i in ActivationStore.open(tmp_path / "store").items().to_pylist()}
    assert sorted(items) == ["jazz/tune/00000", "rock/song/00000", "rock/song/00001"]
    second = items["rock/song/00001"]
    assert second["label"] == "rock" and second["group"] == "rock/song" and second["chunk"] == 1
    assert (second["start_s"], second["end_s"]) == (1.0, 2.0) and second["n_frames"] == 50
    assert second["source_item"] == "rock/song" and second["source_path"].endswith("in/rock/song.wav")


def test_bad_input(runner, app, tmp_path):
    src = tmp_path / "in"
    _write(src / "a.wav", _noise(1.0))
    (src / "broken.wav").write_bytes(b"RIFF not really audio")
    # unreadable files are skipped and listed; --strict fails on them
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "out"), "--window-s", "0.5"])
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.stdout and "broken.wav" in result.stdout
    assert len(_rows(tmp_path / "out" / "manifest.csv")) == 2
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "strict"), "--strict"])
    assert result.exit_code == 1 and "broken.wav" in result.stderr and not (tmp_path / "strict").exists()
    # an existing output needs --overwrite; an output inside the input folder is refused
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "already exists" in result.stderr
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(src / "chunks")])
    assert result.exit_code == 2 and "inside the input folder" in result.stderr and not (src / "chunks").exists()
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "x"), "--last", "trim"])
    assert result.exit_code == 2 and "last" in result.stderr
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "x"), "--format", "flac",
                                 "--bit-depth", "32"])
    assert result.exit_code == 2 and "flac cannot store 32-bit" in result.stderr
    # nothing left after the silence filter: a usage error, no output
    with pytest.raises(InputError, match="no chunks"):
        chunk_dataset(src / "a.wav", tmp_path / "none", ChunkConfig(min_rms_db=0.0))
    assert not (tmp_path / "none").exists()
    with pytest.raises(AudioError):
        chunk_dataset([src / "a.wav", src / "broken.wav"], tmp_path / "s2", ChunkConfig(strict=True))
    with pytest.raises(OutputExistsError):
        chunk_dataset(src, tmp_path / "out", ChunkConfig())


def test_non_finite_audio_is_skipped_and_listed_or_fails_with_strict(runner, app, tmp_path):
    """A file with NaN/Inf samples is bad input: skipped and listed (its chunks from before the bad sample
    removed, no empty folder left), the files after it chunked; --strict fails naming it."""
    import json

    src = tmp_path / "in"
    bad = _noise(40.0)  # longer than one read block (2**18 frames at 8 kHz = 32.8 s): chunks get written first
    bad[int(36.5 * SR), 0] = np.nan
    _write(src / "a_nan.wav", bad)
    _write(src / "b_good.wav", _noise(1.0, seed=1))
    inf = _noise(1.0, seed=2)
    inf[SR // 4:, 0] = np.inf
    _write(src / "c_inf.wav", inf)
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(out), "--window-s", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert {s["path"].rsplit("/", 1)[1]: s["reason"] for s in res["skipped"]} == {
        "a_nan.wav": "non-finite samples (NaN/Inf) at 36.50 s", "c_inf.wav": "non-finite samples (NaN/Inf) at 0.25 s"}
    assert [r["item_id"] for r in _rows(out / "manifest.csv")] == ["b_good/00000", "b_good/00001"]
    assert sorted(p.name for p in out.iterdir()) == ["b_good", "config.yaml", "manifest.csv", "manifest.json"]
    assert len(json.loads((out / "manifest.json").read_text())["skipped"]) == 2
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "strict"), "--window-s", "0.5",
                                 "--strict"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {src / 'a_nan.wav'}: non-finite samples (NaN/Inf) at 36.50 s")
    assert not (tmp_path / "strict").exists()
