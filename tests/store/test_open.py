"""ActivationStore.open() refuses what it cannot read safely, and says why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from musicsae_cli.errors import StoreError
from musicsae_cli.store import FORMAT_VERSION, ActivationStore, StoreWriter, is_store

from .helpers import WIDTHS, make_items


def edit_manifest(path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_open_refuses_newer_format(store_path):
    edit_manifest(store_path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(StoreError) as err:
        ActivationStore.open(store_path)
    assert f"format version {FORMAT_VERSION + 1}" in err.value.message
    assert f"supports ({FORMAT_VERSION})" in err.value.message
    assert "upgrade musicsae" in err.value.hint


def test_open_refuses_incomplete_store(store_path):
    edit_manifest(store_path, status="writing")
    with pytest.raises(StoreError, match="incomplete") as err:
        ActivationStore.open(store_path)
    assert "rerun the command" in err.value.hint and "resume" in err.value.hint
    assert ActivationStore.open(store_path, allow_incomplete=True).n_items == 12


def test_open_refuses_what_is_not_a_store(tmp_path, store_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        ActivationStore.open(plain)
    with pytest.raises(StoreError, match="no manifest.json"):
        ActivationStore.open(tmp_path / "missing")
    sae = tmp_path / "sae"
    sae.mkdir()
    (sae / "manifest.json").write_text(json.dumps({"kind": "sae", "format_version": 1}))
    with pytest.raises(StoreError, match="'sae' artefact, not an activation store"):
        ActivationStore.open(sae)
    assert not is_store(plain) and not is_store(sae) and is_store(store_path)


def test_open_detects_missing_shard(store_path):
    os.rename(store_path / "shards" / "00001", store_path / "shards" / "gone")
    with pytest.raises(StoreError, match="shard 00001 is missing"):
        ActivationStore.open(store_path)


_KILLED_WRITER = """
import os, signal, sys
sys.path[:0] = [{tests!r}, {repo!r}]
from helpers import WIDTHS, make_items
from musicsae_cli.store import StoreWriter

real_rename, commits = os.rename, []
def rename(src, dst):
    if len(commits) == 2:  # the third shard is fully written and fsynced, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    commits.append(dst)
    real_rename(src, dst)
os.rename = rename
with StoreWriter.create({path!r}, WIDTHS, "float16", shard_rows=1) as writer:
    for item in make_items(5):
        writer.add_item(**item)
"""


@pytest.mark.slow
def test_sigkilled_writer_leaves_a_readable_resumable_store(tmp_path):
    path = tmp_path / "s"
    here = Path(__file__).resolve().parent
    script = textwrap.dedent(_KILLED_WRITER).format(tests=str(here), repo=str(here.parents[1]),
                                                    path=str(path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert len(list((path / "shards").glob(".tmp-*"))) == 1
    store = ActivationStore.open(path, allow_incomplete=True)
    assert store.n_shards == 2 and store.metadata().num_rows == store.n_rows
    # The lock died with the process, so a resume can take over.
    with StoreWriter.create(path, WIDTHS, "float16", shard_rows=1, resume=True) as writer:
        for item in make_items(5):
            if item["item_id"] not in writer.done_items:
                writer.add_item(**item)
    assert ActivationStore.open(path).n_items == 5
    assert not list((path / "shards").glob(".tmp-*"))
