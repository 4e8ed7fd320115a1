"""The steering results: --json fields in the order the commands have always printed them, human lines."""

from __future__ import annotations

from musicsae_cli.steering.results import SteeredAudio, SteeredGeneration


def test_steered_audio_prints_the_reading_means_after_the_change():
    res = SteeredAudio(out="o", items=2, rel_change_mean=0.5, means={"f0_hz_plain_mean": 220.0,
                                                                      "f0_hz_steered_mean": 230.0},
                       layers=["block5"], strengths=[4.0], mode="add", direction="file", readings=["f0_hz"],
                       elapsed_s=1.0)
    assert list(res.to_json()) == ["out", "items", "rel_change_mean", "f0_hz_plain_mean", "f0_hz_steered_mean",
                                   "layers", "strengths", "mode", "direction", "readings", "elapsed_s"]
    assert res.lines() == ["o", "2 items, add file direction at block5 (strengths 4): outputs changed by 0.500 of "
                                "their norm on average", "  f0_hz: 220 plain -> 230 steered"]
    assert res["items"] == 2


def test_generation_leaves_out_the_resynthesis_fields_unless_it_resynthesised():
    kw = dict(out="o", clips=2, layers=["latent"], strengths=[1.0], mode="dims", direction="none",
              seconds_per_clip=0.5, elapsed_s=1.25)
    plain = SteeredGeneration(**kw)
    assert "resynthesis" not in plain.to_json() and plain.get("resynthesis") is None
    assert plain.lines() == ["o", "2 clips of 0.50 s, per-dimension controls at latent, 1.2 s"]
    again = SteeredGeneration(**kw, resynthesis=True, rel_change_mean=0.25)
    assert list(again.to_json())[-3:] == ["resynthesis", "rel_change_mean", "elapsed_s"]
    assert again.lines()[1:] == ["2 clips re-synthesised, per-dimension controls at latent, 1.2 s",
                                 "outputs changed by 0.250 of their norm on average"]
