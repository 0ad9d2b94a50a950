"""Magnitude pruning: score |W| (baseline of the Wanda and SparseGPT papers)."""

from __future__ import annotations

import torch

from prune.config import Pattern
from prune.masks import mask_from_scores


def magnitude_mask(W: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Keep-mask by |W|. Unstructured: one comparison over the whole layer, as the wanda repo's baseline;
    N:M: within each group of M inputs of a row."""
    return mask_from_scores(W.abs().float(), pattern, per_row=False)
