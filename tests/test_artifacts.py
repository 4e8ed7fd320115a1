"""Staged outputs: a killed run's hidden partial folder is removed by the next run, a live one never is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from musicsae_cli.artifacts import remove_stale_stages, staged_directory

_BUILDER = """
import sys, time
from pathlib import Path
from musicsae_cli.artifacts import staged_directory
with staged_directory(Path(sys.argv[1]), overwrite=False) as stage:
    (stage / "big.bin").write_bytes(b"0" * 1_000_000)
    print("staged", flush=True)
    time.sleep(60)
"""


def _start_builder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _BUILDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    return proc


def test_killed_run_leaves_a_partial_that_the_next_run_removes(tmp_path, runner, app):
    out = tmp_path / "ds"
    proc = _start_builder(out)
    (stage,) = tmp_path.glob(".ds.partial-*")
    assert remove_stale_stages(out) == [] and stage.exists()  # its builder is alive: never touched
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert stage.exists() and not out.exists()  # what a kill -9 leaves
    result = runner.invoke(app, ["data", "synth", "-o", str(out), "-c", "synth-small", "-q"])
    assert result.exit_code == 0, result.output
    assert not stage.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_only_our_leftovers_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    old = tmp_path / ".run.old-0123abcd"  # a finished swap killed before it removed the previous output
    old.mkdir()
    mine = [tmp_path / ".run.partial-notours", tmp_path / ".other.partial-0123abcd", tmp_path / "run.partial-0123abcd"]
    for path in mine:
        path.mkdir()
        (path / "keep.txt").write_text("user data")
    fresh = tmp_path / ".run.partial-89abcdef"  # just created by a live run, lock not yet taken
    fresh.mkdir()
    assert remove_stale_stages(out) == [old]
    assert all((p / "keep.txt").exists() for p in mine) and fresh.exists()
    past = time.time() - 3600
    os.utime(fresh, (past, past))  # an hour old and never locked: its builder is gone
    assert remove_stale_stages(out) == [fresh]


def test_previous_output_is_kept_when_the_swap_was_cut_short(tmp_path):
    out = tmp_path / "run"
    old = tmp_path / ".run.old-0123abcd"  # out missing: this is the only copy
    old.mkdir()
    assert remove_stale_stages(out) == [] and old.exists()


def test_a_failed_build_leaves_nothing(tmp_path):
    out = tmp_path / "x"
    try:
        with staged_directory(out, overwrite=False) as stage:
            (stage / "f").write_text("1")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []
