"""Downstream SAE metrics: splice the SAE into the model and compare what the model then does.

Variants at the SAE's hookpoint: the clean model; the SAE reconstruction; reconstruction plus the error term
(a no-op check: it must match the clean model); zero-ablation; mean-ablation (the hookpoint's mean over the
store).

- Models with a loss on their own inputs (token models): cross-entropy and KL to the clean model over the next
  tokens; fraction of loss recovered = (CE_ablated - CE_sae) / (CE_ablated - CE_clean), against both ablations.
- Models with outputs of their own (autoencoders, pitch trackers, any torch model): the distance of each
  variant's output to the clean output (a multi-scale spectral distance when the outputs are audio, else the
  relative L2 distance); fraction recovered = 1 - d_sae / d_ablated, against both ablations.
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


def _picked_items(store, n_items: int) -> list[dict]:
    """`n_items` store items spread evenly over the store; InputError without source audio."""
    check_items(n_items)
    items = store.items().to_pylist()
    if not items or "source_path" not in items[0]:
        raise InputError("the store has no source audio to re-run the model on",
                         "downstream metrics need a store written by `musicsae extract` from audio")
    return [items[i] for i in np.linspace(0, len(items) - 1, min(n_items, len(items))).astype(int)]


def _splices(sae, store, hookpoint: str, adapter) -> dict:
    """The spliced variants as edits for adapter.intervene: SAE, SAE + error (no-op), zero- and mean-ablation."""
    import torch

    sample = np.sort(np.random.default_rng(0).choice(store.n_rows, size=min(store.n_rows, 65536), replace=False))
    mean = torch.from_numpy(store.read_rows(hookpoint, sample).mean(axis=0)).to(adapter.device)
    sae = sae.to(adapter.device).eval()

    def through_sae(h):  # (B, S, d) in the model's dtype
        x = h.reshape(-1, h.shape[-1]).float()
        return sae(x).reshape(h.shape).to(h.dtype)

    def sae_plus_error(h):  # reconstruction + (h - reconstruction): the splice must then change nothing
        rec = through_sae(h).float()
        return (rec + (h.float() - rec)).to(h.dtype)

    return {"sae": through_sae, "sae_plus_error": sae_plus_error, "zero_ablation": torch.zeros_like,
            "mean_ablation": lambda h: mean.to(h.dtype).expand_as(h)}


def _item_audio(item: dict, sr: int, hop: int) -> np.ndarray:
    """The audio of a store item (its window of the source file), as the extraction read it."""
    from ..audio.io import load_audio

    n = int(item["n_frames"]) * hop
    return load_audio(item["source_path"], sample_rate=sr, offset_s=float(item.get("window_start_s") or 0.0),
                      duration_s=n / sr)[0][:n]


def output_metrics(sae, store, hookpoint: str, adapter, n_items: int = 16,
                   progress: ProgressFactory = no_progress) -> dict:
    """Distance of each spliced variant's output to the clean output, and fraction recovered (see module doc)."""
    adapter.require("outputs", "downstream SAE metrics")
    adapter.require("intervene", "downstream SAE metrics")
    pick = _picked_items(store, n_items)
    edits = _splices(sae, store, hookpoint, adapter)
    audio_out = bool(getattr(adapter, "output_audio", False))
    distance = multiscale_spectral_distance if audio_out else relative_l2
    sums = dict.fromkeys(edits, 0.0)
    hop = int(round(adapter.sample_rate / float(store.frame_rate or adapter.frame_rate)))  # the store's rows
    with progress("Downstream", len(pick)) as bar:
        for item in pick:
            audio = _item_audio(item, adapter.sample_rate, hop)
            clean = adapter.outputs(audio)
            for name, fn in edits.items():
                with adapter.intervene({hookpoint: fn}):
                    sums[name] += distance(adapter.outputs(audio), clean)
            bar.advance()
    dist = {name: total / len(pick) for name, total in sums.items()}
    recovered = {a: (1.0 - dist["sae"] / dist[a]) if dist[a] > 1e-12 else None
                 for a in ("zero_ablation", "mean_ablation")}
    return {"items": len(pick), "metric": "multiscale_spectral_distance" if audio_out else "relative_l2",
            "distance_to_clean": dist, "fraction_recovered": recovered}


def relative_l2(out: np.ndarray, clean: np.ndarray) -> float:
    """||out - clean|| / ||clean||."""
    return float(np.linalg.norm(out - clean) / max(float(np.linalg.norm(clean)), 1e-12))


def multiscale_spectral_distance(out: np.ndarray, clean: np.ndarray, sizes=(2048, 1024, 512, 256, 128, 64)) -> float:
    """Mean over FFT sizes (those no longer than the audio) of the L1 distance of log-magnitude spectrograms
    (Hann windows, hop size / 4), per channel, as audio autoencoders are compared."""
    out = np.atleast_2d(np.asarray(out, np.float64))
    clean = np.atleast_2d(np.asarray(clean, np.float64))
    n = min(out.shape[-1], clean.shape[-1])
    used = [s for s in sizes if s <= n] or [n]
    total = 0.0
    for size in used:
        hop = max(1, size // 4)
        frames = 1 + (n - size) // hop
        idx = np.arange(size)[None, :] + hop * np.arange(frames)[:, None]
        window = np.hanning(size)
        spec = [np.log(np.abs(np.fft.rfft(x[..., :n][..., idx] * window, axis=-1)) + 1e-7) for x in (out, clean)]
        total += float(np.mean(np.abs(spec[0] - spec[1])))
    return total / len(used)


def downstream_metrics(sae, store, hookpoint: str, adapter, n_items: int = 16, batch_size: int = 4,
                       progress: ProgressFactory = no_progress) -> dict:
    """CE, KL to the clean model and fraction of loss recovered, over `n_items` items of the store."""
    adapter.require("loss", "downstream SAE metrics")
    adapter.require("intervene", "downstream SAE metrics")
    pick = _picked_items(store, n_items)
    edits = _splices(sae, store, hookpoint, adapter)
    sums = {name: {"nll": 0.0, "kl": 0.0} for name in ["clean", *edits]}
    tokens = 0
    sr, hop = adapter.sample_rate, adapter.hop_length
    with progress("Downstream", len(pick)) as bar:
        for start in range(0, len(pick), batch_size):
            chunk = pick[start:start + batch_size]
            audio = [_item_audio(it, sr, hop) for it in chunk]
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
