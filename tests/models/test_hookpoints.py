"""Hookpoint strings: names, ranges, negatives, all; clear errors listing the valid names."""

from __future__ import annotations

import pytest

from musicsae_cli.errors import UsageError
from musicsae_cli.models.hookpoints import parse_hookpoints


@pytest.mark.parametrize("spec,expected", [
    ("all", [f"layers.{i}" for i in range(24)]),
    ("layers.0-3", ["layers.0", "layers.1", "layers.2", "layers.3"]),
    ("layers.-1", ["layers.23"]),
    ("layers.-2--1", ["layers.22", "layers.23"]),
    ("layers.5, layers.2,layers.5", ["layers.2", "layers.5"]),
    (["layers.1", "layers.0"], ["layers.0", "layers.1"]),
])
def test_specs_expand_in_layer_order(spec, expected):
    assert parse_hookpoints(spec, 24) == expected


def test_same_spec_on_deeper_model():
    assert parse_hookpoints("layers.-1", 48) == ["layers.47"] and len(parse_hookpoints("all", 48)) == 48


@pytest.mark.parametrize("spec,pattern", [
    ("layers.30", r"'layers.30' is out of range: the model has 24 layers.*layers.0 .. layers.23"),
    ("layers.-25", r"out of range"),
    ("layer.3", r"unknown hookpoint 'layer.3'.*did you mean 'layers.3'"),
    ("layers.5-2", r"empty hookpoint range"),
    ("", r"no hookpoints"),
])
def test_bad_specs(spec, pattern):
    with pytest.raises(UsageError, match=pattern):
        parse_hookpoints(spec, 24)
