"""The demo pipeline through the real console script: synth -> index -> info, with exit codes of real processes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).parent / "musicsae")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.smoke
def test_synth_index_info_chain(tmp_path):
    ds = tmp_path / "concepts"
    made = run("data", "synth", "-o", str(ds), "-c", "synth-small", "--json", "-q")
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["items"] > 0 and Path(summary["manifest"]).is_file()
    assert (ds / "config.yaml").is_file() and (ds / "manifest.json").is_file()

    index = tmp_path / "index.csv"
    indexed = run("data", "index", str(ds / "manifest.csv"), "--out", str(index), "--json")
    assert indexed.returncode == 0, indexed.stderr
    assert json.loads(indexed.stdout)["items"] == summary["items"]
    with index.open() as fh:
        rows = list(csv.DictReader(fh))
    assert {"concept", "pitch_class", "timbre", "group", "duration_s"} <= set(rows[0])

    info = run("info", str(ds), "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["kind"] == "dataset" and described["items"] == summary["items"]
    assert set(described["labels"]["concept"]["top"]) == set(summary["per_concept"])

    again = run("data", "synth", "-o", str(ds), "-c", "synth-small")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_real_process_exit_codes(tmp_path):
    bad = run("data", "synth", "-o", str(tmp_path / "x"), "--set", "sede=1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    missing = run("info", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: no such file or folder")
    assert run("--version").stdout.startswith("musicsae ")


@pytest.mark.slow
def test_parser_errors_are_one_line_with_a_hint(tmp_path):
    cases = {
        ("data", "synth"): "error: missing option '-o' / '--out' (hint: name the output folder, e.g. -o out/)",
        ("dat",): "error: No such command 'dat'. Did you mean 'data'? (hint: see 'musicsae --help')",
    }
    for args, line in cases.items():
        proc = run(*args)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [line], proc.stderr
    unknown = run("data", "index", str(tmp_path), "--out", "m.csv", "--bogus")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: No such option: --bogus")
    bare = run("data")
    assert bare.returncode == 2 and "synth" in bare.stdout and bare.stderr == ""
    assert run("data", "--help").returncode == 0 and run("data", "synth", "-o", "x", "--dry-run").returncode == 0
