"""Next-token log-probabilities of MusicGen over codebook tokens, for loss-based (downstream) evaluations."""

from __future__ import annotations


def codebook_log_probs(adapter, codes: list, texts: list[str | None] | None = None):
    """(log_probs (B, K, S, V), targets (B, K, S), mask (B, K, S)) over the full delay pattern.

    Position s predicts the token at s+1; `mask` keeps real codes only (BOS, delay padding and batch padding
    are never targets; their entries in `targets` are 0).
    """
    import torch

    k_books, pad = adapter.num_codebooks, adapter.pad_id
    lengths = [int(c.shape[-1]) for c in codes]
    length = max(lengths) + k_books  # BOS column + T frames + K-1 delay positions
    seq = torch.full((len(codes), k_books, length), pad, dtype=torch.long, device=adapter.device)
    for b, c in enumerate(codes):
        for k in range(k_books):
            seq[b, k, k + 1:k + 1 + lengths[b]] = c[k]  # codebook k of frame t at position k+1+t
    inputs, targets = seq[:, :, :-1], seq[:, :, 1:]  # (B, K, S) each
    states, mask = adapter.conditioning(texts if texts is not None else [None] * len(codes))
    with torch.inference_mode():
        hidden = adapter.model.decoder.model.decoder(
            input_ids=inputs.reshape(-1, inputs.shape[-1]), encoder_hidden_states=states,
            encoder_attention_mask=mask, use_cache=False).last_hidden_state  # (B, S, d), after the final norm
        logits = torch.stack([head(hidden) for head in adapter.model.decoder.lm_heads], dim=1)  # (B, K, S, V)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
    mask = targets != pad
    return log_probs, targets.masked_fill(~mask, 0), mask  # pads point at token 0 but are masked out


def delayed(codes, pad: int):
    """(inputs (B*K, T+K-1), labels (B, T+K-1, K)) of codes (B, K, T) with the delay pattern and a BOS column.

    Position s of the input holds codebook k of frame s-1-k; position s predicts position s+1 (pads: ignored).
    """
    import torch

    b, k, t = codes.shape
    seq = torch.full((b, k, t + k), pad, dtype=torch.long, device=codes.device)  # BOS + T frames + K-1 delays
    for j in range(k):
        seq[:, j, j + 1:j + 1 + t] = codes[:, j]
    return seq[:, :, :-1].reshape(b * k, t + k - 1), seq[:, :, 1:].transpose(1, 2)
