"""Pruning algorithms as pure tensor functions (no models, files or printing).

`prune_weight(method, W, stats)` dispatches on the method's config type; see prune/config.py.
"""

from prune.config import (
    NM,
    DSnoTConfig,
    MagnitudeConfig,
    PruneMethod,
    SparseGPTConfig,
    Unstructured,
    WandaConfig,
    parse_pattern,
)
from prune.step import make_stats, prune_weight

__all__ = [
    "DSnoTConfig",
    "MagnitudeConfig",
    "NM",
    "PruneMethod",
    "SparseGPTConfig",
    "Unstructured",
    "WandaConfig",
    "make_stats",
    "parse_pattern",
    "prune_weight",
]
