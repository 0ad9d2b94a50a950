"""The OBS column sweep shared by SparseGPT (prune/sparsegpt.py) and GPTQ (quant/gptq.py): one function, two
choosers.

After IST-DASLab/sparsegpt `fasterprune` and IST-DASLab/gptq `fasterquant`, which are the same loop: dead inputs
(diag H = 0) get diag 1 and a zero column; damping percdamp * mean(diag H); Hinv = upper Cholesky factor of H^-1
(Alg. 1 of either paper); columns in blocks of `blocksize`; column i of a block is replaced by the chooser's
q (pruned, quantized, or both), its error err = (w - q) / Hinv_ii is propagated to the block's remaining columns
(W[:, i:] -= err x Hinv[i, i:]) and to the later blocks at once (the lazy batch update). The loss is the OBS
error sum (w - q)^2 / Hinv_ii^2 / 2.
"""

from __future__ import annotations

from typing import Protocol

import torch


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


def float_w_and_hinv(W: torch.Tensor, H: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 copy of W with dead inputs (diag H = 0) zeroed, and the upper Cholesky factor of H^-1 (those inputs'
    diagonal set to 1 first), as both references prepare them."""
    W = W.float().clone()
    H = H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return W, inverse_hessian_factor(H, percdamp)


class Chooser(Protocol):
    def block(self, i1: int, W1: torch.Tensor, d1: torch.Tensor) -> None:
        """Called when block [i1, i1 + W1.shape[1]) starts: W1 its current columns, d1 = diag(Hinv) there."""

    def column(self, i1: int, i: int, W1: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        """The value q that replaces column i of the block (W1[:, i], already updated by the columns before)."""


def obs_sweep(
    W: torch.Tensor, Hinv: torch.Tensor, chooser: Chooser, blocksize: int = 128
) -> tuple[torch.Tensor, float]:
    """W (rows, cols) fp32, modified in place and returned with the OBS loss."""
    cols = W.shape[1]
    loss = torch.zeros((), dtype=torch.float64, device=W.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)
        chooser.block(i1, W1, d1)
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            q = chooser.column(i1, i, W1, d1)
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        loss += Err1.pow(2).sum().double() / 2  # (w - q)^2 / d^2 per column, once per block
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # lazy batch update of the later blocks
    return W, float(loss)
