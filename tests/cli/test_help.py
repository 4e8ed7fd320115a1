"""Guards: --help on every command, no torch on the help/completion path, completions that match the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from musicsae_cli import __version__

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)


def _command_paths(app) -> list[list[str]]:
    """Every command and group path of the application, e.g. ['data', 'synth']."""
    paths: list[list[str]] = []

    def walk(cmd, prefix):
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


@pytest.mark.slow
def test_help_on_every_command(runner, app):
    paths = _command_paths(app)
    for expected in (["data", "synth"], ["data", "index"], ["info"], ["extract"], ["model", "save-tiny"],
                     ["model", "hookpoints"]):
        assert expected in paths
    for path in [[], *paths]:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_version(runner, app):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"musicsae {__version__}"


_PROBE = """
import os, sys

sys.argv = {argv!r}
try:
    from musicsae_cli.commands.app import main
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "numpy", "pyarrow", "soundfile") if m in sys.modules)
sys.stderr.write("HEAVY=" + ",".join(heavy) + "\\n")
"""


@pytest.mark.parametrize("argv,env", [
    (["musicsae", "--help"], {}),
    (["musicsae", "data", "synth", "--help"], {}),
    (["musicsae", "data", "index", "--help"], {}),
    (["musicsae", "info", "--help"], {}),
    (["musicsae", "extract", "--help"], {}),
    (["musicsae", "model", "save-tiny", "--help"], {}),
    (["musicsae"], {"_MUSICSAE_COMPLETE": "complete_bash", "COMP_WORDS": "musicsae data sy", "COMP_CWORD": "2"}),
    (["musicsae"], {"_MUSICSAE_COMPLETE": "complete_bash", "COMP_WORDS": "musicsae data synth out -c ",
                    "COMP_CWORD": "5"}),
])
@pytest.mark.slow
def test_help_and_completion_never_import_torch(argv, env):
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], proc.stderr
    if env:
        assert proc.stdout.strip(), "completion printed nothing"


def test_completion_offers_subcommands_and_presets():
    env = {**os.environ, "_MUSICSAE_COMPLETE": "complete_bash", "COMP_WORDS": "musicsae data synth out -c ",
           "COMP_CWORD": "5"}
    proc = subprocess.run([sys.executable, "-m", "musicsae_cli"], capture_output=True, text=True, env=env,
                          timeout=60)
    presets = {p.stem.removeprefix("synth-") for p in (ROOT / "configs" / "data").glob("synth-*.yaml")}
    assert presets and presets == set(proc.stdout.split()), proc.stdout  # only this command's, by short name


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_do_not_drift(shell):
    env = {**os.environ, "_MUSICSAE_COMPLETE": f"source_{shell}"}
    exe = Path(sys.executable).parent / "musicsae"
    proc = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    committed = (ROOT / "completions" / f"musicsae.{shell}").read_text()
    assert proc.stdout == committed, "completions drifted: run `make completions` and commit the result"
