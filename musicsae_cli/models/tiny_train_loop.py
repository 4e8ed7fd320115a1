"""The two training phases of `model train-tiny` (codec, then text encoder and decoder), checkpointed as they go."""

from __future__ import annotations

import math
import time

from ..artifacts import save_state
from .musicgen_loss import delayed
from .tiny_train_config import DecoderSettings


def _seed_of(seed: int, phase: int, step: int) -> int:
    """A step's own seed, so a resumed run draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + phase * 7_919 + step) % (2**63)


def _lr(cfg: DecoderSettings, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))


def train_codec(model, audio, rows, train_idx, val_idx, cfg, partial, state, seconds, progress) -> dict:
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


def encode_clips(model, audio, progress):
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


def train_decoder(model, codes, tok, train_idx, val_idx, cfg, partial, state, seconds, survival, progress):
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
