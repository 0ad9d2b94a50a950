"""Frozen configs for sparsity patterns and pruning methods (validated on construction)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Unstructured:
    """Zero a fraction `sparsity` of the weights (per output row for Wanda, per layer for magnitude)."""

    sparsity: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}; e.g. sparsity: 0.5")

    @property
    def ratio(self) -> float:
        return self.sparsity

    def __str__(self) -> str:
        return f"unstructured {self.sparsity:.0%}"


@dataclass(frozen=True)
class NM:
    """N:M semi-structured: at least `n` zeros in every group of `m` consecutive input columns.

    Same convention as locuslab/wanda (`prune_n` zeros out of `prune_m`): 2:4 and 4:8 are both 50% sparse.
    """

    n: int
    m: int

    def __post_init__(self) -> None:
        if not (0 < self.n < self.m):
            raise ValueError(f"N:M pattern needs 0 < N < M, got {self.n}:{self.m}; e.g. pattern: '2:4'")

    @property
    def ratio(self) -> float:
        return self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


Pattern = Unstructured | NM


def parse_pattern(pattern: str, sparsity: float | None) -> Pattern:
    """'unstructured' (needs `sparsity`) or 'N:M' (sparsity optional, must equal N/M)."""
    text = str(pattern).strip().lower()
    if text == "unstructured":
        if sparsity is None:
            raise ValueError("pattern 'unstructured' needs a sparsity, e.g. sparsity: 0.5")
        return Unstructured(float(sparsity))
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match:
        raise ValueError(f"unknown pattern {pattern!r}; allowed: 'unstructured' or 'N:M' such as '2:4', '4:8'")
    nm = NM(int(match[1]), int(match[2]))
    if sparsity is not None and abs(float(sparsity) - nm.ratio) > 1e-9:
        raise ValueError(
            f"pattern {nm} means sparsity {nm.ratio:g} but sparsity is {sparsity}; "
            f"drop 'sparsity' or set it to {nm.ratio:g}"
        )
    return nm


@dataclass(frozen=True)
class MagnitudeConfig:
    """Magnitude pruning (baseline in Han et al. 2015; locuslab/wanda `prune_magnitude`)."""

    pattern: Pattern


@dataclass(frozen=True)
class WandaConfig:
    """Wanda: score |W_ij| * ||X_j||_2, compared within each output row (Sun et al. 2024, Eq. 1)."""

    pattern: Pattern


@dataclass(frozen=True)
class SparseGPTConfig:
    """SparseGPT (Frantar & Alistarh 2023): OBS mask selection and weight update from H = 2/n sum x x^T."""

    pattern: Pattern
    blocksize: int = 128
    percdamp: float = 0.01

    def __post_init__(self) -> None:
        if self.blocksize < 1 or (isinstance(self.pattern, NM) and self.blocksize % self.pattern.m):
            raise ValueError(f"blocksize must be a positive multiple of M, got {self.blocksize}")
        if not 0 < self.percdamp < 1:
            raise ValueError(f"percdamp must be in (0, 1), got {self.percdamp}")


@dataclass(frozen=True)
class DSnoTConfig:
    """DSnoT refinement (Zhang et al. 2024) of the mask of `init`; defaults of zyxxmu/DSnoT main.py."""

    init: MagnitudeConfig | WandaConfig | SparseGPTConfig
    max_cycles: int = 50
    update_threshold: float = 0.1
    pow_of_var_regrowing: float = 1.0
    same_sign: bool = True

    @property
    def pattern(self) -> Pattern:
        return self.init.pattern

    def __post_init__(self) -> None:
        if self.max_cycles < 1:
            raise ValueError(f"dsnot.max_cycles must be >= 1, got {self.max_cycles}")
        if self.update_threshold < 0:
            raise ValueError(f"dsnot.update_threshold must be >= 0, got {self.update_threshold}")


PruneMethod = MagnitudeConfig | WandaConfig | SparseGPTConfig | DSnoTConfig
