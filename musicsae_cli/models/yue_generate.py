"""Generation for the yue family: codes sampled token by token after a prompt, the residual stream captured as fed."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .base import EditContext, GenerationOutput
from .hookpoints import layer_index
from .yue import edit_hook, first_output
from .yue_settings import TokenSampling


def generate(adapter, texts, duration_s, hookpoints, *, seed=0, prompt_audio=None, settings=None):
    """YueAdapter.generate (see there)."""
    import torch

    if prompt_audio is not None:
        raise UsageError("an audio prompt needs the codec, which this model has not loaded",
                         "generate without --audio")
    s = adapter.generation_settings(settings)
    names = adapter.resolve_hookpoints(list(hookpoints)) if hookpoints else []
    texts = [t or "" for t in texts] or [""]
    tracks = len(adapter.layout.tracks)
    n_frames = max(1, int(round(duration_s * adapter.frame_rate)))
    n_new = n_frames * tracks
    prompts = {t: adapter.prompt_ids(t) for t in dict.fromkeys(texts)}
    start = max(len(ids) for ids, _ in prompts.values()) + len(adapter.layout.prefix)
    if adapter.max_positions and start + n_new + 1 > adapter.max_positions:
        room = (adapter.max_positions - start - 1) // tracks / adapter.frame_rate
        raise UsageError(f"{duration_s:g} s of {tracks} tracks is {n_new} tokens after {start} prompt and "
                         f"prefix tokens, more than the model's context of {adapter.max_positions}",
                         f"ask for at most {room:g} s" if room > 0 else "shorten the prompt")
    gen = torch.Generator(device=adapter.device).manual_seed(int(seed))
    tokens = torch.zeros(len(texts), n_new, dtype=torch.long)
    acts: dict = {}
    for text, (ids, _) in prompts.items():
        rows = [i for i, t in enumerate(texts) if t == text]
        codes, got = _sample_codes(adapter, ids + list(adapter.layout.prefix), len(rows), n_new, names, s, gen)
        tokens[rows] = codes.cpu()
        for n, a in got.items():
            if n not in acts:
                acts[n] = a.new_zeros((len(texts), *a.shape[1:]))
            acts[n][rows] = a
    tokens = tokens.reshape(len(texts), n_frames, tracks).permute(0, 2, 1).numpy()
    audio = None
    if adapter.codec is not None and adapter.codec.can_decode:  # the tracks decoded and mixed, as one mono clip
        audio = sum(adapter.codec.decode(tokens[:, j]) for j in range(tracks))[:, None].astype(np.float32)
    return GenerationOutput(audio=audio, tokens=tokens, acts={"main": acts}, n_frames=n_frames,
                            settings=s.model_dump(), row_frames=np.repeat(np.arange(n_frames), tracks),
                            row_meta={"track": list(adapter.layout.tracks) * n_frames})


def _sample_codes(adapter, first: list[int], batch: int, n_new: int, names: list[str], s: TokenSampling, gen):
    """n_new codes per row after the ids `first` (the same for every row), with the active edits; returns codes
    (batch, n_new) and {hookpoint: (batch, n_new, d)} captured at the generated tokens."""
    import torch

    from .hooks import scoped_hooks

    lo = adapter.layout.audio_offset + adapter.layout.codebook * adapter.layout.codebook_size
    captured: dict = {n: [] for n in names}
    state: dict = {"ctx": None}  # the pass's EditContext, set before each step

    def capture(name):
        def hook(module, args, output):
            captured[name].append(first_output(output).detach().float())
        return hook

    regs = [(adapter.blocks[layer_index(n)], "forward", edit_hook(fn, state), False)
            for n, fn in adapter._edits.items()]
    regs += [(adapter.blocks[layer_index(n)], "forward", capture(n), False) for n in names]
    ids = torch.tensor([first] * batch, device=adapter.device)
    seen = torch.zeros(batch, adapter.layout.codebook_size, dtype=torch.bool, device=adapter.device)
    codes, past, fed = [], None, 0
    with torch.inference_mode(), scoped_hooks(regs):
        for step in range(n_new + 1):
            state["ctx"] = EditContext(start=fed, length=int(ids.shape[1]), batch=batch)
            out = adapter.model(input_ids=ids, use_cache=True, **{adapter._cache_arg: past})
            past, fed = out.get(adapter._cache_arg), fed + int(ids.shape[1])
            if step == 0:
                for n in names:
                    captured[n].clear()  # the prompt's and prefix's rows are not stored
            if step == n_new:
                break
            logits = out.logits[:, -1, lo:lo + adapter.layout.codebook_size].float()
            if s.repetition_penalty != 1.0:  # as transformers' repetition penalty, over the codes drawn so far
                penalised = torch.where(logits > 0, logits / s.repetition_penalty, logits * s.repetition_penalty)
                logits = torch.where(seen, penalised, logits)
            code = _sample(logits, s.temperature, s.top_k, s.top_p, gen)  # (B,)
            seen[torch.arange(batch, device=seen.device), code] = True
            codes.append(code)
            ids = (code + lo)[:, None]
    return torch.stack(codes, 1), {n: torch.cat(parts, 1) for n, parts in captured.items()}


def _sample(logits, temperature: float, top_k: int, top_p: float, generator):
    """One code per row from (B, V) logits: temperature, then top-k and nucleus filtering, then a draw."""
    import torch

    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


__all__ = ["generate"]
