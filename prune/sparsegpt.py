"""SparseGPT (Frantar & Alistarh, ICML 2023): OBS pruning with lazy batched column updates.

The sweep is prune/obs.py `obs_sweep` (shared with GPTQ); SparseGPT's part is the chooser, after
IST-DASLab/sparsegpt `sparsegpt.py::fasterprune`: the mask is chosen per block from w^2 / diag(Hinv)^2
(unstructured) or every M columns (N:M), and a pruned weight's error is compensated by the sweep.
Deviation: unstructured blocks prune exactly floor(numel * s) entries (the reference's `<= thresh` prunes
one more plus ties); ties break by a stable order.
"""

from __future__ import annotations

import torch

from prune.config import NM, Pattern, Unstructured
from prune.masks import keep_top_n_of_m, prune_lowest_per_tensor, require_finite
from prune.obs import float_w_and_hinv, obs_sweep


def sparsegpt_saliency(W: torch.Tensor, H: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """One-shot OBS saliency w^2 / diag(Hinv)^2 over the whole matrix, no weight update: the mask score
    zyxxmu/DSnoT `prune_DSnoT` uses for `--initial_method sparsegpt` (dead inputs zeroed as in SparseGPT)."""
    W, Hinv = float_w_and_hinv(W, H, percdamp)
    return W**2 / torch.diag(Hinv).reshape(1, -1) ** 2


def sparsegpt_prune(
    W: torch.Tensor, H: torch.Tensor, pattern: Pattern, blocksize: int = 128, percdamp: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Return (pruned and updated W in W's dtype, keep-mask, OBS error sum (w - q)^2 / d^2 / 2)."""
    if isinstance(pattern, NM) and blocksize % pattern.m:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={pattern.m}")
    W, Hinv = float_w_and_hinv(W, H, percdamp)  # (rows, cols)
    chooser = MaskChooser(pattern, torch.ones_like(W, dtype=torch.bool))
    W, loss = obs_sweep(W, Hinv, chooser, blocksize)
    # N:M groups are chosen without a finiteness check (keep_top_n_of_m): a NaN or inf anywhere in the sweep
    # reaches the output (NaN * 0 is NaN; err carries it to later columns), so one check here refuses it
    if isinstance(pattern, NM):
        require_finite(W)
    return W, chooser.keep, loss


class MaskChooser:
    """SparseGPT's choice: the block's mask from w^2 / diag(Hinv)^2 (unstructured: the lowest of the block; N:M:
    every M columns, from the columns as updated so far, paper §3.4); q = w at kept entries, 0 elsewhere.
    `quant` (GPTQ's QuantChooser, quant/gptq.py) quantizes the kept values too: joint 2:4 + quantization in one
    sweep, as the sparsegpt repo's `fasterprune` with a quantizer."""

    def __init__(self, pattern: Pattern | None, keep: torch.Tensor, quant=None) -> None:
        """pattern None: `keep` is fixed (e.g. a recorded 2:4 mask) and only applied."""
        self.pattern, self.keep, self.quant = pattern, keep, quant
        self.nm = pattern if isinstance(pattern, NM) else None

    def block(self, i1: int, W1: torch.Tensor, d1: torch.Tensor) -> None:
        if self.pattern is None:
            pass
        elif isinstance(self.pattern, Unstructured):
            keep1 = prune_lowest_per_tensor(W1**2 / d1.reshape(1, -1) ** 2, self.pattern.sparsity)
            self.keep[:, i1 : i1 + W1.shape[1]] = keep1
        else:
            self.keep[:, i1 : i1 + W1.shape[1]] = True
        # a view: N:M choices below land in self.keep
        self.keep1 = self.keep[:, i1 : i1 + W1.shape[1]]
        if self.quant is not None:  # a fixed mask is known up front: quantization ranges over kept entries only
            self.quant.keep1 = self.keep1 if self.pattern is None else None
            self.quant.block(i1, W1, d1)

    def column(self, i1: int, i: int, W1: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        nm = self.nm
        if nm is not None and i % nm.m == 0:  # choose within the next M columns (paper §3.4)
            scores = W1[:, i : i + nm.m] ** 2 / d1[i : i + nm.m].reshape(1, -1) ** 2
            self.keep1[:, i : i + nm.m] = keep_top_n_of_m(scores, nm.n)  # finiteness: checked on the result
        w = W1[:, i]
        if self.quant is not None:
            w = self.quant.column(i1, i, W1, d1)
        return w * self.keep1[:, i]
