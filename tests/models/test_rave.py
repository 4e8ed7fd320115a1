"""The `rave` family on the tiny RAVE-format TorchScript export (models/tiny_rave.py; random weights, 4096 Hz).

The export: a 4-band strided conv as `pqmf`, an encoder of four stride-2 conv blocks (`encoder.net`, encode ratio
4 * 16 = 64) and a 1x1 'mean' projection to 8 dims; `encode` subtracts `latent_mean`, rotates by `latent_pca` and
keeps the first 4 dims; `decode` undoes that and upsamples back to audio with a transposed conv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from musicsae_cli.errors import MusicSAEError, UsageError
from musicsae_cli.models import family_of, load_adapter
from musicsae_cli.models.rave import RaveError, RaveShortAudioError, _Hidden, claims
from musicsae_cli.models.script_stepper import Unsteppable
from musicsae_cli.models.tiny_rave import RaveDims, TinyRave

pytestmark = [pytest.mark.smoke, pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

SR, BANDS, RATIO, LATENT, FULL, HIDDEN = 4096, 4, 64, 4, 8, 8
ENCODER_BLOCKS = ["encoder.0", "encoder.1", "encoder.2", "encoder.3"]
DECODER_BLOCKS = ["decoder.0", "decoder.1", "decoder.2", "decoder.3"]


def Rave(channels: int = 1, streaming: bool = False) -> nn.Module:  # noqa: N802  (the export's class)
    return TinyRave(RaveDims(sr=SR, bands=BANDS, blocks=4, hidden=HIDDEN, full_latent=FULL, latent=LATENT,
                             channels=channels, streaming=streaming))


class NotRave(nn.Module):
    def __init__(self):
        super().__init__()
        self.sr = SR
        self.conv = nn.Conv1d(1, 4, 8, stride=8)

    def forward(self, x):
        return self.conv(x)


def _save(module: nn.Module, path):
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


@pytest.fixture(scope="module")
def rave_ts(tmp_path_factory):
    torch.manual_seed(0)
    return _save(Rave(1), tmp_path_factory.mktemp("rave") / "tiny_rave.ts")


@pytest.fixture(scope="module")
def adapter(rave_ts):
    return load_adapter(str(rave_ts), device="cpu")


def _audio(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)


def test_claims_and_hookpoints(rave_ts, adapter, tmp_path):
    other = _save(NotRave(), tmp_path / "plain.ts")
    assert claims(str(rave_ts)) and not claims(str(other)) and not claims(str(tmp_path / "missing.ts"))
    assert family_of(str(rave_ts)).name == "rave" and family_of(str(other)).name == "torch"
    assert adapter.family == "rave" and adapter.sample_rate == SR
    assert adapter.hookpoint_widths == {"pqmf": BANDS, **{b: HIDDEN for b in ENCODER_BLOCKS}, "latent.raw": FULL,
                                        "latent": LATENT, **{b: HIDDEN for b in DECODER_BLOCKS}}
    assert [adapter.hookpoints[b].hop for b in DECODER_BLOCKS] == [32, 16, 8, 4]  # upsampling the latent
    adapter.resolve_hookpoints("latent")
    assert adapter.frame_rate == SR / RATIO and adapter.hop_length == RATIO and adapter.n_frames(SR) == SR // RATIO
    adapter.resolve_hookpoints("pqmf")
    assert adapter.frame_rate == SR / BANDS
    assert adapter.resolve_hookpoints("latent,encoder.*") == [*ENCODER_BLOCKS, "latent"]
    assert adapter.frame_rate == SR / RATIO
    info = adapter.describe()
    assert info["encode_ratio"] == RATIO and info["latent_size"] == LATENT and info["channels"] == "mono"
    assert info["hookpoint_paths"]["encoder.2"] == "encoder.net.2" and info["streaming"] is False
    paths = info["hookpoint_paths"]
    assert paths["decoder.1"] == "decoder.net.1" and paths["latent.raw"] == "encoder"


def test_latent_and_blocks_match_by_hand(rave_ts, adapter):
    x = _audio(SR)  # 1 s: 64 latent rows
    names = adapter.resolve_hookpoints("latent,encoder.*,pqmf")
    got = adapter.audio_activations([x], names)[0]
    ref = torch.jit.load(str(rave_ts))  # an independent copy of the export
    xt = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        latent = ref.encode(xt)[0].T
        assert got["latent"].shape == (SR // RATIO, LATENT)
        torch.testing.assert_close(got["latent"], latent, rtol=1e-5, atol=1e-5)
        h = ref.pqmf(xt)
        torch.testing.assert_close(got["pqmf"], F.avg_pool1d(h, RATIO // BANDS)[0].T, rtol=1e-5, atol=1e-5)
        for i, (_, block) in enumerate(ref.encoder.net.named_children()):
            h = block(h)
            factor = RATIO // (BANDS * 2 ** (i + 1))
            pooled = (F.avg_pool1d(h, factor) if factor > 1 else h)[0].T
            torch.testing.assert_close(got[f"encoder.{i}"], pooled, rtol=1e-5, atol=1e-5)


def test_latent_raw_and_decoder_blocks_match_by_hand(rave_ts, adapter):
    x = _audio(SR + 100, seed=7)  # not a whole number of latent frames: 65 rows
    names = adapter.resolve_hookpoints("latent.raw,decoder.*")
    got = adapter.audio_activations([x], names)[0]
    ref = torch.jit.load(str(rave_ts))
    xt = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        torch.testing.assert_close(got["latent.raw"], ref.encoder(ref.pqmf(xt))[0].T, rtol=1e-5, atol=1e-5)
        z = ref.encode(xt)
        h = F.conv1d(torch.cat([z, torch.zeros(1, FULL - LATENT, z.shape[2])], 1), ref.latent_pca.t()[..., None])
        h = h + ref.latent_mean[:, None]
        for i, (_, block) in enumerate(ref.decoder.net.named_children()):
            h = block(h)
            pooled = F.avg_pool1d(h, 2 ** (i + 1))[0].T  # 2, 4, 8, 16 rows per latent frame
            assert got[f"decoder.{i}"].shape == (z.shape[2], HIDDEN) == ((SR + 100) // RATIO, HIDDEN)
            torch.testing.assert_close(got[f"decoder.{i}"], pooled, rtol=1e-5, atol=1e-5)


def test_outputs_are_seeded_and_decoder_edits_reach_them(rave_ts, adapter):
    x = _audio(SR // 2, seed=8)
    module = torch.jit.load(str(rave_ts))
    with torch.no_grad():
        torch.manual_seed(0)  # the adapter seeds every pass with noise_seed 0: the decoder's noise is paired
        plain = module.decode(module.encode(torch.from_numpy(x)[None, None]))[0].numpy()
        other = module.decode(module.encode(torch.from_numpy(x)[None, None]))[0].numpy()
    out = adapter.outputs(x)
    assert not np.array_equal(plain, other)  # the noise is random ...
    np.testing.assert_allclose(out, plain, atol=1e-6)  # ... and seeded
    np.testing.assert_array_equal(adapter.outputs(x), out)
    adapter.resolve_hookpoints("decoder.3")
    with adapter.intervene({"decoder.3": lambda h: h * 0.0}):
        silenced = adapter.outputs(x)
    assert np.abs(silenced - out).max() > 1e-3  # the edit inside decode reaches the audio
    np.testing.assert_array_equal(adapter.outputs(x), out)  # and is gone on exit


def test_streaming_export_state_is_reset_per_pass(tmp_path):
    torch.manual_seed(3)
    path = _save(Rave(1, streaming=True), tmp_path / "streaming.ts")
    streaming = load_adapter(str(path), device="cpu")
    assert streaming.streaming and streaming.max_batch == 8
    assert streaming.describe()["streaming"]["state"].startswith("zeroed")
    x, y = _audio(SR // 2, seed=9), _audio(SR // 2, seed=10)
    fresh = torch.jit.load(str(path))  # a fresh stream: the state starts at zero
    with torch.no_grad():
        first = fresh.encode(torch.from_numpy(x)[None, None])[0].T
        again = fresh.encode(torch.from_numpy(x)[None, None])[0].T
    assert not torch.allclose(first, again)  # the export itself carries state between calls
    names = streaming.resolve_hookpoints("latent")
    streaming.audio_activations([y], names)  # another item first: nothing of it may leak into x's rows
    torch.testing.assert_close(streaming.audio_activations([x], names)[0]["latent"], first, rtol=1e-5, atol=1e-5)
    many = streaming.audio_activations([x] * 11, names)  # more items than the state holds rows: split in passes
    assert all(torch.allclose(m["latent"], first, atol=1e-5) for m in many)


def test_latent_edit_reaches_outputs(rave_ts, adapter):
    x = _audio(SR // 2)
    adapter.resolve_hookpoints("latent")
    module = torch.jit.load(str(rave_ts))  # an independent copy: its own decode(encode(x)) and decode(0)
    with torch.no_grad():
        torch.manual_seed(0)
        plain = module.decode(module.encode(torch.from_numpy(x)[None, None]))[0].numpy()
        torch.manual_seed(0)
        silent = module.decode(torch.zeros(1, LATENT, SR // 2 // RATIO))[0].numpy()
    with adapter.intervene({"latent": lambda h: torch.zeros_like(h)}):
        out = adapter.outputs(x)
        acts = adapter.audio_activations([x], ["latent"])[0]["latent"]
    assert out.shape == (1, SR // 2) and not acts.any()
    np.testing.assert_allclose(out, silent, atol=1e-5)  # the re-synthesis of a zeroed latent
    np.testing.assert_allclose(adapter.outputs(x), plain, atol=1e-5)  # edits removed on exit


def test_stereo_export_gets_mono_on_both_channels(tmp_path):
    torch.manual_seed(2)
    path = _save(Rave(2), tmp_path / "stereo.ts")
    stereo = load_adapter(str(path), device="cpu")
    x = _audio(SR // 2, seed=3)
    got = stereo.audio_activations([x], stereo.resolve_hookpoints("latent"))[0]["latent"]
    xt = torch.from_numpy(x)[None, None].repeat(1, 2, 1)
    with torch.no_grad():
        torch.testing.assert_close(got, torch.jit.load(str(path)).encode(xt)[0].T, rtol=1e-5, atol=1e-5)
    assert "2 channels" in stereo.describe()["channels"]


def test_bad_inputs(adapter, tmp_path):
    other = _save(NotRave(), tmp_path / "plain.ts")
    with pytest.raises(RaveError) as err:
        load_adapter(str(other), family="rave", device="cpu")
    assert "not a RAVE export" in err.value.message and "no encode method" in err.value.message
    assert "--family torch" in err.value.hint and "\n" not in str(err.value)
    with pytest.raises(UsageError) as err:
        adapter.resolve_hookpoints("encoder.9")
    assert "encoder.9" in err.value.message and "encoder.0" in err.value.hint
    with pytest.raises(UsageError) as err:
        adapter.resolve_hookpoints("latnet")
    assert "'latent'" in err.value.hint
    with pytest.raises(RaveShortAudioError) as err:
        adapter.audio_activations([_audio(RATIO - 1)], ["latent"])
    assert isinstance(err.value, MusicSAEError) and str(RATIO) in err.value.message and err.value.hint


def test_unsteppable_reported_against_rave_names(adapter):
    exc = _Hidden(Unsteppable("a closure", "encoder.net", "forward"), adapter._paths)
    assert exc.hidden(["pqmf", "encoder.0", "encoder.3", "latent"]) == ["encoder.0", "encoder.3"]


@pytest.mark.slow
def test_extract_through_cli(rave_ts, tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app
    from musicsae_cli.store import ActivationStore

    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "a.wav", _audio(SR, seed=4), SR)
    sf.write(folder / "b.wav", _audio(SR // 2, seed=5), SR)
    out = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", str(folder), "-o", str(out), "-m", str(rave_ts),
                                      "--hookpoint", "latent,encoder.*", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    store = ActivationStore.open(out)
    assert store.model["family"] == "rave" and store.frame_rate == SR / RATIO
    assert set(store.hookpoints) == {*ENCODER_BLOCKS, "latent"}
    assert store.n_items == 2 and store.n_rows == (SR + SR // 2) // RATIO
    rows = np.arange(store.n_rows)
    assert store.read_rows("latent", rows).shape == (store.n_rows, LATENT)
    assert store.read_rows("encoder.0", rows).shape == (store.n_rows, HIDDEN)

    # downstream SAE metrics for an autoencoder: the re-synthesis with a stand-in SAE spliced in at the latent
    from musicsae_cli.sae.downstream import output_metrics

    adapter = load_adapter(str(rave_ts), device="cpu")
    ident = output_metrics(torch.nn.Identity(), store, "latent", adapter, n_items=2)
    assert ident["metric"] == "multiscale_spectral_distance" and ident["distance_to_clean"]["sae"] == 0.0
    assert ident["distance_to_clean"]["zero_ablation"] > 0.0 and ident["fraction_recovered"]["zero_ablation"] == 1.0
    half = output_metrics(_Half(), store, "latent", adapter, n_items=2)
    assert half["distance_to_clean"]["sae_plus_error"] < 1e-4  # the error term makes the splice a no-op
    assert 0.0 < half["distance_to_clean"]["sae"] and half["fraction_recovered"]["zero_ablation"] < 1.0


@pytest.mark.slow
def test_channels_are_mixed_and_recorded(rave_ts, tmp_path):
    """A stereo file for a mono export is downmixed; a mono file for a stereo export is duplicated; both recorded."""
    import soundfile as sf
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app
    from musicsae_cli.store import ActivationStore

    folder = tmp_path / "audio"
    folder.mkdir()
    left, right = _audio(SR // 2, seed=11), _audio(SR // 2, seed=12)
    sf.write(str(folder / "stereo.wav"), np.stack([left, right], 1), SR, subtype="FLOAT")
    sf.write(str(folder / "mono.wav"), left, SR, subtype="FLOAT")
    torch.manual_seed(4)
    stereo_ts = _save(Rave(2), tmp_path / "stereo.ts")
    runner = CliRunner()
    for model, name in ((rave_ts, "mono-model"), (stereo_ts, "stereo-model")):
        result = runner.invoke(app, ["extract", str(folder), "-o", str(tmp_path / name), "-m", str(model),
                                     "--hookpoint", "latent", "--device", "cpu"])
        assert result.exit_code == 0, result.output
    fed = {}
    for name in ("mono-model", "stereo-model"):
        items = ActivationStore.open(tmp_path / name).items().to_pylist()
        fed[name] = {Path(r["source_path"]).stem: (r["source_channels"], r["channels_fed"]) for r in items}
    assert fed["mono-model"] == {"stereo": (2, "downmixed 2 -> 1"), "mono": (1, "as is")}
    assert fed["stereo-model"] == {"stereo": (2, "downmixed 2 -> 1, mono duplicated onto 2"),
                                   "mono": (1, "mono duplicated onto 2")}
    store = ActivationStore.open(tmp_path / "mono-model")
    meta = store.metadata(["item_id", "source_path"]).to_pylist()
    rows = np.array([i for i, r in enumerate(meta) if r["source_path"].endswith("stereo.wav")])
    module = torch.jit.load(str(rave_ts))
    with torch.no_grad():  # the downmix is the mean of the channels
        ref = module.encode(torch.from_numpy((left + right) / 2)[None, None])[0].T.numpy()
    np.testing.assert_allclose(store.read_rows("latent", rows), ref, atol=1e-3)  # stored as float16


class _Half(nn.Module):
    """A stand-in SAE reconstructing half of its input."""

    def forward(self, x):
        return 0.5 * x


@pytest.mark.slow
def test_steer_audio_resynthesises_with_a_latent_bias(rave_ts, tmp_path):
    """The RAVE users' control: a bias on one latent dimension, heard in the re-synthesis (wav files)."""
    import json

    import soundfile as sf
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(str(folder / "a.wav"), _audio(SR // 2), SR)
    bias = np.zeros(LATENT, np.float32)
    bias[0] = 1.0
    np.save(tmp_path / "bias.npy", bias)
    base = ["steer", "audio", str(folder), "-m", str(rave_ts), "--file", str(tmp_path / "bias.npy"), "--hookpoint",
            "latent", "--set", "normalize=false", "--device", "cpu", "--json"]
    runner = CliRunner()
    zero = runner.invoke(app, [*base, "--strength", "0", "-o", str(tmp_path / "zero")])
    push = runner.invoke(app, [*base, "--strength", "2", "-o", str(tmp_path / "push")])
    assert zero.exit_code == 0 and push.exit_code == 0, zero.output + push.output
    assert json.loads(zero.stdout)["rel_change_mean"] == 0.0 and json.loads(push.stdout)["rel_change_mean"] > 1e-3
    plain, rate = sf.read(str(tmp_path / "push" / "outputs" / "a.plain.wav"))
    steered, _ = sf.read(str(tmp_path / "push" / "outputs" / "a.steered.wav"))
    assert rate == SR and plain.shape == steered.shape == (SR // 2,) and not np.allclose(plain, steered)
    module = torch.jit.load(str(rave_ts))  # independent: decode(encode(x) + 2 * e0)
    with torch.no_grad():
        x = torch.from_numpy(sf.read(str(folder / "a.wav"), dtype="float32")[0])[None, None]
        torch.manual_seed(0)
        z = module.encode(x)
        z[:, 0] += 2.0
        ref = module.decode(z)[0, 0].numpy()
    np.testing.assert_allclose(steered, ref, atol=2e-4)  # 16-bit wav rounding
