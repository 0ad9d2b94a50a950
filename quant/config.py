"""Frozen configs of the quantization methods (validated on construction); quant/step.py dispatches on their types."""

from __future__ import annotations

from dataclasses import dataclass

from prune.config import NM
from quant.primitives import QuantSpec


@dataclass(frozen=True)
class RTNConfig:
    """Round-to-nearest on the uniform grid of `spec`: the baseline every other method is measured against."""

    spec: QuantSpec


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ (Frantar et al. 2023; IST-DASLab/gptq): OBS column sweep with H = 2/n sum x x^T, blocks of 128,
    damping 0.01 mean(diag H), optional act-order with static groups. `pattern`: an N:M mask chosen in the same
    sweep (IST-DASLab/sparsegpt `fasterprune` with a quantizer: joint 2:4 + quantization)."""

    spec: QuantSpec
    blocksize: int = 128
    percdamp: float = 0.01
    act_order: bool = False
    pattern: NM | None = None

    def __post_init__(self) -> None:
        if self.blocksize < 1 or (self.spec.strategy == "group" and self.blocksize % self.spec.group_size):
            raise ValueError(
                f"gptq blocksize {self.blocksize} must be a positive multiple of group_size {self.spec.group_size}"
            )
        if self.pattern is not None and self.blocksize % self.pattern.m:
            raise ValueError(f"gptq blocksize {self.blocksize} must be a multiple of the pattern's M={self.pattern.m}")
        if not 0 < self.percdamp < 1:
            raise ValueError(f"gptq percdamp must be in (0, 1), got {self.percdamp}")
