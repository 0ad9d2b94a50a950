"""SparseGPT (Frantar & Alistarh, ICML 2023): OBS pruning with lazy batched column updates.

After IST-DASLab/sparsegpt `sparsegpt.py::fasterprune`: dead inputs (diag H = 0) get diag 1 and a zero
column; damping percdamp * mean(diag H); Hinv = upper Cholesky factor of H^-1 (Alg. 1); blocks of `blocksize`
columns; the mask is chosen per block from w^2 / diag(Hinv)^2 (unstructured) or every M columns (N:M);
each pruned weight's error err = (w - q) / d is propagated to the remaining columns of the block
(W[:, i:] -= err x Hinv[i, i:]) and to later blocks at once (lazy batch update).
Deviation: unstructured blocks prune exactly floor(numel * s) entries (the reference's `<= thresh` prunes
one more plus ties); ties break by a stable order.
"""

from __future__ import annotations

import torch

from prune.config import NM, Pattern, Unstructured
from prune.masks import keep_top_n_of_m, prune_lowest_per_tensor, require_finite


def inverse_hessian_factor(H: torch.Tensor, percdamp: float, retries: int = 3) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1; damping x10 on each failure, then ValueError."""
    damp = percdamp
    for _ in range(retries + 1):
        Hd = H.clone()
        Hd.diagonal().add_(damp * torch.mean(torch.diag(H)))
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return U
        damp *= 10
    raise ValueError(f"Hessian is not positive definite even with damping {damp / 10:g} x mean(diag H)")


def sparsegpt_saliency(W: torch.Tensor, H: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """One-shot OBS saliency w^2 / diag(Hinv)^2 over the whole matrix, no weight update: the mask score
    zyxxmu/DSnoT `prune_DSnoT` uses for `--initial_method sparsegpt` (dead inputs zeroed as in SparseGPT)."""
    W, Hinv = _float_w_and_hinv(W, H, percdamp)
    return W**2 / torch.diag(Hinv).reshape(1, -1) ** 2


def _float_w_and_hinv(W: torch.Tensor, H: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 copy of W with dead inputs (diag H = 0) zeroed, and the upper Cholesky factor of H^-1 (those inputs'
    diagonal set to 1 first), as the reference `fasterprune` prepares them."""
    W = W.float().clone()
    H = H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return W, inverse_hessian_factor(H, percdamp)


def sparsegpt_prune(
    W: torch.Tensor, H: torch.Tensor, pattern: Pattern, blocksize: int = 128, percdamp: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Return (pruned and updated W in W's dtype, keep-mask, OBS error sum (w - q)^2 / d^2 / 2)."""
    if isinstance(pattern, NM) and blocksize % pattern.m:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={pattern.m}")
    W, Hinv = _float_w_and_hinv(W, H, percdamp)  # (rows, cols)
    cols = W.shape[1]
    keep = torch.ones_like(W, dtype=torch.bool)
    loss = torch.zeros((), dtype=torch.float64, device=W.device)
    nm = pattern if isinstance(pattern, NM) else None

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)
        if isinstance(pattern, Unstructured):
            keep1 = prune_lowest_per_tensor(W1**2 / d1.reshape(1, -1) ** 2, pattern.sparsity)
        else:
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm.m == 0:  # choose within the next M columns (paper §3.4)
                scores = W1[:, i : i + nm.m] ** 2 / d1[i : i + nm.m].reshape(1, -1) ** 2
                keep1[:, i : i + nm.m] = keep_top_n_of_m(scores, nm.n)  # finiteness: checked per block
            w = W1[:, i]
            d = Hinv1[i, i]
            q = w * keep1[:, i]
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        keep[:, i1:i2] = keep1
        loss += Err1.pow(2).sum().double() / 2  # (w - q)^2 / d^2 per column, once per block
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # lazy batch update of the later blocks
    # N:M groups are chosen without a finiteness check (keep_top_n_of_m): a NaN or inf anywhere in the sweep
    # reaches the output (NaN * 0 is NaN; err carries it to later columns), so one check here refuses it
    if nm is not None:
        require_finite(W)
    return W, keep, float(loss)
