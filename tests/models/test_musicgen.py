"""The MusicGen adapter against independent computations: the model's own hidden states, transformers'
delay pattern, generation vs teacher forcing, and save/load through from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_cli.errors import InputError, UsageError
from musicsae_cli.models.musicgen import MusicGenAdapter

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)

SR = 32000


def _tone(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.linspace(1, 0.3, len(t))).astype(np.float32)


def _reference(adapter, codes, text=None):
    """The model's own decoder hidden states (full forward, transformers' delay pattern)."""
    k = adapter.num_codebooks
    t = codes.shape[-1]
    seq = torch.cat([torch.full((1, k, 1), adapter.pad_id), codes[None]], dim=-1).reshape(k, -1)
    _, delayed = adapter.model.decoder.build_delay_pattern_mask(seq, pad_token_id=adapter.pad_id, max_length=t + k)
    if text is None:
        cond = dict(adapter.model.get_unconditional_inputs(num_samples=1))
        cond.pop("guidance_scale", None)
    else:
        cond = dict(adapter.processor(text=[text], return_tensors="pt"))
    with torch.no_grad():
        out = adapter.model(**cond, decoder_input_ids=delayed, output_hidden_states=True)
    return delayed, out.decoder_hidden_states  # hidden_states[i + 1] = after block i (the last after final LN)


def test_tiny_model_is_self_consistent(tiny_adapter):
    cfg = tiny_adapter.model.config
    assert cfg.decoder.num_codebooks == tiny_adapter.model.audio_encoder.config.num_quantizers == 4
    assert cfg.decoder.pad_token_id == cfg.decoder.vocab_size == tiny_adapter.model.generation_config.pad_token_id
    assert tiny_adapter.frame_rate == 50.0 and tiny_adapter.hop_length == 640


@pytest.mark.slow
def test_different_audio_gives_different_codes(tiny_adapter):
    a, b = tiny_adapter.encode([_tone(220, 1.0), _tone(1760, 1.0)])
    assert a.shape == (4, 50)
    assert not torch.equal(a, b) and len(torch.unique(a[0])) > 3  # codebooks are not all zero


def test_delay_pattern_matches_transformers(tiny_adapter):
    codes = tiny_adapter.encode([_tone(440, 0.6)])[0]
    ids, lengths = tiny_adapter.delayed_inputs([codes])
    delayed, _ = _reference(tiny_adapter, codes)
    assert lengths == [30] and torch.equal(ids, delayed[:, : 30 + 1])


@pytest.mark.parametrize("text", [None, "jazz piano"])
def test_residuals_equal_the_models_hidden_states(tiny_adapter, text):
    codes = tiny_adapter.encode([_tone(330, 0.8)])[0]
    t = codes.shape[-1]
    _, hidden = _reference(tiny_adapter, codes, text)
    hooks = ["layers.0", "layers.1", "layers.2"]  # inner blocks: hidden_states of the last one is post-norm
    acts = tiny_adapter.code_activations([codes], hooks, [text])[0]
    for h in hooks:
        i = int(h.split(".")[1])
        # frame t <- position t+1: BOS (position 0) and the K-1 delay-tail positions are not frames
        torch.testing.assert_close(acts[h], hidden[i + 1][0, 1:t + 1], rtol=0, atol=1e-5)
        assert acts[h].shape == (t, 64)


@pytest.mark.slow
def test_batch_padding_never_reaches_the_output(tiny_adapter):
    clips = [_tone(220, 1.0), _tone(440, 0.42), _tone(880, 0.7)]
    codes = tiny_adapter.encode(clips)
    batched = tiny_adapter.code_activations(codes, ["layers.3"])
    for c, item in zip(codes, batched, strict=True):
        alone = tiny_adapter.code_activations([c], ["layers.3"])[0]["layers.3"]
        assert item["layers.3"].shape[0] == c.shape[-1] == alone.shape[0]
        torch.testing.assert_close(item["layers.3"], alone, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_unconditional_item_in_a_text_batch(tiny_adapter):
    codes = tiny_adapter.encode([_tone(220, 0.5), _tone(220, 0.5)])
    mixed = tiny_adapter.code_activations(codes, ["layers.3"], ["rock drums", None])
    uncond = tiny_adapter.code_activations(codes[1:], ["layers.3"])[0]["layers.3"]
    torch.testing.assert_close(mixed[1]["layers.3"], uncond, rtol=0, atol=1e-5)
    assert (mixed[0]["layers.3"] - uncond).abs().max() > 1e-4  # the text does change the residuals


def test_hooks_are_removed_when_the_run_fails(tiny_adapter):
    # transformers may keep hooks of its own on the blocks (output capturing): compare, don't expect none
    before = [set(layer._forward_hooks) for layer in tiny_adapter.layers]
    seen = []
    bad = torch.full((4, 10), 10_000)  # codes outside the vocabulary: the embedding lookup fails
    with pytest.raises(IndexError):
        tiny_adapter.code_activations([bad], ["layers.1", "layers.3"])
    assert [set(layer._forward_hooks) for layer in tiny_adapter.layers] == before
    probe = tiny_adapter.layers[1].register_forward_hook(lambda m, a, o: seen.append(len(m._forward_hooks)))
    try:
        tiny_adapter.code_activations(tiny_adapter.encode([_tone(220, 0.2)]), ["layers.1"])
    finally:
        probe.remove()
    assert seen == [len(before[1]) + 2]  # during a run: ours and the probe; afterwards ours is gone again
    assert [set(layer._forward_hooks) for layer in tiny_adapter.layers] == before


@pytest.mark.parametrize("texts", [["jazz piano", "rock drums"], [None, None]])
@pytest.mark.slow
def test_teacher_forcing_generated_codes_reproduces_generation(tiny_adapter, texts):
    hooks = ["layers.0", "layers.3"]
    gen = tiny_adapter.generate(texts, 0.4, hooks, seed=7, guidance_scale=3.0)
    assert gen.tokens.shape == (2, 4, 20) and gen.audio.shape == (2, 1, 20 * 640)
    assert set(gen.acts) == ({"cond", "uncond"} if texts[0] else {"uncond"})
    codes = [torch.from_numpy(c) for c in gen.tokens]
    for stream, stream_texts in (("cond", texts), ("uncond", [None, None])):
        if stream not in gen.acts:
            continue
        forced = tiny_adapter.code_activations(codes, hooks, stream_texts)
        for b in range(2):
            for h in hooks:
                torch.testing.assert_close(forced[b][h], gen.acts[stream][h][b], rtol=0, atol=1e-5)
    with torch.no_grad():
        decoded = tiny_adapter.model.audio_encoder.decode(torch.from_numpy(gen.tokens)[None], [None, None])
    np.testing.assert_array_equal(decoded.audio_values.numpy(), gen.audio)
    if texts[0]:
        assert (gen.acts["cond"]["layers.3"] - gen.acts["uncond"]["layers.3"]).abs().max() > 1e-4


@pytest.mark.slow
def test_generation_is_seeded_and_streams_selectable(tiny_adapter):
    a = tiny_adapter.generate(["piano"], 0.2, ["layers.1"], seed=3)
    b = tiny_adapter.generate(["piano"], 0.2, ["layers.1"], seed=3, streams="cond")
    c = tiny_adapter.generate(["piano"], 0.2, ["layers.1"], seed=4)
    assert np.array_equal(a.tokens, b.tokens) and not np.array_equal(a.tokens, c.tokens)
    assert set(b.acts) == {"cond"}


def test_intervene_edits_downstream_only_and_is_removed(tiny_adapter):
    codes = tiny_adapter.encode([_tone(440, 0.4)])
    hooks = ["layers.0", "layers.1", "layers.2"]
    clean = tiny_adapter.code_activations(codes, hooks)[0]
    v = torch.randn(64)
    with tiny_adapter.intervene({"layers.1": lambda h: h + v}):
        steered = tiny_adapter.code_activations(codes, hooks)[0]
        with tiny_adapter.intervene({"layers.0": lambda h: h}):  # an identity edit is exactly a no-op
            same = tiny_adapter.code_activations(codes, hooks)[0]
    torch.testing.assert_close(steered["layers.0"], clean["layers.0"], rtol=0, atol=0)
    torch.testing.assert_close(steered["layers.1"], clean["layers.1"] + v, rtol=0, atol=1e-5)
    assert (steered["layers.2"] - clean["layers.2"]).abs().max() > 1e-3
    torch.testing.assert_close(same["layers.2"], steered["layers.2"], rtol=0, atol=0)
    after = tiny_adapter.code_activations(codes, hooks)[0]
    torch.testing.assert_close(after["layers.2"], clean["layers.2"], rtol=0, atol=0)
    with pytest.raises(UsageError, match="out of range"):
        with tiny_adapter.intervene({"layers.9": lambda h: h}):
            pass


@pytest.mark.slow
def test_intervene_applies_during_generation(tiny_adapter):
    plain = tiny_adapter.generate(["piano"], 0.2, ["layers.3"], seed=5)
    with tiny_adapter.intervene({"layers.2": lambda h: h + 5.0}):
        steered = tiny_adapter.generate(["piano"], 0.2, ["layers.3"], seed=5)
    assert (plain.acts["cond"]["layers.3"] - steered.acts["cond"]["layers.3"]).abs().max() > 1e-3


@pytest.mark.slow
def test_saved_model_loads_through_from_pretrained_with_identical_activations(tiny_adapter, tiny_dir):
    loaded = MusicGenAdapter.load(str(tiny_dir), device="cpu")
    assert loaded.model_id == str(tiny_dir) and loaded.hookpoint_widths == tiny_adapter.hookpoint_widths
    audio = [_tone(523.25, 0.5)]
    codes_a, codes_b = tiny_adapter.encode(audio)[0], loaded.encode(audio)[0]
    assert torch.equal(codes_a, codes_b)
    a = tiny_adapter.code_activations([codes_a], ["layers.2"], ["jazz"])[0]["layers.2"]
    b = loaded.code_activations([codes_b], ["layers.2"], ["jazz"])[0]["layers.2"]
    assert torch.equal(a, b)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="not a MusicGen checkpoint \\(model_type 'bert'\\)"):
        MusicGenAdapter.load(str(tmp_path), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        MusicGenAdapter.load(str(tmp_path / "empty"), device="cpu")


def test_unreachable_hub_id_says_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="offline or the id is wrong") as info:
        MusicGenAdapter.load("facebook/musicgen-small", device="cpu")
    assert "--model DIR" in info.value.hint


@pytest.mark.parametrize(("name", "path_like"), [
    ("./musicgen", True), ("/no/such/musicgen", True), ("~/musicgen", True), ("models/musicgen/small", True),
    ("org/has space", True), ("facebook/musicgen-small", False), ("someone/their-model.v2", False),
    ("musicgen-small", False)])
def test_which_missing_names_are_paths(tmp_path, monkeypatch, name, path_like):
    from musicsae_cli.models.musicgen_hub import _looks_like_path

    monkeypatch.chdir(tmp_path)
    assert _looks_like_path(name) is path_like
    (tmp_path / name.split("/")[0]).mkdir(exist_ok=True)  # a local folder named like the org: a path
    if "/" in name and not name.startswith((".", "/", "~")):
        assert _looks_like_path(name)


def _hub_answers(monkeypatch, error_class):
    """The hub's answer to musicsae's one metadata request: `error_class` (a 404-like HfHubHTTPError)."""
    from unittest import mock

    import huggingface_hub

    def answer(*args, **kwargs):
        raise error_class("404 Client Error", response=mock.Mock(status_code=404, headers={}))

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", answer)


def test_hub_says_no_such_model_or_revision(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _hub_answers(monkeypatch, RepositoryNotFoundError)
    with pytest.raises(InputError) as info:
        MusicGenAdapter.load("someone/not-a-model", device="cpu")
    assert info.value.message == "no model 'someone/not-a-model' on the Hugging Face hub"
    assert "hf auth login" in info.value.hint
    _hub_answers(monkeypatch, RevisionNotFoundError)
    with pytest.raises(InputError) as info:
        MusicGenAdapter.load("facebook/musicgen-small", revision="v9", device="cpu")
    assert info.value.message == "'facebook/musicgen-small' on the Hugging Face hub has no revision 'v9'"
