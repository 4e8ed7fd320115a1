"""`data chunk`: every kind of audio its summary says was left out is warned about on stderr (logger
"musicsae", shown as `warning: ...`), naming files, with counts that match the summary."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from musicsae_cli.audio.chunk import ChunkConfig, chunk_dataset
from musicsae_cli.errors import InputError

SR = 8000


def _write(path, seconds: float, amp: float = 0.3, silent_from: float | None = None):
    rng = np.random.default_rng(int(seconds * 100))
    x = (amp * rng.uniform(-1, 1, int(round(seconds * SR)))).astype(np.float32)
    if silent_from is not None:
        x[int(silent_from * SR):] = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, SR, subtype="FLOAT")


@pytest.fixture
def logged():
    """Messages of the "musicsae" logger (a handler of its own: a CLI run's Output stops propagation to caplog's
    and replaces the logger's handlers, so use it only in tests that invoke no command)."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("musicsae")
    handler, level = Keep(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_summary_counts_come_with_warnings_naming_files(runner, app, tmp_path):
    src = tmp_path / "in"
    _write(src / "long.wav", 2.3, silent_from=1.0)  # windows 0 loud, 1 silent; 0.3 s left over
    _write(src / "tiny.wav", 0.4)  # shorter than one window: no chunk at all
    _write(src / "quiet.wav", 1.0, amp=0.0)  # its one window is silent
    (src / "broken.wav").write_bytes(b"RIFF not really audio")
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "out"), "--window-s", "1.0",
                                 "--min-rms-db", "-60"])
    assert result.exit_code == 0, result.output
    assert "dropped: 2 silent, 2 short last pieces" in result.stdout
    warnings = _warnings(result.stderr)
    assert any(w.startswith("warning: skipping ") and "broken.wav" in w for w in warnings)
    short = next(w for w in warnings if "short last piece" in w)
    assert "of 2 file(s) (last=drop; --last pad or keep keeps them): long.wav (0.30 s), tiny.wav (0.40 s)" in short
    none = next(w for w in warnings if "gave no chunk, being shorter" in w)
    assert "1 file(s) gave no chunk, being shorter than one 1 s window" in none and "tiny.wav (0.40 s)" in none
    silent = next(w for w in warnings if "quieter than" in w)
    assert "dropped 2 window(s) quieter than -60 dBFS (min_rms_db) in 2 file(s): long.wav (1 of 2), quiet.wav " \
           "(1 of 1); 1 file(s) gave no chunk at all: quiet.wav" in silent
    assert len(warnings) == 4


def test_no_warning_when_nothing_is_dropped_and_examples_are_capped(runner, app, tmp_path, capsys):
    src = tmp_path / "in"
    _write(src / "exact.wav", 2.0)
    result = runner.invoke(app, ["data", "chunk", str(src), "-o", str(tmp_path / "out"), "--window-s", "1.0",
                                 "--json"])
    assert result.exit_code == 0 and _warnings(result.stderr) == []
    assert json.loads(result.stdout)["dropped_short"] == 0
    for i in range(5):
        _write(src / f"s{i}.wav", 0.5 + 0.01 * i)
    capsys.readouterr()
    res = chunk_dataset(src, tmp_path / "padded", ChunkConfig(length_s=1.0, last="keep", min_last_s=0.6))
    assert res["dropped_short"] == 5 and res["files_without_window"] == 5
    # (the CLI run above left its stderr handler on the logger)
    first = capsys.readouterr().err.splitlines()[0]
    assert first.endswith("(shorter than min_last_s 0.6 s): s0.wav (0.50 s), s1.wav (0.51 s), s2.wav (0.52 s), "
                          "... (2 more)")


def test_the_no_chunks_error_follows_the_warnings_it_points_to(tmp_path, logged):
    _write(tmp_path / "in" / "a.wav", 0.5)
    with pytest.raises(InputError, match="see the warnings"):
        chunk_dataset(tmp_path / "in", tmp_path / "out", ChunkConfig(length_s=1.0))
    assert any("1 file(s) gave no chunk, being shorter than one 1 s window" in m for m in logged)
