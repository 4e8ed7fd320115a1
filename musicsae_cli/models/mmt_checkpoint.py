"""MMT checkpoints: finding best_model.pt and its train-args.json, reading them, and loading the network they hold.

A checkpoint is a state dict of MMT's published training code (built on x-transformers 0.25), so it loads strictly
into mmt_network's MmtNetwork, with torch.load(weights_only=True): no pickled code runs. Hyperparameters come from
the `train-args.json` MMT's training writes beside its `checkpoints/` folder when present; what it does not say is
read off the weights' shapes, and model options override both.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import torch

from ..errors import InputError, UsageError
from . import mmt_events
from .mmt_network import DIM_HEAD, OPTION_NAMES, MmtConfig, MmtNetwork, build

CHECKPOINT = "best_model.pt"
TRAIN_ARGS = "train-args.json"
_OPTIONS_HINT = ("dim, layers, heads, max_seq_len, max_beat are positive integers; abs_pos_emb, rel_pos_emb true or "
                 "false")


def find_checkpoint(name: str | Path) -> tuple[Path, Path | None]:
    """(the .pt state dict, its train-args.json or None) for a file, a folder holding best_model.pt, or an MMT
    experiment folder (train-args.json beside checkpoints/best_model.pt)."""
    path = Path(name).expanduser()
    if not path.exists():
        raise InputError(f"no such MMT checkpoint: {name}",
                         f"pass a {CHECKPOINT} file or the folder holding it (with its {TRAIN_ARGS})")
    if path.is_dir():
        found = [p for p in (path / CHECKPOINT, path / "checkpoints" / CHECKPOINT) if p.is_file()]
        if not found:
            raise InputError(f"{name} holds no {CHECKPOINT} (nor checkpoints/{CHECKPOINT})",
                             "pass the .pt file itself or the folder MMT's training wrote")
        path = found[0]
    args = [p for p in (path.parent / TRAIN_ARGS, path.parent.parent / TRAIN_ARGS) if p.is_file()]
    return path, (args[0] if args else None)


def claims(name: str) -> bool:
    """Whether `name` looks like an MMT checkpoint: a folder holding best_model.pt (or checkpoints/best_model.pt), or
    a .pt/.pth state dict named best_model.pt or with a train-args.json beside it or one folder up (a TorchScript
    archive, which holds code, never)."""
    path = Path(name).expanduser()
    try:
        if path.is_dir():
            return (path / CHECKPOINT).is_file() or (path / "checkpoints" / CHECKPOINT).is_file()
        if not path.is_file() or path.suffix.lower() not in (".pt", ".pth"):
            return False
        if path.name != CHECKPOINT and not any(p.is_file() for p in (path.parent / TRAIN_ARGS,
                                                                      path.parent.parent / TRAIN_ARGS)):
            return False
        return not _is_torchscript(path)
    except OSError:
        return False


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist())


def read_train_args(path: Path) -> dict:
    """The model hyperparameters in MMT's train-args.json (other keys, e.g. data paths, are ignored)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {type(exc).__name__}", "it should be the JSON MMT's training wrote") \
            from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object", "it should be the JSON MMT's training wrote")
    return _typed({k: data[k] for k in OPTION_NAMES if data.get(k) is not None}, str(path))


def _typed(values: dict, where: str) -> dict:
    out = {}
    for f in fields(MmtConfig):
        if f.name not in values:
            continue
        value = values[f.name]
        if f.type in ("bool", bool):
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                raise UsageError(f"{where}: {f.name} must be true or false, got {value!r}", _OPTIONS_HINT)
        else:
            if isinstance(value, bool) or not str(value).lstrip("-").isdigit() or int(value) < 1:
                raise UsageError(f"{where}: {f.name} must be a positive integer, got {value!r}", _OPTIONS_HINT)
            value = int(value)
        out[f.name] = value
    return out


def read_state_dict(path: Path) -> dict:
    """A checkpoint's tensors, read with weights_only=True; InputError when it is not a plain state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file at all
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InputError(f"cannot read {path} as a weights-only state dict ({type(exc).__name__}: {detail})",
                         "MMT checkpoints are torch.save(model.state_dict()); a pickled model object is not read")\
            from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a state dict of tensors", "pass MMT's best_model.pt")
    return state


def infer_config(state: dict) -> dict:
    """Hyperparameters the weights' shapes fix (dim, layers, heads, max_seq_len, max_beat, position embeddings)."""
    pre = "decoder.net."
    out: dict = {}
    emb = state.get(pre + "token_emb.0.emb.weight")
    if emb is not None and emb.ndim == 2:
        out["dim"] = int(emb.shape[1])
    blocks = {int(k[len(pre + "attn_layers.layers."):].split(".")[0]) for k in state
              if k.startswith(pre + "attn_layers.layers.")}
    if blocks:
        out["layers"] = (max(blocks) + 2) // 2
    q = state.get(pre + "attn_layers.layers.0.1.to_q.weight")
    if q is not None and q.ndim == 2 and q.shape[0] % DIM_HEAD == 0:
        out["heads"] = int(q.shape[0]) // DIM_HEAD
    beat = state.get(pre + "token_emb.1.emb.weight")
    if beat is not None and beat.ndim == 2:
        out["max_beat"] = int(beat.shape[0]) - 1
    pos = state.get(pre + "pos_emb.emb.weight")
    if pos is not None and pos.ndim == 2:
        out["max_seq_len"] = int(pos.shape[0])
    if any(k.startswith(pre) for k in state):
        out["rel_pos_emb"] = pre + "attn_layers.rotary_pos_emb.inv_freq" in state
        if not out["rel_pos_emb"]:
            out["abs_pos_emb"] = pos is not None
    return out


def _first(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def check_state_dict(model: MmtNetwork, state: dict, where: str) -> None:
    """InputError naming the first missing/unexpected keys or mismatched shapes before load_state_dict runs."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} keys ({_first(missing)})"] if missing else []) + \
                ([f"unexpected {len(unexpected)} keys ({_first(unexpected)})"] if unexpected else [])
        raise InputError(f"{where} does not match an MMT network: {'; '.join(parts)}",
                         f"pass MMT's {CHECKPOINT}; if it is one, its {TRAIN_ARGS} or the model options "
                         f"({', '.join(OPTION_NAMES)}) must describe it")
    n_tok = tuple(int(state[f"decoder.net.token_emb.{f}.emb.weight"].shape[0]) for f in range(6))
    expected = model.config.n_tokens
    for f in (0, 2, 3, 4, 5):
        if n_tok[f] != expected[f]:
            raise InputError(f"{where} was trained with another event encoding ({mmt_events.FIELDS[f]} vocabulary "
                             f"{n_tok[f]}, not {expected[f]})",
                             "musicsae reads MMT's encoding of 12 positions per beat and 32 known durations only")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise InputError(f"{where} has other shapes than the configured MMT network (checkpoint vs model): "
                         f"{_first(wrong, 3)}",
                         f"its {TRAIN_ARGS} or the model options ({', '.join(OPTION_NAMES)}) must match the weights")


def load_network(name: str | Path, **options) -> tuple[MmtNetwork, Path, dict]:
    """(network in fp32 on the CPU, checkpoint path, where each hyperparameter came from)."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise UsageError(f"model family mmt has no option {', '.join(unknown)}", f"options: {', '.join(OPTION_NAMES)}")
    path, args_path = find_checkpoint(name)
    state = read_state_dict(path)
    sources: dict[str, str] = {}
    values: dict = {}
    for layer, source in ((infer_config(state), "weights"), (read_train_args(args_path) if args_path else {},
                                                             str(args_path)),
                          (_typed(options, "model option"), "options")):
        values.update(layer)
        sources.update({k: source for k in layer})
    cfg = replace(MmtConfig(), **values)
    model = build(cfg)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model, path, {k: sources.get(k, "default") for k in OPTION_NAMES}
