"""`data split`: a tiny HTDemucs saved in Demucs's repository layout and loaded through get_model; stems equal
apply_model run directly, two-stem sums, bags, layout and manifest, channels and rates, resume, bad input."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsae_cli.audio.manifest import load_dataset
from musicsae_cli.audio.split import SplitConfig, _model_calls, separate, split_dataset
from musicsae_cli.audio.tiny_demucs import save_tiny_demucs
from musicsae_cli.errors import AudioError, InputError, OutputExistsError

MODEL_SR = 44100
STEMS = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A local model repository: one tiny single model and a bag of two."""
    path = tmp_path_factory.mktemp("demucs") / "repo"
    save_tiny_demucs(path)
    save_tiny_demucs(path, name="tiny-bag", seed=5, bag_size=2)
    return path


def _write(path, data, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype="FLOAT")
    return path


def _music(seconds, sr, channels, seed=0):
    """(N, C) tones plus a little noise, so every stem has something to do."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * (110 + 50 * seed) * t) + 0.2 * np.sign(np.sin(2 * np.pi * 2 * t)) * \
        np.sin(2 * np.pi * 880 * t) + 0.02 * rng.standard_normal(len(t))
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture
def songs(tmp_path):
    """Two class folders: a stereo file at the model's rate and a mono file at 22.05 kHz."""
    root = tmp_path / "songs"
    _write(root / "rock" / "one.wav", _music(1.0, MODEL_SR, 2), MODEL_SR)
    _write(root / "jazz" / "two.wav", _music(0.8, 22050, 1, seed=1)[:, 0], 22050)
    return root


def _direct(model_dir, name, audio, shifts=0, seed=0):
    """Stems by loading the model with get_model and calling apply_model on the normalised mix directly."""
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    model = get_model(name, repo=model_dir)
    wav = torch.from_numpy(audio)
    ref = wav.mean(0)
    random.seed(seed)
    out = apply_model(model, ((wav - ref.mean()) / (ref.std() + 1e-8))[None], shifts=shifts, overlap=0.25)
    return (out[0] * (ref.std() + 1e-8) + ref.mean()).numpy()


def _read(path):
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.T, sr


@pytest.mark.smoke
@pytest.mark.slow
def test_layout_manifest_channels_and_rates(runner, app, repo, songs, tmp_path):
    out = tmp_path / "stems"
    result = runner.invoke(app, ["data", "split", str(songs), "-o", str(out), "--repo", str(repo), "-m",
                                 "tiny-htdemucs", "--shifts", "0", "--json"])
    assert result.exit_code == 0, result.output
    for stem in STEMS:
        one, sr1 = _read(out / stem / "rock" / "one.wav")
        two, sr2 = _read(out / stem / "jazz" / "two.wav")
        assert sr1 == sr2 == MODEL_SR and one.shape == (2, MODEL_SR)
        assert two.shape == (1, round(0.8 * MODEL_SR))  # mono in, mono out, at the model's rate
    m = load_dataset(out)
    assert len(m) == 8 and m.label_columns == ["label", "stem", "source_path", "source_item"]
    row = next(r for r in m.rows if r["item_id"] == "vocals/jazz/two")
    assert row["stem"] == "vocals" and row["label"] == "jazz" and row["group"] == "jazz/two"
    assert row["source_path"] == str((songs / "jazz" / "two.wav").resolve()) and row["channels"] == 1
    assert row["sample_rate"] == MODEL_SR and row["duration_s"] == pytest.approx(0.8)


@pytest.mark.smoke
@pytest.mark.slow
def test_stems_equal_apply_model_called_directly(repo, songs, tmp_path):
    mix, _ = _read(songs / "rock" / "one.wav")
    for shifts, seed in ((0, 0), (1, 7)):
        out = tmp_path / f"s{shifts}"
        split_dataset(songs / "rock" / "one.wav", out, SplitConfig(model="tiny-htdemucs", repo=str(repo),
                                                                   shifts=shifts, seed=seed, bit_depth=32))
        direct = _direct(repo, "tiny-htdemucs", mix, shifts=shifts, seed=seed)
        for i, stem in enumerate(STEMS):
            np.testing.assert_allclose(_read(out / stem / "one.wav")[0], direct[i], atol=1e-5)
    import sys

    assert "torchaudio" not in sys.modules  # the Demucs modules used here never need it


@pytest.mark.slow
def test_two_stems_is_one_stem_and_the_sum_of_the_others(repo, songs, tmp_path):
    cfg = {"model": "tiny-htdemucs", "repo": str(repo), "shifts": 0, "bit_depth": 32}
    split_dataset(songs, tmp_path / "all", SplitConfig(**cfg))
    res = split_dataset(songs, tmp_path / "two", SplitConfig(**cfg, two_stems="vocals"))
    assert res["stems"] == ["vocals", "instrumental"] and res["stem_files"] == 4
    for rel in ("rock/one.wav", "jazz/two.wav"):
        parts = {s: _read(tmp_path / "all" / s / rel)[0] for s in STEMS}
        np.testing.assert_allclose(_read(tmp_path / "two" / "vocals" / rel)[0], parts["vocals"], atol=1e-6)
        np.testing.assert_allclose(_read(tmp_path / "two" / "instrumental" / rel)[0],
                                   parts["drums"] + parts["bass"] + parts["other"], atol=1e-5)


@pytest.mark.slow
def test_bag_of_models_averages_its_members(repo, songs, tmp_path):
    res = split_dataset(songs / "rock" / "one.wav", tmp_path / "bag",
                        SplitConfig(model="tiny-bag", repo=str(repo), shifts=0, bit_depth=32))
    assert res["model"]["bag_size"] == 2
    mix, _ = _read(songs / "rock" / "one.wav")
    members = [_direct(repo, f"tiny-bag-m{i}", mix) for i in range(2)]
    # the bag averages its members' estimates of the normalised mix; the same scaling undoes it for both
    np.testing.assert_allclose(_read(tmp_path / "bag" / "bass" / "one.wav")[0], (members[0][1] + members[1][1]) / 2,
                               atol=1e-5)


@pytest.mark.slow
def test_channels_model_rate_and_format_options(repo, songs, tmp_path):
    cfg = SplitConfig(model="tiny-htdemucs", repo=str(repo), shifts=0, channels="model", sample_rate=16000,
                      format="flac", two_stems="bass", rest_name="rest")
    split_dataset(songs / "jazz" / "two.wav", tmp_path / "o", cfg)
    info = sf.info(str(tmp_path / "o" / "rest" / "two.flac"))
    assert (info.channels, info.samplerate, info.frames, info.subtype) == (2, 16000, round(0.8 * 16000), "PCM_16")


@pytest.mark.slow
def test_progress_counts_every_segment_pass(repo):
    from musicsae_cli.audio.demucs_models import load_separation_model

    model = load_separation_model("tiny-htdemucs", repo)
    audio = _music(4.0, MODEL_SR, 2).T  # 2 s segments
    for overlap, expected in ((0.25, 3), (0.5, 4)):
        cfg = SplitConfig(shifts=0, overlap=overlap)
        ends: list[dict] = []
        separate(model, audio, cfg, callback=lambda d, ends=ends: ends.append(d) if d["state"] == "end" else None)
        assert len(ends) == _model_calls(model, audio.shape[1], cfg) == expected


@pytest.mark.slow
def test_resume_skips_finished_files_and_redoes_missing_ones(repo, songs, tmp_path, monkeypatch):
    import musicsae_cli.audio.split as split_mod

    _write(songs / "jazz" / "three.wav", _music(0.5, MODEL_SR, 2, seed=3), MODEL_SR)
    cfg = SplitConfig(model="tiny-htdemucs", repo=str(repo), shifts=0, two_stems="vocals")
    out = tmp_path / "stems"
    # a first run on a subset (a manifest beside the audio, so names are relative to the same folder)
    (songs / "subset.csv").write_text("path,label\nrock/one.wav,rock\n")
    res = split_dataset(songs / "subset.csv", out, cfg)
    assert res["separated"] == 1
    first = (out / "vocals" / "rock" / "one.wav").stat().st_mtime_ns
    # an interrupted run: the second file to separate raises; finished files stay, nothing half-written remains
    real, seen = split_mod.separate, []

    def interrupt(*args, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(split_mod, "separate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(songs, out, cfg)
    monkeypatch.setattr(split_mod, "separate", real)
    head = load_dataset(out)
    assert {r["item_id"] for r in head.rows} == {"vocals/rock/one", "instrumental/rock/one", "vocals/jazz/three",
                                                 "instrumental/jazz/three"}
    assert not list(out.rglob(".partial-*")) and not list(out.rglob("*.tmp*"))
    assert '"status": "incomplete"' in (out / "manifest.json").read_text()
    # the rerun separates only what is missing, also after a stem file was deleted
    (out / "instrumental" / "jazz" / "three.wav").unlink()
    res = split_dataset(songs, out, cfg)
    assert (res["separated"], res["already_done"], res["resumed"]) == (2, 1, True)
    assert (out / "vocals" / "rock" / "one.wav").stat().st_mtime_ns == first  # not redone
    assert len(load_dataset(out)) == 3 * 2
    assert '"status": "complete"' in (out / "manifest.json").read_text()


@pytest.mark.slow
def test_bad_input(runner, app, repo, songs, tmp_path):
    base = ["data", "split", str(songs), "--repo", str(repo), "-c", "split-tiny"]
    # a model that is not in the repository: list what is there
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "o"), "-m", "htdemucs"])
    assert result.exit_code == 2 and "no model 'htdemucs'" in result.stderr
    assert "available: tiny-bag, tiny-bag-m0, tiny-bag-m1, tiny-htdemucs" in result.stderr
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "o"), "--repo", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "model repository not found" in result.stderr
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "o"), "--two-stems", "piano"])
    assert result.exit_code == 2 and "no stem 'piano'" in result.stderr and "drums, bass, other, vocals" in \
        result.stderr
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "o"), "--segment", "3"])
    assert result.exit_code == 2 and "longer than the model allows (2 s)" in result.stderr
    # the output inside the input folder
    result = runner.invoke(app, [*base, "-o", str(songs / "stems")])
    assert result.exit_code == 2 and "inside the input folder" in result.stderr and not (songs / "stems").exists()
    # an unreadable file is skipped and listed; --strict fails on it
    (songs / "rock" / "broken.wav").write_bytes(b"RIFF....WAVE nothing")
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "o"), "--two-stems", "vocals"])
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.stdout and "broken.wav" in result.stdout and len(load_dataset(tmp_path / "o")) == 4
    with pytest.raises(AudioError):
        split_dataset(songs, tmp_path / "strict", SplitConfig(model="tiny-htdemucs", repo=str(repo), strict=True))
    # rerunning into the same output with other settings is refused; --overwrite starts over
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "other settings (two_stems)" in result.stderr
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "o"), "--overwrite"])
    assert result.exit_code == 0 and not (tmp_path / "o" / "instrumental").exists()
    # a folder that is not a split output is never reused
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="already exists"):
        split_dataset(songs, tmp_path / "mine", SplitConfig(model="tiny-htdemucs", repo=str(repo)))


def test_save_tiny_demucs_cli_and_real_loader(runner, app, tmp_path):
    from demucs.apply import BagOfModels
    from demucs.pretrained import get_model

    result = runner.invoke(app, ["model", "save-tiny-demucs", "-o", str(tmp_path / "r"), "--bag-size", "3"])
    assert result.exit_code == 0, result.output
    bag = get_model("tiny-htdemucs", repo=tmp_path / "r")
    assert isinstance(bag, BagOfModels) and len(bag.models) == 3 and bag.sources == STEMS
    result = runner.invoke(app, ["model", "save-tiny-demucs", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "already exists" in result.stderr
    result = runner.invoke(app, ["model", "save-tiny-demucs", "-o", str(tmp_path / "r"), "--overwrite"])
    assert result.exit_code == 0 and not isinstance(get_model("tiny-htdemucs", repo=tmp_path / "r"), BagOfModels)
    with open(tmp_path / "r" / "x.csv", "w") as fh:  # unrelated files in a repository are left alone
        csv.writer(fh).writerow(["a"])
    assert sorted(p.suffix for p in (tmp_path / "r").iterdir()) == [".csv", ".th"]


@pytest.mark.smoke
@pytest.mark.slow
def test_stems_feed_extract_with_provenance(repo, songs, tmp_path, tiny_adapter):
    from musicsae_cli.extract.audio import extract_audio
    from musicsae_cli.extract.config import ExtractConfig
    from musicsae_cli.store import ActivationStore

    split_dataset(songs, tmp_path / "stems", SplitConfig(model="tiny-htdemucs", repo=str(repo), shifts=0,
                                                         two_stems="vocals"))
    extract_audio(tmp_path / "stems", tmp_path / "store",
                  ExtractConfig(model="tiny-musicgen", device="cpu", store_dtype="float32", hookpoints="layers.1"),
                  adapter=tiny_adapter)
    items = {i["item_id"]: i for i in ActivationStore.open(tmp_path / "store").items().to_pylist()}
    assert sorted(items) == ["instrumental/jazz/two", "instrumental/rock/one", "vocals/jazz/two", "vocals/rock/one"]
    item = items["instrumental/rock/one"]
    assert (item["stem"], item["label"], item["group"], item["source_item"]) == ("instrumental", "rock", "rock/one",
                                                                                 "rock/one")
    assert item["source_path"] == str((songs / "rock" / "one.wav").resolve()) and item["n_frames"] == 50


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_stems(repo, songs, tmp_path):
    cfg = {"model": "tiny-htdemucs", "repo": str(repo), "shifts": 1, "seed": 3, "bit_depth": 32}
    split_dataset(songs, tmp_path / "cpu", SplitConfig(**cfg, device="cpu"))
    res = split_dataset(songs, tmp_path / "gpu", SplitConfig(**cfg, device="cuda"))
    assert res["device"].startswith("cuda")
    for stem in STEMS:
        np.testing.assert_allclose(_read(tmp_path / "gpu" / stem / "rock" / "one.wav")[0],
                                   _read(tmp_path / "cpu" / stem / "rock" / "one.wav")[0], atol=1e-3)


def test_nothing_usable_is_an_error(repo, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.wav").write_bytes(b"RIFF nothing")
    with pytest.raises(InputError, match="no usable audio among 1 files"):
        split_dataset(tmp_path / "in", tmp_path / "out", SplitConfig(model="tiny-htdemucs", repo=str(repo)))


class _Touch:
    """Unpickling this would create a file: a stand-in for code hidden in a model file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.smoke
def test_model_files_are_read_weights_only(runner, app, songs, tmp_path):
    """A .th whose pickle would run code is refused before anything runs; a Demucs package loads."""
    repo_dir = tmp_path / "evil-repo"
    repo_dir.mkdir()
    marker = tmp_path / "ran"
    torch.save({"klass": _Touch(marker), "args": [], "kwargs": {}, "state": {}}, repo_dir / "evil.th")
    result = runner.invoke(app, ["data", "split", str(songs), "-o", str(tmp_path / "out"), "--repo", str(repo_dir),
                                 "-m", "evil"])
    assert result.exit_code == 2, result.output
    assert "holds more than model weights" in result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.smoke
@pytest.mark.slow
def test_safetensors_model_in_a_local_repository(repo, songs, tmp_path):
    """The hub's safetensors layout (class and init arguments in the metadata) loads from a local folder too, and
    separates exactly like the .th copy of the same weights."""
    import json

    from demucs.pretrained import get_model
    from safetensors.torch import save_file

    model = get_model("tiny-htdemucs", repo=repo)
    member = model.models[0] if hasattr(model, "models") else model
    args, kwargs = member._init_args_kwargs
    st_repo = tmp_path / "st-repo"
    st_repo.mkdir()
    save_file({k: v.contiguous() for k, v in member.state_dict().items()}, str(st_repo / "tiny-st.safetensors"),
              metadata={"klass": "demucs.htdemucs.HTDemucs", "args": json.dumps(list(args)),
                        "kwargs": json.dumps(kwargs)})
    cfg = dict(shifts=0, overlap=0.25)
    a = split_dataset(songs / "rock", tmp_path / "a", SplitConfig(model="tiny-htdemucs", repo=str(repo), **cfg))
    b = split_dataset(songs / "rock", tmp_path / "b", SplitConfig(model="tiny-st", repo=str(st_repo), **cfg))
    assert a["separated"] == b["separated"] == 1
    for stem in STEMS:
        x, _ = _read(tmp_path / "a" / stem / "one.wav")
        y, _ = _read(tmp_path / "b" / stem / "one.wav")
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.slow
def test_non_finite_audio_is_skipped_and_listed_and_the_next_file_separated(runner, app, repo, tmp_path):
    """A file with NaN/Inf samples is bad input: skipped and listed, the file after it still separated; --strict
    fails naming it."""
    import json

    src = tmp_path / "in"
    bad = _music(1.0, MODEL_SR, 2)
    bad[MODEL_SR // 2, 1] = np.nan
    _write(src / "a_nan.wav", bad, MODEL_SR)
    _write(src / "b_good.wav", _music(0.5, MODEL_SR, 2, seed=1), MODEL_SR)
    inf = _music(0.5, 22050, 1, seed=2)[:, 0]
    inf[-1] = -np.inf
    _write(src / "c_inf.wav", inf, 22050)
    base = ["data", "split", str(src), "--repo", str(repo), "-m", "tiny-htdemucs", "--shifts", "0"]
    out = tmp_path / "stems"
    result = runner.invoke(app, [*base, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert {s["path"].rsplit("/", 1)[1]: s["reason"] for s in res["skipped"]} == {
        "a_nan.wav": "non-finite samples (NaN/Inf) at 0.50 s", "c_inf.wav": "non-finite samples (NaN/Inf) at 0.50 s"}
    assert res["separated"] == 1 and sorted(r["item_id"] for r in load_dataset(out).rows) == \
        [f"{s}/b_good" for s in sorted(STEMS)]
    assert all(np.isfinite(_read(out / s / "b_good.wav")[0]).all() for s in STEMS)
    assert not any((out / s / "a_nan.wav").exists() for s in STEMS)
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "strict"), "--strict"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {src / 'a_nan.wav'}: non-finite samples (NaN/Inf) at 0.50 s")


@pytest.mark.slow
def test_overwrite_keeps_the_old_stems_until_the_new_ones_are_complete(repo, songs, tmp_path, interrupt_on_call):
    import musicsae_cli.audio.split as split_mod

    out = tmp_path / "stems"
    split_dataset(songs, out, SplitConfig(model="tiny-htdemucs", repo=str(repo), shifts=0, two_stems="vocals"))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.wav")}
    four = SplitConfig(model="tiny-htdemucs", repo=str(repo), shifts=0)  # all four stems this time
    restore = interrupt_on_call(split_mod, "separate", 2)
    with pytest.raises(KeyboardInterrupt):
        split_dataset(songs, out, four, overwrite=True)
    restore()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.wav")} == before  # the old stems, untouched
    assert len(load_dataset(out)) == len(before) and (tmp_path / ".stems.overwrite").is_dir()
    res = split_dataset(songs, out, four, overwrite=True)  # the same command resumes the overwrite
    assert res["resumed"] and res["already_done"] == 1 and res["path"] == str(out)
    assert {r["stem"] for r in load_dataset(out).rows} == {"drums", "bass", "other", "vocals"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".stems")) == []
