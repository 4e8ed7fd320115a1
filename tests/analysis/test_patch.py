"""`analyze patch`: activation patching and ablation, checked where the answer is known.

A model built so that only one layer carries the input into the output (a TorchScript file read by the torch
family): patching that layer restores the clean output fully in both directions, the bystander layer that reads
the same input but feeds nothing restores nothing. Trained CREPE: patching the probe's own layer restores the
probe's logit exactly, a later layer cannot move it, and a deep block before it carries part of the pitch."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf


def _sine(freq: float, sr: int = 16000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """planted.ts: output = head(relu(carrier(x))) + 0 * mean(bystander(x)); pairs.csv of two sine pairs."""
    import torch
    from torch import nn

    class Planted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sample_rate = 16000
            self.carrier = nn.Conv1d(1, 8, 160, stride=160)
            self.bystander = nn.Conv1d(1, 8, 160, stride=160)
            self.head = nn.Conv1d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.carrier(x))) + 0.0 * self.bystander(x).mean()

    root = tmp_path_factory.mktemp("planted")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Planted().eval()), str(root / "planted.ts"))
    rows = []
    for i, (a, b) in enumerate(((220.0, 660.0), (330.0, 990.0), (440.0, 300.0))):
        for name, freq in (("clean", a), ("corrupt", b)):
            sf.write(root / f"{name}{i}.wav", _sine(freq), 16000)
        rows.append({"clean": f"clean{i}.wav", "corrupt": f"corrupt{i}.wav"})
    with (root / "pairs.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["clean", "corrupt"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def _effects(folder) -> dict:
    with (folder / "effects.csv").open(newline="") as fh:
        return {(r["hookpoint"], r["condition"]): float(r["effect"]) for r in csv.DictReader(fh)}


def test_patching_finds_the_one_layer_that_carries_the_input(runner, app, planted, tmp_path):
    out = tmp_path / "patch"
    result = runner.invoke(app, ["analyze", "patch", str(planted / "pairs.csv"), "-m", str(planted / "planted.ts"),
                                 "--hookpoint", "carrier,bystander", "--metric", "outputs", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    eff = _effects(out)
    for cond in ("clean_to_corrupt", "corrupt_to_clean"):
        assert eff[("carrier", cond)] == pytest.approx(1.0, abs=1e-5)
        assert eff[("bystander", cond)] == pytest.approx(0.0, abs=1e-6)
    assert eff[("bystander", "zero_ablation")] == pytest.approx(0.0, abs=1e-6)
    assert eff[("bystander", "mean_ablation")] == pytest.approx(0.0, abs=1e-6)
    assert eff[("carrier", "zero_ablation")] > 0.3  # the output loses what the carrier brought
    # one clean and one corrupt run per pair, then one pass per hookpoint per intervention
    assert res["forward_passes"] == 3 * (2 + 2 * 4)
    assert (out / "heatmap.png").is_file() and (out / "per_pair.csv").is_file()
    head = json.loads((out / "manifest.json").read_text())
    assert head["kind"] == "patch" and head["n_pairs"] == 3 and head["conditions"][0] == "clean_to_corrupt"


def test_bad_input_one_line_each(runner, app, planted, tmp_path):
    model = str(planted / "planted.ts")
    (tmp_path / "bad.csv").write_text("a,b\nx.wav,y.wav\n")
    sf.write(tmp_path / "short.wav", _sine(220, seconds=0.25), 16000)
    sf.write(tmp_path / "long.wav", _sine(550, seconds=0.5), 16000)
    (tmp_path / "uneven.csv").write_text("clean,corrupt\nshort.wav,long.wav\n")
    cases = [
        ([str(tmp_path / "bad.csv"), "--metric", "outputs"], "needs clean and corrupt columns"),
        ([str(planted / "pairs.csv")], "metric probe needs --probe"),
        ([str(tmp_path / "uneven.csv"), "--metric", "outputs", "--set", "length=refuse"], "pair pair0000: clean is"),
        ([str(planted / "pairs.csv"), "--metric", "outputs", "--hookpoint", "nope"], "nope"),
        ([str(planted), "--perturb", "pitch", "--metric", "outputs"], "bad perturbation 'pitch'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["analyze", "patch", *args, "-m", model, "-o", str(tmp_path / "o")])
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    result = runner.invoke(app, ["analyze", "patch", str(tmp_path / "uneven.csv"), "--metric", "outputs", "-m", model,
                                 "-o", str(tmp_path / "cropped"), "--json"])
    assert result.exit_code == 0 and "cropped to the shorter" in json.loads(result.stdout)["notes"][0]


@pytest.mark.slow
def test_crepe_pitch_patching_restores_the_probe_at_its_layer_and_not_after(runner, app, tmp_path):
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "notes"), "-c", "crepe", "--set",
                                 "octaves=[4]", "--set", "timbres=[sine,piano]"])
    assert result.exit_code == 0, result.output
    for args in (["extract", str(tmp_path / "notes"), "-m", "crepe-tiny", "-c", "crepe", "--hookpoint",
                  "block4,block5,block6", "-o", str(tmp_path / "store")],
                 ["probe", "train", str(tmp_path / "store"), "-l", "pitch_class", "-o", str(tmp_path / "probes")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    out = tmp_path / "patch"
    result = runner.invoke(app, ["analyze", "patch", str(tmp_path / "notes"), "--perturb", "pitch=3", "-m",
                                 "crepe-tiny", "--probe", str(tmp_path / "probes"), "--set", "probe_hookpoint=block5",
                                 "--hookpoint", "block4,block5,block6", "--max-items", "6", "--set",
                                 "ablations=[]", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["mean_gap"] > 1.0  # three semitones up lowers the clean note's logit
    eff = _effects(out)
    for cond in ("clean_to_corrupt", "corrupt_to_clean"):
        assert eff[("block5", cond)] == pytest.approx(1.0, abs=1e-4)  # the probe's own layer: all of it
        assert eff[("block6", cond)] == pytest.approx(0.0, abs=1e-6)  # after the probe's layer: nothing
        assert eff[("block4", cond)] > 0.1  # the block before carries part of the pitch (measured 0.2-0.4)
