"""Decoder positions counted from what the decoder is fed, whatever transformers calls its cache argument."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from musicsae_cli.errors import DependencyError
from musicsae_cli.models import positions
from musicsae_cli.models.positions import TRANSFORMERS_RANGE, DecoderPositions

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)


class _Cache:
    def __init__(self, n: int):
        self.n = n

    def get_seq_length(self) -> int:
        return self.n


@pytest.mark.parametrize("name", ["past_key_values", "cache", "kv"])
def test_cache_length_under_any_argument_name(name):
    track = DecoderPositions()
    assert track.begin({}, 3) == 0  # prefill without a cache
    assert track.begin({name: _Cache(3)}, 1) == 3
    assert track.begin({name: _Cache(4), "use_cache": True}, 1) == 4
    track.check_covers(5)


def test_repeated_prefill_and_cache_position():
    track = DecoderPositions()
    assert track.begin({}, 1) == 0
    assert track.begin({"cache": _Cache(0)}, 1) == 0  # the prefill again, with an empty cache
    assert track.begin({"cache_position": torch.tensor([1])}, 1) == 1  # cache_position wins over counting
    assert track.begin({"cache_position": torch.tensor([2]), "cache": _Cache(2)}, 1) == 2
    track.check_covers(3)


def test_gaps_and_missing_positions_are_one_line_errors_naming_the_version():
    track = DecoderPositions()
    track.begin({}, 2)
    with pytest.raises(DependencyError) as err:
        track.begin({"cache": _Cache(5)}, 1)
    text = str(err.value)
    assert "position 5 after positions 0..1" in text and f"transformers {positions.transformers_version()}" in text
    assert TRANSFORMERS_RANGE in text and "\n" not in text
    track = DecoderPositions()
    for _ in range(4):
        track.begin({}, 1)  # every pass reports position 0: what capture saw under transformers 5.24
    with pytest.raises(DependencyError, match=r"generation fed 1 of the 6 decoder positions \(missing 1, 2, 3, 4, 5\)"):
        track.check_covers(6)


def test_range_is_the_one_pyproject_admits():
    text = Path(__file__).resolve().parents[2].joinpath("pyproject.toml").read_text("utf-8")
    declared = re.search(r'"transformers([^"]+)"', text).group(1)
    assert declared == TRANSFORMERS_RANGE


@pytest.mark.parametrize("installed", ["4.57.1", "6.0.0", "not installed"])
def test_unsupported_transformers_fails_before_any_work(monkeypatch, installed, runner, app, tmp_path):
    monkeypatch.setattr(positions, "transformers_version", lambda: installed)
    with pytest.raises(DependencyError, match=f"transformers {installed} is installed, but musicsae supports"):
        positions.check_transformers()
    result = runner.invoke(app, ["extract", "-c", "tiny", "--prompt", "piano", "--duration-s", "0.1",
                                 "-o", str(tmp_path / "gen")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: transformers {installed} is installed, but musicsae supports "
                                      f"{TRANSFORMERS_RANGE} (hint: pip install 'transformers{TRANSFORMERS_RANGE}' "
                                      "(or make test, which installs the locked version))")
    assert not (tmp_path / "gen").exists()


def test_generation_that_skips_positions_is_refused(tiny_adapter, monkeypatch):
    """A release that feeds the decoder fewer positions than the frames asked for is an error, not a KeyError."""
    real_begin = DecoderPositions.begin
    monkeypatch.setattr(DecoderPositions, "begin", lambda self, kwargs, n: real_begin(self, {}, n))  # always 0
    with pytest.raises(DependencyError, match="generation fed 1 of the 9 decoder positions"):
        tiny_adapter.generate(["piano"], 0.1, ["layers.1"], seed=0)
