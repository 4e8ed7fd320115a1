"""Config resolution: presets, extends, --set, typed flags, and one-line errors for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from musicsae_cli.config import configs_dir, list_presets, parse_set, resolve_config
from musicsae_cli.errors import ConfigError


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: str = Field("fp32", description="Storage dtype.")
    width: int = 8


class Demo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="Random seed.")
    name: str = "x"
    rates: list[float] = [1.0]
    inner: Inner = Inner()


@pytest.fixture
def presets(tmp_path, monkeypatch) -> Path:
    group = tmp_path / "demo"
    group.mkdir()
    (group / "base.yaml").write_text("seed: 1\nname: base\ninner:\n  width: 16\n")
    (group / "child.yaml").write_text("extends: base\nname: child\ninner:\n  dtype: bf16\n")
    (group / "loop-a.yaml").write_text("extends: loop-b\n")
    (group / "loop-b.yaml").write_text("extends: loop-a\n")
    (group / "typo.yaml").write_text("sead: 3\n")
    (group / "broken.yaml").write_text("seed: [1, 2\n")
    (group / "list.yaml").write_text("- a\n- b\n")
    monkeypatch.setenv("MUSICSAE_CONFIG_DIR", str(tmp_path))
    return group


def test_precedence_defaults_preset_set_flags(presets):
    cfg = resolve_config(Demo, "demo", "child", ["seed=5", "inner.width=32"], {"name": "flag", "seed": None})
    # child extends base: base's width is overridden by --set, child's dtype kept, flag beats preset, None unset
    assert (cfg.seed, cfg.name, cfg.inner.dtype, cfg.inner.width) == (5, "flag", "bf16", 32)
    assert resolve_config(Demo, "demo").seed == 0


def test_preset_by_path_and_listing(presets):
    assert resolve_config(Demo, "demo", str(presets / "base.yaml")).name == "base"
    assert "child" in list_presets("demo") and configs_dir() == presets.parent


def test_set_values_are_yaml():
    assert parse_set(["rates=[0.5, 2]", "name='a=b'", "inner.dtype=bf16"]) == {
        "rates": [0.5, 2], "name": "a=b", "inner": {"dtype": "bf16"}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["seed"])


@pytest.mark.parametrize("preset,sets,pattern", [
    ("typo", None, r"unknown config key 'sead'.*did you mean 'seed'"),
    (None, ["inner.dtyp=x"], r"unknown config key 'inner.dtyp'.*did you mean 'inner.dtype'"),
    (None, ["seed=abc"], r"invalid value for 'seed'.*Random seed"),
    ("broken", None, r"invalid YAML in .*broken.yaml: line 2"),
    ("list", None, r"must be a mapping"),
    ("loop-a", None, r"cycle"),
    ("chlid", None, r"unknown demo preset 'chlid'.*did you mean 'child'"),
    ("missing/file.yaml", None, r"config file not found"),
])
def test_errors_name_the_problem(presets, preset, sets, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        resolve_config(Demo, "demo", preset, sets)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_every_shipped_preset_validates(monkeypatch):
    """Guard: each preset in configs/ names the command it is for by prefix and validates against its model."""
    from musicsae_cli.analysis.config import CompareConfig, FeaturesConfig, SensitivityConfig, SeparationConfig
    from musicsae_cli.audio.chunk import ChunkConfig
    from musicsae_cli.audio.dataset import IndexConfig
    from musicsae_cli.audio.split import SplitConfig
    from musicsae_cli.audio.synth import SynthConfig
    from musicsae_cli.concepts.config import ConceptLearnConfig
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.models.tiny_train_config import TrainTinyConfig
    from musicsae_cli.probes.config import ProbeConfig
    from musicsae_cli.sae.config import SAETrainConfig
    from musicsae_cli.steering.config import SteerGenerateConfig, SteerSweepConfig

    monkeypatch.delenv("MUSICSAE_CONFIG_DIR", raising=False)
    models = {("data", "synth"): SynthConfig, ("data", "index"): IndexConfig, ("extract", ""): ExtractConfig,
              ("sae", ""): SAETrainConfig, ("probe", ""): ProbeConfig,
              ("steer", "sweep"): SteerSweepConfig, ("steer", ""): SteerGenerateConfig,
              ("analyze", "sensitivity"): SensitivityConfig, ("analyze", "compare"): CompareConfig,
              ("analyze", "features"): FeaturesConfig, ("analyze", "separation"): SeparationConfig,
              ("data", "split"): SplitConfig, ("data", "chunk"): ChunkConfig, ("model", "train-tiny"): TrainTinyConfig,
              ("concept", "learn"): ConceptLearnConfig}
    presets = sorted(configs_dir().glob("*/*.yaml"))
    assert presets, "no presets found"
    for path in presets:
        group, name = path.parent.name, path.stem
        model = next((m for (g, prefix), m in models.items() if g == group and name.startswith(prefix)), None)
        assert model is not None, f"preset {path} matches no command"
        resolve_config(model, group, name)
