"""CLI conventions every command follows: dry-run, --set, exit codes, JSON, quiet, Ctrl-C, debug tracebacks."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)


def test_dry_run_prints_resolved_config_and_writes_nothing(runner, app, tmp_path):
    out = tmp_path / "ds"
    result = runner.invoke(app, ["data", "synth", "-o", str(out), "--seed", "7", "--set", "duration_s=1.5",
                                 "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "seed: 7" in result.stdout and "duration_s: 1.5" in result.stdout
    assert not out.exists()


def test_typed_flag_beats_set(runner, app, tmp_path):
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x"), "--set", "seed=1", "--seed", "2",
                                 "--dry-run", "--json"])
    assert json.loads(result.stdout)["seed"] == 2


def test_unknown_key_names_closest_and_exits_2(runner, app, tmp_path):
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x"), "--set", "sede=3"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown config key 'sede' (hint: did you mean 'seed'?)"]


def test_bad_yaml_config_file(runner, app, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x"), "-c", str(bad)])
    assert result.exit_code == 2 and "invalid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_unknown_preset_lists_available(runner, app, tmp_path):
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x"), "-c", "nope"])
    assert result.exit_code == 2 and "unknown data synth preset 'nope'" in result.stderr
    assert "available:" in result.stderr


def test_runtime_error_exits_1_with_one_line(runner, app, monkeypatch, tmp_path):
    import musicsae_cli.audio.concepts as concepts

    def boom(*a, **k):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(concepts, "make_concept_dataset", boom)
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    from importlib.metadata import version

    from musicsae_cli import __version__

    versions = f"musicsae {__version__}, torch {version('torch')}, transformers {version('transformers')}"
    assert result.stderr.strip() == (f"error: internal error in 'musicsae data synth': RuntimeError: disk on fire "
                                     f"({versions}) (hint: rerun with MUSICSAE_DEBUG=1 for the traceback and "
                                     "report it)")
    assert not (tmp_path / "x").exists()  # nothing partial left behind


@pytest.mark.parametrize("argv", [["extract", "{tmp}/a", "-o", "{tmp}/b"], ["info", "{tmp}/a"],
                                  ["sae", "train", "{tmp}/a", "-o", "{tmp}/b"],
                                  ["model", "save-tiny", "-o", "{tmp}/a"]])
def test_internal_error_names_the_command(runner, app, monkeypatch, tmp_path, argv):
    from musicsae_cli.commands._common import Output

    def boom(*a, **k):
        raise KeyError(1)

    monkeypatch.setattr(Output, "__init__", boom)  # every command builds its Output first
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in argv])
    assert result.exit_code == 1, result.stderr
    where = "musicsae " + " ".join(a for a in argv if a.isalpha() or a == "save-tiny")
    assert result.stderr.startswith(f"error: internal error in '{where}': KeyError: 1 (musicsae ")


def test_debug_env_shows_traceback(runner, app, monkeypatch, tmp_path):
    import musicsae_cli.audio.concepts as concepts

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(concepts, "make_concept_dataset", boom)
    monkeypatch.setenv("MUSICSAE_DEBUG", "1")
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)


def test_ctrl_c_exits_130(runner, app, monkeypatch, tmp_path):
    import musicsae_cli.audio.concepts as concepts

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(concepts, "make_concept_dataset", interrupted)
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x")])
    assert result.exit_code == 130 and result.stderr.startswith("error: interrupted")


def test_usage_error_exits_2(runner, app):
    assert runner.invoke(app, ["data", "synth"]).exit_code == 2
    assert runner.invoke(app, ["data", "synth", "-o", "x", "--no-such-flag"]).exit_code == 2


def test_warnings_on_stderr_and_quiet_silences_them(runner, app, class_folder, tmp_path):
    (class_folder / "jazz" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    loud = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(tmp_path / "a.csv")])
    assert loud.exit_code == 0 and "warning: skipping" in loud.stderr and "warning:" not in loud.stdout
    quiet = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(tmp_path / "b.csv"), "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_json_result_is_machine_readable(runner, app, class_folder, tmp_path):
    (class_folder / "jazz" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    result = runner.invoke(app, ["data", "index", str(class_folder), "--out", str(tmp_path / "m.csv"), "--json"])
    data = json.loads(result.stdout)
    assert data["items"] == 6 and data["skipped"][0]["reason"].startswith("cannot decode")
