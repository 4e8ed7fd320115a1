"""Capture during generation: streams stored apart, audio and codes beside the store, deterministic resume."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsae_cli.errors import InputError
from musicsae_cli.extract.config import ExtractConfig
from musicsae_cli.extract.generate import Prompt, extract_generate, read_prompts
from musicsae_cli.store import ActivationStore

pytestmark = pytest.mark.smoke  # in the drift checks (make test-latest / test-oldest)

PROMPTS = [Prompt("jazz", "jazz piano", {"genre": "jazz"}), Prompt("rock", "rock drums", {"genre": "rock"})]


def cfg(**kw) -> ExtractConfig:
    return ExtractConfig(**{"model": "tiny-musicgen", "device": "cpu", "hookpoints": "layers.0,layers.-1",
                            "duration_s": 0.3, "batch_size": 2, "store_dtype": "float32", **kw})


@pytest.mark.slow
def test_both_streams_as_separate_rows_with_audio(tiny_adapter, tmp_path):
    out = tmp_path / "gen"
    res = extract_generate(PROMPTS, out, cfg(samples_per_prompt=2), adapter=tiny_adapter)
    store = ActivationStore.open(out)
    assert res["clips_written"] == store.n_items == 4 and store.n_rows == 4 * 2 * 15
    meta = store.metadata().to_pylist()
    one = [r for r in meta if r["item_id"] == "jazz-s1"]
    assert [r["stream"] for r in one] == ["cond"] * 15 + ["uncond"] * 15
    assert [r["frame"] for r in one] == list(range(15)) * 2 and one[0]["genre"] == "jazz"
    audio, sr = sf.read(out / one[0]["audio_path"])
    assert sr == 32000 and len(audio) == 15 * 640
    # the stored conditional rows are reproduced by teacher-forcing the saved codes with the prompt
    codes = torch.from_numpy(np.load(out / "generated" / "jazz-s1.codes.npy"))
    forced = tiny_adapter.code_activations([codes], ["layers.3"], ["jazz piano"])[0]["layers.3"]
    rows = store.select(["item_id=jazz-s1", "stream=cond"])
    np.testing.assert_allclose(store.read_rows("layers.3", rows), forced.numpy(), atol=1e-5)


def test_single_stream(tiny_adapter, tmp_path):
    extract_generate(PROMPTS[:1], tmp_path / "g", cfg(stream="cond"), adapter=tiny_adapter)
    store = ActivationStore.open(tmp_path / "g")
    assert set(store.metadata(["stream"]).column("stream").to_pylist()) == {"cond"} and store.n_rows == 15


@pytest.mark.slow
def test_resumed_generation_equals_uninterrupted(tiny_adapter, tmp_path, interrupt_on_call):
    prompts = [Prompt(f"p{i}", f"jazz {i}", {}) for i in range(5)]
    whole = tmp_path / "whole"
    extract_generate(prompts, whole, cfg(batch_size=2), adapter=tiny_adapter)
    restore = interrupt_on_call(tiny_adapter, "generate", 2)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        extract_generate(prompts, part, cfg(batch_size=2, shard_mb=0.01), adapter=tiny_adapter)
    committed = ActivationStore.open(part, allow_incomplete=True).n_items
    restore()
    res = extract_generate(prompts, part, cfg(batch_size=2, shard_mb=0.01), adapter=tiny_adapter)
    assert committed >= 1 and res["clips_written"] == 5 - committed  # only the missing clips are redone
    for pid in ("p0", "p3", "p4"):
        np.testing.assert_array_equal(np.load(whole / "generated" / f"{pid}-s0.codes.npy"),
                                      np.load(part / "generated" / f"{pid}-s0.codes.npy"))
    a, b = ActivationStore.open(whole), ActivationStore.open(part)
    assert a.n_rows == b.n_rows
    rows = b.select(["item_id=p4-s0"])
    np.testing.assert_array_equal(a.read_rows("layers.3", a.select(["item_id=p4-s0"])), b.read_rows("layers.3", rows))


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("jazz piano\n\n rock drums \n")
    assert [p.text for p in read_prompts(tmp_path / "p.txt")] == ["jazz piano", "rock drums"]
    (tmp_path / "p.csv").write_text("item_id,description,genre\na,calm piano,classical\n")
    p = read_prompts(tmp_path / "p.csv", "description")[0]
    assert (p.prompt_id, p.text, p.labels) == ("a", "calm piano", {"genre": "classical"})
    with pytest.raises(InputError, match="no prompt column 'prompt'"):
        read_prompts(tmp_path / "p.csv")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")


def test_out_of_memory_while_generating_says_the_run_starts_over():
    from musicsae_cli.errors import MusicSAEError
    from musicsae_cli.extract.common import out_of_memory_hint

    with pytest.raises(MusicSAEError) as info, out_of_memory_hint(4, generating=True):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert info.value.message == "out of memory with batch size 4"
    assert info.value.hint == ("retry with --batch-size 2 and --overwrite (generated clips depend on the batch size, "
                               "so the run starts over)")


def test_generation_resume_at_another_batch_size_is_refused(tiny_adapter, tmp_path, interrupt_on_call):
    prompts = [Prompt(f"p{i}", f"jazz {i}", {}) for i in range(5)]
    restore = interrupt_on_call(tiny_adapter, "generate", 2)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        extract_generate(prompts, part, cfg(batch_size=2, shard_mb=0.01), adapter=tiny_adapter)
    restore()
    with pytest.raises(InputError, match=r"interrupted run with other settings \(batch_size\)"):
        extract_generate(prompts, part, cfg(batch_size=3, shard_mb=0.01), adapter=tiny_adapter)
