"""`musicsae info` on datasets, manifests and things that are not artefacts."""

from __future__ import annotations

import json

from tests.conftest import write_audio


def test_info_on_manifest_file_counts_labels(runner, app, tmp_path):
    for i in range(3):
        write_audio(tmp_path / f"{i}.wav")
    (tmp_path / "m.csv").write_text("path,genre,bpm,group\n0.wav,jazz,100,a\n1.wav,jazz,120,a\n2.wav,rock,,b\n")
    result = runner.invoke(app, ["info", str(tmp_path / "m.csv"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["items"] == 3 and data["groups"] == 2
    assert data["labels"]["genre"]["top"] == {"jazz": 2, "rock": 1}
    assert data["labels"]["bpm"] == {"missing": 1, "min": 100, "max": 120, "mean": 110.0, "distinct": 2}
    human = runner.invoke(app, ["info", str(tmp_path / "m.csv")])
    assert "genre:" in human.stdout and "jazz: 2" in human.stdout


def test_info_refuses_non_artefacts(runner, app, tmp_path):
    (tmp_path / "plain").mkdir()
    result = runner.invoke(app, ["info", str(tmp_path / "plain")])
    assert result.exit_code == 2 and "not a musicsae artefact" in result.stderr
    (tmp_path / "notes.txt").write_text("hi")
    assert runner.invoke(app, ["info", str(tmp_path / "notes.txt")]).exit_code == 2


def test_info_on_an_analysis_output_shows_its_record_not_its_config(runner, app, tmp_path):
    from musicsae_cli.artifacts import new_manifest, write_json

    out = tmp_path / "sep"
    out.mkdir()
    write_json(out / "manifest.json", new_manifest("separation", 1, {"folds": 5}, store="s", labels=["genre"],
                                                   seed=3, files=["separation.json"]))
    data = json.loads(runner.invoke(app, ["info", str(out), "--json"]).stdout)
    assert data["kind"] == "separation" and data["labels"] == ["genre"] and data["seed"] == 3
    assert data["files"] == ["separation.json"] and "config" not in data


def _audio_folder(root):
    """12 clips: flac/wav (and mp3 when this libsndfile writes it) at 16 and 22.05 kHz, mono and stereo, in two
    class subfolders, plus one file at the top level; and a corrupt .wav."""
    import soundfile as sf

    from tests.conftest import sine

    mp3 = "MP3" in sf.available_formats()
    made = []
    for i in range(12):
        genre = "jazz" if i < 7 else "rock"
        ext = ".mp3" if mp3 and i % 4 == 3 else (".flac" if i % 2 else ".wav")
        sr = 16000 if i % 3 else 22050
        seconds = 0.5 + 0.25 * (i % 4)
        path = root / genre / f"clip{i:02d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), sine(sr=sr, seconds=seconds, channels=1 if i < 9 else 2), sr)
        made.append((path, sr, seconds))
    write_audio(root / "loose.wav", seconds=1.0)
    (root / "rock" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (root / "notes.txt").write_text("not audio")
    (root / ".hidden").mkdir()
    write_audio(root / ".hidden" / "skip.wav")
    return made, mp3


def test_info_on_a_plain_folder_of_audio_reads_headers(runner, app, tmp_path, monkeypatch):
    import soundfile as sf

    root = tmp_path / "mine"
    made, mp3 = _audio_folder(root)
    monkeypatch.setattr(sf, "read", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    result = runner.invoke(app, ["info", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "audio_folder" and data["audio_files"] == 14 and data["readable"] == 13
    n_mp3 = 3 if mp3 else 0
    assert data["by_extension"] == {".flac": 6 - n_mp3, ".wav": 8, **({".mp3": n_mp3} if mp3 else {})}
    assert sum(data["by_extension"].values()) == 14
    assert data["subfolders"] == {"jazz": 7, "rock": 6} and data["top_level_files"] == 1
    assert data["sample_rates"] == {"16000": 9, "22050": 4} and data["channels"] == {"1": 10, "2": 3}
    seconds = sorted([s for _, _, s in made] + [1.0])
    # mp3 headers give the length to within a frame of padding
    tol = 0.1 if mp3 else 1e-3
    assert abs(data["total_duration_s"] - sum(seconds)) < tol * (1 + n_mp3)
    assert abs(data["duration_s"]["min"] - 0.5) < tol and abs(data["duration_s"]["max"] - 1.25) < tol
    assert abs(data["duration_s"]["median"] - seconds[6]) < tol
    assert data["unreadable_files"] == 1 and list(data["unreadable"]) == ["rock/broken.wav"]
    human = runner.invoke(app, ["info", str(root)])
    assert human.exit_code == 0
    assert "  rock/broken.wav: " in human.stdout and "  22050: 4" in human.stdout and "jazz: 7" in human.stdout


def test_info_on_one_audio_file_and_a_folder_without_audio(runner, app, tmp_path):
    path = write_audio(tmp_path / "a.flac", sr=22050, seconds=0.75, channels=2)
    data = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
    assert (data["kind"], data["sample_rate"], data["channels"], data["duration_s"]) == ("audio_file", 22050, 2, 0.75)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 1 and "cannot read audio file" in result.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    result = runner.invoke(app, ["info", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "not a musicsae artefact" in result.stderr and "no audio files" in result.stderr
