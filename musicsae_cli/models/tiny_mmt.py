"""A tiny Multitrack Music Transformer (random weights) for trying the MMT workflow offline, tests and benchmarks.

The network is MMT's (see mmt.py) at toy size: dim 32, 2 blocks, 2 heads (of MMT's fixed 64 features), with MMT's
real vocabularies (max_beat 256, 1024 positions) and absolute position embeddings. It is saved the way MMT's
training saves a model: OUT/best_model.pt, a plain state dict of tensors, beside OUT/train-args.json with the
hyperparameters the loader reads, so it loads through the same path as a real checkpoint. Imports torch: load
lazily.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .mmt_checkpoint import CHECKPOINT, TRAIN_ARGS
from .mmt_network import MmtConfig, MmtNetwork, build

TINY_CONFIG = MmtConfig(dim=32, layers=2, heads=2, max_seq_len=1024, max_beat=256, abs_pos_emb=True,
                        rel_pos_emb=False)


def build_tiny_mmt(seed: int = 0, config: MmtConfig = TINY_CONFIG) -> MmtNetwork:
    """The tiny network in eval mode, random weights seeded by `seed` (norms and biases perturbed too, so that
    every parameter matters)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias") or ".0.0." in name or name.startswith("decoder.net.norm"):
                    p.add_(torch.randn_like(p) * 0.1)
    return model


def save_tiny_mmt(out: str | Path, seed: int = 0, overwrite: bool = False) -> dict:
    """Write OUT/best_model.pt (a state dict) and OUT/train-args.json with musicsae's manifest beside them (load it
    with `--model OUT`)."""
    from ..artifacts import new_manifest, staged_directory, write_json

    model = build_tiny_mmt(seed)
    cfg = asdict(model.config)
    with staged_directory(Path(out), overwrite) as stage:
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, str(stage / CHECKPOINT))
        write_json(stage / TRAIN_ARGS, {**cfg, "dropout": 0.0})
        write_json(stage / "manifest.json", new_manifest("model", 1, {"seed": seed, **cfg}, family="mmt",
                                                         name="tiny-mmt", file=CHECKPOINT))
    return {"path": str(Path(out)), "n_layers": model.config.layers, "hidden_size": model.config.dim,
            "parameters": sum(p.numel() for p in model.parameters()), "seed": seed}
