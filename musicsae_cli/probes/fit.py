"""Fit H linear probes (one per hookpoint) times K target variants as one batched tensor problem.

Features x are (H, n, d); the K variants (the true labels and, for the control, shuffled labels) share them,
so the features are standardised and held in memory once. Probe (k, h) minimises its own mean loss plus
weight_decay/2 * ||W[h, k]||^2; the problems are independent, so minimising their sum solves each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-6  # features with a smaller training std (e.g. never-active SAE latents) are left unscaled


@dataclass
class Fitted:
    """Probe weights for every (variant, hookpoint), on features standardised by mean/std."""

    weight: np.ndarray  # (K, H, C, d) float32
    bias: np.ndarray  # (K, H, C)
    mean: np.ndarray  # (H, d) training mean
    std: np.ndarray  # (H, d) training std (floored to 1 where ~0)
    iterations: int
    final_loss: float


def standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), both (H, d), of training features (H, n, d); std floored to 1 where ~0."""
    import torch

    # torch's std_mean is one fused pass with no float64 copy of (H, n, d); float32 is ample for n rows.
    std, mean = torch.std_mean(torch.from_numpy(x_train), dim=1, correction=0)
    std[std < STD_FLOOR] = 1.0
    return mean.numpy(), std.numpy()


def fit_probes(x_train: np.ndarray, targets: np.ndarray, n_out: int, loss: str, *, optimizer: str = "lbfgs",
               max_iter: int = 100, lr: float = 1.0, batch_size: int | None = None, weight_decay: float = 1e-3,
               seed: int = 0, device: str = "cpu", widths: list[int] | None = None) -> Fitted:
    """Train K x H probes on x_train (H, n, d) for targets (K, n).

    loss: "ce" (targets are class indices), "onehot_mse" (class indices turned into one-hot rows, so each
    class row of W learns its own direction) or "mse" (targets are already-standardised floats, n_out = 1).
    widths: each hookpoint's own width when x_train is zero-padded to the widest (hookpoints of different widths
    probed together). Hookpoints of one width form one block: the padded columns (zero features, zero weights,
    zero gradient) are never multiplied, so the objective and its optimum are those of the padded problem at the
    cost of the real widths (CREPE's 128/16/16/16/32/64/360 cost 632 columns, not 7 x 360).
    """
    import torch

    from ..runtime import resolve_device

    dev = resolve_device(device)
    mean, std = standardisation(x_train)
    h, n, d = x_train.shape
    k = targets.shape[0]
    widths = [d] * h if widths is None else [int(w) for w in widths]
    if len(widths) != h or max(widths) > d:
        raise ValueError(f"widths {widths} do not fit features of shape {x_train.shape}")
    gen = torch.Generator().manual_seed(seed)
    xs = torch.from_numpy(x_train).to(dev)
    xs = (xs - torch.from_numpy(mean).to(dev)[:, None]) / torch.from_numpy(std).to(dev)[:, None]  # (H, n, d)
    # Blocks of hookpoints of equal width, in first-seen order; z and dz below stack them block by block (every
    # hookpoint predicts the same targets, so the order of the H axis does not matter to the loss).
    blocks = [(wd, [j for j in range(h) if widths[j] == wd]) for wd in dict.fromkeys(widths)]
    xb_all = [xs[members, :, :wd].contiguous() if len(blocks) > 1 else xs for wd, members in blocks]
    del xs
    y = torch.from_numpy(np.ascontiguousarray(targets)).to(dev)  # (K, n)
    if loss == "onehot_mse":
        y = torch.nn.functional.one_hot(y.long(), n_out).float()  # (K, n, C)
    elif loss == "mse":
        y = y.float()[..., None]  # (K, n, 1)
    else:
        y = y.long()
    # Zero start: the problems are convex, so the optimum does not depend on it and runs are reproducible.
    ws = [torch.zeros(len(members), k * n_out, wd, device=dev) for wd, members in blocks]  # (H_b, K*C, d_b)
    bs = [torch.zeros(len(members), k * n_out, device=dev) for _, members in blocks]  # (H_b, K*C)

    def loss_and_grad(idx=None) -> torch.Tensor:
        """Objective at (ws, bs); fills their .grad analytically.

        Hand-written rather than autograd: the gradient is one bmm, dZ^T X, while autograd's backward of
        baddbmm measured about twice the forward's time on these skinny shapes.
        """
        xbs = xb_all if idx is None else [xb[:, idx] for xb in xb_all]  # (H_b, m, d_b)
        yb = y if idx is None else y[:, idx]
        m = xbs[0].shape[1]
        zs = [torch.baddbmm(b[:, None, :], xb, w.transpose(1, 2)) for xb, w, b in zip(xbs, ws, bs, strict=True)]
        z = (zs[0] if len(zs) == 1 else torch.cat(zs)).view(h, m, k, n_out)  # (H, m, K, C), block order
        if loss == "ce":
            # log_softmax over a short last axis (a few classes) is slow on CPU; over the first axis of a
            # class-major copy it gives the same values about 5x faster.
            logp = torch.log_softmax(z.movedim(-1, 0).contiguous(), dim=0).movedim(0, -1)
            target = yb.T[None, :, :, None].expand(h, m, k, 1)  # (H, m, K, 1)
            fit = -logp.gather(-1, target).sum() / m
            dz = logp.exp_().scatter_add_(-1, target, torch.full_like(logp[..., :1], -1.0)) / m  # (P - Y) / m
        else:
            diff = z - yb.transpose(0, 1)[None]  # (H, m, K, C)
            fit = (diff * diff).sum() / (m * n_out)
            dz = diff * (2.0 / (m * n_out))
        dz = dz.reshape(h, m, k * n_out)
        penalty = 0.0
        start = 0
        for xb, w, b in zip(xbs, ws, bs, strict=True):
            part = dz[start:start + w.shape[0]]
            start += w.shape[0]
            w.grad = torch.bmm(part.transpose(1, 2), xb).add_(w, alpha=weight_decay)  # (H_b, K*C, d_b)
            b.grad = part.sum(dim=1)  # (H_b, K*C)
            penalty = penalty + (w * w).sum()
        return fit + 0.5 * weight_decay * penalty

    iterations = _optimise(loss_and_grad, ws + bs, optimizer, max_iter, lr, batch_size, n, gen)
    final = float(loss_and_grad()) / (k * h)
    weight = np.zeros((k, h, n_out, d), dtype=np.float32)
    bias = np.zeros((k, h, n_out), dtype=np.float32)
    for (wd, members), w, b in zip(blocks, ws, bs, strict=True):
        weight[:, members, :, :wd] = w.view(len(members), k, n_out, wd).permute(1, 0, 2, 3).cpu().numpy()
        bias[:, members] = b.view(len(members), k, n_out).permute(1, 0, 2).cpu().numpy()
    return Fitted(weight, bias, mean, std, iterations, final)


def apply(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(H, n, C) outputs of H probes (weight (H, C, d)) on raw features x (H, n, d)."""
    xs = (x - mean[:, None]) / std[:, None]  # (H, n, d)
    return np.matmul(xs, weight.transpose(0, 2, 1)) + bias[:, None, :]


def _optimise(objective, params: list, optimizer: str, max_iter: int, lr: float, batch_size: int | None, n: int,
              gen) -> int:
    """Minimise `objective(idx=None)` (which sets the params' .grad) over `params`; returns iterations or epochs."""
    import torch

    if optimizer == "lbfgs":
        # Tolerances in the spirit of scikit-learn's lbfgs (tol 1e-4, 100 iterations): past them test metrics
        # no longer move, while each evaluation costs two passes over the (H, n, d) features.
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-5, tolerance_change=1e-9)

        def closure():
            return objective()

        opt.step(closure)
        return int(opt.state[params[0]].get("n_iter", max_iter))
    opt = torch.optim.Adam(params, lr=lr)
    step = batch_size or n
    for _ in range(max_iter):
        order = torch.randperm(n, generator=gen).to(params[0].device)
        for start in range(0, n, step):
            objective(order[start:start + step])
            opt.step()
    return max_iter
