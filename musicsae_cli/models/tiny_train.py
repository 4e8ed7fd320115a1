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

from pydantic import BaseModel, ConfigDict, Field

from ..artifacts import STATE, load_state, save_state
from ..audio.config import SynthConfig
from ..errors import ConfigError, InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result
from .musicgen_loss import delayed
from .tiny import TRAINED_NAME  # the name its manifest records

FORMAT_VERSION = 1
log = logging.getLogger("musicsae")
LOCK = ".train.lock"
INTERVAL_WORDS = {1: "minor second", 2: "major second", 3: "minor third", 4: "major third", 5: "perfect fourth",
                  6: "tritone", 7: "perfect fifth", 8: "minor sixth", 9: "major sixth", 10: "minor seventh",
                  11: "major seventh", 12: "octave"}
INVERSIONS = {1: "first", 2: "second", 3: "third"}
PATTERN_WORDS = {"rock": "a drum loop", "click": "a click track", "waltz": "a waltz click track"}


def _default_synth() -> SynthConfig:
    return SynthConfig(timbres=["sine", "piano", "organ"], duration_s=1.0, max_per_concept=108, variants=2,
                       chord_qualities=["major", "minor"], intervals=[3, 4, 5, 7, 12], interval_play=["harmonic"])


class CodecSettings(BaseModel):
    """The EnCodec-compatible codec and its training."""

    model_config = ConfigDict(extra="forbid")

    num_codebooks: int = Field(4, ge=1, le=32, description="Residual quantizers (codebooks).")
    codebook_size: int = Field(256, ge=2, le=4096, description="Entries per codebook.")
    steps: int = Field(300, ge=0, description="Autoencoder steps: encoder and decoder on the continuous latent.")
    finetune_steps: int = Field(200, ge=0, description="Then, with the codebooks fitted to the trained encoder, "
                                "steps of the decoder alone on the quantised latents (both 0: the random codec).")
    batch_size: int = Field(8, ge=1, description="Clips per codec step.")
    lr: float = Field(2e-3, gt=0, description="Codec learning rate.")


class DecoderSettings(BaseModel):
    """The text encoder and the decoder, and their joint training."""

    model_config = ConfigDict(extra="forbid")

    num_codebooks: int | None = Field(None, ge=1, description="Decoder codebooks; null: the codec's (they must "
                                                              "match).")
    vocab_size: int | None = Field(None, ge=2, description="Decoder vocabulary; null: the codec's codebook size "
                                                           "(they must match).")
    hidden_size: int = Field(64, ge=8, description="Decoder width.")
    num_layers: int = Field(4, ge=1, description="Decoder blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads (must divide hidden_size).")
    steps: int = Field(1500, ge=1, description="Decoder training steps.")
    batch_size: int = Field(16, ge=1, description="Clips per decoder step.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate (linear warm-up, cosine decay).")
    warmup: int = Field(100, ge=0, description="Warm-up steps.")
    cond_dropout: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction of rows trained with the "
                                                                  "unconditional (empty) text, for guidance.")


class TrainTinyConfig(BaseModel):
    """How `model train-tiny` builds and trains the tiny MusicGen."""

    model_config = ConfigDict(extra="forbid")

    synth: SynthConfig = Field(default_factory=_default_synth, description="Concept audio synthesised in-process "
                               "(unused with --data).")
    data: str | None = Field(None, description="A dataset folder written by `musicsae data synth` to train on "
                                               "instead (its manifest.csv labels name the prompts).")
    codec: CodecSettings = Field(default_factory=CodecSettings, description="The codec.")
    decoder: DecoderSettings = Field(default_factory=DecoderSettings, description="Text encoder and decoder.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Clips of each concept held out for the "
                                                                  "validation CE (at least one).")
    seed: int = Field(0, ge=0, description="Seed of the weights, batches and condition dropout.")
    checkpoint_every: int = Field(250, ge=1, description="Checkpoint every this many steps of either phase.")


def prompt_of(row: dict) -> str:
    """The text prompt of a concept clip, naming the concept and its value ('a piano playing C4')."""
    concept = row.get("concept")
    timbre = row.get("timbre")
    art = "an" if str(timbre or "")[:1] in "aeiou" else "a"
    if concept in ("notes", "timbres"):
        return f"{art} {timbre} playing {row['pitch_class']}{int(row['octave'])}"
    if concept == "intervals":
        play = "" if row.get("play") in (None, "harmonic") else f" {row['play']}"
        return (f"{art} {timbre} playing a{play} {INTERVAL_WORDS[int(row['interval_semitones'])]} above "
                f"{row['root_pitch_class']}{int(row['octave'])}")
    if concept == "chords":
        inv = int(row.get("chord_inversion") or 0)
        tail = f" in {INVERSIONS[inv]} inversion" if inv else ""
        return f"{art} {timbre} playing a {row['chord_root']} {row['chord_quality']} chord{tail}"
    if concept == "tempos":
        return f"{PATTERN_WORDS.get(row['beat_pattern'], 'a beat')} at {float(row['bpm']):g} bpm"
    raise InputError(f"clip {row.get('item_id')} has no concept label to build a prompt from",
                     "train on a folder written by `musicsae data synth` (its manifest names each clip's concept)")


def _rows_and_audio(cfg: TrainTinyConfig, progress: ProgressFactory) -> tuple[list[dict], object]:
    """(manifest rows with their prompts, float32 clips (N, samples) at 32 kHz): synthesised, or read from cfg.data."""
    import numpy as np

    from .tiny import SAMPLE_RATE

    if cfg.data is None:
        from ..audio.synth import plan, render

        synth = cfg.synth.model_copy(update={"sample_rate": SAMPLE_RATE})
        rows = plan(synth)
        audio = []
        with progress("Synthesising", len(rows)) as tracker:
            for row in rows:
                audio.append(render(row, synth))
                tracker.advance(1)
    else:
        from ..audio.io import load_audio
        from ..audio.manifest import load_dataset

        manifest = load_dataset(cfg.data)
        rows = manifest.rows
        needed = {"concept", "timbre", "pitch_class", "octave", "bpm"}
        if not rows or not needed & set(manifest.label_columns) or "concept" not in manifest.label_columns:
            raise InputError(f"{cfg.data} has no concept labels to build prompts from (labels: "
                             f"{', '.join(manifest.label_columns) or 'none'})",
                             "train on a folder written by `musicsae data synth`, or leave --data out")
        for row in rows:  # every clip must name its concept before any audio is read
            prompt_of(row)
        audio = []
        with progress("Reading audio", len(rows)) as tracker:
            for row in rows:
                audio.append(load_audio(row["path"], SAMPLE_RATE)[0].astype(np.float32))
                tracker.advance(1)
    rows = [{**r, "prompt": prompt_of(r)} for r in rows]
    n = min(len(a) for a in audio)
    return rows, np.stack([a[:n] for a in audio])  # (N, samples): clips cut to the shortest


def split_rows(rows: list[dict], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: per concept, round(val_fraction * groups) groups (at least one) held out."""
    import numpy as np

    train, val = [], []
    for concept in dict.fromkeys(r["concept"] for r in rows):
        idx = [i for i, r in enumerate(rows) if r["concept"] == concept]
        groups = list(dict.fromkeys(rows[i].get("group") or rows[i]["item_id"] for i in idx))
        if len(groups) < 2:
            raise InputError(f"concept {concept} has a single clip (or group): none can be held out for validation",
                             "give every concept at least two clips (e.g. raise max_per_concept or variants)")
        rng = np.random.default_rng([seed, len(concept), sum(map(ord, concept))])
        n_val = max(1, int(round(val_fraction * len(groups))))
        held = {groups[j] for j in rng.permutation(len(groups))[:n_val]}
        for i in idx:
            (val if (rows[i].get("group") or rows[i]["item_id"]) in held else train).append(i)
    return train, val


def check_shapes(cfg: TrainTinyConfig) -> tuple[int, int]:
    """(num_codebooks, vocab_size) of the decoder; ConfigError when they do not match the codec's."""
    k = cfg.decoder.num_codebooks if cfg.decoder.num_codebooks is not None else cfg.codec.num_codebooks
    v = cfg.decoder.vocab_size if cfg.decoder.vocab_size is not None else cfg.codec.codebook_size
    if k != cfg.codec.num_codebooks:
        raise ConfigError(f"decoder.num_codebooks {k} does not match the codec's {cfg.codec.num_codebooks} quantizers",
                          "leave decoder.num_codebooks unset (it follows codec.num_codebooks) or make them equal")
    if v != cfg.codec.codebook_size:
        raise ConfigError(f"decoder.vocab_size {v} does not match the codec's codebook size "
                          f"{cfg.codec.codebook_size}", "leave decoder.vocab_size unset (it follows "
                          "codec.codebook_size) or make them equal")
    if cfg.decoder.hidden_size % cfg.decoder.num_heads:
        raise ConfigError(f"decoder.num_heads {cfg.decoder.num_heads} does not divide decoder.hidden_size "
                          f"{cfg.decoder.hidden_size}", "choose a head count that divides the width")
    return k, v


def vocabulary(prompts: list[str]) -> list[str]:
    """The tokenizer's words: tiny.WORDS (so prompts like 'calm jazz piano' still tokenise), every prompt word, and
    every note name (C0..B8), instrument, chord quality and interval word, so any concept prompt tokenises."""
    from ..audio.config import CHORD_QUALITIES, PITCH_CLASSES, VOICE_NAMES
    from .tiny import WORDS

    concept_words = [*(f"{pc}{o}" for o in range(9) for pc in PITCH_CLASSES), *VOICE_NAMES, *CHORD_QUALITIES,
                     *(w for name in INTERVAL_WORDS.values() for w in name.split()), "an", "playing", "above",
                     "inversion", *INVERSIONS.values(), "bpm", "loop", "click", "track", "waltz", "melodic"]
    return list(dict.fromkeys([*WORDS, "calm", *(w for p in prompts for w in p.split()), *concept_words]))


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

    from .musicgen import quiet_transformers
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


class _Interrupted(Exception):
    pass


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


def _seed_of(seed: int, phase: int, step: int) -> int:
    """A step's own seed, so a resumed run draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + phase * 7_919 + step) % (2**63)


def _lr(cfg: DecoderSettings, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))


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
    rows, audio = _rows_and_audio(cfg, progress)
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
        survival = _train_codec(model, audio, rows, train_idx, val_idx, cfg, partial, state, seconds, progress)
        state = state if state and state["phase"] != "codec" else None
        t0 = time.perf_counter()
        codes = state["codes"] if state else _encode(model, audio, progress)
        seconds["encoding"] += 0.0 if state else time.perf_counter() - t0
        train_ce, val_ce, random_ce = _train_decoder(model, codes, tok, train_idx, val_idx, cfg, partial, state,
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


def _train_codec(model, audio, rows, train_idx, val_idx, cfg, partial, state, seconds, progress) -> dict:
    """Train the codec (phase 'codec'), checkpointing as it goes; returns the pitch survival (median |cents|,
    fraction within 50 cents) of held-out note clips (held-in ones when none is held out): the input itself, through
    the random codec, through the trained one."""
    import numpy as np

    from .tiny_codec import CodecTrainer, pitch_survival

    pitched = [i for i in val_idx if rows[i].get("frequency_hz") not in (None, "")]  # held out: unseen by the codec
    notes = (pitched or [i for i in train_idx if rows[i].get("frequency_hz") not in (None, "")])[:32]
    clips = [audio[i] for i in notes]
    f0 = np.array([float(rows[i]["frequency_hz"]) for i in notes])
    if state and state["phase"] != "codec":
        return state["survival"]
    # the random codec's figures are measured once, before training, and kept in the checkpoint
    before = state["random_codec"] if state else pitch_survival(model.audio_encoder, clips, f0)["decoded"]
    trainer = CodecTrainer(model.audio_encoder, audio[train_idx], seed=cfg.seed, autoencoder_steps=cfg.codec.steps,
                           batch_size=cfg.codec.batch_size, lr=cfg.codec.lr)
    total = cfg.codec.steps + cfg.codec.finetune_steps
    step = 0
    if state:
        trainer.load_state_dict(state["codec_trainer"])
        step = int(state["step"])
    t0 = time.perf_counter() - seconds["codec"]
    with progress("Training codec", total) as tracker:
        tracker.advance(step)
        while step < total:
            trainer.step()
            step += 1
            seconds["codec"] = time.perf_counter() - t0
            if step % cfg.checkpoint_every == 0 and step < total:
                save_state(partial, {"config": cfg.model_dump(mode="json"), "phase": "codec", "step": step,
                                     "seconds": seconds, "model": model.state_dict(), "random_codec": before,
                                     "codec_trainer": trainer.state_dict()})
            tracker.advance(1)
    trainer.finish()  # codebooks fitted to the encoder if no decoder step did it
    model.audio_encoder.eval()
    after = pitch_survival(model.audio_encoder, clips, f0)
    return {"input": after["input"], "random_codec": before, "trained_codec": after["decoded"]}


def _encode(model, audio, progress):
    """Codes (N, K, T) of every clip, each encoded on its own (see MusicGenAdapter.encode), cut to the shortest."""
    import numpy as np
    import torch

    out = []
    encoder = model.audio_encoder.eval()
    with torch.inference_mode(), progress("Encoding clips", len(audio)) as tracker:
        for a in audio:
            x = torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None]  # (1, 1, N)
            out.append(encoder.encode(x).audio_codes[0, 0])  # (K, T)
            tracker.advance(1)
    t = min(c.shape[-1] for c in out)
    return torch.stack([c[:, :t] for c in out]).long()  # (N, K, T)


def _decoder_parameters(model) -> list:
    parts = [model.text_encoder, model.decoder, getattr(model, "enc_to_dec_proj", None)]
    return [p for part in parts if part is not None for p in part.parameters()]


def _val_ce(model, codes, ids, mask, val_idx, pad: int) -> float:
    """Mean next-code cross-entropy (nats) of the held-out clips with their own prompts."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val_idx), 32):
            batch = torch.tensor(val_idx[start:start + 32])
            inputs, labels = delayed(codes[batch], pad)
            loss = model(input_ids=ids[batch], attention_mask=mask[batch], decoder_input_ids=inputs,
                         labels=labels).loss
            total += float(loss) * len(batch)
            count += len(batch)
    model.train()
    return total / count


def _train_decoder(model, codes, tok, train_idx, val_idx, cfg, partial, state, seconds, survival, progress):
    """Phase 'decoder': text encoder and decoder trained jointly; returns (train CE, val CE, random model's val CE)."""
    import torch

    d, pad = cfg.decoder, int(model.decoder.config.pad_token_id)
    ids, mask = tok["input_ids"], tok["attention_mask"]
    for p in model.audio_encoder.parameters():
        p.requires_grad_(False)
    params = _decoder_parameters(model)
    opt = torch.optim.AdamW(params, lr=d.lr, betas=(0.9, 0.95), weight_decay=0.01)
    step, losses = 0, []
    if state:
        opt.load_state_dict(state["optimizer"])
        step, losses, random_ce = int(state["step"]), list(state["losses"]), float(state["random_val_ce"])
    else:
        random_ce = _val_ce(model, codes, ids, mask, val_idx, pad)
    pool = torch.tensor(train_idx)
    model.train()
    model.audio_encoder.eval()
    t0 = time.perf_counter() - seconds["decoder"]
    with progress("Training decoder", d.steps) as tracker:
        tracker.advance(step)
        while step < d.steps:
            g = torch.Generator().manual_seed(_seed_of(cfg.seed, 2, step))
            torch.manual_seed(_seed_of(cfg.seed, 3, step))  # dropout inside the model
            batch = pool[torch.randint(len(pool), (d.batch_size,), generator=g)]
            drop = torch.rand(d.batch_size, generator=g) < d.cond_dropout  # these rows see the unconditional text
            inputs, labels = delayed(codes[batch], pad)
            for group in opt.param_groups:
                group["lr"] = _lr(d, step)
            loss = model(input_ids=ids[batch], attention_mask=mask[batch].masked_fill(drop[:, None], 0),
                         decoder_input_ids=inputs, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            seconds["decoder"] = time.perf_counter() - t0
            if step % cfg.checkpoint_every == 0 and step < d.steps:
                save_state(partial, {"config": cfg.model_dump(mode="json"), "phase": "decoder", "step": step,
                                     "seconds": seconds, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "codes": codes, "losses": losses, "random_val_ce": random_ce,
                                     "survival": survival})
            tracker.advance(1)
    tail = losses[-max(1, min(50, len(losses) // 10)):]
    return sum(tail) / len(tail), _val_ce(model, codes, ids, mask, val_idx, pad), random_ce


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
