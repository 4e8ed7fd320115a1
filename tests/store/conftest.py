"""Fixtures for the activation-store tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_items, write_store


@pytest.fixture
def items() -> list[dict]:
    return make_items()


@pytest.fixture
def store_path(tmp_path: Path, items: list[dict]) -> Path:
    """A complete float32 store of the default items in several shards."""
    return write_store(tmp_path / "store", items)
