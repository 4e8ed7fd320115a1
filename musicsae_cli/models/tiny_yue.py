"""A tiny random-weight causal LM with YuE's vocabulary layout (83734 ids: text, specials, 12 x 1024 xcodec audio
ids from 45334), a LLaMA config at toy size, for tests, demos and benchmarks; saved with save_pretrained and loaded
back through the same path as a real checkpoint."""

from __future__ import annotations

from pathlib import Path

VOCAB = 83734  # YuE's


def build_tiny_yue(seed: int = 0, hidden_size: int = 64, num_layers: int = 4, num_heads: int = 4,
                   max_positions: int = 4096, vocab_size: int = VOCAB):
    """A random LlamaForCausalLM with YuE's vocabulary, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .musicgen import quiet_transformers

    quiet_transformers()
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=max(1, num_heads // 2), max_position_embeddings=max_positions,
                         bos_token_id=1, eos_token_id=32002, pad_token_id=0, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def save_tiny_yue(directory: str | Path, seed: int = 0, overwrite: bool = False, **sizes) -> dict:
    """Write the tiny model with save_pretrained (loadable with --model DIR, family yue)."""
    from ..artifacts import new_manifest, staged_directory, write_json

    directory = Path(directory)
    model = build_tiny_yue(seed, **sizes)
    with staged_directory(directory, overwrite) as stage:
        model.save_pretrained(stage)
        write_json(stage / "manifest.json", new_manifest("model", 1, {"seed": seed, **sizes}, family="yue",
                                                         name="tiny-yue"))
    cfg = model.config
    return {"path": str(directory), "n_layers": int(cfg.num_hidden_layers), "hidden_size": int(cfg.hidden_size),
            "parameters": sum(p.numel() for p in model.parameters()), "seed": seed}
