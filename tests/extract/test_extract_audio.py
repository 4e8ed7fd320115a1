"""Teacher-forced extraction into a store: alignment, labels, conditioning, windows, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsae_cli.errors import InputError, MusicSAEError, OutputExistsError, UsageError
from musicsae_cli.extract.audio import extract_audio
from musicsae_cli.extract.config import ExtractConfig
from musicsae_cli.extract.windows import plan_windows
from musicsae_cli.store import ActivationStore

HOOKS = "layers.1,layers.3"


def cfg(**kw) -> ExtractConfig:
    return ExtractConfig(**{"model": "tiny-musicgen", "device": "cpu", "hookpoints": HOOKS, "batch_size": 3,
                            "store_dtype": "float32", **kw})


def _wav(path, seconds, freq=330.0, sr=32000):
    t = np.arange(int(seconds * sr)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


@pytest.mark.smoke
@pytest.mark.slow
def test_store_rows_labels_and_activations(tiny_adapter, concept_set, tmp_path):
    out = tmp_path / "store"
    res = extract_audio(concept_set, out, cfg(), adapter=tiny_adapter)
    store = ActivationStore.open(out)
    assert store.hookpoints == ["layers.1", "layers.3"] and store.frame_rate == 50.0
    assert "position t+1" in store.position_convention and store.manifest["config"]["mode"] == "audio"
    # 1.5 s clips -> 75 frames each, one window each
    assert res["windows_written"] == store.n_items == 6 and store.n_rows == 6 * 75 == res["rows_written"]
    meta = store.metadata()
    first = meta.slice(0, 1).to_pylist()[0]
    assert first["concept"] in ("notes", "tempos") and first["group"] and first["window_start_s"] == 0.0
    assert meta.column("time_s").to_pylist()[:3] == [0.0, 0.02, 0.04]
    # the stored rows are the model's residuals for that audio, computed independently of the store
    from musicsae_cli.audio.io import load_audio

    rows = store.select([f"item_id={first['item_id']}"])
    audio, _ = load_audio(first["source_path"], sample_rate=32000)
    expected = tiny_adapter.audio_activations([audio[: 75 * 640]], ["layers.3"])[0]["layers.3"]
    np.testing.assert_allclose(store.read_rows("layers.3", rows), expected.numpy(), atol=1e-6)


def test_windows_keep_absolute_times(tiny_adapter, tmp_path):
    _wav(tmp_path / "a" / "long.wav", 2.3)
    res = extract_audio(tmp_path / "a", tmp_path / "s", cfg(window_s=1.0, hop_s=0.5), adapter=tiny_adapter)
    store = ActivationStore.open(tmp_path / "s")
    items = store.items().to_pylist()
    assert [i["item_id"] for i in items] == ["long@0", "long@1", "long@2", "long@3"]
    assert [i["window_start_s"] for i in items] == [0.0, 0.5, 1.0, 1.5]
    assert [i["n_frames"] for i in items] == [50, 50, 50, 40]  # 2.3 s = 115 whole frames; last window 0.8 s
    times = store.metadata(["item_id", "time_s"]).to_pylist()
    assert [r["time_s"] for r in times if r["item_id"] == "long@3"][:2] == [1.5, 1.52]
    assert res["audio_seconds"] == pytest.approx(3.8)


def test_plan_windows_edges():
    assert plan_windows(639, 32000, 640, 1.0, 1.0) == []  # shorter than one frame
    w = plan_windows(32000 * 3 + 100, 32000, 640, 1.0, 1.0, min_window_s=0.5)
    assert [(x.start, x.length) for x in w] == [(0, 32000), (32000, 32000), (64000, 32000)]


def test_text_and_text_column_conditioning(tiny_adapter, tmp_path):
    _wav(tmp_path / "a" / "x.wav", 0.5)
    (tmp_path / "m.csv").write_text("path,caption\na/x.wav,rock drums\n")
    extract_audio(tmp_path / "m.csv", tmp_path / "u", cfg(), adapter=tiny_adapter)
    extract_audio(tmp_path / "m.csv", tmp_path / "t", cfg(text="rock drums"), adapter=tiny_adapter)
    extract_audio(tmp_path / "m.csv", tmp_path / "c", cfg(text_column="caption"), adapter=tiny_adapter)
    u, t, c = (ActivationStore.open(tmp_path / n) for n in "utc")
    rows = np.arange(u.n_rows)
    assert np.abs(u.read_rows("layers.3", rows) - t.read_rows("layers.3", rows)).max() > 1e-4
    np.testing.assert_array_equal(t.read_rows("layers.3", rows), c.read_rows("layers.3", rows))
    assert c.items().column("text").to_pylist() == ["rock drums"] and "text" not in u.item_columns
    with pytest.raises(InputError, match="no text column 'captoin'"):
        extract_audio(tmp_path / "m.csv", tmp_path / "z", cfg(text_column="captoin"), adapter=tiny_adapter)


def test_short_and_corrupt_audio_skipped_with_reasons(tiny_adapter, tmp_path):
    _wav(tmp_path / "a" / "ok.wav", 0.5)
    _wav(tmp_path / "a" / "tiny.wav", 0.01)  # 320 samples < one 640-sample frame
    (tmp_path / "a" / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    res = extract_audio(tmp_path / "a", tmp_path / "s", cfg(), adapter=tiny_adapter)
    reasons = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in res["skipped"]}
    assert reasons["tiny.wav"].startswith("shorter than one frame (640 samples at 32000 Hz)")
    assert "cannot decode" in reasons["bad.wav"] and ActivationStore.open(tmp_path / "s").n_items == 1
    with pytest.raises(MusicSAEError, match="shorter than one frame|cannot decode"):
        extract_audio(tmp_path / "a", tmp_path / "strict", cfg(strict=True), adapter=tiny_adapter)


def test_bad_hookpoint_fails_before_any_work(tiny_adapter, concept_set, tmp_path):
    with pytest.raises(UsageError, match="'layers.30' is out of range: the model has 4 layers"):
        extract_audio(concept_set, tmp_path / "s", cfg(hookpoints="layers.30"), adapter=tiny_adapter)
    assert not (tmp_path / "s").exists()


@pytest.mark.smoke
@pytest.mark.slow
def test_interrupted_run_resumes_without_duplicates(tiny_adapter, concept_set, tmp_path, interrupt_on_call):
    whole = tmp_path / "whole"
    extract_audio(concept_set, whole, cfg(batch_size=2), adapter=tiny_adapter)
    restore = interrupt_on_call(tiny_adapter, "audio_activations", 3)
    part = tmp_path / "part"
    small = cfg(batch_size=2, shard_mb=0.05)  # ~one item per shard, so items commit before the interruption
    with pytest.raises(KeyboardInterrupt):
        extract_audio(concept_set, part, small, adapter=tiny_adapter)
    with pytest.raises(Exception, match="incomplete"):
        ActivationStore.open(part)
    restore()
    res = extract_audio(concept_set, part, small, adapter=tiny_adapter)
    a, b = ActivationStore.open(whole), ActivationStore.open(part)
    assert b.n_items == a.n_items == 6 and b.n_rows == a.n_rows
    assert sorted(b.metadata(["item_id"]).column("item_id").unique().to_pylist()) == \
        sorted(a.metadata(["item_id"]).column("item_id").unique().to_pylist())
    assert 0 < res["windows_written"] < 6  # the rerun only did what the first run had not committed
    order_a = {r["item_id"]: r for r in a.items().to_pylist()}
    for item in b.items().to_pylist():
        rows_b = np.arange(item["row_start"], item["row_start"] + item["n_frames"])
        ref = order_a[item["item_id"]]
        rows_a = np.arange(ref["row_start"], ref["row_start"] + ref["n_frames"])
        np.testing.assert_array_equal(b.read_rows("layers.1", rows_b), a.read_rows("layers.1", rows_a))


def test_complete_store_refused_and_other_settings_refused(tiny_adapter, concept_set, tmp_path):
    out = tmp_path / "s"
    extract_audio(concept_set, out, cfg(), adapter=tiny_adapter)
    with pytest.raises(OutputExistsError):
        extract_audio(concept_set, out, cfg(), adapter=tiny_adapter)
    extract_audio(concept_set, out, cfg(hookpoints="layers.0"), overwrite=True, adapter=tiny_adapter)
    assert ActivationStore.open(out).hookpoints == ["layers.0"]
    manifest = (out / "manifest.json").read_text().replace('"complete"', '"writing"')
    (out / "manifest.json").write_text(manifest)
    with pytest.raises(InputError, match="interrupted run with other settings \\(hookpoints\\)"):
        extract_audio(concept_set, out, cfg(), adapter=tiny_adapter)


def test_out_of_memory_suggests_smaller_batch(tiny_adapter, concept_set, tmp_path, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tiny_adapter, "audio_activations", oom)
    with pytest.raises(MusicSAEError, match="out of memory with batch size 4") as info:
        extract_audio(concept_set, tmp_path / "s", cfg(batch_size=4), adapter=tiny_adapter)
    assert "--batch-size 2" in info.value.hint


def test_nothing_usable_is_an_error_and_an_overwrite_keeps_the_old_store(tiny_adapter, concept_set, tmp_path):
    """Corrupt, empty and truncated files only: exit with an error, never a complete store of 0 rows; with
    --overwrite the old store is left exactly as it was."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF....WAVEjunk")
    (bad / "empty.wav").write_bytes(b"")
    good = _wav(tmp_path / "x.wav", 1.0)
    (bad / "truncated.wav").write_bytes(good.read_bytes()[:30])
    with pytest.raises(InputError, match=r"no usable audio in .*bad: 3 file\(s\) skipped"):
        extract_audio(bad, tmp_path / "new", cfg(), adapter=tiny_adapter)
    assert not (tmp_path / "new").exists()
    out = tmp_path / "store"
    extract_audio(concept_set, out, cfg(), adapter=tiny_adapter)
    rows = ActivationStore.open(out).n_rows
    with pytest.raises(InputError, match="no usable audio"):
        extract_audio(bad, out, cfg(), overwrite=True, adapter=tiny_adapter)
    store = ActivationStore.open(out)
    assert store.n_rows == rows == 6 * 75 and store.status == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "store", "x.wav"]  # no stage left behind
    assert not (tmp_path / ".store.overwrite").exists()


@pytest.mark.slow
def test_interrupted_overwrite_keeps_the_old_store_and_resumes(tiny_adapter, concept_set, tmp_path, interrupt_on_call):
    out = tmp_path / "store"
    extract_audio(concept_set, out, cfg(hookpoints="layers.1"), adapter=tiny_adapter)
    old = ActivationStore.open(out)
    old_rows = old.read_rows("layers.1", np.arange(old.n_rows))
    restore = interrupt_on_call(tiny_adapter, "audio_activations", 2)
    small = cfg(shard_mb=0.05)  # ~one item per shard, so items commit before the interruption
    with pytest.raises(KeyboardInterrupt):
        extract_audio(concept_set, out, small, overwrite=True, adapter=tiny_adapter)
    kept = ActivationStore.open(out)
    assert kept.hookpoints == ["layers.1"] and np.array_equal(kept.read_rows("layers.1", np.arange(kept.n_rows)),
                                                             old_rows)
    restore()
    res = extract_audio(concept_set, out, small, overwrite=True, adapter=tiny_adapter)  # the same command again
    assert 0 < res["windows_written"] < 6  # what the interrupted overwrite committed was kept in the stage
    new = ActivationStore.open(out)
    assert new.hookpoints == ["layers.1", "layers.3"] and new.n_items == 6
    assert not (tmp_path / ".store.overwrite").exists()


@pytest.mark.slow
def test_non_finite_audio_is_skipped_and_listed_or_fails_with_strict(runner, app, tiny_adapter, tmp_path):
    """A file with NaN/Inf samples is bad input, never stored: skipped and listed, the good file after it
    extracted (rows equal to the model's on that file alone); --strict fails naming it."""
    import json

    from musicsae_cli.audio.io import load_audio

    src = tmp_path / "in"
    src.mkdir()
    t = np.arange(32000) / 32000
    good = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    bad = good.copy()
    bad[16000] = np.nan
    sf.write(str(src / "a_nan.wav"), bad, 32000, subtype="FLOAT")
    sf.write(str(src / "b_good.wav"), good, 32000, subtype="FLOAT")
    out = tmp_path / "store"
    result = runner.invoke(app, ["extract", str(src), "-o", str(out), "-c", "tiny", "--hookpoint", "layers.3",
                                 "--store-dtype", "float32", "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert [(s["path"], s["reason"]) for s in res["skipped"]] == [
        (str(src / "a_nan.wav"), "non-finite samples (NaN/Inf) at 0.50 s")]
    store = ActivationStore.open(out)
    assert [i["item_id"] for i in store.items().to_pylist()] == ["b_good"]
    rows = store.read_rows("layers.3", np.arange(store.n_rows))
    audio, _ = load_audio(src / "b_good.wav", sample_rate=32000)
    expected = tiny_adapter.audio_activations([audio], ["layers.3"])[0]["layers.3"].numpy()
    assert np.isfinite(rows).all()
    np.testing.assert_allclose(rows, expected, atol=1e-5)
    result = runner.invoke(app, ["extract", str(src), "-o", str(tmp_path / "strict"), "-c", "tiny", "--strict"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {src / 'a_nan.wav'}: non-finite samples (NaN/Inf) at 0.50 s")
    assert not (tmp_path / "strict").exists()
