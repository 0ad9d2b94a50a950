"""OWL (Yin et al., ICML 2024): outlier-weighted layer-wise sparsity ratios.

Layer outlier ratio = share of Wanda scores |W|*||X|| (over all Linear layers of the decoder layer) above
M x their mean (M = 5). Layer densities = the normalised ratios scaled into [0, 2*lambda], shifted so their
mean is 1 - target (lambda = 0.08): more outliers, less pruning, global sparsity unchanged for equal-size layers.
"""

from __future__ import annotations

import torch


def outlier_ratio(scores: list[torch.Tensor], M: float = 5.0) -> float:
    """Fraction of all entries of `scores` above M times their mean."""
    flat = torch.cat([s.flatten().float() for s in scores])
    return float((flat > M * flat.mean()).float().mean())


def owl_sparsities(ratios: list[float], target: float, lam: float = 0.08) -> list[float]:
    """Per-layer sparsity with mean `target` and spread 2 * lam (the reference mean-centres after scaling)."""
    r = torch.tensor(ratios, dtype=torch.float64)
    if len(r) == 1 or float(r.max() - r.min()) == 0.0:
        return [target] * len(r)
    density = (r - r.min()) / (r.max() - r.min()) * 2 * lam
    density = density - density.mean() + (1 - target)
    return [float(1 - d) for d in density]
