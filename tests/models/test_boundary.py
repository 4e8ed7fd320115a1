"""The model boundary: no module outside musicsae_cli/models/ names a family's internals; generic code asks the
adapter for a capability and gets one line naming what the model can do instead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from musicsae_cli.errors import UsageError

ROOT = Path(__file__).resolve().parents[2] / "musicsae_cli"
# Family internals generic code must never name; model names too (defaults and help examples come from the
# registry, models.DEFAULT_MODEL and models.EXAMPLES).
INTERNALS = re.compile(r"musicgen|encodec|codebook|guidance|guided|kv[ _-]?cache|pqmf|code_activations|"
                       r"num_codebooks", re.IGNORECASE)


def offending_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if INTERNALS.search(line)]


def test_no_module_outside_models_names_family_internals():
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "models" in path.relative_to(ROOT).parts[:1]:
            continue
        lines = offending_lines(path.read_text("utf-8"))
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    assert not found, found


def test_the_check_catches_a_leak():
    assert offending_lines("codes = adapter.encode(audio)  # EnCodec codes") == [
        "codes = adapter.encode(audio)  # EnCodec codes"]
    assert offending_lines('model = "facebook/musicgen-small"') == ['model = "facebook/musicgen-small"']
    assert offending_lines("model = DEFAULT_MODEL  # the registry's") == []


def test_missing_capability_is_one_line_naming_what_the_family_can_do():
    from musicsae_cli.models import load_adapter

    adapter = load_adapter("crepe-tiny-random", device="cpu")
    with pytest.raises(UsageError) as err:
        adapter.require("generate", "steered generation")
    text = str(err.value)
    assert "\n" not in text and "crepe-tiny-random" in text and "generation with capture" in text
    assert "audio -> frame-aligned activations" in err.value.hint and "interventions" in err.value.hint
    with pytest.raises(UsageError, match="a loss on its own inputs"):
        adapter.next_token_log_probs([], None)


def test_families_register_capabilities_and_settings():
    from musicsae_cli.models import CAPABILITIES, FAMILIES, family_of, generation_setting_names

    assert {"musicgen", "crepe", "torch"} <= set(FAMILIES)
    for fam in FAMILIES.values():
        assert set(fam.capabilities) <= set(CAPABILITIES)
    assert family_of("crepe-full").name == "crepe" and family_of("x/model.pt2").name == "torch"
    assert family_of("py:pkg.mod:build").name == "torch" and family_of("tiny-musicgen").name == "musicgen"
    assert generation_setting_names()["top_k"] == "musicgen"
    with pytest.raises(UsageError, match="unknown model family"):
        family_of("crepe-full", "rave9")


def test_generation_settings_are_the_familys_own(tiny_adapter):
    from musicsae_cli.errors import ConfigError
    from musicsae_cli.extract.config import ExtractConfig

    cfg = ExtractConfig(model="tiny-musicgen", top_k=50, generation={"temperature": 0.5})
    assert cfg.generation == {"top_k": 50, "temperature": 0.5}
    settings = tiny_adapter.generation_settings(cfg.generation)
    assert settings.top_k == 50 and settings.guidance_scale == 3.0
    with pytest.raises(ConfigError, match="topk"):
        tiny_adapter.generation_settings({"topk": 3})
