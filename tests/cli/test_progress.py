"""Progress bars: drawn on stderr when it is a terminal, never on stdout, never with -q/--json or a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).parent / "musicsae")


def _run_with_tty_stderr(args: list[str]) -> tuple[str, str, int]:
    """Run with stderr on a pseudo-terminal and stdout on a pipe; returns (stdout, terminal text, code)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "100"})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO once the child closes the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    stdout = proc.stdout.read().decode()
    return stdout, b"".join(chunks).decode(errors="replace"), proc.wait(timeout=120)


@pytest.mark.slow
def test_progress_on_terminal_stderr_only(tmp_path):
    args = ["data", "synth", "-o", str(tmp_path / "ds"), "-c", "synth-small"]
    stdout, terminal, code = _run_with_tty_stderr(args)
    assert code == 0
    assert "Synthesising" in terminal and "20/20" in terminal
    assert "Synthesising" not in stdout and stdout.strip().splitlines()[0].endswith("manifest.csv")


@pytest.mark.slow
def test_no_progress_when_quiet_or_json(tmp_path):
    for i, flag in enumerate(["-q", "--json"]):
        stdout, terminal, code = _run_with_tty_stderr(
            ["data", "synth", "-o", str(tmp_path / f"ds{i}"), "-c", "synth-small", flag])
        assert code == 0 and "Synthesising" not in terminal


def test_plain_lines_when_stderr_is_a_log(monkeypatch):
    """Off a terminal (cluster jobs, nohup, CI) progress is plain lines on stderr; -q and --json keep it quiet."""
    import io

    from musicsae_cli.commands._common import Output

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with Output().progress("t-SNE", None):
        pass
    assert [line.split(":")[0] for line in log.getvalue().splitlines()] == ["t-SNE ...", "t-SNE"]
    assert log.getvalue().splitlines()[1].startswith("t-SNE: done in ")
    for quiet in (Output(quiet=True), Output(json_mode=True)):
        with quiet.progress("t-SNE", None):
            pass
    assert len(log.getvalue().splitlines()) == 2
