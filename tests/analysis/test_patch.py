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
    # one clean and one corrupt run per pair, then one pass per hookpoint per intervention (outputs: one by one)
    assert res["forward_passes"] == 3 + 3 * (2 + 2 * 4)  # + one pass per clean input for the means
    assert (out / "heatmap.png").is_file() and (out / "per_pair.csv").is_file()
    head = json.loads((out / "manifest.json").read_text())
    assert head["kind"] == "patch" and head["n_pairs"] == 3 and head["conditions"][0] == "clean_to_corrupt"


def _exact_sae(folder, model: str, width: int = 8, hook: str = "carrier"):
    """A ReLU SAE that reconstructs exactly: latents relu(x) and relu(-x), decoded as their difference."""
    import torch

    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder
    from musicsae_cli.sae.io import save_sae

    sae = SparseAutoencoder(SAESpec("relu", width, 2 * width))
    eye = torch.eye(width)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    folder.mkdir()
    save_sae(sae, folder, hook_name=hook, model_name=model)
    return folder


@pytest.mark.slow
def test_time_windows_add_up_and_batched_runs_match_one_by_one(runner, app, planted, tmp_path):
    """Metric: an exact SAE's latent 0 at the carrier, a mean over rows, so each window restores its own share."""
    sae = _exact_sae(tmp_path / "sae", str(planted / "planted.ts"))
    base = ["analyze", "patch", str(planted / "pairs.csv"), "-m", str(planted / "planted.ts"), "--hookpoint",
            "carrier,bystander", "--metric", "latent", "--sae", str(sae), "--latent", "0", "--set", "ablations=[]",
            "--json"]
    res = {}
    for name, extra in (("whole", []), ("windows", ["--set", "windows=2"]),
                        ("one_by_one", ["--set", "windows=2", "--set", "batch=1"])):
        result = runner.invoke(app, [*base, *extra, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        res[name] = json.loads(result.stdout)
    with (tmp_path / "windows" / "effects.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for cond in ("clean_to_corrupt", "corrupt_to_clean"):
        parts = [float(r["effect"]) for r in rows if r["hookpoint"] == "carrier" and r["condition"] == cond]
        assert len(parts) == 2 and sum(parts) == pytest.approx(1.0, abs=1e-5)
        assert all(0.05 < p < 0.95 for p in parts)
        assert _effects(tmp_path / "whole")[("carrier", cond)] == pytest.approx(1.0, abs=1e-5)
        assert all(float(r["effect"]) == pytest.approx(0.0, abs=1e-6) for r in rows
                   if r["hookpoint"] == "bystander" and r["condition"] == cond)
    batched = [e["effect"] for e in res["windows"]["effects"]]
    assert batched == pytest.approx([e["effect"] for e in res["one_by_one"]["effects"]], abs=1e-5)
    # 3 pairs x (2 recordings + 2 conditions x 4 patched runs): batched, each condition's 4 runs share one pass
    assert res["one_by_one"]["forward_passes"] == 3 * (2 + 8)
    assert res["windows"]["forward_passes"] == 3 * (2 + 2) and res["windows"]["patched_runs"] == 30


@pytest.mark.slow
def test_sae_latents_and_direction_subspaces(runner, app, planted, tmp_path):
    """All latents of an exact SAE restore what the whole activation does; so does the one direction a rank-1
    carrier varies along (found as the difference of the clean and corrupt means)."""
    import torch
    from torch import nn

    class RankOne(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sample_rate = 16000
            self.carrier = nn.Conv1d(1, 8, 160, stride=160)
            self.head = nn.Conv1d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.carrier(x)))

    torch.manual_seed(1)
    model = RankOne()
    with torch.no_grad():  # every channel is a multiple of one response: the carrier varies along one direction
        model.carrier.weight.copy_(torch.randn(8, 1, 1) * model.carrier.weight[:1])
    torch.jit.save(torch.jit.script(model.eval()), str(tmp_path / "rank1.ts"))
    sae = _exact_sae(tmp_path / "sae", str(planted / "planted.ts"))
    common = ["analyze", "patch", str(planted / "pairs.csv"), "--hookpoint", "carrier", "--metric", "outputs",
              "--set", "ablations=[]", "--json"]
    runs = {"latents": ["-m", str(planted / "planted.ts"), "--set", "subspace=latents", "--set",
                        f"patch_sae={sae}", "--set", f"patch_latents={list(range(16))}"],
            "direction": ["-m", str(tmp_path / "rank1.ts"), "--set", "subspace=direction"]}
    for name, args in runs.items():
        result = runner.invoke(app, [*common, *args, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        for cond in ("clean_to_corrupt", "corrupt_to_clean"):
            assert _effects(tmp_path / name)[("carrier", cond)] == pytest.approx(1.0, abs=1e-4), name
    half = runner.invoke(app, [*common, *runs["latents"][:-1], "patch_latents=[0,1]", "-o", str(tmp_path / "half")])
    assert half.exit_code == 0, half.output
    assert 0.0 < _effects(tmp_path / "half")[("carrier", "clean_to_corrupt")] < 0.95


def test_latent_patch_keeps_the_sae_error_term():
    """h' = h + decode(f') - decode(f), re-computed in numpy for a random SAE with its own normalisation."""
    import torch

    from musicsae_cli.analysis.patch_edits import Latents, PatchEdit, Source
    from musicsae_cli.models.base import EditContext
    from musicsae_cli.sae.architectures import SAESpec, SparseAutoencoder

    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(64, 6, generator=gen) * 3 + 1
    sae = SparseAutoencoder.create(SAESpec("relu", 6, 12), sample, seed=0).eval()
    h, src = torch.randn(1, 5, 6, generator=gen), torch.randn(1, 5, 6, generator=gen)
    edit = PatchEdit("x", Latents(sae, [1, 4, 7]), {0: (Source(calls=[src]), None)}, batch=1)
    got = edit(h, EditContext(start=0, length=5, batch=1)).numpy()[0]

    w_enc, b_enc = sae.W_enc.detach().double().numpy(), sae.b_enc.detach().double().numpy()
    w_dec, b_dec = sae.W_dec.detach().double().numpy(), sae.b_dec.detach().double().numpy()
    mean, scale = sae.norm_mean.double().numpy(), float(sae.norm_scale)

    def encode(x):
        return np.maximum(((x - mean) * scale - b_dec) @ w_enc + b_enc, 0)

    def decode(f):
        return (f @ w_dec + b_dec) / scale + mean

    x, s = h.double().numpy()[0], src.double().numpy()[0]
    f = encode(x)
    f_new = f.copy()
    f_new[:, [1, 4, 7]] = encode(s)[:, [1, 4, 7]]
    np.testing.assert_allclose(got, x + decode(f_new) - decode(f), atol=1e-4)


@pytest.mark.slow
def test_prompt_pairs_and_the_model_loss_on_musicgen(runner, app, tiny_dir, tmp_path):
    """Two prompts over one teacher-forced clip: patching the last decoder layer carries everything the prompt
    changed in the loss; batched passes give what one-by-one passes give."""
    from conftest import write_audio

    write_audio(tmp_path / "clip.wav", sr=32000)
    (tmp_path / "prompts.csv").write_text("input,clean_text,corrupt_text\nclip.wav,calm piano,loud drums\n"
                                          "clip.wav,bright flute,dark bass\n")
    base = ["analyze", "patch", str(tmp_path / "prompts.csv"), "-m", str(tiny_dir), "--metric", "loss",
            "--set", "ablations=[]", "--json"]
    res = {}
    for name, extra in (("batched", []), ("one", ["--set", "batch=1"])):
        result = runner.invoke(app, [*base, *extra, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        res[name] = json.loads(result.stdout)
    hps = res["batched"]["hookpoints"]
    eff = _effects(tmp_path / "batched")
    for cond in ("clean_to_corrupt", "corrupt_to_clean"):
        assert eff[(hps[-1], cond)] == pytest.approx(1.0, abs=1e-3)
    assert [e["effect"] for e in res["batched"]["effects"]] == pytest.approx(
        [e["effect"] for e in res["one"]["effects"]], abs=1e-3)
    assert res["batched"]["forward_passes"] < res["one"]["forward_passes"] == res["one"]["patched_runs"]


def test_sequence_pairs_on_a_symbolic_transformer(runner, app, tmp_path):
    """Two MIDI songs of equal length through the tiny Multitrack Music Transformer, read by an exact SAE's latents
    at layers.1: the residual stream at layers.0 or layers.1 carries everything the metric reads (1.0 each way);
    songs of different lengths are refused, not cropped."""
    import pretty_midi

    from musicsae_cli.models.tiny_mmt import save_tiny_mmt

    model = save_tiny_mmt(tmp_path / "mmt")["path"]
    for name, base, n in (("low", 60, 6), ("high", 67, 6), ("mid", 64, 6), ("short", 60, 4)):
        song = pretty_midi.PrettyMIDI(initial_tempo=120)
        part = pretty_midi.Instrument(program=0)
        part.notes += [pretty_midi.Note(velocity=80, pitch=base + 2 * i, start=0.5 * i, end=0.5 * i + 0.4)
                       for i in range(n)]
        song.instruments.append(part)
        song.write(str(tmp_path / f"{name}.mid"))
    (tmp_path / "pairs.csv").write_text("clean,corrupt\nlow.mid,high.mid\nlow.mid,mid.mid\n")
    (tmp_path / "uneven.csv").write_text("clean,corrupt\nlow.mid,short.mid\n")
    from musicsae_cli.models import load_adapter

    sae = _exact_sae(tmp_path / "sae", load_adapter(model, device="cpu").model_id, width=32, hook="layers.1")
    latents = [arg for i in range(32) for arg in ("--latent", str(i))]  # the mean of |h| over every channel
    base = ["analyze", "patch", "-m", model, "--metric", "latent", "--sae", str(sae), *latents, "--json"]
    result = runner.invoke(app, [*base, str(tmp_path / "pairs.csv"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    eff = _effects(tmp_path / "out")
    for hp in ("layers.0", "layers.1"):
        for cond in ("clean_to_corrupt", "corrupt_to_clean"):
            assert eff[(hp, cond)] == pytest.approx(1.0, abs=1e-4), (hp, cond)
    result = runner.invoke(app, [*base, str(tmp_path / "uneven.csv"), "-o", str(tmp_path / "uneven")])
    assert result.exit_code == 2 and "token sequences are not cropped (refused)" in result.stderr
    assert not (tmp_path / "uneven").exists()


@pytest.mark.slow
def test_bad_input_one_line_each(runner, app, planted, tmp_path):
    model = str(planted / "planted.ts")
    (tmp_path / "bad.csv").write_text("a,b\nx.wav,y.wav\n")
    sf.write(tmp_path / "short.wav", _sine(220, seconds=0.25), 16000)
    sf.write(tmp_path / "long.wav", _sine(550, seconds=0.5), 16000)
    (tmp_path / "uneven.csv").write_text("clean,corrupt\nshort.wav,long.wav\n")
    (tmp_path / "prompts.csv").write_text("input,clean_text,corrupt_text\nshort.wav,calm,loud\n")
    sae = _exact_sae(tmp_path / "sae", str(planted / "planted.ts"))
    narrow = _exact_sae(tmp_path / "narrow", str(planted / "planted.ts"), width=4)
    cases = [
        ([str(tmp_path / "bad.csv"), "--metric", "outputs"], "needs clean and corrupt columns"),
        ([str(planted / "pairs.csv")], "metric probe needs --probe"),
        ([str(tmp_path / "uneven.csv"), "--metric", "outputs", "--set", "length=refuse"], "pair pair0000: clean is"),
        ([str(planted / "pairs.csv"), "--metric", "outputs", "--hookpoint", "nope"], "nope"),
        ([str(planted), "--perturb", "pitch", "--metric", "outputs"], "bad perturbation 'pitch'"),
        ([str(planted / "pairs.csv"), "--metric", "loss"], "metric loss needs a loss on its own inputs"),
        ([str(planted / "pairs.csv"), "--metric", "latent", "--sae", str(narrow), "--latent", "0"],
         "the SAE reads 4-wide activations but carrier is 8 wide"),
        ([str(planted / "pairs.csv"), "--metric", "outputs", "--subspace", "latents", "--set", f"patch_sae={sae}",
          "--patch-latent", "0", "--hookpoint", "carrier,bystander"], "only be patched at the SAE's hookpoint"),
        ([str(planted / "pairs.csv"), "--metric", "latent", "--sae", str(sae), "--latent", "99"], "out of range"),
        ([str(tmp_path / "prompts.csv"), "--metric", "outputs"], "reads no text prompt"),
        ([str(planted / "pairs.csv"), "--metric", "outputs", "--subspace", "direction", "--set",
          "direction_from=probe"], "needs --probe"),
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
    """Trained CREPE: patching moves the pitch probe's logit from block 4 on, all of it at the probe's block 5 and
    none after it. The random twin read through the same probe shows nothing (no gap, no delta). Read through a
    probe of its own, the random twin shows a similar profile: random convolutions pass pitch class on too."""
    result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "notes"), "-c", "crepe", "--set",
                                 "octaves=[4]", "--set", "timbres=[sine,piano]"])
    assert result.exit_code == 0, result.output
    for model in ("crepe-tiny", "crepe-tiny-random"):
        for args in (["extract", str(tmp_path / "notes"), "-m", model, "-c", "crepe", "--hookpoint",
                      "block4,block5,block6", "-o", str(tmp_path / f"store-{model}")],
                     ["probe", "train", str(tmp_path / f"store-{model}"), "-l", "pitch_class", "-o",
                      str(tmp_path / f"probes-{model}")]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output

    def patch(model: str, probes: str, *extra: str) -> tuple[dict, dict]:
        out = tmp_path / f"patch-{model}-{probes}"
        result = runner.invoke(app, ["analyze", "patch", str(tmp_path / "notes"), "--perturb", "pitch=3", "-m", model,
                                     "--probe", str(tmp_path / f"probes-{probes}"), "--set", "probe_hookpoint=block5",
                                     "--hookpoint", "block4,block5,block6", "--max-items", "6", "--set",
                                     "ablations=[]", "-o", str(out), "--json", *extra])
        assert result.exit_code == 0, result.output
        with (out / "effects.csv").open(newline="") as fh:
            delta = {(r["hookpoint"], r["condition"]): float(r["delta"]) for r in csv.DictReader(fh)}
        return json.loads(result.stdout), _effects(out), delta

    res, eff, delta = patch("crepe-tiny", "crepe-tiny")
    assert res["mean_gap"] > 1.0  # three semitones up lowers the clean note's logit
    for cond in ("clean_to_corrupt", "corrupt_to_clean"):
        assert eff[("block5", cond)] == pytest.approx(1.0, abs=1e-4)  # the probe's own layer: all of it
        assert eff[("block6", cond)] == pytest.approx(0.0, abs=1e-6)  # after the probe's layer: nothing
        assert eff[("block4", cond)] > 0.1  # the block before carries part of the pitch (measured 0.2-0.6)
        assert delta[("block4", cond)] > 0.5  # in logits
    refused = runner.invoke(app, ["analyze", "patch", str(tmp_path / "notes"), "--perturb", "pitch=3", "-m",
                                  "crepe-tiny-random", "--probe", str(tmp_path / "probes-crepe-tiny"), "-o",
                                  str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "was made with model 'crepe-tiny'" in refused.stderr
    twin, _, twin_delta = patch("crepe-tiny-random", "crepe-tiny", "--allow-other-model")
    assert abs(twin["mean_gap"]) < 0.01 * res["mean_gap"]
    assert any("not reliably nonzero" in n for n in twin["notes"])
    assert max(abs(v) for v in twin_delta.values()) < 0.01 * delta[("block4", "clean_to_corrupt")]
    own, own_eff, _ = patch("crepe-tiny-random", "crepe-tiny-random")
    assert own["mean_gap"] > 1.0 and own_eff[("block5", "clean_to_corrupt")] == pytest.approx(1.0, abs=1e-4)
