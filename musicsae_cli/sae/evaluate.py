"""`sae evaluate`: reconstruction metrics of an SAE on any store."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import ProgressFactory, no_progress
from ..results import ABSENT, Result, internal

log = logging.getLogger("musicsae")


def evaluate_reconstruction(sae_path: str | Path, store_path: str | Path, member: str | None = None,
                            hookpoint: str | None = None, where: list[str] | None = None,
                            max_rows: int | None = None, device: str = "auto", batch_size: int = 4096,
                            progress: ProgressFactory = no_progress) -> dict:
    """Explained variance (float64, mean-centred), MSE, L0, dead fraction and shrinkage over the store's rows."""
    import torch

    from ..config import check_max_rows

    check_max_rows(max_rows)

    from ..runtime import resolve_device
    from ..store import ActivationStore
    from .data import check_finite, pick_hookpoint
    from .io import load_sae
    from .loop import update_metrics
    from .metrics import ReconstructionMetrics
    from .train import sae_dir

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


def evaluate_downstream(sae_path: str | Path, store_path: str | Path, hookpoint: str, model: str | None = None,
                        n_items: int = 16, device: str = "auto", progress: ProgressFactory = no_progress) -> dict:
    """Splice the SAE into the store's model (or `model`) at its hookpoint and compare losses (see sae.downstream).

    The result names the model spliced into (`model`, as artefacts record models); an SAE trained on another
    model's activations is spliced all the same (a deliberate transfer test), with a warning."""
    from ..models import load_adapter
    from ..models.identity import same_model
    from ..store import ActivationStore
    from .downstream import check_items, downstream_metrics, output_metrics
    from .io import load_sae, model_record

    check_items(n_items)  # before the model loads
    store = ActivationStore.open(store_path)
    info = store.model
    name = model or info.get("id")
    if not name:
        raise InputError("the store does not record its model", "pass --model MODEL")
    config = store.manifest.get("config", {})
    family = "auto" if model else (info.get("family") or "auto")
    adapter = load_adapter(name, family=family, revision=info.get("revision"), device=device,
                           dtype={"bfloat16": "bf16", "float16": "fp16"}.get(info.get("dtype"), "fp32"),
                           seed=int(config.get("seed", 0)), options=config.get("model_options") or None)
    if not adapter.can("loss") and not adapter.can("outputs"):
        adapter.require("loss", "downstream SAE metrics")  # one line naming what the model offers
    if hookpoint not in adapter.hookpoint_widths:
        raise InputError(f"hookpoint '{hookpoint}' is not a hookpoint of {name}",
                         "downstream metrics splice at a model hookpoint such as "
                         f"{next(iter(adapter.hookpoint_widths))}")
    sae, cfg = load_sae(Path(sae_path))
    if adapter.can("loss"):
        res = downstream_metrics(sae, store, hookpoint, adapter, n_items=n_items, progress=progress)
    else:
        adapter.resolve_hookpoints([hookpoint])
        res = output_metrics(sae, store, hookpoint, adapter, n_items=n_items, progress=progress)
    spliced = adapter.describe()
    trained_on = model_record(cfg)
    if same_model(trained_on, spliced) is False:
        log.warning("the SAE %s was trained on activations of model '%s' but is spliced into model '%s' (other "
                    "weights): the downstream metrics measure a transfer", sae_path, trained_on.get("id"),
                    spliced.get("id"))
    return {**res, "model": spliced}


EVAL_KIND = "sae_evaluation"


def write_evaluation(out: str | Path, result: dict, overwrite: bool = False) -> Path:
    """`sae evaluate -o OUT`: evaluation.json (every number printed) and manifest.json, moved into place whole.

    The manifest names the model of the evaluated store's activations (`model`) and, with downstream metrics,
    the model the SAE was spliced into (`downstream_model`)."""
    from ..artifacts import new_manifest, staged_directory, write_json
    from ..store import ActivationStore

    models = {"model": ActivationStore.open(result["store"]).model}
    if "model" in (result.get("downstream") or {}):
        models["downstream_model"] = result["downstream"]["model"]
    with staged_directory(out, overwrite) as stage:
        write_json(stage / "evaluation.json", result)
        write_json(stage / "manifest.json", new_manifest(EVAL_KIND, 1, {k: result.get(k) for k in
                                                                        ("sae", "store", "hookpoint")},
                                                         status="complete", **models))
    return Path(out)


@dataclasses.dataclass(kw_only=True)
class SAEEvaluation(Result):
    """What `sae evaluate` reports: the reconstruction metrics (sae, store, hookpoint, rows, then the metrics, whose
    names vary by SAE) and, with --downstream, the model's loss or output with the SAE spliced in."""

    out: Path | None = internal(None)  # the evaluation folder written, if any
    reconstruction: dict = internal()  # evaluate_reconstruction's result, printed as top-level fields
    downstream: dict = ABSENT

    def to_json(self) -> dict[str, Any]:
        return {**self.reconstruction, **super().to_json()}

    def lines(self) -> list[str]:
        lines = [f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}" for k, v in self.reconstruction.items()]
        if self.downstream is not ABSENT:
            lines += _downstream_lines(self.downstream)
        return ([str(self.out)] if self.out is not None else []) + lines


def evaluate_sae(sae_path: str | Path, store_path: str | Path, out: str | Path | None = None, overwrite: bool = False,
                 member: str | None = None, hookpoint: str | None = None, where: list[str] | None = None,
                 max_rows: int | None = None, downstream: bool = False, max_items: int = 16,
                 model: str | None = None, device: str = "auto",
                 progress: ProgressFactory = no_progress) -> SAEEvaluation:
    """`sae evaluate`: the reconstruction metrics, with `downstream` the spliced model's metrics too, written to
    `out` (evaluation.json and its manifest) when given."""
    from ..artifacts import check_output

    if out is not None:
        check_output(out, overwrite, "evaluation")  # before the work, not after it
    if downstream:
        from .downstream import check_items

        check_items(max_items)  # before the reconstruction pass, not after it
    res = evaluate_reconstruction(sae_path, store_path, member=member, hookpoint=hookpoint, where=where,
                                  max_rows=max_rows, device=device, progress=progress)
    result = SAEEvaluation(out=None if out is None else Path(out), reconstruction=res)
    if downstream:
        result.downstream = evaluate_downstream(res["sae"], store_path, res["hookpoint"], model=model,
                                                n_items=max_items, device=device, progress=progress)
    if out is not None:
        write_evaluation(out, result.to_json(), overwrite)
    return result


def _downstream_lines(d: dict) -> list[str]:
    """The downstream result as lines: loss-based (token models) or output-based (models with outputs)."""
    if "ce" in d:
        lines = [f"downstream over {d['tokens']} tokens of {d['items']} items:"]
        lines += [f"  CE {name}: {ce:.5f}" + (f"  KL to clean {d['kl_to_clean'][name]:.3g}" if name != "clean" else "")
                  for name, ce in d["ce"].items()]
        recovered, what = d["fraction_loss_recovered"], "loss"
    else:
        lines = [f"downstream over {d['items']} items: {d['metric'].replace('_', ' ')} of the model's output to the "
                 "clean output"]
        lines += [f"  {name}: {value:.5g}" for name, value in d["distance_to_clean"].items()]
        recovered, what = d["fraction_recovered"], "output"
    return lines + [f"  fraction of {what} recovered vs {k.replace('_', '-')}: {v:.4f}" if v is not None else
                    f"  fraction of {what} recovered vs {k}: undefined (ablation does not change it)"
                    for k, v in recovered.items()]
