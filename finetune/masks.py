"""2:4 keep-masks during AST training (True = weight kept), recomputed from |W| every `mask_interval` steps.

AST lets the mask follow the dense weights: every 10 iterations the N:M mask is recomputed from the current
magnitudes (Huang et al. 2024 §3.1; thu-ml/Adaptive-Sparse-Trainer sparse_modeling.py `calculate_mask`, called
from main.py every `output_flip_every` = 10 iterations). The starting mask is the caller's one-shot mask.
"""

from __future__ import annotations

import torch

from prune.masks import prune_lowest_per_group

N, M = 2, 4  # 2:4: exactly two kept weights in every 4 consecutive inputs of a row


def nm_mask(score: torch.Tensor, n: int = N, m: int = M) -> torch.Tensor:
    """Keep the n largest of every m consecutive scores of each row; (out, in) bool.

    The prune stage's own rule (prune/masks.py `prune_lowest_per_group`, ties prune the lower column index first),
    so a recompute of an unchanged magnitude-pruned W reproduces the prune stage's mask.
    """
    if score.dim() != 2 or score.shape[1] % m:
        raise ValueError(f"scores must be (out, in) with in divisible by {m}, got {tuple(score.shape)}")
    if not bool(torch.isfinite(score).all()):
        raise ValueError("mask scores contain NaN or inf (a non-finite weight)")
    return prune_lowest_per_group(score, m - n, m)


def magnitude_mask(W: torch.Tensor) -> torch.Tensor:
    """2:4 mask of the dense weight by |W| (fp32 scores, so bf16 weights rank the same on every device)."""
    return nm_mask(W.detach().float().abs())


def is_exact_nm(mask: torch.Tensor, n: int = N, m: int = M) -> bool:
    """True when `mask` is bool (out, in) with exactly n kept in every group of m consecutive inputs."""
    if mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[1] % m:
        return False
    kept = mask.reshape(mask.shape[0], -1, m).sum(-1)
    return bool((kept == n).all())


def nm_violations(W: torch.Tensor, n: int = N, m: int = M) -> int:
    """Groups of m consecutive inputs of W with more than n nonzeros (0 for a valid 2:4 weight)."""
    nonzero = (W.reshape(W.shape[0], -1, m) != 0).sum(-1)
    return int((nonzero > n).sum())


def flips(old: torch.Tensor, new: torch.Tensor) -> int:
    """Entries whose keep/prune decision changed (each swap inside a group counts twice, as in the reference's
    `torch.sum(new_mask != mask)`)."""
    return int((old != new).sum())
