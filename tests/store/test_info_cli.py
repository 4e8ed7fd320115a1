"""`musicsae info` on activation stores, including incomplete and newer-version stores."""

from __future__ import annotations

import json

from musicsae_cli.store import FORMAT_VERSION

from .helpers import make_items, write_store


def test_info_describes_a_store(runner, app, store_path):
    result = runner.invoke(app, ["info", str(store_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "activation_store" and data["status"] == "complete"
    assert data["hookpoints"] == {"layers.0": 16, "layers.3": 8} and data["n_items"] == 12
    assert data["n_rows"] == sum(len(next(iter(i["acts"].values()))) for i in make_items())
    human = runner.invoke(app, ["info", str(store_path)])
    assert "hookpoints:" in human.stdout and "layers.3: 8" in human.stdout and "genre:" in human.stdout


def test_info_shows_incomplete_store_status(runner, app, tmp_path):
    from musicsae_cli.store import StoreWriter

    items = make_items(4)
    path = tmp_path / "s"
    try:
        with StoreWriter.create(path, {"layers.0": 16, "layers.3": 8}, "float16", shard_rows=1) as w:
            for item in items[:2]:
                w.add_item(**item)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    data = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
    assert data["status"] == "writing" and data["n_items"] >= 1


def test_info_refuses_newer_format_version(runner, app, tmp_path):
    path = write_store(tmp_path / "s", make_items(2))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    assert f"format version 99, newer than this musicsae supports ({FORMAT_VERSION})" in result.stderr
    assert "upgrade musicsae" in result.stderr and len(result.stderr.splitlines()) == 1
