"""A tiny random-weight causal LM with YuE's vocabulary layout (83734 ids: text, specials, 12 x 1024 xcodec audio
ids from 45334), a LLaMA config at toy size, for tests, demos and benchmarks; saved with save_pretrained and loaded
back through the same path as a real checkpoint. Its prompt tokenizer is a small SentencePiece model trained here
on YuE-style prompt text (deterministic), saved beside the weights as tokenizer.model. A tiny random X-Codec (16 kHz,
50 frames per second, codebooks of 1024, as YuE's) can be saved with it in `codec/`, so audio goes in and out."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

VOCAB = 83734  # YuE's


def build_tiny_yue(seed: int = 0, hidden_size: int = 64, num_layers: int = 4, num_heads: int = 4,
                   max_positions: int = 4096, vocab_size: int = VOCAB):
    """A random LlamaForCausalLM with YuE's vocabulary, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .musicgen_hub import quiet_transformers

    quiet_transformers()
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=max(1, num_heads // 2), max_position_embeddings=max_positions,
                         bos_token_id=1, eos_token_id=32002, pad_token_id=0, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


TOKENIZER_TEXT = (
    "Generate music from the given lyrics segment by segment.",
    "[Genre] inspiring female uplifting pop airy vocal electronic bright vocal vocal",
    "[Genre] rock male deep guitar drums dark energetic",
    "[start_of_segment] [end_of_segment]",
    "[verse] Staring at the sunset, colors paint the sky",
    "[chorus] Don't let this moment fade, hold on to the light",
    "[bridge] la la la oh oh yeah",
)


@lru_cache(maxsize=1)
def tiny_tokenizer_bytes() -> bytes:
    """A 200-piece SentencePiece (BPE) model of YuE-style prompt text, trained in-process, byte-identical per run."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TOKENIZER_TEXT * 8), model_writer=buf, vocab_size=200,
                                   model_type="bpe", character_coverage=1.0, num_threads=1, minloglevel=2,
                                   hard_vocab_limit=False)
    return buf.getvalue()


def build_tiny_xcodec(seed: int = 0):
    """A random XcodecModel at toy size with YuE's codec facts: 16 kHz, hop 320 (50 frames per second), 1024 codes
    per codebook, bandwidths 0.5 to 4 kbps (1 to 8 codebooks)."""
    import torch
    from transformers import XcodecConfig, XcodecModel

    from .musicgen_hub import quiet_transformers

    quiet_transformers()
    semantic = {"model_type": "hubert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 32, "conv_dim": [8] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2],
                "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "num_conv_pos_embeddings": 16,
                "num_conv_pos_embedding_groups": 2}
    acoustic = {"encoder_hidden_size": 8, "decoder_hidden_size": 16, "downsampling_ratios": [2, 4, 5, 8],
                "upsampling_ratios": [8, 5, 4, 2], "hidden_size": 16}
    config = XcodecConfig(acoustic_model_config=acoustic, semantic_model_config=semantic, codebook_size=1024,
                          sample_rate=16000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = XcodecModel(config).eval()
        with torch.no_grad():  # the codebooks start at zero (k-means fills them in training): random codes instead
            for name, buf in model.quantizer.named_buffers():
                if name.endswith("codebook.embed") or name.endswith("codebook.embed_avg"):
                    buf.copy_(torch.randn(buf.shape, generator=torch.Generator().manual_seed(seed + len(name))))
        return model


def save_tiny_yue(directory: str | Path, seed: int = 0, overwrite: bool = False, codec: bool = False,
                  **sizes) -> dict:
    """Write the tiny model with save_pretrained (loadable with --model DIR, family yue), with its tokenizer and,
    with `codec`, a tiny X-Codec in DIR/codec."""
    from ..artifacts import new_manifest, staged_directory, write_json

    directory = Path(directory)
    model = build_tiny_yue(seed, **sizes)
    with staged_directory(directory, overwrite) as stage:
        model.save_pretrained(stage)
        (stage / "tokenizer.model").write_bytes(tiny_tokenizer_bytes())
        if codec:
            build_tiny_xcodec(seed).save_pretrained(stage / "codec")
        write_json(stage / "manifest.json", new_manifest("model", 1, {"seed": seed, "codec": codec, **sizes},
                                                         family="yue",
                                                         name="tiny-yue"))
    cfg = model.config
    return {"path": str(directory), "n_layers": int(cfg.num_hidden_layers), "hidden_size": int(cfg.hidden_size),
            "parameters": sum(p.numel() for p in model.parameters()), "seed": seed}


def save_tiny_yue_with_codec(directory: str | Path, seed: int = 0, overwrite: bool = False) -> dict:
    """What `model save-tiny --family yue` writes: the tiny model, its tokenizer and a tiny X-Codec in codec/."""
    return save_tiny_yue(directory, seed=seed, overwrite=overwrite, codec=True)
