"""`model train-tiny`: a tiny MusicGen trained on synthesised concept audio, with prompts that name the concept.

Order: the codec first (tiny_codec), then every clip is encoded to codes once, then the text encoder (a tiny T5)
and the decoder learn jointly with teacher-forced cross-entropy through the delay pattern. About 15% of the rows
get the unconditional text (encoder states and mask zeroed, as MusicGen's generate builds its unconditional half),
so classifier-free guidance works. A held-out clip or more of every concept gives the validation CE; the random
model's CE on them is measured first, as the baseline.

Resumable: all state (phase, step, weights, Adam moments, codes) is checkpointed in safetensors in the fixed
hidden sibling `.<OUT>.partial`; the same command after a kill continues from there, and each step's randomness
comes from (seed, step), so a resumed run ends with the same weights as an uninterrupted one. The finished model is
written with save_pretrained (model and processor) plus musicsae's manifest.json, and the sibling is removed.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import STATE, load_state
from ..errors import ConfigError, InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result
from .tiny import TRAINED_NAME  # the name its manifest records
from .tiny_train_config import TrainTinyConfig, check_shapes
from .tiny_train_data import rows_and_audio, split_rows, vocabulary
from .tiny_train_loop import encode_clips, train_codec, train_decoder

FORMAT_VERSION = 1
log = logging.getLogger("musicsae")
LOCK = ".train.lock"


def build_model(cfg: TrainTinyConfig, words: list[str]):
    """(model, processor): a random MusicGen whose codec comes from tiny_codec and whose tokenizer knows `words`."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
        T5Tokenizer,
    )

    from .musicgen_hub import quiet_transformers
    from .tiny import SAMPLE_RATE
    from .tiny_codec import tiny_codec_config

    quiet_transformers()
    k, v = check_shapes(cfg)
    d = cfg.decoder
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -float(i)) for i, w in enumerate(words)]
    text = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = tiny_codec_config(cfg.codec.num_codebooks, cfg.codec.codebook_size)
    decoder = MusicgenDecoderConfig(
        vocab_size=v, max_position_embeddings=2048, num_hidden_layers=d.num_layers, ffn_dim=4 * d.hidden_size,
        num_attention_heads=d.num_heads, hidden_size=d.hidden_size, num_codebooks=k, pad_token_id=v,
        bos_token_id=v, decoder_start_token_id=v)
    torch.manual_seed(cfg.seed)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=audio,
                                                            decoder=decoder))
    if model.audio_encoder.config.num_quantizers != k:
        raise ConfigError(f"the codec has {model.audio_encoder.config.num_quantizers} quantizers, the decoder {k} "
                          "codebooks", "make codec.num_codebooks and decoder.num_codebooks equal")
    model.generation_config.update(do_sample=True, top_k=50, guidance_scale=3.0, max_length=1500, pad_token_id=v,
                                   bos_token_id=v, decoder_start_token_id=v)
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0)
    return model, MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer)


def _open_partial(partial: Path, record: dict, overwrite: bool) -> tuple[int | None, dict | None]:
    """(lock, saved state) of the resumable sibling: a state with other settings is an error (--overwrite: dropped)."""
    from ..artifacts import hold_lock

    partial.mkdir(exist_ok=True)
    lock = hold_lock(partial / LOCK, f"another `model train-tiny` is writing {partial}", "wait for it to finish")
    state = load_state(partial)
    if state is not None and state["config"] != record:
        if not overwrite:
            os.close(lock) if lock is not None else None
            changed = [k for k in record if state["config"].get(k) != record[k]]
            raise ConfigError(f"an interrupted train-tiny run with other settings ({', '.join(changed)}) waits in "
                              f"{partial}", "rerun with its settings to resume it, or pass --overwrite to start over")
        shutil.rmtree(partial / STATE)
        state = None
    return lock, state


# ---- the run ---------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class TrainTinyResult(Result):
    """What `model train-tiny` prints: where the model is, its size, CE before and after, pitch survival, time."""

    path: str
    parameters: int
    clips: dict
    random_val_ce: float
    uniform_ce: float
    train_ce: float
    val_ce: float
    pitch_survival: dict
    codes_used: list[int]
    seconds: dict
    threads: int  # torch's CPU threads: float rounding, hence the trained weights, depend on it
    resumed: bool

    def lines(self) -> list[str]:
        ps = self.pitch_survival
        cents = "input {:.0f}, random codec {:.0f}, trained codec {:.0f}".format(
            *(ps[k]["median_abs_cents"] for k in ("input", "random_codec", "trained_codec")))
        return [self.path,
                f"tiny MusicGen: {self.parameters:,} parameters, trained on {self.clips['train']} clips "
                f"({self.clips['val']} held out)",
                f"validation CE {self.random_val_ce:.3f} (random weights; ln(codebook size) = {self.uniform_ce:.3f})"
                f" -> {self.val_ce:.3f}; train CE {self.train_ce:.3f}; distinct codes per codebook in the data: "
                f"{', '.join(map(str, self.codes_used))}",
                f"codec pitch survival (median |cents| off the note, {ps['input']['n']} note clips): {cents}; "
                f"within 50 cents: {ps['random_codec']['within_50_cents']:.0%} -> "
                f"{ps['trained_codec']['within_50_cents']:.0%}",
                "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())]


def train_tiny(out: str | Path, cfg: TrainTinyConfig, overwrite: bool = False,
               progress: ProgressFactory = no_progress) -> TrainTinyResult:
    """Train the tiny MusicGen of `cfg` and write it to `out` (save_pretrained + manifest.json); resumable."""
    import torch

    from ..artifacts import check_output, check_replaceable

    out = Path(out)
    check_shapes(cfg)
    check_output(out, overwrite, "model")  # refused now, not after minutes of training
    if out.exists():
        check_replaceable(out)
    record = cfg.model_dump(mode="json")
    rows, audio = rows_and_audio(cfg, progress)
    train_idx, val_idx = split_rows(rows, cfg.val_fraction, cfg.seed)
    model, processor = build_model(cfg, vocabulary([r["prompt"] for r in rows]))
    tok = processor.tokenizer([r["prompt"] for r in rows], padding=True, return_tensors="pt")
    unknown = tok["input_ids"] == processor.tokenizer.unk_token_id
    if unknown.any():  # cannot happen with vocabulary(); kept as a guard against tokenizer changes
        raise InputError(f"prompt {rows[int(unknown.any(1).nonzero()[0])]['prompt']!r} has unknown words",
                         "report this: every prompt word should be in the vocabulary")
    if not any(r.get("frequency_hz") not in (None, "") for r in rows):
        raise InputError("no clip has a known pitch (frequency_hz) to check the codec's pitch survival with",
                         "include the notes or timbres concept")
    partial = out.parent / f".{out.name}.partial"
    lock, state = _open_partial(partial, record, overwrite)
    try:
        resumed = state is not None
        seconds = dict(state["seconds"]) if state else {"codec": 0.0, "encoding": 0.0, "decoder": 0.0}
        if state:
            model.load_state_dict(state["model"])
        survival = train_codec(model, audio, rows, train_idx, val_idx, cfg, partial, state, seconds, progress)
        state = state if state and state["phase"] != "codec" else None
        t0 = time.perf_counter()
        codes = state["codes"] if state else encode_clips(model, audio, progress)
        seconds["encoding"] += 0.0 if state else time.perf_counter() - t0
        train_ce, val_ce, random_ce = train_decoder(model, codes, tok, train_idx, val_idx, cfg, partial, state,
                                                     seconds, survival, progress)
        model.eval()
        result = TrainTinyResult(
            path=str(out), parameters=sum(p.numel() for p in model.parameters()),
            clips={"train": len(train_idx), "val": len(val_idx), "frames": int(codes.shape[-1])},
            random_val_ce=random_ce, uniform_ce=math.log(model.decoder.config.vocab_size), train_ce=train_ce,
            val_ce=val_ce, pitch_survival=survival,
            codes_used=[int(codes[:, k].unique().numel()) for k in range(codes.shape[1])],
            seconds={k: round(v, 2) for k, v in seconds.items()}, threads=torch.get_num_threads(),
            resumed=resumed)
        _save(out, model, processor, cfg, rows, train_idx, val_idx, result, overwrite)
        kept = survival["trained_codec"]["within_50_cents"]
        if kept < 0.5:
            log.warning("the trained codec keeps the pitch of only %.0f%% of the held-out notes (within 50 cents): "
                        "clips this model generates will not sound at the note their prompt names", 100 * kept)
    finally:
        if lock is not None:
            os.close(lock)
    shutil.rmtree(partial, ignore_errors=True)
    return result


def _save(out, model, processor, cfg, rows, train_idx, val_idx, result, overwrite) -> None:
    from ..artifacts import new_manifest, staged_directory, write_config, write_json

    record = cfg.model_dump(mode="json")
    concepts = {c: sum(r["concept"] == c for r in rows) for c in dict.fromkeys(r["concept"] for r in rows)}
    with staged_directory(out, overwrite) as stage:
        model.save_pretrained(stage)
        processor.save_pretrained(stage)
        training = {k: v for k, v in result.to_json().items() if k not in ("path", "resumed")}
        training["data"] = {"source": cfg.data or "synth", "per_concept": concepts,
                            "val_items": [rows[i]["item_id"] for i in val_idx],
                            "prompts": len({r["prompt"] for r in rows})}
        write_json(stage / "manifest.json", new_manifest("model", FORMAT_VERSION, record, family="musicgen",
                                                         name=TRAINED_NAME, training=training))
        write_config(stage, record)
