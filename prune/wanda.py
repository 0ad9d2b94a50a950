"""Wanda (Sun et al., ICLR 2024): prune by |W_ij| * ||X_j||_2 within each output row, no weight update."""

from __future__ import annotations

import torch

from prune.config import Pattern
from prune.masks import mask_from_scores


def wanda_scores(W: torch.Tensor, act_norm_sq: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| * sqrt(mean ||X_j||^2)  (paper Eq. 1; wanda lib/prune.py `W_metric`).  (rows, cols)"""
    return W.abs().float() * act_norm_sq.float().sqrt().reshape(1, -1)


def wanda_mask(W: torch.Tensor, act_norm_sq: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Keep-mask: unstructured compares within each output row (paper §3 'per-output'); N:M per group."""
    return mask_from_scores(wanda_scores(W, act_norm_sq), pattern, per_row=True)
