"""The built-in SAE architectures, one module each; importing this package registers them, in this order.

- relu: ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, Circuits Updates, April 2024)
- topk: TopK SAE with the AuxK loss on dead latents (Gao et al. 2024)
- batchtopk: BatchTopK SAE, k latents per row on average over a batch (Bussmann et al. 2024)
- jumprelu: JumpReLU SAE with per-latent learned thresholds and an L0 penalty (Rajamanoharan et al. 2024)

A new architecture is a module here whose SparseAutoencoder subclass (sae/architectures.py) overrides what
differs, plus its `register_architecture(name, cls)` call and an import below.
"""

# the import order is the order of ARCHITECTURES
# isort: off
from . import relu  # noqa: F401
from . import topk  # noqa: F401
from . import batchtopk  # noqa: F401
from . import jumprelu  # noqa: F401
# isort: on
