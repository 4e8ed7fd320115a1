"""Downstream SAE metrics: splice the SAE into the model and compare its loss on its own inputs (next-token loss).

Variants at the SAE's hookpoint: the clean model; the SAE reconstruction; reconstruction plus the error term
(a no-op check: it must match the clean model); zero-ablation; mean-ablation (the hookpoint's mean over the
store). Fraction of loss recovered = (CE_ablated - CE_sae) / (CE_ablated - CE_clean), against both ablations.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, UsageError
from ..progress import ProgressFactory, no_progress


def check_items(n_items: int) -> None:
    """Downstream metrics average over the items re-run through the model: at least one is needed."""
    if int(n_items) < 1:
        raise UsageError(f"--max-items must be at least 1, got {n_items}",
                         "downstream metrics re-run that many store items through the model, e.g. --max-items 16")


def downstream_metrics(sae, store, hookpoint: str, adapter, n_items: int = 16, batch_size: int = 4,
                       progress: ProgressFactory = no_progress) -> dict:
    """CE, KL to the clean model and fraction of loss recovered, over `n_items` items of the store."""
    import torch

    from ..audio.io import load_audio

    check_items(n_items)
    adapter.require("loss", "downstream SAE metrics")
    adapter.require("intervene", "downstream SAE metrics")
    items = store.items().to_pylist()
    if not items or "source_path" not in items[0]:
        raise InputError("the store has no source audio to re-run the model on",
                         "downstream metrics need a store written by `musicsae extract` from audio")
    pick = [items[i] for i in np.linspace(0, len(items) - 1, min(n_items, len(items))).astype(int)]
    sample = np.sort(np.random.default_rng(0).choice(store.n_rows, size=min(store.n_rows, 65536), replace=False))
    mean = torch.from_numpy(store.read_rows(hookpoint, sample).mean(axis=0)).to(adapter.device)
    sae = sae.to(adapter.device).eval()

    def through_sae(h):  # (B, S, d) in the model's dtype
        x = h.reshape(-1, h.shape[-1]).float()
        return sae(x).reshape(h.shape).to(h.dtype)

    def sae_plus_error(h):  # reconstruction + (h - reconstruction): the splice must then change nothing
        rec = through_sae(h).float()
        return (rec + (h.float() - rec)).to(h.dtype)

    edits = {"sae": through_sae, "sae_plus_error": sae_plus_error,
             "zero_ablation": torch.zeros_like,
             "mean_ablation": lambda h: mean.to(h.dtype).expand_as(h)}
    sums = {name: {"nll": 0.0, "kl": 0.0} for name in ["clean", *edits]}
    tokens = 0
    sr, hop = adapter.sample_rate, adapter.hop_length
    with progress("Downstream", len(pick)) as bar:
        for start in range(0, len(pick), batch_size):
            chunk = pick[start:start + batch_size]
            audio = [load_audio(it["source_path"], sample_rate=sr, offset_s=float(it.get("window_start_s") or 0.0),
                                duration_s=it["n_frames"] * hop / sr)[0][: it["n_frames"] * hop] for it in chunk]
            inputs = adapter.tokenize(audio)
            texts = [it.get("text") for it in chunk]
            clean, targets, mask = adapter.next_token_log_probs(inputs, texts)
            tokens += int(mask.sum())
            _accumulate(sums["clean"], clean, clean, targets, mask)
            for name, fn in edits.items():
                with adapter.intervene({hookpoint: fn}):
                    lp, _, _ = adapter.next_token_log_probs(inputs, texts)
                _accumulate(sums[name], clean, lp, targets, mask)
            bar.advance(len(chunk))
    if tokens == 0:
        raise InputError(f"the {len(pick)} item(s) re-run through the model hold no tokens to score",
                         "use a store whose items are at least one frame long")
    ce = {name: s["nll"] / tokens for name, s in sums.items()}
    kl = {name: s["kl"] / tokens for name, s in sums.items() if name != "clean"}
    recovered = {}
    for ablation in ("zero_ablation", "mean_ablation"):
        gap = ce[ablation] - ce["clean"]
        recovered[ablation] = (ce[ablation] - ce["sae"]) / gap if abs(gap) > 1e-12 else None
    return {"items": len(pick), "tokens": tokens, "ce": ce, "kl_to_clean": kl,
            "fraction_loss_recovered": recovered, "ce_increase_with_sae": ce["sae"] - ce["clean"]}


def _accumulate(acc: dict, clean, lp, targets, mask) -> None:
    """Add summed negative log-likelihood and KL(clean || lp) over masked target tokens (float64)."""
    nll = -lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # the targets' shape
    acc["nll"] += float(nll[mask].double().sum())
    kl = (clean.exp() * (clean - lp)).sum(-1)
    acc["kl"] += float(kl[mask].double().sum())
