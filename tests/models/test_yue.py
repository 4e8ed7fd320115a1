"""The `yue` family on a tiny LLaMA with YuE's vocabulary layout, saved with save_pretrained and loaded back.

Rows are checked against the model's own hidden states (transformers' output_hidden_states) at the documented
positions: prefix [SOA, <xcodec>], then codebook-0 tokens 45334 + code, vocal and instrumental alternating frame by
frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from musicsae_cli.commands.app import app
from musicsae_cli.errors import InputError, UsageError
from musicsae_cli.models import family_of, load_adapter
from musicsae_cli.models.tiny_yue import save_tiny_yue

OFFSET, PREFIX = 45334, [32001, 32016]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_yue(tmp_path_factory.mktemp("yue") / "model", seed=2, max_positions=256)["path"]


@pytest.fixture(scope="module")
def adapter(tiny):
    return load_adapter(tiny, device="cpu")


def _codes(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (2, frames))


def _hidden(adapter, codes):
    ids = torch.tensor([PREFIX + [OFFSET + int(c) for pair in codes.T for c in pair] + [32002]])
    with torch.no_grad():
        return adapter.model(input_ids=ids, output_hidden_states=True).hidden_states


@pytest.mark.smoke
def test_loads_through_save_pretrained_and_rows_are_the_hidden_states(tiny, adapter, tmp_path):
    assert family_of(tiny).name == "yue" and family_of("tiny-yue").name == "yue"
    assert adapter.family == "yue" and adapter.hookpoint_widths == {f"layers.{i}": 64 for i in range(4)}
    assert adapter.frame_rate == 50.0 and adapter.describe()["tracks"] == ["vocal", "instrumental"]
    codes = _codes(20)
    np.save(tmp_path / "song.npy", codes)
    seq = adapter.read_sequence(tmp_path / "song.npy")
    assert seq.n_rows == 40 and seq.frame_meta["track"][:3] == ["vocal", "instrumental", "vocal"]
    assert list(seq.frames[:4]) == [0, 0, 1, 1] and np.allclose(seq.time_s[:4], [0, 0, 0.02, 0.02])
    got = adapter.sequence_activations([seq], ["layers.0", "layers.2"])[0]
    hidden = _hidden(adapter, codes)  # hidden_states[i + 1] = output of layer i (before the final norm, i < 3)
    torch.testing.assert_close(got["layers.0"], hidden[1][0, 2:42], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["layers.2"], hidden[3][0, 2:42], rtol=1e-5, atol=1e-5)


def test_tracks_are_not_swapped(adapter):
    """A causal LM's row at a token depends on the tokens up to it only: the vocal row of frame 0 ignores the
    instrumental code of frame 0, the instrumental row does not."""
    codes = _codes(4, seed=1)
    other = codes.copy()
    other[1, 0] = (codes[1, 0] + 1) % 1024  # the instrumental code of frame 0
    a, b = (adapter.token_activations([c], ["layers.1"])[0]["layers.1"] for c in (codes, other))
    torch.testing.assert_close(a[0], b[0])  # vocal, frame 0
    assert not torch.allclose(a[1], b[1])  # instrumental, frame 0


def test_edit_reaches_later_layers_and_is_gone_on_exit(adapter):
    codes = _codes(5, seed=3)
    plain = adapter.token_activations([codes], ["layers.3"])[0]["layers.3"]
    with adapter.intervene({"layers.0": lambda h: h + 1.0}):
        edited = adapter.token_activations([codes], ["layers.3"])[0]["layers.3"]
    assert not torch.allclose(plain, edited)
    torch.testing.assert_close(adapter.token_activations([codes], ["layers.3"])[0]["layers.3"], plain)


def test_extract_code_files_through_the_cli(tiny, tmp_path):
    from musicsae_cli.store import ActivationStore

    root = tmp_path / "codes"
    for label, seed in (("rock", 4), ("jazz", 5)):
        (root / label).mkdir(parents=True)
        np.save(root / label / "a.npy", _codes(10, seed))
        np.savez(root / label / "b.npz", vocal=_codes(6, seed + 10)[0], instrumental=_codes(6, seed + 20)[1])
    out = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", str(root), "-o", str(out), "-m", tiny, "--hookpoint", "all",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["items_written"] == 4 and res["rows_written"] == 2 * (10 + 6) * 2
    store = ActivationStore.open(out)
    assert store.model["family"] == "yue" and store.n_rows == 64 and store.frame_rate == 50.0
    meta = store.metadata(["item_id", "track", "frame", "label"]).to_pylist()
    first = [m for m in meta if m["item_id"] == "rock/a"]
    assert [m["track"] for m in first[:2]] == ["vocal", "instrumental"] and first[-1]["frame"] == 9
    assert {m["label"] for m in meta} == {"rock", "jazz"}
    rows = np.array([i for i, m in enumerate(meta) if m["item_id"] == "rock/a"])
    ref = _hidden(load_adapter(tiny, device="cpu"), np.load(root / "rock" / "a.npy"))[2][0, 2:22].numpy()
    np.testing.assert_allclose(store.read_rows("layers.1", rows), ref, atol=2e-3, rtol=2e-3)  # float16 store


def test_bad_inputs(tiny, adapter, tmp_path):
    cases = {
        "outside.npy": (np.array([[1, 2, 1024], [0, 0, 0]]), "code 1024 at track vocal, frame 2 is outside"),
        "shape.npy": (np.zeros((3, 5), np.int64), "expected (2, frames)"),
        "floats.npy": (np.zeros((2, 5)), "not integers"),
        "long.npy": (np.zeros((2, 200), np.int64), "longer than the model's context of 256"),
    }
    for name, (codes, message) in cases.items():
        np.save(tmp_path / name, codes)
        with pytest.raises(InputError) as err:
            adapter.read_sequence(tmp_path / name)
        assert message in err.value.message and err.value.hint and "\n" not in str(err.value)
    np.savez(tmp_path / "one.npz", vocal=np.zeros(4, np.int64))
    with pytest.raises(InputError, match="no array for track"):
        adapter.read_sequence(tmp_path / "one.npz")
    small = save_tiny_yue(tmp_path / "small", vocab_size=40000)["path"]
    with pytest.raises(UsageError) as err:
        load_adapter(small, family="yue", device="cpu")
    assert "vocabulary of 40000 ids" in err.value.message and "layout" in err.value.hint
    with pytest.raises(UsageError, match="codebook_size"):
        load_adapter(tiny, device="cpu", options={"layout": {"codebook_size": 1}})
    # a folder where every file is bad: one line, nothing written
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "x.npy", np.full((2, 3), 5000))
    out = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", str(bad), "-o", str(out), "-m", tiny, "--device", "cpu",
                                      "--hookpoint", "layers.0"])
    assert result.exit_code != 0 and "no usable sequence files" in result.output and not out.exists()


def test_generation_captures_what_teacher_forcing_reads(adapter):
    """Generated codes teacher-forced give the rows captured while generating, with and without an edit."""
    res = adapter.generate([None, None], 0.2, ["layers.1", "layers.3"], seed=3, settings={"top_k": 50})
    assert res.audio is None and res.tokens.shape == (2, 2, 10) and res.tokens.min() >= 0 and res.tokens.max() < 1024
    again = adapter.generate([None, None], 0.2, [], seed=3, settings={"top_k": 50})
    np.testing.assert_array_equal(again.tokens, res.tokens)  # seeded
    for b in range(2):
        forced = adapter.token_activations([res.tokens[b]], ["layers.1", "layers.3"])[0]
        for h in ("layers.1", "layers.3"):
            torch.testing.assert_close(forced[h], res.acts["main"][h][b], rtol=1e-4, atol=1e-4)
    with adapter.intervene({"layers.1": lambda h: h + 3.0}):
        steered = adapter.generate([None], 0.2, ["layers.3"], seed=3, settings={"top_k": 50})
        forced = adapter.token_activations([steered.tokens[0]], ["layers.3"])[0]["layers.3"]
    assert not np.array_equal(steered.tokens[0], res.tokens[0])
    torch.testing.assert_close(forced, steered.acts["main"]["layers.3"][0], rtol=1e-4, atol=1e-4)
    with pytest.raises(UsageError, match="text prompts"):
        adapter.generate(["a rock song"], 0.2, [])
    with pytest.raises(UsageError, match="more than the model's context of 256"):
        adapter.generate([None], 5.0, [])


def test_steer_generate_and_sweep_write_codes(tiny, tmp_path):
    runner = CliRunner()
    v = np.zeros(64, np.float32)
    v[0] = 1.0
    np.save(tmp_path / "v.npy", v)
    result = runner.invoke(app, ["steer", "generate", "-m", tiny, "--file", str(tmp_path / "v.npy"), "--hookpoint",
                                 "layers.2", "--strength", "8", "--duration-s", "0.2", "-o", str(tmp_path / "gen"),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    clip = record["clips"][0]
    assert "wav" not in clip and np.load(tmp_path / "gen" / clip["codes"]).shape == (2, 10)
    # the generated codes are a code file: extract reads them back
    store = tmp_path / "store"
    result = runner.invoke(app, ["extract", str(tmp_path / "gen" / "clips"), "-o", str(store), "-m", tiny,
                                 "--hookpoint", "layers.1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows_written"] == 20


def test_extract_while_generating_stores_rows_per_track(tiny, tmp_path):
    """`extract --prompt '' -m yue`: generated codes saved in the store, a row per frame per track, equal to
    teacher forcing of those codes."""
    from musicsae_cli.store import ActivationStore

    out = tmp_path / "gen-store"
    result = CliRunner().invoke(app, ["extract", "--prompt", "", "-o", str(out), "-m", tiny, "--hookpoint",
                                      "layers.2", "--duration-s", "0.2", "--set", "samples_per_prompt=2",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    store = ActivationStore.open(out)
    assert store.n_items == 2 and store.n_rows == 2 * 2 * 10
    meta = store.metadata(["item_id", "frame", "track", "codes_path", "time_s"]).to_pylist()
    first = [m for m in meta if m["item_id"] == meta[0]["item_id"]]
    assert [m["track"] for m in first[:2]] == ["vocal", "instrumental"]
    assert [m["frame"] for m in first[:4]] == [0, 0, 1, 1]
    assert first[2]["time_s"] == pytest.approx(0.02)
    codes = np.load(out / first[0]["codes_path"])
    forced = load_adapter(tiny, device="cpu").token_activations([codes], ["layers.2"])[0]["layers.2"].numpy()
    rows = np.arange(len(first))
    np.testing.assert_allclose(store.read_rows("layers.2", rows), forced, atol=2e-3, rtol=2e-3)  # float16 store
    refused = CliRunner().invoke(app, ["extract", "--prompt", "rock", "-o", str(tmp_path / "no"), "-m", tiny,
                                       "--device", "cpu"])
    assert refused.exit_code != 0 and "generates without text prompts" in refused.output
    assert not (tmp_path / "no").exists()
