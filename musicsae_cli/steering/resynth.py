"""Steering models that re-synthesise audio rather than generate it from prompts (autoencoders such as RAVE).

`steer generate --audio IN` and `steer sweep --audio IN` run the input audio (a file, a folder of audio or a
manifest) through the model with the edits, and keep the model's own audio output. A model that draws random
numbers in a pass (a RAVE decoder's noise) is seeded with the clip's seed, so the plain and steered re-syntheses of
one item differ only by the edit.

Output folder of `steer generate` on such a model::

    clips/<id>.wav         the steered re-synthesis (<id>: the item id, folders kept)
    clips/<id>.plain.wav   the same item re-synthesised without edits
    manifest.json          the record: model, environment, input audio (paths and sha256), steering, every clip
                           with its relative change ||steered - plain|| / ||plain||; config.yaml; directions.safetensors
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError
from ..progress import ProgressFactory, no_progress
from .results import SteeredGeneration

KIND = "steer_resynthesis"
FORMAT_VERSION = 1
CLIPS = "clips"


def resynthesises(adapter) -> bool:
    """Whether `adapter` is steered by re-synthesising input audio: it cannot generate, but its outputs are
    audio."""
    return not adapter.can("generate") and adapter.can("outputs") and bool(getattr(adapter, "output_audio", False))


def check_resynthesis(cfg, adapter) -> None:
    """UsageError unless `cfg` gives audio to re-synthesise and no text prompts."""
    if cfg.audio is None:
        raise UsageError(f"model '{adapter.model_id}' (family {adapter.family}) re-synthesises audio rather than "
                         "generating it from prompts", "pass --audio FILE, FOLDER or MANIFEST: the audio to "
                         "re-synthesise with steering")
    if cfg.prompts or cfg.prompts_file:
        raise UsageError(f"model '{adapter.model_id}' (family {adapter.family}) takes no text prompts",
                         "drop --prompt/--prompts; --audio names what it re-synthesises")


def audio_items(source) -> tuple[list[dict], list[str]]:
    """(rows with item_id and path, label columns) of an audio file, a folder of audio or a manifest."""
    from ..audio.io import AUDIO_EXTENSIONS
    from ..audio.manifest import load_dataset

    path = Path(source)
    if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
        return [{"item_id": path.stem, "path": str(path)}], []
    manifest = load_dataset(path)
    if not manifest.rows:
        raise InputError(f"no audio items in {source}", "pass an audio file, a folder of audio or a manifest")
    return manifest.rows, list(manifest.label_columns)


def load_item(row: dict, adapter) -> np.ndarray:
    """The item's mono mix at the model's rate; InputError when it is shorter than one of the model's frames."""
    from ..audio.io import load_audio

    audio, _ = load_audio(row["path"], sample_rate=adapter.sample_rate, mono=True)
    if adapter.n_frames(audio.size) < 1:
        raise InputError(f"{row['path']} is {audio.size / adapter.sample_rate:.4g} s, shorter than one frame of "
                         f"model '{adapter.model_id}' ({adapter.hop_length} samples at {adapter.sample_rate} Hz)",
                         f"feed at least {adapter.hop_length / adapter.sample_rate:.4g} s")
    return audio


@contextmanager
def seeded(adapter, seed: int):
    """While active, a model that draws random numbers in a pass draws them from `seed`."""
    if getattr(adapter, "noise_seed", None) is None:
        yield
        return
    previous, adapter.noise_seed = adapter.noise_seed, int(seed)
    try:
        yield
    finally:
        adapter.noise_seed = previous


@dataclass
class Resynthesis:
    """Re-syntheses of a batch of items, shaped like a generation's output for scoring."""

    audio: list[np.ndarray]  # (channels, samples) each
    prompt_frames: int = 0
    tokens: None = None
    lengths: list[int] = field(default_factory=list)


def resynthesise(adapter, audios: list[np.ndarray], edits: dict, seed: int) -> Resynthesis:
    """The model's audio output for each item with `edits` applied, random draws from `seed`."""
    with seeded(adapter, seed), adapter.intervene(edits):
        out = [np.atleast_2d(np.asarray(adapter.outputs(a), dtype=np.float32)) for a in audios]
    return Resynthesis(out, lengths=[a.shape[-1] for a in out])


def steer_resynthesis(cfg, out: str | Path, adapter, direction, steering, overwrite: bool = False,
                      progress: ProgressFactory = no_progress) -> SteeredGeneration:
    """`steer generate` for a re-synthesising model: plain and steered re-synthesis of every input item."""
    from ..artifacts import new_manifest, staged_directory, write_config, write_json
    from ..audio.io import write_wav
    from .directions import sha256
    from .generate import environment, save_directions

    check_resynthesis(cfg, adapter)
    rows, labels = audio_items(cfg.audio)
    clips, started, seconds = [], time.perf_counter(), []
    with staged_directory(out, overwrite) as stage, progress("Re-synthesising", len(rows)) as bar:
        for row in rows:
            audio = load_item(row, adapter)
            plain = resynthesise(adapter, [audio], {}, cfg.seed).audio[0]
            steered = resynthesise(adapter, [audio], steering.edits, cfg.seed).audio[0]
            clip_id = str(row["item_id"])
            write_wav(stage / CLIPS / f"{clip_id}.wav", steered, adapter.sample_rate)
            write_wav(stage / CLIPS / f"{clip_id}.plain.wav", plain, adapter.sample_rate)
            change = float(np.linalg.norm(steered - plain) / max(float(np.linalg.norm(plain)), 1e-12))
            seconds.append(steered.shape[-1] / adapter.sample_rate)
            clips.append({"id": clip_id, "wav": f"{CLIPS}/{clip_id}.wav", "plain": f"{CLIPS}/{clip_id}.plain.wav",
                          "source": str(row["path"]), "source_sha256": sha256(row["path"]),
                          **{c: row.get(c) for c in labels}, "seed": cfg.seed, "seconds": round(seconds[-1], 4),
                          "rel_change": change})
            bar.advance()
        if direction is not None:
            save_directions(stage / "directions.safetensors", direction, steering.layers)
            steering.record.update(vectors_file="directions.safetensors",
                                   vectors_sha256=sha256(stage / "directions.safetensors"))
        write_json(stage / "manifest.json", new_manifest(
            KIND, FORMAT_VERSION, cfg.model_dump(mode="json"),
            model={**adapter.describe(), "revision": adapter.revision}, environment=environment(adapter),
            input={"audio": str(cfg.audio), "items": len(rows), "mono": "files are mixed to mono at the model's "
                   "rate"}, steering=steering.record, clips=clips,
            reproduce="musicsae steer generate -c OUT/config.yaml -o NEW_OUT"))
        write_config(stage, cfg.model_dump(mode="json"))
    return SteeredGeneration(out=str(out), clips=len(clips), layers=steering.layers, strengths=steering.strengths,
                             mode=steering.record["mode"], direction=steering.record["direction"]["kind"],
                             seconds_per_clip=float(np.mean(seconds)), resynthesis=True,
                             rel_change_mean=float(np.mean([c["rel_change"] for c in clips])),
                             elapsed_s=round(time.perf_counter() - started, 3))
