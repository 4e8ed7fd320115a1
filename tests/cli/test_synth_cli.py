"""`data synth` output safety: refusals, overwrite of musicsae outputs only, nothing partial after a failure."""

from __future__ import annotations

import csv
import json


def _synth(runner, app, out, *extra):
    return runner.invoke(app, ["data", "synth", "-o", str(out), "-c", "synth-small", "--concepts", "notes",
                               "--set", "max_per_concept=2", *extra])


def test_writes_dataset_with_config_and_manifest(runner, app, tmp_path):
    out = tmp_path / "ds"
    result = _synth(runner, app, out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"] == 2  # max_per_concept caps grid points (one variant each)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "dataset" and manifest["config"]["max_per_concept"] == 2
    assert "max_per_concept: 2" in (out / "config.yaml").read_text()
    with (out / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert all((out / r["path"]).is_file() for r in rows) and {r["concept"] for r in rows} == {"notes"}
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging folder left behind


def test_existing_output_refused_then_replaced_with_overwrite(runner, app, tmp_path):
    out = tmp_path / "ds"
    assert _synth(runner, app, out).exit_code == 0
    again = _synth(runner, app, out, "--seed", "5")
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 0
    replaced = _synth(runner, app, out, "--seed", "5", "--overwrite")
    assert replaced.exit_code == 0 and json.loads((out / "manifest.json").read_text())["config"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_overwrite_never_replaces_a_user_folder(runner, app, tmp_path):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("precious")
    result = _synth(runner, app, user, "--overwrite")
    assert result.exit_code == 2 and "not a musicsae output" in result.stderr
    assert (user / "chapter1.tex").read_text() == "precious"


def test_failure_midway_leaves_nothing(runner, app, tmp_path, monkeypatch):
    import musicsae_cli.audio.synth as synth

    real_render = synth.render
    calls = {"n": 0}

    def flaky(row, config):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_render(row, config)

    monkeypatch.setattr(synth, "render", flaky)
    result = _synth(runner, app, tmp_path / "ds")
    assert result.exit_code == 130 and calls["n"] == 2
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folders_are_created(runner, app, tmp_path):
    result = _synth(runner, app, tmp_path / "no" / "such" / "ds")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "no" / "such" / "ds" / "manifest.csv").is_file()
