"""SAE save/load in the layout SAELens reads (cfg.json + sae_weights.safetensors + sparsity.safetensors).

A saved SAE directory::

    cfg.json                  SAELens config (flat pre-6.0 style, which SAELens 6 still converts): architecture
                              "standard" | "topk" | "jumprelu", d_in, d_sae, dtype, device, model_name, hook_name,
                              hook_layer, apply_b_dec_to_input=true, normalize_activations="none" (folded),
                              k + activation_fn_kwargs {"k"} for topk; plus "musicsae": {"spec", ...extra}
    sae_weights.safetensors   W_enc (d_in, d_sae), b_enc, W_dec (d_sae, d_in), b_dec, threshold (jumprelu)
    sparsity.safetensors      {"sparsity": log10(feature density + 1e-10)} (SAELens's convention), optional
    manifest.json             kind "sae", format_version (a run of one SAE: the run's own manifest instead)

BatchTopK is exported as a JumpReLU with its inference threshold, which is exactly how it encodes at inference.
Input normalisation is folded into the weights. No pickles: safetensors and JSON only. The scikit-learn
dictionary-learning baseline (sae/dictionary.py) uses the same layout but is musicsae-only: its encoder is a
sparse-coding solve, which no SAELens architecture expresses, so its cfg.json says "saelens_loadable": false.

Plain SAELens folders load with SAELens's own math. Flags that change it are honoured exactly or refused, never
ignored: apply_b_dec_to_input=false and rescale_acts_by_decoder_norm=true (standard and topk) are folded into
the loaded weights and listed under cfg["musicsae_folded"]; run-time input normalisation, attention-head hooks
(hook_head_index, reshape_activations="hook_z"), activation functions other than relu/topk, a non-trivial
fine-tuning scaling factor and architectures other than standard/topk/jumprelu are refused.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..artifacts import MANIFEST_NAME, check_format_version, new_manifest, write_json
from ..errors import InputError, StoreError
from ..kinds import expect_kind, is_kind
from .rundir import RUN_KIND

FORMAT_VERSION = 1
KIND = "sae"
CFG_NAME, WEIGHTS_NAME, SPARSITY_NAME = "cfg.json", "sae_weights.safetensors", "sparsity.safetensors"
RESCALE_FLAG = "rescale_acts_by_decoder_norm"
DENSITY_EPS = 1e-10


def hook_layer_of(hook_name: str) -> int | None:
    """The layer number in a hookpoint name ("layers.12" -> 12), else None."""
    found = re.findall(r"\d+", hook_name or "")
    return int(found[0]) if found else None


def model_record(cfg: dict) -> dict:
    """The model an SAE was trained on, as its store recorded it (id, fingerprint, widths), from its cfg.json."""
    record = (cfg.get("musicsae") or {}).get("model")
    return dict(record) if isinstance(record, dict) else {"id": cfg.get("model_name")}


def save_sae(sae, directory: str | Path, hook_name: str, model_name: str, extra: dict | None = None,
             density=None, *, config: dict | None = None, hook_layer: int | None = None,
             write_manifest: bool = True) -> Path:
    """Write `sae` (normalisation folded into a copy) into the existing `directory`; returns it.

    `write_manifest=False` when `directory` is a training run of one SAE: the run's manifest stays its own."""
    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"SAE output folder does not exist: {directory}", "create it (a staged directory) first")
    from .architectures import SparseAutoencoder

    spec = sae.spec
    folded = SparseAutoencoder(spec)  # a CPU fp32 copy: the caller's SAE keeps its normalisation and device
    folded.load_state_dict({k: v.detach().float().cpu() for k, v in sae.state_dict().items()})
    folded.fold_normalisation()
    save_file(folded.saelens_weights(), str(directory / WEIGHTS_NAME))
    if density is not None:
        density = torch.as_tensor(density, dtype=torch.float64).reshape(-1)
        if density.numel() != spec.d_sae:
            raise ValueError(f"density has {density.numel()} entries, expected d_sae={spec.d_sae}")
        save_file({"sparsity": torch.log10(density + DENSITY_EPS).float()}, str(directory / SPARSITY_NAME))
    layer = hook_layer if hook_layer is not None else hook_layer_of(hook_name)
    cfg = {
        "architecture": folded.saelens_architecture, "d_in": spec.d_in, "d_sae": spec.d_sae,
        "dtype": "float32", "device": "cpu", "model_name": model_name, "hook_name": hook_name,
        "hook_layer": layer if layer is not None else 0, "hook_head_index": None,
        "activation_fn_str": folded.activation_fn_str,
        "apply_b_dec_to_input": True, "normalize_activations": "none", "finetuning_scaling_factor": False,
        "prepend_bos": False, "context_size": None, "dataset_path": None,
    }
    cfg.update(folded.saelens_config())  # TopK: k
    cfg["musicsae"] = {"spec": spec.to_dict(), **(extra or {})}
    write_json(directory / CFG_NAME, cfg)
    files = [CFG_NAME, WEIGHTS_NAME] + ([SPARSITY_NAME] if density is not None else [])
    if write_manifest:
        write_json(directory / MANIFEST_NAME, new_manifest(
            KIND, FORMAT_VERSION, config, architecture=spec.arch, saelens_architecture=cfg["architecture"],
            d_in=spec.d_in, d_sae=spec.d_sae, k=spec.k, hook_name=hook_name, model_name=model_name, files=files))
    return directory


def _read_cfg(directory: Path) -> tuple[dict | None, dict]:
    if not directory.is_dir():
        raise InputError(f"SAE folder not found: {directory}", "pass a folder written by `musicsae sae train`")
    manifest = None
    if (directory / MANIFEST_NAME).is_file():
        manifest = expect_kind(directory, KIND, RUN_KIND)
        if is_kind(manifest, RUN_KIND):  # a training run of one SAE holds it beside its logs
            if manifest.get("status") != "complete":
                raise InputError(f"the training run {directory} is not finished",
                                 "resume it with `musicsae sae train RUN --resume`")
            manifest = None
        if manifest is not None:
            check_format_version(manifest, FORMAT_VERSION, f"SAE {directory}")
    path = directory / CFG_NAME
    if not path.is_file():
        raise InputError(f"no {CFG_NAME} in {directory}", "pass a musicsae or SAELens SAE folder")
    try:
        cfg = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"unreadable {path}: {exc}", "the SAE folder is corrupt; re-save it") from exc
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}  # SAELens >= 6 nests these
    for key in ("model_name", "hook_name", "hook_layer", "hook_head_index"):
        if cfg.get(key) is None:
            cfg[key] = meta.get(key)
    return manifest, cfg


def _from_saelens() -> dict[str, str]:
    """SAELens cfg.json architecture -> the musicsae architecture a plain SAELens folder of it loads as (each
    architecture class lists the SAELens ones it reads)."""
    from .architectures import ARCHITECTURES, architecture_class

    return {saelens: name for name in ARCHITECTURES for saelens in architecture_class(name).saelens_reads}


def _spec_of(cfg: dict, directory: Path):
    from .architectures import SAESpec, architecture_class

    ours = cfg.get("musicsae", {}).get("spec") if isinstance(cfg.get("musicsae"), dict) else None
    if ours:
        return SAESpec.from_dict(ours)
    arch = cfg.get("architecture", "standard")
    fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch == "standard" and fn == "topk":  # SAELens < 5 saved TopK SAEs this way
        arch = "topk"
    mapping = _from_saelens()
    if arch not in mapping:
        *names, last = mapping
        raise InputError(f"unsupported SAE architecture {arch!r} in {directory}",
                         f"musicsae loads {', '.join(names)} and {last} SAEs")
    if fn not in (None, "relu", "topk"):
        raise InputError(f"{directory} uses the activation function {fn!r}, which musicsae does not implement",
                         "musicsae loads SAEs with relu or topk activations (and jumprelu SAEs)")
    cls = architecture_class(mapping[arch])
    _check_saelens_flags(cfg, directory, cls)
    return SAESpec(arch=mapping[arch], d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]),
                   k=int(k) if cls.uses_k else None)


def _check_saelens_flags(cfg: dict, directory: Path, cls: type) -> None:
    """Refuse the SAELens options that change the SAE's math and that musicsae cannot reproduce."""
    norm = cfg.get("normalize_activations") or "none"
    if norm not in ("none", False):
        raise InputError(f"{directory} needs run-time input normalisation ({norm!r}), which musicsae does not apply",
                         "fold the normalisation into the weights before exporting")
    if cfg.get("hook_head_index") is not None:
        raise InputError(f"{directory} reads one attention head (hook_head_index={cfg['hook_head_index']}), which "
                         "musicsae does not support", "musicsae's SAEs read whole hookpoints (residual streams)")
    if (cfg.get("reshape_activations") or "none") != "none":
        raise InputError(f"{directory} reshapes its inputs (reshape_activations={cfg['reshape_activations']!r}), "
                         "which musicsae does not support", "musicsae's SAEs read whole hookpoints (residual streams)")
    if cfg.get(RESCALE_FLAG) and not cls.folds_decoder_norm_rescale:
        raise InputError(f"{directory} sets {RESCALE_FLAG} on a {cfg.get('architecture')} SAE, which musicsae does "
                         "not reproduce", "musicsae honours it for standard and topk SAEs; fold the decoder norms into "
                         "the weights (SAELens fold_W_dec_norm) and re-save")


def _fold_saelens_flags(weights: dict, cfg: dict, directory: Path) -> dict:
    """Fold apply_b_dec_to_input=false and rescale_acts_by_decoder_norm into `weights` (in place) so that the
    ordinary SAE computes what SAELens computes; returns {flag: what was folded}."""
    import torch

    folded = {}
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        scaling = weights.get(name)
        if scaling is not None and not torch.allclose(scaling, torch.ones_like(scaling)):
            raise InputError(f"{directory} has a fine-tuning scaling factor ({name}), which musicsae does not support",
                             "fold it into W_dec (W_dec *= scaling_factor[:, None]) and re-save without it")
    if cfg.get("apply_b_dec_to_input") is False:  # x @ W + b == (x - b_dec) @ W + (b + b_dec @ W)
        weights["b_enc"] = weights["b_enc"] + weights["b_dec"] @ weights["W_enc"]
        folded["apply_b_dec_to_input"] = "false: b_dec @ W_enc added to b_enc"
    if cfg.get(RESCALE_FLAG):
        # SAELens: latents = act(pre * n), reconstruction = (latents / n) @ W_dec + b_dec with n = ||W_dec rows||.
        # With W_enc[:, i] * n_i, b_enc[i] * n_i and W_dec[i] / n_i an ordinary SAE gives the same latents (also
        # the same top-k picks) and the same reconstruction. A zero row is a latent that never contributes.
        norms = weights["W_dec"].norm(dim=1)  # (d_sae,)
        weights["W_enc"] = weights["W_enc"] * norms
        weights["b_enc"] = weights["b_enc"] * norms
        weights["W_dec"] = weights["W_dec"] / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
        folded[RESCALE_FLAG] = "true: decoder row norms folded into W_enc and b_enc, W_dec rows unit-norm"
    return folded


def _flags_folded_on_load(cfg: dict) -> list[str]:
    """The SAELens flags load_sae folds into the weights of this folder."""
    flags = ["apply_b_dec_to_input=false"] if cfg.get("apply_b_dec_to_input") is False else []
    return flags + ([f"{RESCALE_FLAG}=true"] if cfg.get(RESCALE_FLAG) else [])


def load_sae(directory: str | Path, device="cpu"):
    """(SparseAutoencoder in eval mode, cfg dict) from a musicsae or plain SAELens SAE folder."""
    from safetensors.torch import load_file

    from .architectures import SparseAutoencoder, architecture_class

    directory = Path(directory)
    _, cfg = _read_cfg(directory)
    if cfg.get("architecture") == "dictionary_learning":  # musicsae's scikit-learn baseline
        from .dictionary import load_dictionary

        return load_dictionary(directory, cfg).to(device), cfg
    spec = _spec_of(cfg, directory)
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise StoreError(f"no {WEIGHTS_NAME} in {directory}", "the SAE folder is incomplete; re-save it")
    try:
        weights = {k: v.float() for k, v in load_file(str(path)).items()}
    except Exception as exc:  # safetensors raises several types for truncated/corrupt files
        raise StoreError(f"unreadable {path}: {exc}", "the SAE folder is corrupt; re-save it") from exc
    shapes = {"W_enc": (spec.d_in, spec.d_sae), "b_enc": (spec.d_sae,), "W_dec": (spec.d_sae, spec.d_in),
              "b_dec": (spec.d_in,)}
    shapes.update({name: (spec.d_sae,) for name in architecture_class(spec.arch).extra_weights})
    for name, shape in shapes.items():
        if name not in weights or tuple(weights[name].shape) != shape:
            found = tuple(weights[name].shape) if name in weights else "missing"
            raise StoreError(f"{path}: {name} should be {shape}, found {found}", "the SAE folder is corrupt")
    folded = _fold_saelens_flags(weights, cfg, directory)
    if folded:
        cfg["musicsae_folded"] = folded
    sae = SparseAutoencoder(spec)
    sae.load_saelens_weights(weights)
    return sae.to(device).eval(), cfg


def describe_sae(directory: str | Path) -> dict:
    """A JSON-ready summary of an SAE folder (no weights loaded), for `musicsae info`."""
    from safetensors import safe_open

    directory = Path(directory)
    manifest, cfg = _read_cfg(directory)
    saelens_loadable = cfg.get("architecture") != "dictionary_learning" and cfg.get("saelens_loadable", True) is True
    if cfg.get("architecture") == "dictionary_learning":
        from .dictionary import DictionarySpec

        spec = DictionarySpec(**cfg["musicsae"]["spec"])
    else:
        spec = _spec_of(cfg, directory)
    ours = cfg.get("musicsae") if isinstance(cfg.get("musicsae"), dict) else {}
    info = {
        "path": str(directory), "kind": KIND if manifest else "saelens",
        "format_version": (manifest or {}).get("format_version"),
        "musicsae_version": (manifest or {}).get("musicsae_version"), "created": (manifest or {}).get("created"),
        "architecture": spec.arch, "saelens_architecture": cfg.get("architecture") if saelens_loadable else None,
        "saelens_loadable": saelens_loadable, "folded_on_load": _flags_folded_on_load(cfg), "d_in": spec.d_in,
        "d_sae": spec.d_sae, "expansion_factor": spec.d_sae / spec.d_in, "k": spec.k,
        "model_name": cfg.get("model_name"), "hook_name": cfg.get("hook_name"), "dtype": cfg.get("dtype"),
        "size_bytes": sum(f.stat().st_size for f in directory.iterdir() if f.is_file()),
        "files": sorted(f.name for f in directory.iterdir() if f.is_file()),
    }
    info.update({k: v for k, v in ours.items() if k != "spec"})
    sparsity = directory / SPARSITY_NAME
    if sparsity.is_file():
        with safe_open(str(sparsity), framework="pt") as fh:
            log_density = fh.get_tensor("sparsity").double()
        dead = log_density <= math.log10(DENSITY_EPS) + 1e-6
        alive = log_density[~dead]
        info["density"] = {"dead_fraction": float(dead.double().mean()),
                           "median_log10": float(alive.median()) if alive.numel() else None,
                           "max_log10": float(log_density.max())}
    return info
