"""Uniform integer quantizers: per tensor, per output channel or per group of input columns; symmetric or
asymmetric; round-to-nearest (RTN) as the baseline every other method is measured against.

Conventions (IST-DASLab/gptq `quant.py` Quantizer, which compressed-tensors' int quantization agrees with):
  asymmetric: scale = (xmax − xmin) / maxq, zero = round(−xmin / scale), codes in [0, maxq]
  symmetric:  scale = 2·max|x| / maxq, zero = (maxq + 1) / 2 (codes − zero in [−2^(b−1), 2^(b−1) − 1]; the
              compressed-tensors form: scale = max|x| / ((2^b − 1) / 2), signed codes, no zero point)
  q = clamp(round(x / scale) + zero, 0, maxq),  x̂ = scale · (q − zero),  maxq = 2^b − 1.
The range always includes 0 (xmin ≤ 0 ≤ xmax), so an exact zero stays exactly zero: a 2:4 layer's pruned
entries survive quantization (tested). An all-zero group gets scale 1 (the reference's xmin = −1, xmax = 1 would
make it 2/maxq; either represents the zeros exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BITS = (2, 3, 4, 8)
STRATEGIES = ("tensor", "channel", "group")


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 4
    strategy: str = "group"  # tensor | channel (one scale per output row) | group (per row and group of inputs)
    group_size: int = 128
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"quant bits {self.bits} is not supported; choose one of {', '.join(map(str, BITS))}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"quant strategy {self.strategy!r} is unknown; allowed: {', '.join(STRATEGIES)}")
        if self.strategy == "group" and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise ValueError(f"quant group_size must be a positive integer, got {self.group_size!r}")

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1

    def groups(self, in_features: int) -> int:
        """Number of scale columns for a weight with `in_features` inputs (1 unless strategy is group)."""
        if self.strategy != "group":
            return 1
        if in_features % self.group_size:
            raise ValueError(
                f"quant group_size {self.group_size} does not divide in-features {in_features}; choose a divisor "
                "(e.g. 32, 64, 128) or strategy: channel"
            )
        return in_features // self.group_size


def _grouped(W: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """(rows, cols) -> (rows or 1, groups, cols per group) view matching the scale layout."""
    rows, cols = W.shape
    if spec.strategy == "tensor":
        return W.reshape(1, 1, rows * cols)
    g = spec.groups(cols)
    return W.reshape(rows, g, cols // g)


def quant_params(W: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero), fp32, shape (rows, groups) — (1, 1) per tensor — from the min/max of each group."""
    x = _grouped(W.float(), spec)
    xmin = x.amin(-1).clamp(max=0)
    xmax = x.amax(-1).clamp(min=0)
    if spec.symmetric:
        amax = torch.maximum(-xmin, xmax)
        scale = 2 * amax / spec.maxq
        zero = torch.full_like(scale, (spec.maxq + 1) / 2)
    else:
        scale = (xmax - xmin) / spec.maxq
        zero = None
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero group: any scale keeps zeros
    if zero is None:
        zero = torch.round(-xmin / scale)
    return scale, zero


def _expand(p: torch.Tensor, W: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Per-group parameters broadcast to W's (rows, cols)."""
    rows, cols = W.shape
    if spec.strategy == "tensor":
        return p.reshape(1, 1).expand(rows, cols)
    return p.repeat_interleave(cols // p.shape[1], dim=1).expand(rows, cols)


def quantize(W: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes in [0, maxq] (uint8), W's shape."""
    s, z = _expand(scale, W, spec), _expand(zero, W, spec)
    return torch.clamp(torch.round(W.float() / s) + z, 0, spec.maxq).to(torch.uint8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """fp32 values scale · (codes − zero)."""
    return _expand(scale, codes, spec) * (codes.float() - _expand(zero, codes, spec))


def rtn(W: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest: (dequantized W in W's dtype, codes, scale, zero)."""
    scale, zero = quant_params(W, spec)
    codes = quantize(W, scale, zero, spec)
    return dequantize(codes, scale, zero, spec).to(W.dtype), codes, scale, zero


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖ref‖² / ‖ref − approx‖²) in dB (inf when equal)."""
    ref, approx = ref.double(), approx.double()
    noise = float(((ref - approx) ** 2).sum())
    signal = float((ref**2).sum())
    return float("inf") if noise == 0 else 10 * torch.log10(torch.tensor(signal / noise)).item()
