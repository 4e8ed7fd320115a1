"""A tiny random-weight MusicGen built offline in well under a second, for tests and demos.

It is self-consistent the way a real checkpoint is: decoder codebooks = EnCodec quantizers (derived from
`target_bandwidths`), decoder vocab = codebook size, pad = bos = decoder start = codebook size on the decoder
and generation configs, a real T5 tokenizer built from an in-memory vocabulary, and a MusicgenProcessor.
EnCodec's codebooks are initialised from encoder outputs of synthetic audio (transformers leaves them at
zero, which maps every frame to code 0 and would make every code decode to the same sound).
"""

from __future__ import annotations

import math
from pathlib import Path

TINY_NAME = "tiny-musicgen"
TRAINED_NAME = "tiny-musicgen-trained"  # shipped weights written by `model train-tiny` (see trained_path)
SAMPLE_RATE = 32000
UPSAMPLING = [8, 5, 4, 4]  # hop 640 at 32 kHz -> 50 frames/s, as in the real checkpoints
WORDS = ("music", "song", "piano", "guitar", "drums", "bass", "jazz", "rock", "pop", "classical", "electronic",
         "ambient", "fast", "slow", "happy", "sad", "loud", "quiet", "note", "chord", "beat", "tempo", "a", "the",
         "with", "and", "of", "in", "C", "D", "E", "F", "G", "A", "B", "major", "minor")


def build_tiny_musicgen(seed: int = 0, num_codebooks: int = 4, codebook_size: int = 64, hidden_size: int = 64,
                        num_layers: int = 4, num_heads: int = 4):
    """(model, processor): a random-weight MusicgenForConditionalGeneration and its processor, in eval mode."""
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    from .musicgen_hub import quiet_transformers

    quiet_transformers()
    nbits = math.ceil(math.log2(codebook_size))
    frame_rate = SAMPLE_RATE / math.prod(UPSAMPLING)
    text = T5Config(vocab_size=len(WORDS) + 3, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(
        sampling_rate=SAMPLE_RATE, audio_channels=1, num_filters=4, hidden_size=16, codebook_size=codebook_size,
        codebook_dim=16, upsampling_ratios=UPSAMPLING, num_lstm_layers=1, num_residual_layers=1,
        chunk_length_s=None, overlap=None, normalize=False, use_causal_conv=False,
        # num_quantizers is derived from the bandwidth: K * frame_rate * log2(codebook_size) / 1000
        target_bandwidths=[num_codebooks * frame_rate * nbits / 1000])
    decoder = MusicgenDecoderConfig(
        vocab_size=codebook_size, max_position_embeddings=2048, num_hidden_layers=num_layers,
        ffn_dim=4 * hidden_size, num_attention_heads=num_heads, hidden_size=hidden_size,
        num_codebooks=num_codebooks, pad_token_id=codebook_size, bos_token_id=codebook_size,
        decoder_start_token_id=codebook_size)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=audio,
                                                            decoder=decoder)).eval()
    assert model.audio_encoder.config.num_quantizers == num_codebooks
    init_codebooks(model, seed)
    gen = model.generation_config
    gen.update(do_sample=True, top_k=50, guidance_scale=3.0, max_length=1500, pad_token_id=codebook_size,
               bos_token_id=codebook_size, decoder_start_token_id=codebook_size)
    return model, build_tiny_processor()


def build_tiny_processor():
    """A MusicgenProcessor around an offline T5 tokenizer (vocabulary in memory) and EnCodec features."""
    from transformers import EncodecFeatureExtractor, MusicgenProcessor, T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -float(i)) for i, w in enumerate(WORDS)]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0)
    return MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer)


def init_codebooks(model, seed: int) -> None:
    """Fill each residual quantizer's codebook from encoder outputs of synthetic audio (random chords + noise).

    Entries are residuals drawn with replacement plus noise, so this works for any codebook size (2048 codes
    need more frames than a few seconds give) and no stage's residual collapses to zero.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE  # 1 s per clip
    freqs = 55 * 2 ** (6 * torch.rand(8, 3, generator=g))  # (8 clips, 3 tones) between 55 Hz and 3.5 kHz
    audio = 0.3 * torch.sin(2 * math.pi * freqs[..., None] * t).sum(1) + 0.05 * torch.randn(8, len(t), generator=g)
    enc = model.audio_encoder
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: float rounding, hence the entries and the weights' fingerprint that
    try:                      # names the model in every artefact, must not depend on the machine's thread count
        with torch.no_grad():
            emb = enc.encoder(audio[:, None].to(enc.device, enc.dtype)).float()  # (B, D, T)
            residual = emb.transpose(1, 2).reshape(-1, emb.shape[1])  # (B*T, D)
            for layer in enc.quantizer.layers:
                book = layer.codebook
                pick = torch.randint(len(residual), (book.embed.shape[0],), generator=g)
                noise = 0.5 * residual.std(0) * torch.randn(book.embed.shape, generator=g)
                book.embed.copy_(residual[pick] + noise)
                book.embed_avg.copy_(book.embed)
                residual = residual - book.embed.float()[book.quantize(residual.to(book.embed.dtype))]
    finally:
        torch.set_num_threads(threads)


def save_tiny_musicgen(directory: str | Path, seed: int = 0, overwrite: bool = False, num_layers: int = 4) -> dict:
    """Write the tiny MusicGen and its processor with save_pretrained, loadable by from_pretrained.

    `num_layers` sets the decoder depth (default 4, the built-in model's); e.g. 24 gives the layer count of
    musicgen-small, so hookpoints such as `layers.17-19` exist.
    """
    from ..artifacts import new_manifest, staged_directory, write_json

    directory = Path(directory)
    model, processor = build_tiny_musicgen(seed, num_layers=num_layers)
    settings = {"seed": seed} if num_layers == 4 else {"seed": seed, "num_layers": num_layers}
    with staged_directory(directory, overwrite) as stage:
        model.save_pretrained(stage)
        processor.save_pretrained(stage)
        # musicsae's own marker (transformers ignores it): lets --overwrite recognise the folder as ours
        write_json(stage / "manifest.json", new_manifest("model", 1, settings, family="musicgen",
                                                         name=TINY_NAME))
    cfg = model.decoder.config
    return {"path": str(directory), "n_layers": int(cfg.num_hidden_layers), "hidden_size": int(cfg.hidden_size),
            "parameters": sum(p.numel() for p in model.parameters()), "seed": seed}


def trained_path() -> Path:
    """The folder of the built-in `tiny-musicgen-trained`: a `model train-tiny` output with the default settings,
    shipped in the package (about 4 MB of safetensors; how to reproduce it: the REPRODUCE.md beside it)."""
    from ..errors import InputError

    path = Path(__file__).parent / "assets" / TRAINED_NAME
    if not (path / "config.json").is_file():
        raise InputError(f"the built-in {TRAINED_NAME} is missing from this installation ({path})",
                         "reinstall musicsae, or train one with `musicsae model train-tiny -o DIR` and pass "
                         "--model DIR")
    return path
