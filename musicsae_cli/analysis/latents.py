"""What the analyses read: SAE latents (from a latent store, or encoded on the fly) or raw activations.

`open_features` turns (store, optional SAE, optional hookpoint) into a `FeatureSource` whose `read(rows)`
returns the features of those global store rows: a scipy CSR matrix for latents and CSR hookpoints (never
densified), a float32 array for dense raw activations. Rules:

- no SAE: the store hookpoint (the only one, or `hookpoint`), raw or CSR as stored;
- an SAE and a latent store (a CSR hookpoint of width d_sae, as `sae encode` writes): the stored latents;
- an SAE and an activation store: the SAE's own hookpoint (its cfg's hook_name, or `hookpoint`) encoded in
  row blocks, so no latent store has to be written first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..store import ActivationStore

LATENT_SUFFIX = ".sae"
READ_BLOCK = 65536  # rows encoded or read per block


@dataclass
class FeatureSource:
    """A store hookpoint read as features, optionally through an SAE."""

    store: ActivationStore
    hookpoint: str  # the store hookpoint read
    width: int  # features per row (d_sae for latents)
    kind: str  # "latents" or "activations"
    sparse: bool  # read() returns scipy CSR
    sae: object | None = None  # the loaded SAE (decoder directions, encoding on the fly)
    sae_path: str | None = None
    sae_cfg: dict = field(default_factory=dict)
    encode_on_the_fly: bool = False
    _encoder: object | None = None

    @property
    def model_hookpoint(self) -> str:
        """The model hookpoint the features come from (the latent store's name without '.sae')."""
        hp = self.hookpoint
        return hp[:-len(LATENT_SUFFIX)] if hp.endswith(LATENT_SUFFIX) else hp

    def read(self, rows: np.ndarray, tracker=None):
        """Features of the increasing global store rows `rows`: scipy CSR (sparse) or (n, width) float32.

        `tracker` (a progress Tracker) advances by the rows read, block by block.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.encode_on_the_fly or self.sparse:
            from scipy.sparse import vstack

            parts = []
            for i in range(0, rows.size, READ_BLOCK):
                block = rows[i:i + READ_BLOCK]
                if self.encode_on_the_fly:
                    parts.append(self._encoder(self.store.read_rows(self.hookpoint, block)).to_scipy())
                else:
                    parts.append(self.store.read_rows_sparse(self.hookpoint, block).to_scipy())
                if tracker is not None:
                    tracker.advance(block.size)
            return vstack(parts, format="csr") if parts else _empty_csr(self.width)
        x = self.store.read_rows(self.hookpoint, rows)
        if tracker is not None:
            tracker.advance(rows.size)
        return x

    def decoder(self) -> np.ndarray:
        """(d_sae, d_in) float32 decoder directions of the SAE (InputError without one)."""
        if self.sae is None:
            raise InputError("decoder directions need an SAE", "pass --sae SAE")
        return self.sae.W_dec.detach().float().cpu().numpy()

    def check_latents(self, latents) -> list[int]:
        """`latents` as ints within [0, width); UsageError naming the first one out of range."""
        from ..errors import UsageError

        out = [int(i) for i in latents]
        bad = [i for i in out if not 0 <= i < self.width]
        if bad:
            what = "the SAE has" if self.kind == "latents" else f"{self.hookpoint} has"
            raise UsageError(f"latent {bad[0]} is out of range: {what} {self.width} features",
                             f"choose indices 0 .. {self.width - 1}")
        return out

    def describe(self) -> dict:
        return {"store": str(self.store.path), "hookpoint": self.hookpoint, "model_hookpoint": self.model_hookpoint,
                "kind": self.kind, "width": self.width, "sparse": self.sparse, "sae": self.sae_path,
                "encoded_on_the_fly": self.encode_on_the_fly}


def _empty_csr(width: int):
    from scipy.sparse import csr_matrix

    return csr_matrix((0, width), dtype=np.float32)


def open_features(store_path: str | Path, hookpoint: str | None = None, sae: str | Path | None = None,
                  member: str | None = None, device: str = "cpu", batch_size: int = 4096,
                  allow_other_model: bool = False) -> FeatureSource:
    """The features an analysis reads from `store_path` (see the module docstring for the rules).

    `device` (auto, cpu, cuda, cuda:N, mps) is where an SAE encodes; it is resolved and checked here. An SAE
    made with another model than the store's is refused unless `allow_other_model`."""
    from ..sae.data import pick_hookpoint

    store = ActivationStore.open(store_path)
    if sae is None:
        hp = pick_hookpoint(store, hookpoint)
        sparse = store.is_sparse(hp)
        kind = "latents" if hp.endswith(LATENT_SUFFIX) and sparse else "activations"
        return FeatureSource(store, hp, int(store.widths[hp]), kind, sparse)
    from ..models.identity import check_same_model
    from ..runtime import resolve_device
    from ..sae.io import load_sae, model_record
    from ..sae.train import sae_dir

    device = str(resolve_device(device))  # auto -> cuda, mps or cpu; an unavailable device is refused
    path = sae_dir(sae, member)
    model, cfg = load_sae(path, device=device)
    check_same_model(f"the SAE {path}", model_record(cfg), store.model, allow_other_model,
                     against="the store's model")
    d_in, d_sae = int(model.spec.d_in), int(model.spec.d_sae)
    hook_name = cfg.get("hook_name")
    latent_hps = [h for h in store.hookpoints if store.is_sparse(h) and store.widths[h] == d_sae
                  and h.endswith(LATENT_SUFFIX)]
    wanted = hookpoint
    if wanted is not None and not wanted.endswith(LATENT_SUFFIX) and wanted + LATENT_SUFFIX in latent_hps:
        wanted = wanted + LATENT_SUFFIX
    if wanted in latent_hps or (wanted is None and latent_hps):
        hp = wanted if wanted in latent_hps else _only(latent_hps, hook_name)
        return FeatureSource(store, hp, d_sae, "latents", True, model, str(path), cfg)
    if wanted is None:
        wanted = hook_name if hook_name in store.hookpoints else None
    hp = pick_hookpoint(store, wanted)
    if store.is_sparse(hp) or store.widths[hp] != d_in:
        raise InputError(f"the SAE {path} (d_in={d_in}, d_sae={d_sae}) cannot read {hp} of {store.path} "
                         f"(width {store.widths[hp]})", "pass the store the SAE was trained on, or its latent store")
    from ..sae.encode import _Encoder

    return FeatureSource(store, hp, d_sae, "latents", True, model, str(path), cfg, True,
                         _Encoder(model, device, batch_size))


def _only(latent_hps: list[str], hook_name: str | None) -> str:
    if hook_name and hook_name + LATENT_SUFFIX in latent_hps:
        return hook_name + LATENT_SUFFIX
    if len(latent_hps) == 1:
        return latent_hps[0]
    raise InputError(f"the store has several latent hookpoints: {', '.join(latent_hps)}", "choose one with --hookpoint")
