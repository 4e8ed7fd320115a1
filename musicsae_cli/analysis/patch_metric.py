"""The metric `analyze patch` reads from each run (see patch.py): a probe's logit, SAE latents, the model's own
outputs or its own loss; and the SAE loading the metric and the latent subspace share."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..models.identity import check_same_model
from .config import PatchConfig
from .patch_pairs import Pair, Side


class Metric:
    """What a run is scored by (see the module doc): `run` gives one reading per batch row, `score` a number."""

    def __init__(self, cfg: PatchConfig, adapter, hookpoints: list[str], probes=None):
        self.kind, self.adapter, self.hookpoint = cfg.metric, adapter, None
        if self.kind == "probe":
            if probes is None:
                raise InputError("metric probe needs --probe PROBES", "train one with musicsae probe train")
            self.probes = probes
            if probes.task != "classification":
                raise InputError("metric probe needs classification probes", "use a classification probe")
            best = (probes.manifest.get("metrics") or {}).get("best") or {}
            hp = cfg.probe_hookpoint or best.get("hookpoint") or probes.hookpoints[-1]
            probes.index(hp)  # InputError naming the probe's hookpoints
            self.hookpoint = adapter.resolve_hookpoints(hp)[0]
            self.target = cfg.target
            if self.target is not None:
                probes.class_index(self.target)
        elif self.kind == "latent":
            if not cfg.sae or not cfg.latents:
                raise InputError("metric latent needs --sae SAE and --latent N", "name the SAE and its latent(s)")
            self.sae, self.hookpoint = load_sae_checked(cfg.sae, cfg.latents, adapter, cfg.allow_other_model)
            self.latents = list(cfg.latents)
        elif self.kind == "loss":
            adapter.require("loss", "metric loss")
            if adapter.can("audio"):
                adapter.require("tokens", "metric loss over audio")
        else:
            adapter.require("outputs", "metric outputs")
        # every patched hookpoint is run (each recorder and edit sees its calls), and the metric's own
        self.read = list(dict.fromkeys([*hookpoints, *([self.hookpoint] if self.hookpoint else [])]))

    @property
    def batches(self) -> bool:
        """Whether several runs can share a pass (the outputs of one item are read one item at a time)."""
        return self.kind != "outputs"

    def run(self, side: Side, copies: int, edits: dict) -> list:
        """The model on `copies` copies of one input with `edits` active: one reading per copy."""
        adapter = self.adapter
        texts = [side.text] * copies if side.text else None
        with adapter.intervene(edits):
            if self.kind == "outputs":
                return [np.asarray(adapter.outputs(side.audio), dtype=np.float64) for _ in range(copies)]
            if self.kind == "loss":
                if side.tokens is None:
                    side.tokens = adapter.tokenize([side.audio])[0] if side.audio is not None else \
                        side.sequence.tokens
                lp, targets, mask = adapter.next_token_log_probs([side.tokens] * copies, texts)
                return [(lp[b], targets[b], mask[b]) for b in range(copies)]
            if side.audio is not None:
                acts = adapter.audio_activations([side.audio] * copies, self.read, texts=texts)
            else:
                acts = adapter.sequence_activations([side.sequence] * copies, self.read)
        return [_numpy(a[self.hookpoint]) for a in acts]

    def target_of(self, clean_run, pair: Pair) -> str | None:
        if self.kind != "probe":
            return pair.target
        if pair.target is not None:
            self.probes.class_index(pair.target)
            return pair.target
        if self.target is not None:
            return self.target
        logits = self.probes.logits(self.hookpoint, clean_run).mean(axis=0)
        return self.probes.classes[int(np.argmax(logits))]

    def score(self, run, clean_run, target: str | None) -> float:
        if self.kind == "probe":
            return float(self.probes.logits(self.hookpoint, run)[:, self.probes.class_index(target)].mean())
        if self.kind == "latent":
            import torch

            with torch.no_grad():
                z = self.sae.encode(torch.from_numpy(np.ascontiguousarray(run, np.float32)))
            return float(z[:, self.latents].float().mean())
        if self.kind == "loss":
            lp, _, _ = run
            _, targets, mask = clean_run
            if lp.shape[:-1] != targets.shape:
                raise InputError(f"the runs of a pair predict {tuple(lp.shape[:-1])} and {tuple(targets.shape)} "
                                 "tokens", "give pairs of equal length")
            picked = lp.gather(-1, targets[..., None].to(lp.device))[..., 0]
            return float(picked[mask.to(lp.device)].double().mean())
        n = min(len(run), len(clean_run))
        return -float(np.linalg.norm(run[:n] - clean_run[:n]) / np.sqrt(max(1, run[:n].size)))


def _numpy(acts) -> np.ndarray:
    return acts.detach().float().cpu().numpy() if hasattr(acts, "detach") else np.asarray(acts, np.float32)


def load_sae_checked(path: str, latents: list[int], adapter, allow_other_model: bool):
    """(SAE, its hookpoint) checked against the model (unless allowed), its hookpoint width and the latents."""
    from ..sae.io import load_sae, model_record

    sae, sae_cfg = load_sae(path, device="cpu")
    check_same_model(f"the SAE {path}", model_record(sae_cfg), adapter.describe(), allow_other_model)
    d_in, d_sae = sae.spec.d_in, sae.spec.d_sae
    hookpoint = adapter.resolve_hookpoints(str(sae_cfg.get("hook_name")))[0]
    width = adapter.hookpoint_widths[hookpoint]
    if d_in != width:
        raise InputError(f"the SAE reads {d_in}-wide activations but {hookpoint} is {width} wide",
                         "use an SAE trained on this model's hookpoint")
    bad = [i for i in latents if not 0 <= i < d_sae]
    if bad:
        raise InputError(f"latent(s) {bad} out of range for an SAE of {d_sae} latents", f"use 0..{d_sae - 1}")
    return sae, hookpoint
