"""`sae evaluate`: reconstruction metrics of an SAE on any store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import ProgressFactory, no_progress


def evaluate_reconstruction(sae_path: str | Path, store_path: str | Path, member: str | None = None,
                            hookpoint: str | None = None, where: list[str] | None = None,
                            max_rows: int | None = None, device: str = "auto", batch_size: int = 4096,
                            progress: ProgressFactory = no_progress) -> dict:
    """Explained variance (float64, mean-centred), MSE, L0, dead fraction and shrinkage over the store's rows."""
    import torch

    from ..runtime import resolve_device
    from ..store import ActivationStore
    from .data import check_finite, pick_hookpoint
    from .io import load_sae
    from .metrics import ReconstructionMetrics
    from .train import sae_dir
    from .trainer import update_metrics

    path = sae_dir(sae_path, member)
    sae, cfg = load_sae(path)
    store = ActivationStore.open(store_path)
    hp = pick_hookpoint(store, hookpoint or (cfg.get("hook_name") if cfg.get("hook_name") in store.hookpoints
                                             else None))
    if store.widths[hp] != sae.spec.d_in:
        raise InputError(f"the SAE reads width {sae.spec.d_in} but hookpoint '{hp}' has width {store.widths[hp]}",
                         "pass the store (or --hookpoint) the SAE was trained on")
    rows = store.select(where) if where else np.arange(store.n_rows, dtype=np.int64)
    if rows.size == 0:
        raise InputError("no rows to evaluate", "check --where against `musicsae info STORE`")
    if max_rows is not None and rows.size > max_rows:
        rows = rows[np.linspace(0, rows.size - 1, max_rows).astype(np.int64)]
    dev = resolve_device(device)
    sae.to(dev).eval()
    acc = ReconstructionMetrics(sae.spec.d_sae)
    with torch.no_grad(), progress("Evaluating", int(np.ceil(rows.size / batch_size))) as bar:
        for start in range(0, rows.size, batch_size):
            chunk = rows[start:start + batch_size]
            x = torch.from_numpy(store.read_rows(hp, chunk)).to(dev)
            check_finite(x, chunk, store)
            update_metrics(acc, sae, x)
            bar.advance()
    metrics = acc.compute()
    return {"sae": str(path), "store": str(store_path), "hookpoint": hp, "rows": int(rows.size),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float)}}
