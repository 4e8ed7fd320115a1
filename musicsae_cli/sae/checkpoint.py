"""Resumable trainer state: weights, Adam moments and schedules in safetensors, counters in JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"


def save_checkpoint(out: Path, step: int, members: list, extra: dict) -> None:
    """Write every member's model, optimiser and dead-latent state, then swap the folder in atomically."""
    from safetensors.torch import save_file

    from ..artifacts import replace_folder

    tensors, meta = {}, {"step": step, **extra, "members": {}}
    for m in members:
        for key, value in m.sae.state_dict().items():
            tensors[f"{m.name}/model/{key}"] = value.detach().cpu().contiguous()
        opt = m.optimizer.state_dict()
        for idx, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"{m.name}/adam/{idx}/{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
        tracker = m.tracker.state_dict()
        tensors[f"{m.name}/tracker/since_fired"] = tracker.pop("since_fired")
        meta["members"][m.name] = {"param_groups": opt["param_groups"], "tracker": tracker}
    tmp = out / f".{CHECKPOINT_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _check_free_space(out, step, sum(t.numel() * t.element_size() for t in tensors.values()))
    tmp.mkdir()
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta, indent=2, default=float))
    replace_folder(tmp, out / CHECKPOINT_DIR)


def _check_free_space(out: Path, step: int, tensor_bytes: int) -> None:
    """MusicSAEError before writing when the device of `out` cannot hold a new checkpoint beside the current one.

    The new checkpoint is written completely before the previous one is removed, so a run needs room for both.
    Failing here, rather than mid-write, keeps the previous checkpoint intact and the run resumable from it.
    """
    from ..errors import MusicSAEError

    needed = tensor_bytes + _OVERHEAD_BYTES
    free = shutil.disk_usage(out).free
    if free >= needed:
        return
    previous = _saved_step(out)
    kept = f"; the checkpoint of step {previous} is kept" if previous is not None else ""
    resumes = f"it resumes from step {previous}" if previous is not None else "it starts the run again"
    raise MusicSAEError(f"not enough space for the checkpoint of step {step} in {out}: it needs "
                        f"{_human(needed)}, {_human(free)} free{kept}",
                        f"free some space on that disk and rerun the same command ({resumes})")


_OVERHEAD_BYTES = 1 << 20  # safetensors header and state.json: a few KB per tensor at most


def _saved_step(out: Path) -> int | None:
    """The step of the complete checkpoint in `out`, if any."""
    try:
        return int(json.loads((out / CHECKPOINT_DIR / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _human(n: int) -> str:
    """Bytes as '1.3 GB', '12.0 MB' (powers of 1024, as df -h)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def load_checkpoint(out: Path, members: list, device) -> dict:
    """Restore members in place from `out/checkpoint`; returns the saved counters (step, ...)."""
    from safetensors.torch import load_file

    folder = out / CHECKPOINT_DIR
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"), device=str(device))
    for m in members:
        prefix = f"{m.name}/model/"
        m.sae.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        state: dict[int, dict] = {}
        prefix = f"{m.name}/adam/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                idx, name = key[len(prefix):].split("/", 1)
                state.setdefault(int(idx), {})[name] = value
        params = [p for group in m.optimizer.param_groups for p in group["params"]]
        for idx, moments in state.items():  # checkpoints from before the TopK encoder was stored (d_sae, d_in)
            for name, value in moments.items():
                shape = tuple(params[idx].shape) if idx < len(params) else None
                if value.dim() == 2 and shape is not None and tuple(value.shape) == shape[::-1] != shape:
                    moments[name] = value.t().contiguous()
        info = meta["members"][m.name]
        m.optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
        m.tracker.load_state_dict({**info["tracker"], "since_fired": tensors[f"{m.name}/tracker/since_fired"]})
        for group in m.optimizer.param_groups:  # JSON turned the betas tuple into a list
            group["betas"] = tuple(group["betas"])
    return meta


def has_checkpoint(out: Path) -> bool:
    """Whether `out` holds a complete checkpoint."""
    return (out / CHECKPOINT_DIR / "state.json").is_file()
