"""`musicsae analyze sensitivity` through the CLI: --json result, every file written, existing output refused."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def patched(monkeypatch, tiny_adapter):
    import musicsae_cli.models as models

    monkeypatch.setattr(models, "load_adapter", lambda *a, **k: tiny_adapter)


@pytest.mark.slow
def test_cli_json_writes_all_files_and_refuses_existing(runner, app, patched, concept_set, tmp_path):
    out = tmp_path / "sens"
    args = ["analyze", "sensitivity", str(concept_set), "-o", str(out), "--model", "tiny-musicgen", "--max-items",
            "2", "--hookpoint", "layers.0,layers.3", "--by", "concept", "--set", "perturbations={identity: [0], "
            "noise: [20]}", "--set", "excerpt_s=0.5", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["n_clips"] == 2 and res["hookpoints"] == ["layers.0", "layers.3"]
    names = {p.name for p in out.iterdir()}
    assert names == {"per_clip.csv", "summary.csv", "summary.json", "config.yaml", "manifest.json",
                     "sensitivity_identity.png", "sensitivity_noise.png", "sensitivity_identity_by_concept.png",
                     "sensitivity_noise_by_concept.png"}
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_cli_dry_run_and_bad_rate(runner, app):
    ok = runner.invoke(app, ["analyze", "sensitivity", "x", "-o", "y", "-c", "sensitivity-pitch-tempo", "--dry-run"])
    assert ok.exit_code == 0 and "tempo" in ok.stdout
    bad = runner.invoke(app, ["analyze", "sensitivity", "x", "-o", "y", "--set", "perturbations={tempo: [0]}"])
    assert bad.exit_code == 2 and "must be > 0" in bad.stderr
