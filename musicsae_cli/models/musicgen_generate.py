"""MusicGen generation with the residual stream captured at every generated frame.

With classifier-free guidance the decoder batch is doubled: rows [:B] are the conditional stream, rows [B:]
the unconditional one; they are returned as separate streams. With the KV cache every step after the prefill
feeds one position, and transformers may run the prefill twice, so captures are keyed by decoder position,
counted from what the decoder is fed (see positions.py), never by call count; positions that are not
contiguous or do not cover every frame are a one-line error. The generated codes are read from the
decoder's own inputs (one extra step makes the last frame's last codebook an input too) and decoded here,
so the audio, the codes and the activations belong together: teacher-forcing the codes reproduces them.

Audio-prompt continuation: the prompt's EnCodec codes (K, P) become the decoder input after BOS; transformers
applies the delay pattern, so the prefill covers positions 0..P and sampling starts at frame P. `duration_s`
is the total length, prompt included (as in audiocraft's generate_continuation); the returned codes and audio
hold the prompt frames first (the audio as EnCodec re-decodes them).
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .base import GenerationOutput
from .hookpoints import layer_index
from .hooks import scoped_hooks
from .musicgen_settings import Sampling  # noqa: F401  (the settings generate_with_capture takes)
from .positions import DecoderPositions, unsupported


def generate_with_capture(adapter, texts: list[str | None], duration_s: float, hookpoints: list[str], *,
                          guidance_scale: float = 3.0, seed: int = 0, top_k: int = 250, top_p: float = 0.0,
                          temperature: float = 1.0, streams: str = "both", prompt_codes=None) -> GenerationOutput:
    """Generate `duration_s` of audio per prompt (None = unconditional) and capture every frame's residuals.

    `prompt_codes`: EnCodec codes (K, P) shared by the batch, or (B, K, P), to continue; P < the frames asked for.
    """
    import torch
    from transformers import GenerationConfig

    model, k_books = adapter.model, adapter.num_codebooks
    n_frames = max(1, int(round(duration_s * adapter.frame_rate)))
    batch = len(texts)
    prompt = _prompt_ids(prompt_codes, batch, k_books, n_frames, adapter.device)
    n_prompt = 0 if prompt is None else int(prompt.shape[-1])
    # The delay pattern needs K-1 extra steps to finish the last frame, plus one so that its last token is fed.
    max_new = n_frames - n_prompt + k_books
    conditional = any(t is not None for t in texts)
    cfg = conditional and guidance_scale > 1.0
    if conditional:
        input_ids, attention_mask = adapter.text_inputs(texts)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    else:
        inputs = dict(model.get_unconditional_inputs(num_samples=batch))
        inputs.pop("guidance_scale", None)
    if prompt is not None:
        inputs["decoder_input_ids"] = prompt.reshape(batch * k_books, n_prompt)  # BOS is prepended by transformers
    gen_config = GenerationConfig.from_dict({
        **model.generation_config.to_dict(), "do_sample": True, "top_k": top_k, "top_p": top_p or None,
        "temperature": temperature, "guidance_scale": guidance_scale if cfg else 1.0,
        "max_new_tokens": max_new, "max_length": None, "min_new_tokens": max_new})

    tracker, position = DecoderPositions(), {"start": 0}
    captured: dict[str, dict[int, torch.Tensor]] = {h: {} for h in hookpoints}
    fed: dict[int, torch.Tensor] = {}  # decoder position -> input tokens (B*K,) of the first batch half

    def decoder_pre(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)  # (rows*K, n) with the delay pattern applied
        if ids is None:
            raise unsupported("MusicGen's decoder was called without input_ids")
        position["start"] = tracker.begin(kwargs, int(ids.shape[1]))
        for j in range(ids.shape[1]):
            fed[position["start"] + j] = ids[: batch * k_books, j].detach().to("cpu")

    def hook_for(name: str):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output  # (rows, n, d)
            for j in range(out.shape[1]):
                captured[name][position["start"] + j] = out[:, j].detach()
        return hook

    regs = [(model.decoder.model.decoder, "pre", decoder_pre, True)]
    regs += [(adapter.layers[layer_index(h)], "forward", hook_for(h), False) for h in hookpoints]
    torch.manual_seed(seed)
    with torch.inference_mode(), scoped_hooks(regs), adapter.guided_layout(batch if cfg else None):
        model.generate(**inputs, generation_config=gen_config)
        tracker.check_covers(n_frames + k_books)
        codes = _revert_delay(fed, batch, k_books, n_frames)  # (B, K, T)
        audio = model.audio_encoder.decode(torch.from_numpy(codes)[None].to(adapter.device),
                                           [None] * batch).audio_values  # (B, 1, N)

    acts: dict[str, dict[str, torch.Tensor]] = {}
    names = (["cond", "uncond"] if cfg else ["cond"]) if conditional else ["uncond"]
    for s, stream in enumerate(names):
        if streams in ("both", stream):
            rows = slice(s * batch, (s + 1) * batch)
            # frame t <- position t+1, the convention of teacher forcing
            acts[stream] = {h: torch.stack([captured[h][t + 1][rows] for t in range(n_frames)], dim=1)
                            for h in hookpoints}  # (B, T, d)
    settings = {"guidance_scale": guidance_scale if cfg else None, "seed": seed, "top_k": top_k,
                "top_p": top_p or None, "temperature": temperature, "max_new_tokens": max_new,
                "prompt_frames": n_prompt}
    return GenerationOutput(audio=audio.float().cpu().numpy(), tokens=codes, acts=acts, n_frames=n_frames,
                            settings=settings, prompt_frames=n_prompt)


def _prompt_ids(prompt_codes, batch: int, k_books: int, n_frames: int, device):
    """Prompt codes as a (B, K, P) long tensor on `device`, checked against the model and the length asked for."""
    import torch

    if prompt_codes is None:
        return None
    prompt = torch.as_tensor(prompt_codes).to(device=device, dtype=torch.long)
    if prompt.ndim == 2:
        prompt = prompt[None].expand(batch, -1, -1)
    if prompt.ndim != 3 or prompt.shape[:2] != (batch, k_books):
        raise UsageError(f"audio prompt codes have shape {tuple(prompt.shape)}, expected ({k_books}, P) or "
                         f"({batch}, {k_books}, P)", "encode the prompt with the same model")
    if prompt.shape[-1] >= n_frames:
        raise UsageError(f"the audio prompt is {prompt.shape[-1]} frames, not shorter than the {n_frames} frames "
                         "requested", "the duration is the total length, prompt included: raise it or trim the prompt")
    return prompt.contiguous()


def _revert_delay(fed: dict, batch: int, k_books: int, n_frames: int) -> np.ndarray:
    """Codes (B, K, T) from the tokens fed at each decoder position: codebook k of frame t sat at k+1+t."""
    seq = np.stack([fed[p].numpy() for p in range(n_frames + k_books)], axis=1)  # (B*K, positions)
    seq = seq.reshape(batch, k_books, -1)
    return np.stack([seq[:, k, k + 1:k + 1 + n_frames] for k in range(k_books)], axis=1)
