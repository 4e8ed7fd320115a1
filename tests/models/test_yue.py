"""The `yue` family on a tiny LLaMA with YuE's vocabulary layout, saved with save_pretrained and loaded back.

Rows are checked against the model's own hidden states (transformers' output_hidden_states) at the documented
positions: prefix [SOA, <xcodec>], then codebook-0 tokens 45334 + code, vocal and instrumental alternating frame by
frame."""

from __future__ import annotations

import json
from pathlib import Path

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
    with pytest.raises(UsageError, match="more than the model's context of 256"):
        adapter.generate([None], 5.0, [])


def test_steer_generate_and_sweep_write_codes(tiny, tmp_path):
    runner = CliRunner()
    v = np.zeros(64, np.float32)
    v[0] = 1.0
    np.save(tmp_path / "v.npy", v)
    result = runner.invoke(app, ["steer", "generate", "-m", tiny, "--file", str(tmp_path / "v.npy"), "--hookpoint",
                                 "layers.2", "--strength", "8", "--duration-s", "0.2", "-o", str(tmp_path / "gen"),
                                 "--prompt", "[genre] pop [verse] la la", "--device", "cpu", "--json"])
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
    # without its tokenizer the model generates unconditionally only
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in Path(tiny).iterdir():
        if f.name != "tokenizer.model":
            (bare / f.name).write_bytes(f.read_bytes())
    refused = CliRunner().invoke(app, ["extract", "--prompt", "rock", "-o", str(tmp_path / "no"), "-m", str(bare),
                                       "--device", "cpu"])
    assert refused.exit_code != 0 and "generates without text prompts" in refused.output
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / "no").exists()


# ---- prompts: genre tags and lyrics, laid out as YuE's stage 1 reads its first segment ----

SONG = "[Genre] inspiring female uplifting pop\n[verse]\nStaring at the sunset\ncolors paint the sky\n\n[chorus]\nla la"


def test_prompts_split_as_yue_splits_lyrics():
    from musicsae_cli.models.yue_text import split_prompt

    p = split_prompt(SONG)
    assert p.genre == "inspiring female uplifting pop"
    assert p.segments == ["[verse]\nStaring at the sunset\ncolors paint the sky\n\n", "[chorus]\nla la\n\n"]
    one_line = split_prompt("rock male [verse] hello there [chorus] oh oh")
    assert one_line.genre == "rock male" and one_line.segments == ["[verse]\nhello there\n\n", "[chorus]\noh oh\n\n"]
    tags_only = split_prompt("dark jazz piano")
    assert tags_only.segments == [""] and tags_only.genre == "dark jazz piano"


@pytest.mark.smoke
def test_prompt_ids_and_rows_after_the_prompt_are_the_hidden_states(tiny, adapter, tmp_path):
    """The prompt's ids are SentencePiece's own encoding of YuE's head, the segment marker and the first segment
    (checked with the tokenizer file read independently); the stored rows are the model's hidden states at the codes
    that follow them."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(Path(tiny) / "tokenizer.model"))
    head = ("Generate music from the given lyrics segment by segment.\n[Genre] inspiring female uplifting pop\n"
            "[verse]\nStaring at the sunset\ncolors paint the sky\n\n\n[chorus]\nla la\n\n")
    expected = (sp.encode(head) + sp.encode("[start_of_segment]")
                + sp.encode("[verse]\nStaring at the sunset\ncolors paint the sky\n\n"))
    ids, meta = adapter.prompt_ids(SONG)
    assert ids == expected and meta["genre"] == "inspiring female uplifting pop" and meta["lyrics_segments"] == 2
    assert meta["prompt_tokens"] == len(expected) and max(ids) < 32000
    codes = _codes(12, seed=7)
    np.save(tmp_path / "song.npy", codes)
    seq = adapter.read_sequence(tmp_path / "song.npy", text=SONG)
    assert seq.item_meta["prompt"] == SONG and seq.n_rows == 24
    got = adapter.sequence_activations([seq], ["layers.2"])[0]["layers.2"]
    full = torch.tensor([expected + PREFIX + [OFFSET + int(c) for pair in codes.T for c in pair] + [32002]])
    with torch.no_grad():
        hidden = adapter.model(input_ids=full, output_hidden_states=True).hidden_states[3]
    start = len(expected) + 2
    torch.testing.assert_close(got, hidden[0, start:start + 24], rtol=1e-5, atol=1e-5)
    plain = adapter.sequence_activations([adapter.read_sequence(tmp_path / "song.npy")], ["layers.2"])[0]["layers.2"]
    assert not torch.allclose(plain, got, atol=1e-3)  # the prompt is read: rows change with it


def test_generation_from_a_prompt_is_what_teacher_forcing_reads(adapter):
    texts = [SONG, "", SONG]
    res = adapter.generate(texts, 0.1, ["layers.1"], seed=5, settings={"repetition_penalty": 1.3})
    assert res.tokens.shape == (3, 2, 5)
    for b, text in enumerate(texts):
        forced = adapter.token_activations([res.tokens[b]], ["layers.1"], [text or None])[0]["layers.1"]
        torch.testing.assert_close(forced, res.acts["main"]["layers.1"][b], rtol=1e-4, atol=1e-4)
    long = "[genre] " + "pop " * 300
    with pytest.raises(UsageError, match="more than the model's context of 256"):
        adapter.generate([long], 0.1, [])


def test_extract_with_prompts_records_them_and_refuses_what_does_not_fit(tiny, tmp_path):
    from musicsae_cli.store import ActivationStore

    root = tmp_path / "songs"
    root.mkdir()
    np.save(root / "a.npy", _codes(8, 1))
    np.save(root / "b.npy", _codes(8, 2))
    (tmp_path / "songs.csv").write_text('path,lyrics\n' + f'{root / "a.npy"},"{SONG}"\n'
                                        + f'{root / "b.npy"},"[genre] rock [verse] hey"\n')
    out = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "songs.csv"), "-o", str(out), "-m", tiny,
                                      "--hookpoint", "layers.1", "--text-column", "lyrics", "--device", "cpu",
                                      "--json"])
    assert result.exit_code == 0, result.output
    store = ActivationStore.open(out)
    items = {m["item_id"]: m for m in store.items().to_pylist()}
    assert items["songs/a"]["genre"] == "inspiring female uplifting pop"
    assert items["songs/b"]["lyrics_segment"] == "[verse]\nhey"
    rows = np.array([i for i, m in enumerate(store.metadata(["item_id"]).to_pylist()) if m["item_id"] == "songs/b"])
    ref = load_adapter(tiny, device="cpu").token_activations([np.load(root / "b.npy")], ["layers.1"],
                                                             ["[genre] rock [verse] hey"])[0]["layers.1"].numpy()
    np.testing.assert_allclose(store.read_rows("layers.1", rows), ref, atol=2e-3, rtol=2e-3)
    # a prompt longer than the context: one line, nothing written
    long = tmp_path / "long"
    result = CliRunner().invoke(app, ["extract", str(root / "a.npy"), "-o", str(long), "-m", tiny, "--text",
                                      "[genre] " + "pop " * 300, "--device", "cpu", "--hookpoint", "layers.0"])
    assert result.exit_code != 0 and "longer than the model's context of 256" in result.output
    assert "shorten the prompt" in result.output and not long.exists()
    # MMT takes no text
    result = CliRunner().invoke(app, ["extract", str(root / "a.npy"), "-o", str(long), "-m", tiny.replace(
        "model", "none"), "--text", "x"])
    assert result.exit_code != 0 and not long.exists()


def test_tokenizer_problems_are_one_line(tiny, tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a SentencePiece model"):
        load_adapter(tiny, device="cpu", options={"tokenizer": str(bad)})
    with pytest.raises(InputError, match="does not exist"):
        load_adapter(tiny, device="cpu", options={"tokenizer": str(tmp_path / "missing.model")})
    with pytest.raises(UsageError, match="overlapping the layout's special and audio ids from 100"):
        load_adapter(tiny, device="cpu", options={"layout": {"prefix": [100, 101]}})


# ---- audio through the codec (a tiny X-Codec saved with the model, loaded with transformers' XcodecModel) ----

@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory):
    return save_tiny_yue(tmp_path_factory.mktemp("yue-codec") / "model", seed=3, max_positions=512, codec=True)["path"]


def _write_stems(root, name: str, seconds: float = 0.5):
    """A `data split --two-stems vocals` output: stems/<stem>/<name>.wav and manifest.csv."""
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    audio = {"vocals": 0.3 * np.sin(2 * np.pi * 330 * t), "instrumental": 0.2 * np.sign(np.sin(2 * np.pi * 55 * t))}
    rows = []
    for stem, x in audio.items():
        (root / stem).mkdir(parents=True, exist_ok=True)
        sf.write(root / stem / f"{name}.wav", x.astype(np.float32), 16000)
        rows.append(f"{root / stem / name}.wav,{stem}/{name},{name},{stem},/songs/{name}.wav,{name}")
    manifest = root / "manifest.csv"
    old = manifest.read_text().splitlines()[1:] if manifest.is_file() else []
    manifest.write_text("\n".join(["path,item_id,group,stem,source_path,source_item", *old, *rows]) + "\n")
    return {stem: root / stem / f"{name}.wav" for stem in audio}


@pytest.mark.smoke
@pytest.mark.slow
def test_stems_are_encoded_by_the_codec_and_read_as_tracks(tiny_codec, tmp_path):
    """`extract STEMS/` (a data split output): each song's vocal and instrumental stems go through the codec; the
    rows equal the model's hidden states at the codes transformers' XcodecModel gives for each stem (vocal first)."""
    from transformers import XcodecModel

    from musicsae_cli.audio.io import load_audio
    from musicsae_cli.store import ActivationStore

    stems = _write_stems(tmp_path / "stems", "song")
    _write_stems(tmp_path / "stems", "other", seconds=0.3)
    out = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "stems"), "-o", str(out), "-m", tiny_codec,
                                      "--hookpoint", "layers.1", "--text", "[genre] pop [verse] la la",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    store = ActivationStore.open(out)
    items = {m["item_id"]: m for m in store.items().to_pylist()}
    assert set(items) == {"song", "other"} and items["song"]["codec_frames"] == 25
    assert items["song"]["vocal_path"].endswith("vocals/song.wav") and items["song"]["genre"] == "pop"
    codec = XcodecModel.from_pretrained(f"{tiny_codec}/codec").eval()
    codes = []
    for stem in ("vocals", "instrumental"):  # the layout's order: vocal, instrumental
        x = torch.from_numpy(load_audio(stems[stem], sample_rate=16000)[0])[None, None]
        with torch.no_grad():
            codes.append(codec.encode(x, bandwidth=0.5).audio_codes[0, 0].numpy())
    codes = np.stack(codes)
    assert not np.array_equal(codes[0], codes[1])
    adapter = load_adapter(tiny_codec, device="cpu")
    prompt = adapter.prompt_ids("[genre] pop [verse] la la")[0]
    ids = torch.tensor([prompt + PREFIX + [OFFSET + int(c) for pair in codes.T for c in pair] + [32002]])
    with torch.no_grad():
        hidden = adapter.model(input_ids=ids, output_hidden_states=True).hidden_states[2][0].numpy()
    rows = np.array([i for i, m in enumerate(store.metadata(["item_id"]).to_pylist()) if m["item_id"] == "song"])
    start = len(prompt) + 2
    np.testing.assert_allclose(store.read_rows("layers.1", rows), hidden[start:start + 50], atol=2e-3, rtol=2e-3)
    # a stem missing for a track: one line per item
    with pytest.raises(InputError, match="no stem for track instrumental"):
        adapter.read_sequence(stems["vocals"], stems={"vocals": str(stems["vocals"])})


@pytest.mark.slow
def test_generation_with_the_codec_writes_audio_and_codes(tiny_codec, tmp_path):
    """Generated codes decode to audio: the clip equals the sum of the tracks decoded by XcodecModel itself."""
    from transformers import XcodecModel

    adapter = load_adapter(tiny_codec, device="cpu")
    res = adapter.generate(["[genre] pop"], 0.2, [], seed=1)
    assert res.audio.shape == (1, 1, 3200) and res.tokens.shape == (1, 2, 10)
    codec = XcodecModel.from_pretrained(f"{tiny_codec}/codec").eval()
    with torch.no_grad():
        ref = sum(codec.decode(torch.from_numpy(res.tokens[0, j])[None, None]).audio_values[0, 0] for j in range(2))
    np.testing.assert_allclose(res.audio[0, 0], ref.numpy(), atol=1e-5)
    np.save(tmp_path / "v.npy", np.ones(64, np.float32))
    result = CliRunner().invoke(app, ["steer", "generate", "-m", tiny_codec, "--prompt", "[genre] pop",
                                      "--file", str(tmp_path / "v.npy"), "--hookpoint", "layers.1", "--duration-s",
                                      "0.2", "-o", str(tmp_path / "gen"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    clip = json.loads((tmp_path / "gen" / "manifest.json").read_text())["clips"][0]
    assert (tmp_path / "gen" / clip["wav"]).is_file() and np.load(tmp_path / "gen" / clip["codes"]).shape == (2, 10)


def test_codec_problems_are_one_line(tiny_codec, tmp_path):
    with pytest.raises(UsageError, match="does not match the token layout: frame rate 50"):
        load_adapter(tiny_codec, device="cpu", options={"layout": {"frame_rate": 75.0}})
    with pytest.raises(InputError, match="not an X-Codec checkpoint"):
        load_adapter(tiny_codec, device="cpu", options={"codec": str(tmp_path)})
    plain = load_adapter("tiny-yue", device="cpu")
    with pytest.raises(UsageError, match="codec, which is not loaded"):
        plain.encode_stems({"vocals": "a.wav", "instrumental": "b.wav"})
