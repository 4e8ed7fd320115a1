"""The `mmt` family: MMT's network loaded from a checkpoint folder, its event encoding of MIDI, and its adapter.

The tiny checkpoint (models/tiny_mmt.py: dim 32, 2 blocks, 2 heads of 64, MMT's real vocabularies) is written the
way MMT's training writes one (best_model.pt + train-args.json) and loaded through `load`. Hidden states are
checked against a functional re-computation from the state dict alone; labels against the notes of a MIDI file
written here with pretty_midi.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import torch
from torch.nn import functional as F  # noqa: N812

from musicsae_cli.errors import InputError, UsageError
from musicsae_cli.models.base import EditContext, contextual
from musicsae_cli.models.mmt import MmtAdapter, load
from musicsae_cli.models.mmt_checkpoint import CHECKPOINT, TRAIN_ARGS, claims
from musicsae_cli.models.mmt_events import (
    FIELDS,
    INSTRUMENTS,
    N_TOKENS,
    check_codes,
    encode_notes,
    events_from_codes,
    read_events,
)
from musicsae_cli.models.tiny_mmt import TINY_CONFIG, build_tiny_mmt, save_tiny_mmt

pytestmark = [pytest.mark.smoke, pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

# 120 bpm, 480 ticks per beat: a beat is 0.5 s, a step (1/12 beat) 1/24 s = 40 ticks.
STEP = 0.5 / 12
PIANO, VIOLIN = INSTRUMENTS.index("piano") + 1, INSTRUMENTS.index("violin") + 1
# (program, pitch, start_s, steps); the song starts at beat 2, so beats are counted from there.
SONG = [(0, 60, 1.0, 12), (40, 76, 1.0 + STEP, 13), (1, 64, 1.25, 6), (40, 79, 2.5, 36)]
# What MMT makes of it, in event order: (beat, position, pitch, known duration, program, instrument, time_s).
EXPECTED_NOTES = [(0, 0, 60, 12, 0, "piano", 1.0), (0, 1, 76, 12, 40, "violin", 1.0 + STEP),
                  (0, 6, 64, 6, 1, "piano", 1.25), (3, 0, 79, 36, 40, "violin", 2.5)]


def write_midi(path: Path, song=SONG, drums: bool = True, effects: bool = True) -> Path:
    midi = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=120.0)
    tracks: dict[int, pretty_midi.Instrument] = {}
    for program, pitch, start, steps in song:
        inst = tracks.setdefault(program, pretty_midi.Instrument(program=program))
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=start, end=start + steps * STEP))
    midi.instruments.extend(tracks.values())
    if drums:  # drum tracks are not encoded
        kit = pretty_midi.Instrument(program=0, is_drum=True)
        kit.notes.append(pretty_midi.Note(velocity=90, pitch=36, start=1.0, end=1.1))
        midi.instruments.append(kit)
    if effects:  # program 100 (a sound effect) has no MMT instrument
        fx = pretty_midi.Instrument(program=100)
        fx.notes.append(pretty_midi.Note(velocity=90, pitch=50, start=0.0, end=0.5))
        midi.instruments.append(fx)
    midi.write(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mmt") / "tiny-mmt"
    save_tiny_mmt(out, seed=0)
    return out


@pytest.fixture(scope="module")
def adapter(tiny_dir) -> MmtAdapter:
    return load(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def midi_path(tmp_path_factory) -> Path:
    return write_midi(tmp_path_factory.mktemp("midi") / "song.mid")


def random_codes(rng: np.random.Generator, n_notes: int) -> np.ndarray:
    notes = np.stack([np.sort(rng.integers(0, 40, n_notes)), rng.integers(0, 12, n_notes),
                      rng.integers(30, 90, n_notes), rng.integers(1, 60, n_notes),
                      rng.choice([0, 24, 40, 73], n_notes)], axis=1)
    return encode_notes(notes, max_beat=256).codes


# ---- (a) the checkpoint ----
def test_tiny_checkpoint_is_a_plain_state_dict_and_loads_strictly(tiny_dir, adapter):
    assert {p.name for p in tiny_dir.iterdir()} == {CHECKPOINT, TRAIN_ARGS, "manifest.json"}
    state = torch.load(tiny_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    reference = build_tiny_mmt(0).state_dict()
    assert list(state) == list(reference)  # MMT's key names, e.g.:
    assert "decoder.net.token_emb.5.emb.weight" in state and "decoder.net.pos_emb.emb.weight" in state
    assert "decoder.net.attn_layers.layers.3.1.net.3.weight" in state and "decoder.net.to_logits.0.bias" in state
    assert [tuple(state[f"decoder.net.token_emb.{f}.emb.weight"].shape) for f in range(6)] == \
        [(n, 32) for n in (5, 257, 13, 129, 33, 65)]
    loaded = adapter.model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert adapter.config == TINY_CONFIG
    assert adapter.sources["dim"].endswith(TRAIN_ARGS)
    facts = adapter.describe()
    assert facts["family"] == "mmt" and facts["n_layers"] == 2 and facts["hidden_size"] == 32
    assert facts["frame_rate"] is None and facts["sample_rate"] is None and facts["fingerprint"]
    assert json.dumps(facts)  # records in manifests
    assert adapter.hookpoint_widths == {"layers.0": 32, "layers.1": 32}
    assert adapter.resolve_hookpoints("all") == ["layers.0", "layers.1"]
    assert adapter.can("tokens") and adapter.can("intervene") and not adapter.can("audio")


def test_checkpoint_layouts(tiny_dir, adapter, tmp_path):
    # MMT's experiment folder: train-args.json beside checkpoints/best_model.pt
    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_dir / CHECKPOINT, exp / "checkpoints" / CHECKPOINT)
    shutil.copy(tiny_dir / TRAIN_ARGS, exp / TRAIN_ARGS)
    assert load(str(exp), device="cpu").fingerprint == adapter.fingerprint
    # the bare file, no train-args.json: the hyperparameters are read off the weights
    bare = tmp_path / "bare" / "model.pt"
    bare.parent.mkdir()
    shutil.copy(tiny_dir / CHECKPOINT, bare)
    alone = load(str(bare), device="cpu")
    assert alone.config == TINY_CONFIG and alone.fingerprint == adapter.fingerprint
    assert alone.sources["heads"] == "weights" and alone.sources["max_seq_len"] == "weights"
    # which names the family claims: MMT's layouts, not other .pt files
    assert claims(str(tiny_dir)) and claims(str(exp)) and claims(str(exp / "checkpoints" / CHECKPOINT))
    assert not claims(str(bare)) and not claims(str(tmp_path / "nowhere")) and not claims("facebook/musicgen-small")
    script = tmp_path / "ts" / CHECKPOINT
    script.parent.mkdir()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    assert not claims(str(script))  # a TorchScript archive named like a checkpoint
    # lower precision: the same rows, give or take bf16 rounding, returned as float32
    codes = random_codes(np.random.default_rng(3), 12)
    half = load(str(tiny_dir), device="cpu", dtype="bf16")
    assert half.dtype == torch.bfloat16 and half.fingerprint == adapter.fingerprint
    low, full = (a.token_activations([codes], ["layers.1"])[0]["layers.1"] for a in (half, adapter))
    assert low.dtype == torch.float32 and (low - full).abs().max() < 0.1 * full.abs().max()


# ---- (b) rows are the model's own hidden states ----
def reference_hidden_states(state: dict, codes: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """Residual stream after each block, computed from the state dict alone (pre-norm blocks, causal attention with
    64-wide heads, GELU feed-forward), for codes (T, 6)."""
    p = "decoder.net."
    n, dim = codes.shape[0], state[p + "token_emb.0.emb.weight"].shape[1]
    x = sum(state[f"{p}token_emb.{f}.emb.weight"][codes[:, f]] for f in range(6))
    x = x + state[p + "pos_emb.emb.weight"][:n] / dim ** 0.5
    out = []
    n_sub = len({k.split(".")[4] for k in state if k.startswith(p + "attn_layers.layers.")})
    for i in range(n_sub):
        lp = f"{p}attn_layers.layers.{i}."
        h = F.layer_norm(x, (dim,), state[lp + "0.0.weight"], state[lp + "0.0.bias"])
        if i % 2 == 0:
            q, k, v = (h @ state[lp + f"1.to_{w}.weight"].T for w in "qkv")
            q, k, v = (t.reshape(n, heads, 64).transpose(0, 1) for t in (q, k, v))
            scores = q @ k.transpose(1, 2) / 8.0
            scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
            mixed = (scores.softmax(-1) @ v).transpose(0, 1).reshape(n, heads * 64)
            x = x + mixed @ state[lp + "1.to_out.weight"].T + state[lp + "1.to_out.bias"]
        else:
            inner = F.gelu(h @ state[lp + "1.net.0.0.weight"].T + state[lp + "1.net.0.0.bias"])
            x = x + inner @ state[lp + "1.net.3.weight"].T + state[lp + "1.net.3.bias"]
            out.append(x)
    return out


def test_rows_equal_the_models_hidden_states(adapter, tiny_dir):
    rng = np.random.default_rng(0)
    songs = [random_codes(rng, 30), random_codes(rng, 7)]  # two lengths: the batch is right-padded
    acts = adapter.token_activations(songs, ["layers.0", "layers.1"])
    state = torch.load(tiny_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    for song, rows in zip(songs, acts, strict=True):
        ref = reference_hidden_states(state, torch.from_numpy(song), heads=2)
        for i, expected in enumerate(ref):
            got = rows[f"layers.{i}"]
            assert got.shape == (len(song), 32) and got.dtype == torch.float32
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    alone = adapter.token_activations([songs[1]], ["layers.1"])[0]["layers.1"]
    torch.testing.assert_close(alone, acts[1]["layers.1"], atol=1e-6, rtol=1e-6)  # padding changes nothing
    # the last block's rows, normed and read by the heads, are the model's logits
    logits = adapter.logits([songs[0]])[0]
    normed = F.layer_norm(acts[0]["layers.1"], (32,), state["decoder.net.norm.weight"], state["decoder.net.norm.bias"])
    for f in range(6):
        head = normed @ state[f"decoder.net.to_logits.{f}.weight"].T + state[f"decoder.net.to_logits.{f}.bias"]
        torch.testing.assert_close(logits[f], head, atol=1e-5, rtol=1e-5)


# ---- (c) events and labels ----
def test_midi_events_and_labels_follow_the_notes(adapter, midi_path):
    ev = adapter.read_events(midi_path)
    assert ev.codes.dtype == np.int64 and ev.codes.shape == (3 + 2 + len(SONG), 6)
    types = list(ev.labels["type"])
    assert types == ["start-of-song", "instrument", "instrument", "start-of-notes"] + ["note"] * 4 + ["end-of-song"]
    assert ev.codes[:4].tolist() == [[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, PIANO], [1, 0, 0, 0, 0, VIOLIN],
                                     [2, 0, 0, 0, 0, 0]]
    assert ev.codes[-1].tolist() == [4, 0, 0, 0, 0, 0]
    assert list(ev.labels["instrument"][1:3]) == ["piano", "violin"]
    rows = [r for r in ev.rows() if r["type"] == "note"]
    got = [(r["beat"], r["position"], r["pitch"], r["duration"], r["program"], r["instrument"]) for r in rows]
    assert got == [e[:6] for e in EXPECTED_NOTES]
    np.testing.assert_allclose([r["time_s"] for r in rows], [e[6] for e in EXPECTED_NOTES], atol=1e-9)
    assert [(r["pitch_class"], r["octave"]) for r in rows] == [(0, 4), (4, 5), (4, 4), (7, 5)]
    notes = ev.codes[4:-1]
    assert notes[:, 1].tolist() == [1, 1, 1, 4] and notes[:, 2].tolist() == [1, 2, 7, 1]  # code = value + 1
    assert notes[:, 3].tolist() == [61, 77, 65, 80] and notes[:, 4].tolist() == [12, 12, 6, 20]
    assert notes[:, 5].tolist() == [PIANO, VIOLIN, PIANO, VIOLIN]
    assert np.isnan(ev.labels["time_s"][0]) and ev.labels["pitch"][0] == -1
    # decoding the codes alone gives the same musical facts (the program is the instrument's own)
    back = events_from_codes(ev.codes, adapter.n_tokens)
    for key in ("type", "beat", "position", "pitch", "duration", "instrument"):
        assert list(back.labels[key]) == list(ev.labels[key])
    # the beats as written, and MMT's own note list (.npy, .csv) of the shifted song
    raw = read_events(midi_path, shift_to_first_beat=False)
    assert [r["beat"] for r in raw.rows() if r["type"] == "note"] == [2, 2, 2, 5]
    table = np.array([e[:5] for e in EXPECTED_NOTES])
    np.save(midi_path.parent / "song.npy", table)
    np.savetxt(midi_path.parent / "song.csv", table, fmt="%d", delimiter=",",
               header="beat,position,pitch,duration,program", comments="")
    for name in ("song.npy", "song.csv"):
        listed = adapter.read_events(midi_path.parent / name)
        assert np.array_equal(listed.codes, ev.codes) and np.isnan(listed.labels["time_s"]).all()


def test_limits_cut_beats_and_events():
    notes = np.array([(b, 0, 60, 12, 0) for b in range(0, 300, 10)])
    ev = encode_notes(notes, max_beat=256)
    assert ev.labels["beat"].max() == 250 and len(ev) == 3 + 1 + 26
    cut = encode_notes(notes, max_beat=256, max_seq_len=10)
    assert len(cut) == 10 and cut.codes[-1, 0] == 4 and np.array_equal(cut.codes[:9], ev.codes[:9])
    check_codes(ev.codes, [5, 257, 13, 129, 33, 65])


# ---- (d) interventions ----
def test_edit_at_layer0_changes_later_layers_and_is_removed(adapter):
    songs = [random_codes(np.random.default_rng(1), 20)]
    hooks = ["layers.0", "layers.1"]
    before = adapter.token_activations(songs, hooks)[0]
    seen: list[EditContext] = []

    @contextual
    def push(h, ctx):
        seen.append(ctx)
        out = h.clone()
        out[:, 10:] += 3.0  # from event 10 on
        return out

    with adapter.intervene({"layers.0": push}):
        during = adapter.token_activations(songs, hooks)[0]
    after = adapter.token_activations(songs, hooks)[0]
    assert seen and seen[0].start == 0 and seen[0].length == len(songs[0]) and seen[0].batch == 1
    torch.testing.assert_close(during["layers.0"][10:], before["layers.0"][10:] + 3.0)  # captures see the edit
    assert not torch.allclose(during["layers.1"][10:], before["layers.1"][10:], atol=1e-3)  # later layers move
    torch.testing.assert_close(during["layers.1"][:10], before["layers.1"][:10])  # causal: earlier events do not
    for h in hooks:
        assert torch.equal(after[h], before[h])  # gone on exit
    with adapter.intervene({"layers.0": lambda h: h * 0}):
        zeroed = adapter.logits(songs)[0]
    assert not torch.allclose(zeroed[0], adapter.logits(songs)[0][0])
    with pytest.raises(UsageError, match="out of range"):
        with adapter.intervene({"layers.5": lambda h: h}):
            pass


# ---- (e) bad inputs ----
def test_bad_midi_files(tmp_path):
    garbage = tmp_path / "broken.mid"
    garbage.write_bytes(b"MThd\x00\x00\x00\x06 this is not midi")
    with pytest.raises(InputError, match="broken.mid"):
        read_events(garbage)
    silent = tmp_path / "silent.mid"
    pretty_midi.PrettyMIDI().write(str(silent))
    with pytest.raises(InputError, match="empty.*has no notes"):
        read_events(silent)
    drums = write_midi(tmp_path / "drums.mid", song=[], drums=True, effects=True)
    with pytest.raises(InputError, match="empty.*no notes MMT encodes"):
        read_events(drums)
    with pytest.raises(InputError, match="no such MIDI file"):
        read_events(tmp_path / "missing.mid")


def test_codes_outside_the_vocabulary(adapter):
    codes = random_codes(np.random.default_rng(2), 5)
    bad = codes.copy()
    bad[5, 1] = 300  # beat 299: past this model's 256 beats
    with pytest.raises(InputError, match="beat code 300 at event 5 is outside the vocabulary 0..256"):
        adapter.token_activations([codes, bad], ["layers.0"])
    with pytest.raises(InputError, match="pitch code 129"):
        check_codes(np.array([[3, 1, 1, 129, 1, 1]]), N_TOKENS)
    with pytest.raises(InputError, match=r"shape \(4, 5\)"):
        adapter.token_activations([np.zeros((4, 5), dtype=np.int64)], ["layers.0"])
    with pytest.raises(InputError, match="at most 1024"):
        adapter.token_activations([np.zeros((1025, 6), dtype=np.int64)], ["layers.0"])
    with pytest.raises(UsageError, match="unknown hookpoint"):
        adapter.token_activations([codes], ["layer.0"])
    assert len(FIELDS) == 6


def test_state_dicts_that_do_not_match(tiny_dir, tmp_path):
    state = torch.load(tiny_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    renamed = dict(state)
    renamed["decoder.net.extra.weight"] = renamed.pop("decoder.net.norm.weight")
    (tmp_path / "keys").mkdir()
    torch.save(renamed, tmp_path / "keys" / CHECKPOINT)
    with pytest.raises(InputError, match=r"missing 1 keys \(decoder.net.norm.weight\); unexpected 1 keys "
                                         r"\(decoder.net.extra.weight\)"):
        load(str(tmp_path / "keys"), device="cpu")
    (tmp_path / "shapes").mkdir()
    shutil.copy(tiny_dir / CHECKPOINT, tmp_path / "shapes" / CHECKPOINT)
    (tmp_path / "shapes" / TRAIN_ARGS).write_text(json.dumps({"dim": 64, "layers": 2, "heads": 2}))
    with pytest.raises(InputError, match=r"other shapes.*token_emb.0.emb.weight \(5, 32\) vs \(5, 64\)"):
        load(str(tmp_path / "shapes"), device="cpu")
    with pytest.raises(InputError, match="missing"):
        load(str(tiny_dir), device="cpu", layers=3)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": object()}, pickled)
    with pytest.raises(InputError, match="weights-only state dict"):
        load(str(pickled), device="cpu")
    with pytest.raises(InputError, match="no such MMT checkpoint"):
        load(str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(InputError, match="holds no best_model.pt"):
        load(str(tmp_path), device="cpu")
    with pytest.raises(UsageError, match="no option depth"):
        load(str(tiny_dir), device="cpu", depth=2)


def test_extract_midi_folder_through_the_cli(tmp_path):
    """`musicsae extract midi/ -m MMT`: a row per event, labelled with its musical facts, equal to the model's rows."""
    import json

    import pretty_midi
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app
    from musicsae_cli.models import family_of, load_adapter
    from musicsae_cli.models.tiny_mmt import save_tiny_mmt
    from musicsae_cli.store import ActivationStore

    model = save_tiny_mmt(tmp_path / "mmt")["path"]
    assert family_of(model).name == "mmt"
    for label, program in (("piano", 0), ("guitar", 24)):
        (tmp_path / "midi" / label).mkdir(parents=True)
        song = pretty_midi.PrettyMIDI(initial_tempo=120)
        part = pretty_midi.Instrument(program=program)
        part.notes += [pretty_midi.Note(velocity=80, pitch=60 + 2 * i, start=0.5 * i, end=0.5 * i + 0.4)
                       for i in range(6)]
        song.instruments.append(part)
        song.write(str(tmp_path / "midi" / label / "song.mid"))
    out = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "midi"), "-o", str(out), "-m", model,
                                      "--hookpoint", "all", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items_written"] == 2
    store = ActivationStore.open(out)
    assert store.model["family"] == "mmt" and store.frame_rate is None
    meta = store.metadata(["item_id", "type", "pitch", "pitch_class", "instrument", "label", "time_s"]).to_pylist()
    notes = [m for m in meta if m["item_id"] == "piano/song" and m["type"] == "note"]
    assert [m["pitch"] for m in notes] == [60, 62, 64, 66, 68, 70] and [m["pitch_class"] for m in notes][:2] == [0, 2]
    assert [m["time_s"] for m in notes][:3] == [0.0, 0.5, 1.0] and {m["label"] for m in meta} == {"piano", "guitar"}
    adapter = load_adapter(model, device="cpu")
    rows = np.array([i for i, m in enumerate(meta) if m["item_id"] == "piano/song"])
    seq = adapter.read_sequence(tmp_path / "midi" / "piano" / "song.mid")
    ref = adapter.token_activations([seq.tokens], ["layers.1"])[0]["layers.1"].numpy()
    np.testing.assert_allclose(store.read_rows("layers.1", rows), ref, atol=2e-3, rtol=2e-3)  # float16 store


@pytest.mark.slow
def test_feature_dashboard_draws_piano_rolls_for_events(tmp_path):
    """An SAE on MMT rows: the dashboard shows the notes around each top event (no audio to cut)."""
    import json

    import pretty_midi
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app
    from musicsae_cli.models.tiny_mmt import save_tiny_mmt
    from musicsae_cli.store import ActivationStore

    model = save_tiny_mmt(tmp_path / "mmt")["path"]
    for k in range(3):
        song = pretty_midi.PrettyMIDI(initial_tempo=120)
        part = pretty_midi.Instrument(program=0)
        part.notes += [pretty_midi.Note(velocity=80, pitch=50 + (5 * i + k) % 20, start=0.25 * i,
                                        end=0.25 * i + 0.2) for i in range(30)]
        song.instruments.append(part)
        (tmp_path / "midi").mkdir(exist_ok=True)
        song.write(str(tmp_path / "midi" / f"s{k}.mid"))
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [*map(str, args), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    run("extract", tmp_path / "midi", "-o", tmp_path / "store", "-m", model, "--hookpoint", "layers.1",
        "--device", "cpu")
    run("sae", "train", tmp_path / "store", "-o", tmp_path / "sae", "-c", "tiny", "--steps", "20", "--batch-size", "32",
        "--device", "cpu")
    run("sae", "encode", tmp_path / "store", "--sae", tmp_path / "sae", "-o", tmp_path / "lat", "--device", "cpu")
    res = run("analyze", "features", tmp_path / "lat", "-o", tmp_path / "feat", "-c", "tiny")
    assert res["audio"]["clips"] == 0 and res["piano_rolls"] > 0
    feats = json.loads((tmp_path / "feat" / "features.json").read_text())
    meta = ActivationStore.open(tmp_path / "store").metadata(["item_id", "frame", "type"]).to_pylist()
    for entry in feats["latents"]:
        for f in entry["top_frames"]:
            roll = f["roll"]
            assert roll and (tmp_path / "feat" / roll["file"]).is_file()
            lo, hi = roll["events"]
            assert lo <= f["frame"] <= hi and hi - lo <= 32
            notes = [m for m in meta if m["item_id"] == f["item_id"] and lo <= m["frame"] <= hi
                     and m["type"] == "note"]
            assert roll["notes"] == len(notes) and roll["instruments"] == ["piano"]  # MMT's name of program 0
            wav, rate = sf.read(str(tmp_path / "feat" / roll["audio"]["file"]))
            assert rate == 16000 and 0.0 < np.abs(wav).max() <= 0.5 + 1e-3  # rendered, peak-normalised
    page = (tmp_path / "feat" / "latents" / f"{feats['latents'][0]['latent']}.html").read_text()
    assert "piano roll of the notes around top event" in page


# ---- (f) generation ----
GEN_HOOKS = ["layers.0", "layers.1"]


@pytest.fixture
def one_thread():
    """Generation runs many passes over tensors of a few kB: one intra-op thread, as a busy CPU would give them
    no faster and often much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def songwriter(tiny_dir) -> MmtAdapter:
    """The tiny model with head biases that favour notes and small beat steps, so that its songs run for a while
    (the random heads alone end a song within a few events)."""
    a = load(str(tiny_dir), device="cpu")
    heads = a.model.net.to_logits
    with torch.no_grad():
        heads[0].bias[3] += 6.0  # the note type
        heads[1].bias -= 0.3 * torch.arange(heads[1].bias.numel())  # small beat steps
    return a


def check_song(codes: np.ndarray, n: int, prompt: int) -> None:
    """Valid MMT codes: inside the vocabularies, start-of-song first, type and beat never decreasing, fields an
    event type does not use are 0, padding after the song is 0."""
    song = check_codes(codes[:n], TINY_CONFIG.n_tokens)
    assert song[0].tolist() == [0, 0, 0, 0, 0, 0] and (song[1:, 0] > 0).all()
    assert (np.diff(song[:, 0]) >= 0).all() and (np.diff(song[:, 1]) >= 0).all()
    notes, instruments = song[:, 0] == 3, song[:, 0] == 1
    assert (song[notes, 1:] > 0).all() and (song[~notes, 1:5] == 0).all()
    assert (song[instruments, 5] > 0).all() and (song[~notes & ~instruments, 5] == 0).all()
    assert not codes[n:].any()


def test_generated_songs_are_valid_mmt_codes(songwriter, one_thread):
    settings = {"filter_threshold": 0.0, "max_events": 40}
    res = songwriter.generate([None, None, None], 20.0, GEN_HOOKS, seed=3, settings=settings)
    assert res.audio is None and res.tokens.dtype == np.int64 and res.tokens.shape == (3, res.n_frames, 6)
    assert res.prompt_frames == 1 and res.lengths == res.settings["lengths"] and max(res.lengths) == res.n_frames
    assert res.settings["beats"] == 40 and res.settings["seed"] == 3  # 20 s at 120 bpm
    for b, n in enumerate(res.lengths):
        check_song(res.tokens[b], n, 1)
        stop = res.settings["stops"][b]
        assert stop in ("end-of-song", "duration", "max_events")
        assert (res.tokens[b, n - 1, 0] == 4) == (stop == "end-of-song") and (n == 40) >= (stop == "max_events")
        assert res.tokens[b, :n, 1].max() <= 40  # beat codes 1..40: beats 0..39
    assert sum((res.tokens[:, :, 0] == 3).sum(1)) > 10  # notes were written
    for h in GEN_HOOKS:
        assert res.acts["main"][h].shape == (3, res.n_frames, 32)
    # the same seed gives the same songs; another seed others
    again = songwriter.generate([None, None, None], 20.0, GEN_HOOKS, seed=3, settings=settings)
    assert np.array_equal(again.tokens, res.tokens) and again.lengths == res.lengths
    other = songwriter.generate([None, None, None], 20.0, [], seed=4, settings=settings)
    assert not np.array_equal(other.tokens[:, :5], res.tokens[:, :5]) and other.acts == {"main": {}}
    # a short duration: no note at or past its beat
    short = songwriter.generate([None] * 4, 1.0, [], seed=0, settings={**settings, "tempo_bpm": 60.0})
    assert short.settings["beats"] == 1 and (short.tokens[:, :, 1] <= 1).all()
    # instrument-informed: start-of-song, the instruments in code order, start-of-notes
    informed = songwriter.generate([None, None], 20.0, [], seed=0,
                                   settings={**settings, "instruments": "violin,piano"})
    assert informed.prompt_frames == 4 and informed.settings["instruments"] == ["piano", "violin"]
    for b, n in enumerate(informed.lengths):
        assert informed.tokens[b, :4].tolist() == [[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, PIANO],
                                                   [1, 0, 0, 0, 0, VIOLIN], [2, 0, 0, 0, 0, 0]]
        check_song(informed.tokens[b], n, 4)
        assert (informed.tokens[b, 4:n, 0] >= 2).all()  # no instrument event after start-of-notes
    # MMT's own filter (threshold 0.9) picks the event type greedily
    greedy = songwriter.generate([None], 20.0, [], seed=0, settings={"max_events": 12})
    check_song(greedy.tokens[0], greedy.lengths[0], 1)


def assert_rows_are_teacher_forced(adapter, res):
    for b, n in enumerate(res.lengths):
        forced = adapter.token_activations([res.tokens[b, :n]], GEN_HOOKS)[0]
        for h in GEN_HOOKS:
            torch.testing.assert_close(res.acts["main"][h][b, :n], forced[h], atol=1e-4, rtol=1e-4)
            assert not res.acts["main"][h][b, n:].any()


def test_captured_rows_equal_teacher_forcing_with_and_without_edits(songwriter, one_thread):
    settings = {"filter_threshold": 0.0, "max_events": 30}
    plain = songwriter.generate([None, None], 30.0, GEN_HOOKS, seed=1, settings=settings)
    assert len(set(plain.lengths)) > 1 or min(plain.lengths) > 5  # rows of their own lengths
    assert_rows_are_teacher_forced(songwriter, plain)
    seen: list[EditContext] = []
    push = torch.from_numpy(np.random.default_rng(0).standard_normal(32).astype(np.float32)) * 4

    @contextual
    def steer(h, ctx):
        seen.append(ctx)
        out = h.clone()
        out[:, 2:] += push  # from event 2 on: positions must be those of teacher forcing
        return out

    with songwriter.intervene({"layers.0": steer}):
        steered = songwriter.generate([None, None], 30.0, GEN_HOOKS, seed=1, settings=settings)
        seen, generating = [], seen  # what teacher forcing passes is not looked at
        assert_rows_are_teacher_forced(songwriter, steered)
    seen = generating
    assert seen and all(c.start == 0 and c.batch == 2 for c in seen)
    assert [c.length for c in seen[:3]] == [1, 2, 3]  # the whole song so far, each step
    assert not np.array_equal(steered.tokens, plain.tokens)  # the edit changes what is generated
    after = songwriter.generate([None, None], 30.0, GEN_HOOKS, seed=1, settings=settings)
    assert np.array_equal(after.tokens, plain.tokens)  # and is gone on exit


def test_generation_bad_inputs_are_one_line_errors(songwriter, one_thread):
    def one_line(exc):
        assert "\n" not in str(exc.value) and exc.value.hint

    with pytest.raises(UsageError, match="takes no text prompt") as exc:
        songwriter.generate(["a calm song"], 5.0, [])
    one_line(exc)
    with pytest.raises(UsageError, match="cannot continue an audio prompt") as exc:
        songwriter.generate([None], 5.0, [], prompt_audio=np.zeros(16000, dtype=np.float32))
    one_line(exc)
    with pytest.raises(UsageError, match="unknown MMT instrument 'violins' .did you mean violin") as exc:
        songwriter.generate([None], 5.0, [], settings={"instruments": ["violins"]})
    one_line(exc)
    with pytest.raises(UsageError, match="unknown config key 'generation.top_p'|unknown config key 'top_p'"):
        songwriter.generate([None], 5.0, [], settings={"top_p": 0.9})
    with pytest.raises(UsageError, match="positive number of seconds"):
        songwriter.generate([None], 0.0, [])
    with pytest.raises(UsageError, match="no room"):
        songwriter.generate([None], 5.0, [], settings={"max_events": 3, "instruments": ["piano", "violin"]})
    with pytest.raises(UsageError, match="unknown hookpoint"):
        songwriter.generate([None], 5.0, ["layer.0"])
    assert songwriter.text_prompts is False and songwriter.can("generate")


def run_steer_generate(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from musicsae_cli.commands.app import app

    np.save(tmp_path / "v.npy", np.random.default_rng(0).standard_normal(32).astype(np.float32))
    out = tmp_path / "OUT"
    result = CliRunner().invoke(app, ["steer", "generate", "-m", str(tiny_dir), "--file", str(tmp_path / "v.npy"),
                                      "--hookpoint", "layers.1", "--strength", "4", "-o", str(out), "--device", "cpu",
                                      "--gen", "max_events=24", "--json"])
    assert result.exit_code == 0, result.output
    clips = sorted((out / "clips").glob("*.codes.npy"))
    assert clips and not list((out / "clips").glob("*.wav"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["family"] == "mmt" and manifest["sampling"]["max_events"] == 24
    codes = np.load(clips[0])
    assert codes.shape[1] == 6 and codes[0].tolist() == [0, 0, 0, 0, 0, 0]  # start-of-song
    clip = manifest["clips"][0]
    assert len(codes) == clip["frames"]  # the clip's own events, no padding saved
    assert not (codes[1:] == 0).all(axis=1).any()  # padding (all zeros) would read as more start-of-song events


def test_steer_generate_writes_event_codes(tiny_dir, tmp_path, one_thread):
    run_steer_generate(tiny_dir, tmp_path)
