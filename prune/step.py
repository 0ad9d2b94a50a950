"""One pruning step for one Linear weight, dispatched on the method's config type."""

from __future__ import annotations

from functools import singledispatch

import torch

from prune.config import MagnitudeConfig, WandaConfig
from prune.magnitude import magnitude_mask
from prune.stats import ActNormSq
from prune.wanda import wanda_mask


@singledispatch
def make_stats(method, in_features: int, device: torch.device | str):
    """The calibration accumulator `method` needs for a Linear with `in_features` inputs (None: no data)."""
    raise TypeError(f"no pruning method registered for {type(method).__name__}")


@make_stats.register
def _(method: MagnitudeConfig, in_features: int, device):
    return None


@make_stats.register
def _(method: WandaConfig, in_features: int, device):
    return ActNormSq(in_features, device)


@singledispatch
def compute_mask(method, W: torch.Tensor, stats) -> torch.Tensor:
    raise TypeError(f"no pruning method registered for {type(method).__name__}")


@compute_mask.register
def _(method: MagnitudeConfig, W: torch.Tensor, stats) -> torch.Tensor:
    return magnitude_mask(W, method.pattern)


@compute_mask.register
def _(method: WandaConfig, W: torch.Tensor, stats: ActNormSq) -> torch.Tensor:
    if stats is None or stats.nsamples == 0:
        raise ValueError("Wanda needs calibration statistics, but none were collected for this layer")
    return wanda_mask(W, stats.value, method.pattern)


def prune_weight(method, W: torch.Tensor, stats) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pruned W, keep-mask). W is not modified."""
    mask = compute_mask(method, W, stats)
    return W * mask, mask
