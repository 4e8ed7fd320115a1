"""The dictionary-learning baseline (scikit-learn's MiniBatchDictionaryLearning) behind the SAE interface.

The dictionary is fitted with `partial_fit` on the same shuffled store batches as an SAE, its atoms become the
decoder rows, and encoding is sklearn's sparse coding (OMP with k atoms by default). It is saved beside SAEs in
the same folder layout (cfg.json with architecture "dictionary_learning", weights in safetensors), but the folder
is musicsae-only: encoding is a sparse-coding solve per row, not the linear map + activation of any SAELens
architecture, so no SAELens SAE computes the same latents. Its cfg.json says so ("saelens_loadable": false, "note").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ARCH = "dictionary_learning"
NOTE = ("musicsae-only: a scikit-learn MiniBatchDictionaryLearning baseline whose encoder is a sparse-coding solve "
        "(OMP or lasso), not a linear map; SAELens cannot load it. Load it with musicsae (load_sae).")


@dataclass
class DictionarySpec:
    """Shape and sparse-coding settings of a dictionary baseline."""

    d_in: int
    d_sae: int
    k: int = 32
    alpha: float = 1.0
    transform: str = "omp"
    arch: str = ARCH

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class DictionarySAE(torch.nn.Module):
    """encode = sklearn sparse coding against the atoms; decode = codes @ atoms + mean."""

    def __init__(self, spec: DictionarySpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("W_dec", torch.zeros(spec.d_sae, spec.d_in))  # atoms, unit norm
        self.register_buffer("b_dec", torch.zeros(spec.d_in))  # the data mean

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        from sklearn.decomposition import sparse_encode

        centred = (x.detach().float() - self.b_dec).cpu().numpy().astype(np.float64)
        codes = sparse_encode(centred, self.W_dec.cpu().numpy().astype(np.float64), algorithm=self.spec.transform,
                              alpha=self.spec.alpha, n_nonzero_coefs=min(self.spec.k, self.spec.d_in))
        return torch.from_numpy(codes.astype(np.float32)).to(x.device)  # (B, d_sae)

    def encode_sparse(self, x):
        return None

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def fit_dictionary(spec: DictionarySpec, batches, mean: np.ndarray, seed: int, progress_tracker=None) -> DictionarySAE:
    """Fit MiniBatchDictionaryLearning on centred batches (an iterable of (B, d_in) float arrays)."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    learner = MiniBatchDictionaryLearning(n_components=spec.d_sae, alpha=spec.alpha, random_state=seed,
                                          transform_algorithm=spec.transform,
                                          transform_n_nonzero_coefs=min(spec.k, spec.d_in))
    for x in batches:
        learner.partial_fit(np.asarray(x, dtype=np.float64) - mean)
        if progress_tracker is not None:
            progress_tracker.advance()
    model = DictionarySAE(spec)
    atoms = learner.components_ / np.maximum(np.linalg.norm(learner.components_, axis=1, keepdims=True), 1e-12)
    model.W_dec.copy_(torch.from_numpy(atoms.astype(np.float32)))
    model.b_dec.copy_(torch.from_numpy(mean.astype(np.float32)))
    return model


def save_dictionary(model: DictionarySAE, directory: Path, hook_name: str, model_name: str, extra: dict,
                    density, write_manifest: bool = True) -> None:
    """cfg.json + sae_weights.safetensors (+ sparsity.safetensors) + manifest.json, like an SAE folder."""
    from safetensors.torch import save_file

    from ..artifacts import new_manifest, write_json

    cfg = {"architecture": ARCH, "saelens_loadable": False, "note": NOTE, "d_in": model.spec.d_in,
           "d_sae": model.spec.d_sae, "dtype": "float32", "device": "cpu", "hook_name": hook_name,
           "model_name": model_name, "normalize_activations": "none",
           "musicsae": {"spec": model.spec.to_dict(), **extra}}
    write_json(directory / "cfg.json", cfg)
    save_file({"W_dec": model.W_dec.contiguous(), "b_dec": model.b_dec.contiguous()},
              str(directory / "sae_weights.safetensors"))
    if density is not None:
        sparsity = torch.log10(torch.as_tensor(density, dtype=torch.float32) + 1e-10)
        save_file({"sparsity": sparsity}, str(directory / "sparsity.safetensors"))
    if write_manifest:
        write_json(directory / "manifest.json", new_manifest("sae", 1, extra.get("train_config"),
                                                             architecture=ARCH, saelens_architecture=None,
                                                             saelens_loadable=False))


def load_dictionary(directory: Path, cfg: dict) -> DictionarySAE:
    """The baseline saved by save_dictionary."""
    from safetensors.torch import load_file

    spec = DictionarySpec(**cfg["musicsae"]["spec"])
    model = DictionarySAE(spec)
    weights = load_file(str(directory / "sae_weights.safetensors"))
    model.W_dec.copy_(weights["W_dec"])
    model.b_dec.copy_(weights["b_dec"])
    return model.eval()
