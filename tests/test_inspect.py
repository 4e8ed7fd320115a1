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
