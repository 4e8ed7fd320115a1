"""`sae train` end to end on a store with a known sparse structure: quality, split, sweep, resume, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

import musicsae_cli.sae.loop as loop
from musicsae_cli.errors import ConfigError, InputError, MusicSAEError, OutputExistsError
from musicsae_cli.sae.config import SAETrainConfig
from musicsae_cli.sae.train import sae_dir, train_sae
from musicsae_cli.store import ActivationStore

from .conftest import make_sparse_store


def cfg(**kw) -> SAETrainConfig:
    base = dict(architecture="topk", expansion_factor=4, k=4, batch_size=128, epochs=12, lr=1e-2, lr_warmup_steps=10,
                eval_every=80, checkpoint_every=25, log_every=5, device="cpu", init_rows=2048)
    return SAETrainConfig(**{**base, **kw})


@pytest.mark.smoke
@pytest.mark.slow
def test_topk_learns_the_structure_and_writes_everything(sparse_store, tmp_path):
    store, dirs = sparse_store
    res = train_sae(store, tmp_path / "run", cfg())
    m = res["members"]["sae"]
    assert m["explained_variance"] > 0.85 and m["l0"] == pytest.approx(4.0)
    run = tmp_path / "run"
    for name in ("manifest.json", "config.yaml", "train_log.jsonl", "eval_log.jsonl", "eval.csv", "curves.png",
                 "density.png", "final_metrics.json", "cfg.json", "sae_weights.safetensors",
                 "sparsity.safetensors"):  # one SAE: saved in the run folder itself, never RUN/sae/...
        assert (run / name).is_file(), name
    assert not (run / "sae").exists() and sae_dir(run) == run
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    # decoder rows line up with the true directions
    from musicsae_cli.sae.io import load_sae

    sae, saved = load_sae(sae_dir(run))
    assert saved["hook_name"] == "layers.0" and saved["d_sae"] == 128
    w_dec = sae.W_dec.detach().numpy()
    cos = (dirs @ (w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)).T).max(axis=1)
    assert np.median(cos) > 0.8


def test_split_keeps_groups_on_one_side(sparse_store, tmp_path):
    from musicsae_cli.sae.data import split_rows

    store = ActivationStore.open(sparse_store[0])
    split = split_rows(store, [], 0.25, "group", seed=0)
    groups = np.asarray(store.metadata(["group"]).column("group").to_pylist())
    assert not set(groups[split.train]) & set(groups[split.val])
    assert split.val.size > 0 and split.train.size + split.val.size == store.n_rows
    again = split_rows(store, [], 0.25, "group", seed=0)
    assert np.array_equal(again.val, split.val)


@pytest.mark.slow
def test_sweep_trains_several_from_one_pass(sparse_store, tmp_path):
    res = train_sae(sparse_store[0], tmp_path / "sweep", cfg(sweep={"k": [2, 8]}, epochs=2))
    assert set(res["members"]) == {"k=2", "k=8"}
    assert res["members"]["k=8"]["explained_variance"] > res["members"]["k=2"]["explained_variance"]
    log = [json.loads(line) for line in (tmp_path / "sweep" / "train_log.jsonl").read_text().splitlines()]
    steps = {m: [r["step"] for r in log if r["member"] == m] for m in ("k=2", "k=8")}
    assert steps["k=2"] == steps["k=8"] and steps["k=2"]
    with pytest.raises(InputError, match="--member"):
        sae_dir(tmp_path / "sweep")
    assert sae_dir(tmp_path / "sweep", "k=8").name == "k=8"


@pytest.mark.smoke
@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(sparse_store, tmp_path, interrupt_on_call):
    from musicsae_cli.sae.io import load_sae

    train_sae(sparse_store[0], tmp_path / "whole", cfg())
    restore = interrupt_on_call(loop, "train_step", 60)  # after the checkpoints at steps 25 and 50
    with pytest.raises(KeyboardInterrupt):
        train_sae(sparse_store[0], tmp_path / "part", cfg())
    restore()
    with pytest.raises(InputError, match="not finished"):
        sae_dir(tmp_path / "part")
    res = train_sae(sparse_store[0], tmp_path / "part", cfg(), resume=True)
    assert res["resumed_from"] == 50
    a, _ = load_sae(sae_dir(tmp_path / "whole"))
    b, _ = load_sae(sae_dir(tmp_path / "part"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert np.allclose(x.numpy(), y.numpy(), atol=1e-6), name


@pytest.mark.slow
def test_resume_with_changed_config_is_refused(sparse_store, tmp_path, interrupt_on_call):
    train_sae(sparse_store[0], tmp_path / "run", cfg(max_steps=5))
    with pytest.raises(InputError, match="nothing to resume in .*run: it is finished"):
        train_sae(sparse_store[0], tmp_path / "run", cfg(max_steps=5), resume=True)
    restore = interrupt_on_call(loop, "train_step", 30)
    with pytest.raises(KeyboardInterrupt):
        train_sae(sparse_store[0], tmp_path / "part", cfg())
    restore()
    with pytest.raises(ConfigError, match=r"interrupted run with other settings \(k: 4 -> 8\)") as err:
        train_sae(sparse_store[0], tmp_path / "part", cfg(k=8))
    assert "original settings to resume" in err.value.hint


@pytest.mark.slow
def test_the_same_command_after_a_kill_resumes_and_logs_each_step_once(sparse_store, tmp_path, interrupt_on_call):
    restore = interrupt_on_call(loop, "train_step", 60)  # after the checkpoints at steps 25 and 50
    with pytest.raises(KeyboardInterrupt):
        train_sae(sparse_store[0], tmp_path / "run", cfg())
    restore()
    res = train_sae(sparse_store[0], tmp_path / "run", cfg())  # no --resume: the hint "rerun the same command"
    assert res["resumed_from"] == 50
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == res["steps"] - 1  # each logged step once, in order
    evals = [json.loads(line)["step"] for line in (tmp_path / "run" / "eval_log.jsonl").read_text().splitlines()]
    assert evals == sorted(set(evals))


@pytest.mark.slow
def test_overwrite_keeps_the_old_run_until_the_new_one_is_complete(sparse_store, tmp_path, interrupt_on_call):
    from musicsae_cli.sae.io import load_sae

    run = tmp_path / "run"
    train_sae(sparse_store[0], run, cfg(max_steps=40))
    old_weights = (run / "sae_weights.safetensors").read_bytes()
    restore = interrupt_on_call(loop, "train_step", 30)
    with pytest.raises(KeyboardInterrupt):
        train_sae(sparse_store[0], run, cfg(k=8), overwrite=True)
    restore()
    assert (run / "sae_weights.safetensors").read_bytes() == old_weights  # the old SAE is untouched
    assert load_sae(sae_dir(run))[0].spec.k == 4 and (tmp_path / ".run.overwrite").is_dir()
    res = train_sae(sparse_store[0], run, cfg(k=8), overwrite=True)  # the same command resumes the overwrite
    assert res["resumed_from"] == 25 and res["run"] == str(run)
    assert load_sae(sae_dir(run))[0].spec.k == 8 and json.loads((run / "manifest.json").read_text())[
        "final_metrics"]["sae"]["path"] == str(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_bad_config_or_damaged_store_leave_no_run_folder(sparse_store, tmp_path):
    import shutil

    from musicsae_cli.errors import StoreError

    with pytest.raises(ConfigError, match=r"topk needs 1 <= k <= d_sae \(128\), got k=1000"):
        train_sae(sparse_store[0], tmp_path / "wide", cfg(k=1000))
    assert not (tmp_path / "wide").exists()
    damaged = tmp_path / "damaged"
    shutil.copytree(sparse_store[0], damaged)
    shard = sorted((damaged / "shards").iterdir())[1] / "layers.0.npy"
    shard.write_bytes(shard.read_bytes()[:1000])  # truncated
    with pytest.raises(StoreError, match=f"damaged: {shard}: truncated or unreadable") as err:
        train_sae(damaged, tmp_path / "run", cfg())
    assert "info --verify" in err.value.hint and not (tmp_path / "run").exists()


def test_a_second_trainer_on_the_same_run_is_refused(sparse_store, tmp_path, interrupt_on_call):
    from musicsae_cli.sae.rundir import open_run

    restore = interrupt_on_call(loop, "train_step", 10)
    with pytest.raises(KeyboardInterrupt):
        train_sae(sparse_store[0], tmp_path / "run", cfg())
    restore()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    held = open_run(tmp_path / "run", manifest["config"], overwrite=False, resume=True)  # another process training
    try:
        with pytest.raises(MusicSAEError, match="another `sae train` is using .*run"):
            train_sae(sparse_store[0], tmp_path / "run", cfg())
    finally:
        held.release()


@pytest.mark.slow
def test_refusals(sparse_store, tmp_path):
    store = sparse_store[0]
    train_sae(store, tmp_path / "run", cfg(max_steps=3))
    with pytest.raises(OutputExistsError):
        train_sae(store, tmp_path / "run", cfg(max_steps=3))
    with pytest.raises(InputError, match="no rows to train on after filters"):
        train_sae(store, tmp_path / "empty", cfg(where=["label=zzz"]))
    with pytest.raises(InputError, match="hookpoint 'layers.5' is not in the store"):
        train_sae(store, tmp_path / "x", cfg(hookpoint="layers.5"))
    with pytest.raises(InputError, match="--init-from SAE is topk 32->128, the run wants topk 32->64"):
        train_sae(store, tmp_path / "y", cfg(expansion_factor=2), init_from=tmp_path / "run")
    with pytest.raises(ConfigError, match="cannot sweep 'batch_size'"):
        cfg(sweep={"batch_size": [1, 2]})


def test_nan_rows_are_reported_with_ids(tmp_path):
    store, _ = make_sparse_store(tmp_path / "nan", n_items=12, nan_row=200)
    with pytest.raises(MusicSAEError, match=r"non-finite activations .*row 200 \(item003\)"):
        train_sae(store, tmp_path / "run", cfg(init_rows=100000, val_fraction=0.0))


@pytest.mark.parametrize("arch,extra", [("relu", {"l1_coefficient": 0.5, "lr": 1e-3}),
                                        ("batchtopk", {}), ("jumprelu", {"l0_coefficient": 1e-3})])
@pytest.mark.slow
def test_other_architectures_train(sparse_store, tmp_path, arch, extra):
    res = train_sae(sparse_store[0], tmp_path / arch, cfg(architecture=arch, **extra))
    m = res["members"]["sae"]
    assert m["explained_variance"] > 0.5 and 0 < m["l0"] < 128


@pytest.mark.smoke
@pytest.mark.slow
def test_dictionary_learning_baseline_through_the_same_commands(sparse_store, tmp_path):
    from musicsae_cli.sae.evaluate import evaluate_reconstruction
    from musicsae_cli.sae.io import load_sae

    res = train_sae(sparse_store[0], tmp_path / "dl", cfg(architecture="dictionary_learning", k=3, epochs=2,
                                                          dl_alpha=0.1))
    m = res["members"]["sae"]
    assert m["explained_variance"] > 0.8 and m["l0"] <= 3.0
    model, saved = load_sae(tmp_path / "dl")
    assert saved["architecture"] == "dictionary_learning" and model.W_dec.shape == (128, 32)
    again = evaluate_reconstruction(tmp_path / "dl", sparse_store[0], max_rows=500, device="cpu")
    assert again["l0"] <= 3.0 and again["explained_variance"] > 0.8


def test_empty_store_is_refused(tmp_path):
    from musicsae_cli.store import StoreWriter

    with StoreWriter.create(tmp_path / "empty", {"layers.0": 8}, "float32"):
        pass
    with pytest.raises(InputError, match=r"no rows to train on \(empty store\)"):
        train_sae(tmp_path / "empty", tmp_path / "run", cfg())
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_checkpoint_without_room_fails_before_writing_and_the_run_resumes(sparse_store, tmp_path, monkeypatch):
    import re

    import musicsae_cli.sae.checkpoint as checkpoint

    real, calls = checkpoint.shutil.disk_usage, {"n": 0}

    def fills_up(path):
        calls["n"] += 1  # room for the checkpoint of step 25, then 4 KB left
        usage = real(path)
        return usage._replace(free=usage.free if calls["n"] == 1 else 4096)

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", fills_up)
    run = tmp_path / "run"
    with pytest.raises(MusicSAEError) as err:
        train_sae(sparse_store[0], run, cfg())
    found = re.fullmatch(r"not enough space for the checkpoint of step 50 in (.+): it needs ([\d.]+) (KB|MB), "
                         r"4\.0 KB free; the checkpoint of step 25 is kept", err.value.message)
    assert found and found[1] == str(run), err.value.message
    assert err.value.hint == "free some space on that disk and rerun the same command (it resumes from step 25)"
    # The estimate covers what a checkpoint really takes (the one of step 25, same tensors), and nothing was written.
    written = sum(f.stat().st_size for f in (run / "checkpoint").iterdir())
    assert float(found[2]) * 1024 ** (1 if found[3] == "KB" else 2) >= written
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 25
    assert not (run / ".checkpoint.tmp").exists()
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)
    assert train_sae(sparse_store[0], run, cfg())["resumed_from"] == 25


def test_checkpoint_round_trip_and_an_older_layout_of_the_encoder_moments(tmp_path):
    """Weights and Adam moments come back exactly; moments saved when the TopK encoder was stored (d_in, d_sae)
    are transposed onto today's (d_sae, d_in) W_encT."""
    import torch
    from safetensors.torch import load_file, save_file

    from musicsae_cli.sae.checkpoint import load_checkpoint, save_checkpoint

    sample = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    config = cfg(expansion_factor=4, k=2)
    members = loop.build_members(config, 8, sample, torch.device("cpu"))
    loop.train_step(members[0], sample[:64], 0, 10)
    save_checkpoint(tmp_path, 1, members, {})
    moments = members[0].optimizer.state[members[0].sae.W_encT]["exp_avg"].clone()  # (32, 8)
    path = tmp_path / "checkpoint" / "state.safetensors"
    tensors = load_file(str(path))
    key = "sae/adam/0/exp_avg"
    assert torch.equal(tensors[key], moments) and tensors["sae/model/W_enc"].shape == (8, 32)
    tensors[key] = tensors[key].t().contiguous()  # the older layout: (d_in, d_sae)
    save_file(tensors, str(path))
    fresh = loop.build_members(config, 8, sample, torch.device("cpu"))
    load_checkpoint(tmp_path, fresh, "cpu")
    assert torch.equal(fresh[0].optimizer.state[fresh[0].sae.W_encT]["exp_avg"], moments)
    assert torch.equal(fresh[0].sae.W_enc, members[0].sae.W_enc)
