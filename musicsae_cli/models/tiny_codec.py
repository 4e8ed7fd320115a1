"""A tiny EnCodec trained on CPU in minutes, so that its codes keep the pitch of the audio they encode.

The codec is a transformers `EncodecModel` (same config class, modules and buffers as real checkpoints), trained
in two phases against a multi-resolution STFT loss plus a waveform L1 term: first encoder and decoder as a plain
autoencoder, then, with residual codebooks fitted once to the trained encoder by k-means (`refit_codebooks`, which
writes `embed` and EnCodec's EMA buffers consistently), the decoder alone on the quantised latents. The model's own
`encode`/`decode` and `save_pretrained` use the codebooks unchanged.
`pitch_survival` measures what matters downstream: the pitch of audio after a round trip through `encode`/`decode`.
Imports torch: load lazily.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

SAMPLE_RATE = 32000
UPSAMPLING = [8, 5, 4, 4]  # hop 640 at 32 kHz -> 50 frames/s, as in the real checkpoints
FFT_SIZES = (256, 512, 1024, 2048)
LOG_EPS = 1e-3  # floor of the log-magnitude (-60 dB re a full-scale sine): a lower floor rewards near-silence
# waveform L1 relative to the audio's mean |x|. The STFT terms are blind to phase, and with them alone a tiny decoder
# sits at the wrong pitch for hundreds of steps (measured on the default data: 0% of held-out notes within 50 cents
# after 400 steps without it, 100% after 200 steps with it)
WAVE_WEIGHT = 1.0
SC_WEIGHT, LOGMAG_WEIGHT, COS_WEIGHT = 0.0, 0.3, 1.0  # spectral convergence off: it favours silence


def tiny_codec_config(num_codebooks: int = 4, codebook_size: int = 256):
    """The EncodecConfig of the trained tiny codec: 32 kHz mono, 50 frames/s, `num_codebooks` quantizers."""
    from transformers import EncodecConfig

    nbits = math.log2(codebook_size)
    frame_rate = SAMPLE_RATE / math.prod(UPSAMPLING)
    return EncodecConfig(
        sampling_rate=SAMPLE_RATE, audio_channels=1, num_filters=8, hidden_size=32, codebook_size=codebook_size,
        codebook_dim=32, upsampling_ratios=UPSAMPLING, num_lstm_layers=1, num_residual_layers=1,
        chunk_length_s=None, overlap=None, normalize=False, use_causal_conv=False,
        # num_quantizers is derived from the bandwidth: K * frame_rate * log2(codebook_size) / 1000
        target_bandwidths=[num_codebooks * frame_rate * nbits / 1000])


def quantized_latent(codec, emb: torch.Tensor) -> torch.Tensor:
    """Encoder outputs emb (B, D, T) replaced by the sum of their residual codes' entries: the decoder's input when
    the model's own `encode` then `decode` run (nearest code per stage, as `EncodecModel.encode` picks it)."""
    B, D, T = emb.shape
    residual = emb.transpose(1, 2).reshape(B * T, D)  # (B*T, D)
    quantized = torch.zeros_like(residual)
    for layer in codec.quantizer.layers:
        q = layer.codebook.embed[layer.codebook.quantize(residual)]  # (B*T, D)
        quantized = quantized + q
        residual = residual - q
    return quantized.reshape(B, T, D).transpose(1, 2)


def stft_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-resolution STFT loss of (B, samples) signals, averaged over FFT sizes: spectral convergence (linear
    magnitudes), log-magnitude L1, and the cosine distance of root-compressed magnitudes per clip.

    The cosine term is blind to level, so unlike the other two it never rewards a quieter output: from random
    weights it is what pulls energy onto the right partials (silence is where the other two start to get stuck).
    """
    total, stats = pred.new_zeros(()), {}
    for n_fft in FFT_SIZES:
        window = torch.hann_window(n_fft, device=pred.device, dtype=pred.dtype)
        # divided by the window's sum, so a full-scale sine peaks near 0.5 at every resolution
        mag_pred, mag_true = [torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs()
                              / window.sum() for x in (pred, target)]  # (B, bins, frames)
        sc = torch.linalg.norm(mag_pred - mag_true) / torch.linalg.norm(mag_true).clamp_min(1e-8)
        logmag = ((mag_pred + LOG_EPS).log() - (mag_true + LOG_EPS).log()).abs().mean()
        root_pred, root_true = ((m + 1e-6).sqrt().flatten(1) for m in (mag_pred, mag_true))  # +1e-6: finite gradient
        cos = 1 - F.cosine_similarity(root_pred, root_true, dim=1, eps=1e-8).mean()
        term = SC_WEIGHT * sc + LOGMAG_WEIGHT * logmag + COS_WEIGHT * cos
        total = total + term / len(FFT_SIZES)
        stats[f"stft{n_fft}"] = float(term.detach())
        stats[f"cos{n_fft}"] = float(cos.detach())
    return total, stats


def codec_loss(codec, audio: torch.Tensor, quantized: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, stats) of reconstructing audio (B, samples): through the continuous latent (quantized=False, the
    autoencoder phase: gradients reach encoder and decoder) or through the codes (the decoder alone learns)."""
    if quantized:
        with torch.no_grad():
            latent = quantized_latent(codec, codec.encoder(audio[:, None]))
    else:
        latent = codec.encoder(audio[:, None])  # (B, D, T)
    recon = codec.decoder(latent)[:, 0, : audio.shape[-1]]  # (B, samples)
    spectral, stats = stft_loss(recon, audio)
    wave = (recon - audio).abs().mean() / audio.abs().mean().clamp_min(1e-4)
    loss = spectral + WAVE_WEIGHT * wave
    stats.update(loss=float(loss.detach()), stft=float(spectral.detach()), wave_l1=float(wave.detach()))
    return loss, stats


def _kmeans(data: torch.Tensor, k: int, generator: torch.Generator, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids (k, D), counts (k,)) of data (N, D): Lloyd iterations seeded from distinct data points, dead codes
    re-seeded on distinct points the codebook fits worst.

    Centroids must stay distinct: two equal entries tie exactly for every frame near them, and which one a matrix
    product picks then depends on its blocking (the thread count), so the same audio would encode to other codes on
    another machine. Audio has many identical frames (silence, steady tones), hence seeds from unique rows.
    """
    if not bool(torch.isfinite(data).all()):
        raise FloatingPointError("the codec's encoder outputs are not finite (training diverged)")
    unique = torch.unique(data, dim=0)  # sorted rows: the seeds below are drawn by index, so this stays seeded
    pick = torch.randperm(len(unique), generator=generator)[:k]
    if len(pick) < k:  # fewer distinct frames than codes: the rest start on jittered copies
        extra = pick[torch.randint(len(pick), (k - len(pick),), generator=generator)]
        scale = float(unique.abs().mean() + unique.std()) + 1e-4  # a floor: the rows may all be zero
        jitter = 1e-3 * scale * torch.randn(k - len(pick), data.shape[1], generator=generator)
        centroids = torch.cat([unique[pick], unique[extra] + jitter])
    else:
        centroids = unique[pick].clone()
    for it in range(iters + 2):
        dist = torch.cdist(data, centroids)  # (N, k)
        assign = dist.argmin(1)  # (N,)
        counts = torch.bincount(assign, minlength=k).to(data.dtype)
        alive = counts > 0
        n_dead = int((~alive).sum())
        if it == iters + 1 or (it == iters and not n_dead):
            break
        if it < iters:
            sums = torch.zeros_like(centroids).index_add_(0, assign, data)  # (k, D)
            centroids[alive] = sums[alive] / counts[alive, None]
        # dead codes (and, after the last update, the duplicates it left) restart on distinct points the codebook
        # fits worst, so they go where they are needed
        if n_dead:
            # exact distances: the matrix-product form leaves rounding residue where a row is a centroid
            worst = torch.cdist(unique, centroids, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
            n_free = int((worst > 0).sum())
            if n_free:
                seeds = torch.multinomial(worst, min(n_dead, n_free), replacement=False, generator=generator)
                dead = (~alive).nonzero()[:, 0][:len(seeds)]
                centroids[dead] = unique[seeds]
    # a cluster can still end on the exact mean another holds (e.g. one frame each): nudge the later copies
    gaps = torch.cdist(centroids, centroids, compute_mode="donot_use_mm_for_euclid_dist").triu(1)
    same = (gaps == 0).triu(1).any(0)  # (k,) entries equal to an earlier one
    if bool(same.any()):
        scale = float(unique.abs().mean() + unique.std()) + 1e-4
        centroids[same] += 1e-3 * scale * torch.randn(int(same.sum()), data.shape[1], generator=generator)
        counts = torch.bincount(torch.cdist(data, centroids).argmin(1), minlength=k).to(data.dtype)
    return centroids, counts


@torch.no_grad()
def init_scales(codec, audio: torch.Tensor) -> None:
    """Data-dependent init: rescale every convolution of encoder and decoder, in forward order, so its output on
    audio (N, samples) varies with unit std around a zero mean per channel (the decoder's last: the audio's std).

    A freshly initialised EnCodec shrinks its input layer after layer, so the latent hardly depends on the audio
    and the decoder learns the average sound first; starting from unit-scale layers, it learns the audio itself.
    """
    convs = [m for part in (codec.encoder, codec.decoder) for m in part.modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    x = audio[:, None].to(codec.dtype)  # (N, 1, samples)
    for i, conv in enumerate(convs):
        seen: dict[str, torch.Tensor] = {}
        handle = conv.register_forward_hook(lambda mod, inp, out, seen=seen: seen.setdefault("out", out))
        try:
            codec.decoder(codec.encoder(x))
        finally:
            handle.remove()
        out = seen["out"]  # (N, C, T)
        mean = out.mean((0, 2))  # (C,)
        target = float(audio.std()) if i == len(convs) - 1 else 1.0
        scale = target / max(float((out - mean[None, :, None]).std()), 1e-8)
        gain = conv.parametrizations.weight.original0 if hasattr(conv, "parametrizations") else conv.weight
        gain.mul_(scale)
        conv.bias.copy_(-(mean - conv.bias) * scale)


@torch.no_grad()
def center_latent(codec, audio: torch.Tensor) -> float:
    """Move the mean of the encoder's output over audio (N, samples) into the biases around the latent: the
    encoder's last convolution gives mean 0 and the decoder's first adds the mean back (its reflect padding keeps a
    constant input constant, so the codec computes the same function). Returns the norm of the mean removed.

    Training can drift the latent to a large common offset with small variation around it; nearest-code search in
    float32 then decides by rounding (other codes under another thread count), so refits centre it first.
    """
    last, first = codec.encoder.layers[-1].conv, codec.decoder.layers[0].conv
    with torch.no_grad():
        mean = codec.encoder(audio[:, None].to(codec.dtype)).float().mean(dim=(0, 2))  # (D,)
        last.bias -= mean.to(last.bias.dtype)
        first.bias += (first.weight.float().sum(-1) @ mean).to(first.bias.dtype)  # weight (out, D, kernel)
    return float(mean.norm())


@torch.no_grad()
def refit_codebooks(codec, audio: torch.Tensor, generator: torch.Generator, iters: int = 8,
                    max_frames: int = 20000) -> dict:
    """Centre the latent (see `center_latent`), then re-estimate every residual stage's codebook from encoder outputs
    of audio (N, samples) by k-means."""
    center_latent(codec, audio)
    emb = codec.encoder(audio[:, None].to(codec.dtype))  # (N, D, T)
    residual = emb.transpose(1, 2).reshape(-1, emb.shape[1]).float()  # (N*T, D)
    if len(residual) > max_frames:
        residual = residual[torch.randperm(len(residual), generator=generator)[:max_frames]]
    before, after, used = [], [], []
    for layer in codec.quantizer.layers:
        book = layer.codebook
        before.append(float(residual.pow(2).sum(1).mean()))
        centroids, counts = _kmeans(residual, book.embed.shape[0], generator, iters)
        book.embed.copy_(centroids)
        book.cluster_size.copy_(counts)
        book.embed_avg.copy_(centroids * counts[:, None])  # EnCodec's EMA keeps sums: embed = embed_avg / size
        book.inited.fill_(1.0)
        residual = residual - centroids[book.quantize(residual)]
        after.append(float(residual.pow(2).sum(1).mean()))
        used.append(int((counts > 0).sum()))
    return {"frames": len(residual), "residual_before": before, "residual_after": after, "codes_used": used}


class CodecTrainer:
    """Adam over seeded random crops of audio (N, samples), in two phases. For the first `autoencoder_steps` steps
    encoder and decoder learn as a plain autoencoder (continuous latent); then the codebooks are fitted once to the
    trained encoder (`refit_codebooks`) and from there on the decoder alone learns to render the quantised latents,
    so the codes the model's own `encode` gives never move again (no commitment term, no moving codebooks: with
    them the encoder of so small a codec collapses to a nearly constant latent). `state_dict` holds tensors only,
    so training resumes exactly, also across the switch."""

    def __init__(self, codec, audio: torch.Tensor, *, seed: int, autoencoder_steps: int, batch_size: int = 8,
                 lr: float = 2e-3, crop_samples: int = 16000, refit_clips: int = 64):
        self.codec = codec.train()
        self.audio = torch.as_tensor(audio, dtype=torch.float32)
        self.autoencoder_steps, self.batch_size, self.refit_clips = autoencoder_steps, batch_size, refit_clips
        hop = math.prod(codec.config.upsampling_ratios)
        self.crop = min(crop_samples, self.audio.shape[1]) // hop * hop
        self.generator = torch.Generator().manual_seed(seed)
        self.params = [p for p in codec.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.step_count = 0

    def refit(self) -> dict:
        """Fit the codebooks to the encoder on `refit_clips` random clips (see refit_codebooks)."""
        pick = torch.randperm(len(self.audio), generator=self.generator)[: min(self.refit_clips, len(self.audio))]
        return refit_codebooks(self.codec, self.audio[pick], self.generator)

    def step(self) -> dict:
        """One optimiser step on a random batch of crops (fitting the codebooks first when the phase switches)."""
        if self.step_count == 0:
            init_scales(self.codec, self.audio[:: max(1, len(self.audio) // 8)][:8, : self.crop])  # spread over the set
        refit = self.refit() if self.step_count == self.autoencoder_steps else None
        idx = torch.randint(len(self.audio), (self.batch_size,), generator=self.generator)
        start = torch.randint(self.audio.shape[1] - self.crop + 1, (self.batch_size,), generator=self.generator)
        pairs = zip(idx.tolist(), start.tolist(), strict=True)
        batch = torch.stack([self.audio[i, s: s + self.crop] for i, s in pairs])  # (B, crop)
        loss, stats = codec_loss(self.codec, batch, quantized=self.step_count >= self.autoencoder_steps)
        self.optimizer.zero_grad(set_to_none=True)  # in the second phase the encoder's gradients stay None: Adam
        loss.backward()                             # leaves it (and its moments) as they are
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step_count += 1
        stats["step"] = self.step_count
        if refit is not None:
            stats["codes_used"] = min(refit["codes_used"])
        return stats

    def finish(self) -> dict | None:
        """After the last step: fit the codebooks if training never reached the switch (and ran at all)."""
        if 0 < self.step_count <= self.autoencoder_steps:
            return self.refit()
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Model, optimiser moments, step and RNG state as a flat dict of tensors (safetensors-compatible)."""
        state = {f"model.{k}": v.detach().clone() for k, v in self.codec.state_dict().items()}
        opt = self.optimizer.state_dict()["state"]
        for i, s in opt.items():
            for k, v in s.items():
                state[f"optim.{i}.{k}"] = torch.as_tensor(v).clone()
        state["step"] = torch.tensor(self.step_count, dtype=torch.int64)
        state["rng"] = self.generator.get_state().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` (strictly: every model and optimiser tensor must be present)."""
        model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        self.codec.load_state_dict(model, strict=True)
        opt = self.optimizer.state_dict()
        per_param: dict[int, dict] = {}
        for k, v in state.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                per_param.setdefault(int(i), {})[name] = v.clone()
        opt["state"] = per_param
        self.optimizer.load_state_dict(opt)
        self.step_count = int(state["step"])
        self.generator.set_state(state["rng"].clone())


def train_codec(codec, audio: torch.Tensor, steps: int, finetune_steps: int, seed: int = 0, *, batch_size: int = 8,
                lr: float = 2e-3, on_step=None) -> dict:
    """Train `codec` in place: `steps` autoencoder steps, then `finetune_steps` decoder steps on the codes (see
    CodecTrainer). Returns the last step's stats."""
    trainer = CodecTrainer(codec, audio, seed=seed, autoencoder_steps=steps, batch_size=batch_size, lr=lr)
    stats: dict = {}
    for _ in range(steps + finetune_steps):
        stats = trainer.step()
        if on_step is not None:
            on_step(stats)
    trainer.finish()
    codec.eval()
    return stats


def estimate_f0(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fmin: float = 50.0, fmax: float = 2000.0,
                harmonics: int = 5) -> np.ndarray:
    """f0 (Hz) of each clip (N, samples) by subharmonic summation over a Welch magnitude spectrum, refined by
    parabolic interpolation of the spectral peak nearest the winning candidate."""
    x = np.atleast_2d(np.asarray(audio, np.float64))
    n_fft, pad = 8192, 4
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, :: n_fft // 4]  # (N, F, n_fft)
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), n_fft * pad, axis=-1)).mean(1)  # (N, bins)
    df = sample_rate / (n_fft * pad)
    bins = np.arange(spec.shape[1]) * df
    cands = fmin * 2.0 ** (np.arange(0, 1200 * math.log2(fmax / fmin), 2.0) / 1200)  # 2-cent grid
    weights = 0.84 ** np.arange(harmonics)
    out = np.empty(len(x))
    for n, s in enumerate(spec):
        s = np.sqrt(s)  # compress, so one loud partial does not decide alone
        score = sum(w * np.interp(h * cands, bins, s) for h, w in zip(range(1, harmonics + 1), weights, strict=True))
        f = cands[int(np.argmax(score))]
        k = int(round(f / df))
        lo, hi = max(1, k - int(0.03 * f / df) - 1), k + int(0.03 * f / df) + 2  # +-50 cents around it
        j = lo + int(np.argmax(spec[n, lo:hi]))
        a, b, c = np.log(spec[n, j - 1: j + 2] + 1e-12)
        delta = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        out[n] = (j + delta) * df
    return out


def _cents(f: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return 1200.0 * np.log2(np.asarray(f, np.float64) / np.asarray(ref, np.float64))


def _summary(cents: np.ndarray) -> dict:
    a = np.abs(cents[np.isfinite(cents)])
    return {"median_abs_cents": float(np.median(a)) if a.size else float("nan"),
            "within_50_cents": float((a <= 50).mean()) if a.size else 0.0, "n": int(a.size)}


@torch.no_grad()
def roundtrip(codec, audio: np.ndarray, batch: int = 16) -> np.ndarray:
    """audio (N, samples) through the codec's public encode then decode: (N, samples)."""
    out = []
    for i in range(0, len(audio), batch):
        x = torch.as_tensor(np.asarray(audio[i: i + batch], np.float32))[:, None].to(codec.device, codec.dtype)
        enc = codec.encode(x)
        y = codec.decode(enc.audio_codes, enc.audio_scales).audio_values  # (B, 1, samples')
        out.append(y[:, 0, : x.shape[-1]].float().cpu().numpy())
    return np.concatenate(out)


def pitch_survival(codec, audio: np.ndarray, f0_hz: np.ndarray, *, sample_rate: int = SAMPLE_RATE,
                   crepe=None, skip_s: float = 0.1) -> dict:
    """Pitch after a round trip through `codec` (None: no codec) against the known f0, and of the input itself:
    median |cents| and the fraction within 50 cents, by spectral estimate and, given a PitchScorer, by CREPE."""
    audio = np.asarray(audio, np.float32)
    f0_hz = np.asarray(f0_hz, np.float64)
    decoded = audio if codec is None else roundtrip(codec, audio)
    skip = int(round(skip_s * sample_rate))
    result = {"input": _summary(_cents(estimate_f0(audio[:, skip:], sample_rate), f0_hz)),
              "decoded": _summary(_cents(estimate_f0(decoded[:, skip:], sample_rate), f0_hz))}
    if crepe is not None:
        for name, clips in (("input_crepe", audio), ("decoded_crepe", decoded)):
            f0 = np.array([crepe.median_f0(c, sample_rate, skip_s=skip_s) for c in clips])
            result[name] = _summary(_cents(f0, f0_hz))
    return result
