"""`steer audio`: a model run over audio with and without a steering edit, its outputs compared.

For models that map audio to outputs (a pitch tracker's pitch activations, an encoder's latents, an audio
model's audio), what an edit at a hookpoint does downstream is read off the model's own output. Output folder::

    results.csv     one row per item: its labels, the relative change of the output ||steered - plain|| /
                    ||plain||, and the mean of every reading the family takes of its outputs (CREPE: f0_hz and
                    confidence), plain and steered
    outputs/<id>.npz  plain and steered outputs (save_outputs); for models whose outputs are audio (a RAVE
                    re-synthesis) outputs/<id>.plain.wav and <id>.steered.wav instead
    manifest.json, config.yaml, directions.safetensors (the vectors used, usable as --file)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from .config import SteerAudioConfig
from .edits import build_steering
from .results import SteeredAudio

KIND = "steer_audio"
FORMAT_VERSION = 1


def steer_audio(source: str | Path, out: str | Path, cfg: SteerAudioConfig, overwrite: bool = False,
                progress: ProgressFactory = no_progress, adapter=None) -> SteeredAudio:
    """Outputs of every item plain and steered; results.csv, the outputs and the record, moved into place whole."""
    from ..artifacts import new_manifest, staged_directory, write_config, write_csv_rows, write_json
    from ..audio.io import load_audio, write_wav
    from ..audio.manifest import load_dataset
    from .directions import sha256
    from .generate import chosen_direction, environment, load_model, save_directions
    from .resynth import seeded

    manifest = load_dataset(source)
    rows = manifest.rows[: cfg.max_items] if cfg.max_items else manifest.rows
    if not rows:
        raise InputError(f"no audio items in {source}", "point SOURCE at a manifest or a folder of audio")
    adapter = adapter or load_model(cfg, needs=())
    adapter.require("intervene", "steering over audio")
    adapter.require("outputs", "steering over audio")
    direction = chosen_direction(cfg, adapter)
    steering = build_steering(cfg, adapter, direction)
    started, results = time.perf_counter(), []
    with staged_directory(out, overwrite) as stage, progress("Steering", len(rows)) as bar:
        for row in rows:
            audio, _ = load_audio(row["path"], sample_rate=adapter.sample_rate, mono=True)
            with seeded(adapter, cfg.seed):  # a model's random draws the same for both
                plain = adapter.outputs(audio)
                with adapter.intervene(steering.edits):
                    steered = adapter.outputs(audio)
            if cfg.save_outputs:
                file = stage / "outputs" / f"{row['item_id']}.npz"  # item ids may hold folders (class/name)
                file.parent.mkdir(parents=True, exist_ok=True)
                if adapter.output_audio:
                    for when, wav in (("plain", plain), ("steered", steered)):
                        write_wav(file.with_suffix(f".{when}.wav"), wav, adapter.sample_rate)
                else:
                    np.savez(file, plain=plain, steered=steered)
            change = float(np.linalg.norm(steered - plain) / max(float(np.linalg.norm(plain)), 1e-12))
            result = {"item_id": row["item_id"], **{c: row.get(c) for c in manifest.label_columns},
                      "rel_change": change}
            for when, outputs in (("plain", plain), ("steered", steered)):
                for name, values in adapter.read_outputs(outputs).items():
                    result[f"{name}_{when}"] = float(np.mean(values))
            results.append(result)
            bar.advance()
        write_csv_rows(stage / "results.csv", results)
        if direction is not None:
            save_directions(stage / "directions.safetensors", direction, steering.layers)
            steering.record.update(vectors_file="directions.safetensors",
                                   vectors_sha256=sha256(stage / "directions.safetensors"))
        summary = {"items": len(results), "rel_change_mean": float(np.mean([r["rel_change"] for r in results]))}
        readings = sorted({k.rsplit("_", 1)[0] for r in results for k in r if k.endswith("_plain")})
        for name in readings:
            summary[f"{name}_plain_mean"] = float(np.mean([r[f"{name}_plain"] for r in results]))
            summary[f"{name}_steered_mean"] = float(np.mean([r[f"{name}_steered"] for r in results]))
        write_json(stage / "manifest.json", new_manifest(
            KIND, FORMAT_VERSION, cfg.model_dump(mode="json"), source=str(source),
            model=adapter.describe(), environment=environment(adapter),
            steering=steering.record, summary=summary,
            files=["results.csv", *(["directions.safetensors"] if direction is not None else [])]))
        write_config(stage, {"source": str(source), **cfg.model_dump(mode="json")})
    means = {k: v for k, v in summary.items() if k not in ("items", "rel_change_mean")}
    return SteeredAudio(out=str(out), items=summary["items"], rel_change_mean=summary["rel_change_mean"], means=means,
                        layers=steering.layers, strengths=steering.strengths, mode=steering.record["mode"],
                        direction=steering.record["direction"]["kind"], readings=readings,
                        elapsed_s=round(time.perf_counter() - started, 3))
