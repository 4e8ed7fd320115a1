"""Steering directions from their sources: a probe, SAE latents, a difference of means in a store, or a file.

Every source yields a `Direction`: one raw-activation-space vector per hookpoint (key "*" = any layer) plus a
JSON description of where it came from. Widths are checked against the model, and a probe, SAE or store
recorded with another model is refused (InputError) before any generation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError
from .config import DirectionConfig

ANY = "*"


@dataclass
class Direction:
    """Per-hookpoint vectors (d,) float32, the source description, and for SAE sources the SAE and latents."""

    vectors: dict[str, np.ndarray]
    source: dict
    sae: object | None = None
    hookpoint: str | None = None  # the SAE's hookpoint
    latents: list[int] = field(default_factory=list)
    latent_scales: np.ndarray | None = None  # (len(latents),) unit of each latent (1 without latent_scale)
    latent_means: np.ndarray | None = None  # (d_sae,) mean non-zero activation, for latent_scale=mean

    @property
    def hookpoints(self) -> list[str]:
        return [h for h in self.vectors if h != ANY]

    def at(self, hookpoint: str) -> np.ndarray:
        """The vector to use at `hookpoint`; InputError naming the hookpoints the direction has."""
        if hookpoint in self.vectors:
            return self.vectors[hookpoint]
        if ANY in self.vectors:
            return self.vectors[ANY]
        raise InputError(f"the direction has no vector for {hookpoint}",
                         f"it has {', '.join(self.hookpoints)}; choose --hookpoint among them")


def load_direction(cfg: DirectionConfig, adapter, allow_mismatch: bool = False) -> Direction:
    """The direction `cfg` names, checked against the loaded model's hookpoints and widths."""
    sources = cfg.sources
    if not sources:
        raise UsageError("no steering direction given", "pass --probe DIR --target CLASS, --sae RUN --latent N, "
                         "--store STORE --contrast label=a:b or --file FILE (generate and audio also take "
                         "per-dimension controls: --dim-bias, --dim-scale)")
    kind = sources[0]
    if kind == "probe":
        direction = from_probe(cfg, adapter, allow_mismatch)
    elif kind == "sae":
        direction = from_sae(cfg, adapter, allow_mismatch)
    elif kind == "contrast":
        direction = from_contrast(cfg, adapter, allow_mismatch)
    else:
        direction = from_file(cfg, adapter)
    check_widths(direction, adapter)
    return direction


def check_widths(direction: Direction, adapter) -> None:
    """InputError naming both widths when a vector does not fit its hookpoint."""
    widths = adapter.hookpoint_widths
    for hp, v in direction.vectors.items():
        if hp != ANY and hp not in widths:
            adapter.resolve_hookpoints(hp)  # UsageError listing the valid names
        if hp == ANY:  # one vector for any layer: it must fit some layer (the steered ones are checked later)
            fits = v.ndim == 1 and v.shape[0] in set(widths.values())
            if not fits:
                shown = ", ".join(str(w) for w in sorted(set(widths.values())))
                raise InputError(f"the direction has width {v.shape[-1]}, the model's widths are {shown}",
                                 "use a direction computed on this model's activations")
        elif v.ndim != 1 or v.shape[0] != widths[hp]:
            raise InputError(f"the direction at {hp} has width {v.shape[-1]}, the model's width at {hp} is "
                             f"{widths[hp]}", "use a direction computed on this model's activations")
        if not np.isfinite(v).all():
            raise InputError(f"the direction at {hp} has NaN or infinite values", "recompute it")


def check_same_model(what: str, recorded: dict | None, adapter, allow_mismatch: bool) -> None:
    """Refuse a probe/SAE/store recorded with another model: widths always, identity unless allowed."""
    from ..models.identity import check_same_model as check

    check(what, recorded, adapter.describe(), allow_mismatch)


def from_probe(cfg: DirectionConfig, adapter, allow_mismatch: bool) -> Direction:
    """The probe's direction for `target` at each probed hookpoint."""
    from ..probes import ProbeSet

    probe = ProbeSet.load(cfg.probe)
    check_same_model(f"the probe {cfg.probe}", probe.model, adapter, allow_mismatch)
    if probe.task == "classification":
        if cfg.target is None:
            raise UsageError("a classification probe needs --target CLASS", "classes: " + ", ".join(probe.classes))
        probe.class_index(cfg.target)  # InputError naming the classes
    vectors = {hp: probe.direction(hp, cfg.target) for hp in probe.hookpoints}
    return Direction(vectors, {"kind": "probe", "path": str(cfg.probe), "label": probe.label, "target": cfg.target,
                               "task": probe.task, "classes": list(probe.classes)})


def from_sae(cfg: DirectionConfig, adapter, allow_mismatch: bool) -> Direction:
    """Decoder rows of `latents` (each scaled by its latent scale), summed, at the SAE's hookpoint."""
    from ..sae.io import load_sae, model_record
    from ..sae.train import sae_dir

    path = sae_dir(cfg.sae, cfg.member)
    sae, sae_cfg = load_sae(path, device=adapter.device)
    hp = sae_cfg.get("hook_name") or ""
    if hp not in adapter.hookpoint_widths:
        raise InputError(f"the SAE {path} reads hookpoint {hp!r}, which the model does not have",
                         "use an SAE trained on this model's layers")
    width = adapter.hookpoint_widths[hp]
    if sae.spec.d_in != width:
        raise InputError(f"the SAE {path} has width d_in={sae.spec.d_in}, the model's {hp} width is {width}",
                         "use an SAE trained on this model")
    check_same_model(f"the SAE {path}", model_record(sae_cfg), adapter, allow_mismatch)
    if not cfg.latents:
        raise UsageError("an SAE direction needs --latent N[,M]", f"latents 0 .. {sae.spec.d_sae - 1}")
    bad = [i for i in cfg.latents if not 0 <= i < sae.spec.d_sae]
    if bad:
        raise UsageError(f"latent {bad[0]} is out of range: the SAE has {sae.spec.d_sae} latents",
                         f"choose latents 0 .. {sae.spec.d_sae - 1}")
    means = None
    if cfg.latent_scale == "mean":
        if not cfg.store:
            raise UsageError("latent_scale=mean needs --store STORE", "or pass a number with --latent-scale")
        means = latent_means(sae, cfg.store, hp, cfg.max_rows)
    direction = Direction({}, {}, sae=sae, hookpoint=hp, latent_means=means)
    set_latents(direction, cfg.latents, cfg.latent_scale)
    direction.source = {"kind": "sae", "path": str(path), "hookpoint": hp, "latents": list(cfg.latents),
                        "latent_scale": cfg.latent_scale, "store": cfg.store,
                        "scales": [float(s) for s in direction.latent_scales]}
    return direction


def set_latents(direction: Direction, latents: list[int], latent_scale) -> None:
    """Point an SAE direction at `latents`: their scales and the summed, scaled decoder rows."""
    import torch

    if latent_scale == "mean":
        scales = direction.latent_means[latents].astype(np.float32)
    else:
        scales = np.full(len(latents), 1.0 if latent_scale is None else float(latent_scale), np.float32)
    with torch.no_grad():
        rows = direction.sae.W_dec[torch.as_tensor(latents)].float().cpu().numpy()  # (m, d)
    norm_scale = float(getattr(direction.sae, "norm_scale", torch.ones(())).item())
    direction.latents, direction.latent_scales = list(latents), scales
    direction.vectors = {direction.hookpoint: (scales @ rows / norm_scale).astype(np.float32)}


def latent_means(sae, store_path: str, hookpoint: str, max_rows: int) -> np.ndarray:
    """(d_sae,) mean of each latent's non-zero activations over (up to max_rows evenly spaced) store rows."""
    import torch

    from ..store import ActivationStore

    store = ActivationStore.open(store_path)
    if hookpoint not in store.widths:
        raise InputError(f"the store {store_path} has no hookpoint {hookpoint}",
                         f"it has {', '.join(store.hookpoints)}")
    rows = np.unique(np.linspace(0, store.n_rows - 1, min(max_rows, store.n_rows)).astype(np.int64))
    total = np.zeros(sae.spec.d_sae)
    count = np.zeros(sae.spec.d_sae)
    device = next(sae.parameters(), torch.zeros(())).device
    with torch.inference_mode():
        for lo in range(0, rows.size, 4096):
            x = torch.from_numpy(store.read_rows(hookpoint, rows[lo:lo + 4096])).to(device)
            f = sae.encode(x).double()  # (n, d_sae)
            total += f.sum(0).cpu().numpy()
            count += (f > 0).sum(0).cpu().numpy()
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)


def from_contrast(cfg: DirectionConfig, adapter, allow_mismatch: bool) -> Direction:
    """mean(label = a) - mean(label = b) at every dense store hookpoint (items or frames weighted equally)."""
    from ..store import ActivationStore

    label, sep, values = (cfg.contrast or "").partition("=")
    a, sep2, b = values.partition(":")
    if not (sep and sep2 and label.strip() and a.strip() and b.strip()):
        raise UsageError(f"--contrast expects label=a:b, got {cfg.contrast!r}", "e.g. --contrast pitch_class=C:G")
    label, a, b = label.strip(), a.strip(), b.strip()
    if not cfg.store:
        raise UsageError("--contrast needs --store STORE", "the store whose rows are averaged")
    store = ActivationStore.open(cfg.store)
    check_same_model(f"the store {cfg.store}", store.model, adapter, allow_mismatch)
    if label not in store.metadata_columns:
        raise InputError(f"the store has no label '{label}'", "labels: " + ", ".join(sorted(store.metadata_columns)))
    hookpoints = [h for h in store.hookpoints if not store.is_sparse(h)]
    means = {}
    for value in (a, b):
        rows = store.select([*cfg.where, f"{label}={value}"])
        if rows.size == 0:
            found = sorted({str(v) for v in store.metadata([label]).column(label).to_pylist() if v is not None})
            raise InputError(f"no store rows with {label}={value}" + (" (after --where)" if cfg.where else ""),
                             f"values of {label}: {', '.join(found[:20])}")
        means[value] = _mean(store, hookpoints, rows, cfg.pooling)
    vectors = {h: (means[a][h] - means[b][h]).astype(np.float32) for h in hookpoints}
    return Direction(vectors, {"kind": "contrast", "store": str(cfg.store), "label": label, "positive": a,
                               "negative": b, "where": list(cfg.where), "pooling": cfg.pooling})


def _mean(store, hookpoints: list[str], rows: np.ndarray, pooling: str) -> dict[str, np.ndarray]:
    """Per hookpoint, the float64 mean of the selected rows (frame) or of their per-item means (item)."""
    if pooling == "item":
        _, pooled = store.pool(hookpoints, how="mean", rows=rows)
        return {h: pooled[h].astype(np.float64).mean(0) for h in hookpoints}
    out = {}
    for h in hookpoints:
        total = np.zeros(store.widths[h])
        for lo in range(0, rows.size, 65536):  # bounded memory for large selections
            total += store.read_rows(h, rows[lo:lo + 65536]).astype(np.float64).sum(0)
        out[h] = total / rows.size
    return out


def from_file(cfg: DirectionConfig, adapter) -> Direction:
    """Vectors from .npy ([d], [layers, d], [layers, classes, d]), .safetensors or .npz ({hookpoint: (d,)})."""
    path = Path(cfg.file)
    if not path.is_file():
        raise InputError(f"direction file not found: {path}", "pass a .npy, .safetensors or .npz file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
        else:
            raise InputError(f"unsupported direction file {path.name}", "use .npy, .safetensors or .npz")
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read direction file {path}: {str(exc).splitlines()[0]}", "is it corrupt?") from exc
    vectors: dict[str, np.ndarray] = {}
    for key, arr in arrays.items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 3:  # the common [layers, classes, d] probe-weight layout
            if cfg.target is None or not str(cfg.target).lstrip("-").isdigit():
                raise UsageError(f"{path.name} holds [layers, classes, d] = {list(arr.shape)}",
                                 f"pass the class index with --target (0 .. {arr.shape[1] - 1})")
            arr = arr[:, int(cfg.target)]
        if arr.ndim == 2:
            n_layers = len(adapter.hookpoint_widths)
            if arr.shape[0] > n_layers:
                raise InputError(f"{path.name} has {arr.shape[0]} layer rows, the model has {n_layers} layers",
                                 "row i is layers.i: use a file made for this model")
            vectors.update({f"layers.{i}": arr[i] for i in range(arr.shape[0])})
        elif arr.ndim == 1:
            vectors[key or ANY] = arr
        else:
            raise InputError(f"{path.name}: expected (d,), (layers, d) or (layers, classes, d), got {arr.shape}")
    return Direction(vectors, {"kind": "file", "path": str(path), "sha256": sha256(path), "target": cfg.target})


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded so a rerun can tell the same input)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
