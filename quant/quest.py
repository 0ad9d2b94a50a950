"""QuEST: Hadamard-rotated, Gaussian-clipped uniform quantization with the trust gradient estimator
(Panferov et al., ICML 2025, "QuEST: Stable Training of LLMs with 1-Bit Weights and Activations"; reference
IST-DASLab/QuEST `src/models/quantization/base_linear.py`, HadamardTrustQuantizer).

Per row of the last dim (one scale per output row of a weight, per token of an activation):
  x_h  = x · H                       H block-diagonal orthonormal Hadamard (quant/hadamard.py), 0 = no rotation
  s    = α_b · RMS(x_h row)           α_b = GAUSSIAN_CLIP[b], the MSE-optimal clip of a uniform N(0, 1) quantizer
  step = 2s / (2^b − 1)
  x_q  = (round(clip(x_h, −s, s) / step + ½) − ½) · step     2^b midpoint levels ±½·step … ±(2^(b−1) − ½)·step = ±s
  code = x_q / step + (2^b − 1)/2 ∈ [0, 2^b − 1] (uint8)
The outer levels are ±(2^b − 1)/2·step = ±s, so the grid spans exactly the clip range.
Trust estimator (backward): ∂L/∂x_h = ∂L/∂x_q · 1[|x_q − x_h| ≤ step/2]; inside [−s, s] the rounding error is at
most step/2, so the band is |x_h| ≤ s + step/2 (the reference's "clip with an extra ½ step on each side") and
clipped outliers beyond it get zero gradient. The scale is a constant in the backward (the reference computes
it under no_grad).

Post-training (quest_weight) and QAT (QuestLinear) for a Linear weight W (out, in): rotate along in-features,
quantize rows, and fold the rotation back, W_hat = Q(W·H)·H, so a plain Linear with W_hat computes
x·W_hatᵀ = (x·H)·Q(W·H)ᵀ exactly (H symmetric orthonormal).

Deviations from the reference:
  - Sparse layers: with a `keep` mask (2:4 or unstructured pruning) NO rotation is applied, since W·H would be
    dense and destroy the sparsity. The kept entries of each row are quantized with RMS taken over kept entries
    only, and pruned positions are exactly 0 in W_hat (the midpoint grid has no zero level, so zeros come from
    the mask, not the grid; their codes are 0 and carry no value). spec.hadamard_block is ignored then.
  - An all-zero row (or a row with no kept entries) gets scale 0 and decodes to exact zeros; the reference adds
    1e-8 to the scale instead.
  - The rotation is the O(n log n) butterfly, not a dense 128×128 matmul; the clips carry three decimals
    (the reference's α_4 = 2.51393…; the MSE difference is below 1e-6 relative).
  - NaN/inf inputs are refused with a ValueError rather than propagated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant.hadamard import check_block, fwht

GAUSSIAN_CLIP = {1: 0.798, 2: 1.494, 3: 2.051, 4: 2.514, 8: 3.885}  # α_b, in units of the row's RMS


def _check_bits(name: str, bits: object) -> None:
    if bits not in GAUSSIAN_CLIP or isinstance(bits, bool):
        raise ValueError(f"quest {name} {bits!r} is not supported; choose one of {', '.join(map(str, GAUSSIAN_CLIP))}")


@dataclass(frozen=True)
class QuestSpec:
    bits: int = 4  # weight bits, a key of GAUSSIAN_CLIP
    hadamard_block: int = 128  # power of two dividing in-features; 0 = no rotation
    activations: bool = False  # also quantize activations per token (W·A· simulation)
    act_bits: int = 4

    def __post_init__(self) -> None:
        _check_bits("bits", self.bits)
        _check_bits("act_bits", self.act_bits)
        hb = self.hadamard_block
        if not isinstance(hb, int) or isinstance(hb, bool) or hb < 0 or hb & (hb - 1):
            raise ValueError(
                f"quest hadamard_block {hb!r} is not a power of two; choose 128, 64 or 32, or 0 for no rotation"
            )
        if not isinstance(self.activations, bool):
            raise ValueError(f"quest activations must be true or false, got {self.activations!r}")

    def check(self, in_features: int) -> None:
        """Raise the one-line check_block error when hadamard_block does not fit a layer's in-features."""
        check_block(in_features, self.hadamard_block)


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"quest {what} contains NaN or inf; fix the upstream values before quantizing")


def _step(scale: torch.Tensor, bits: int) -> torch.Tensor:
    return scale * (2.0 / (2**bits - 1))


def quest_dequantize(codes: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """fp32 values (codes − (2^b − 1)/2) · step, step = 2·scale/(2^b − 1); codes (..., n), scale (..., 1)."""
    _check_bits("bits", bits)
    return (codes.float() - (2**bits - 1) / 2) * _step(scale.float(), bits) + 0.0  # + 0.0: −0 → +0


def quest_quantize(
    x: torch.Tensor, bits: int, keep: torch.Tensor | None = None, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize each row of the last dim: (x_q in x's dtype, codes uint8 in [0, 2^b − 1], scale fp32 (..., 1)).

    scale = α_b · RMS(row), computed in fp32. x_q equals quest_dequantize(codes, scale, bits) (exactly, for fp32
    x). With `keep` (bool, x's shape) the RMS is over kept entries only and dropped entries give x_q = 0 and
    code 0. A row of zeros (or with nothing kept) gets scale 0 and x_q = 0. check=False skips the NaN/inf
    check (a host sync), for training loops that check their loss instead.
    """
    _check_bits("bits", bits)
    if check:
        _check_finite(x, "input")
    xf = x.float()  # (..., n)
    if keep is None:
        rms = xf.square().mean(-1, keepdim=True).sqrt()  # (..., 1)
    else:
        if keep.shape != x.shape:
            raise ValueError(f"quest keep mask shape {tuple(keep.shape)} must equal the input's {tuple(x.shape)}")
        keep = keep.bool()
        xf = xf * keep
        count = keep.sum(-1, keepdim=True).clamp(min=1)
        rms = (xf.square().sum(-1, keepdim=True) / count).sqrt()
    scale = GAUSSIAN_CLIP[bits] * rms  # (..., 1)
    step = _step(scale, bits)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    half = 2 ** (bits - 1)
    clipped = torch.minimum(torch.maximum(xf, -scale), scale)
    r = torch.round(clipped / safe + 0.5).clamp(1 - half, half)  # level index: x_q = (r − ½)·step
    codes = (r + (half - 1)).to(torch.uint8)
    if keep is not None:
        codes = codes * keep
    xq = quest_dequantize(codes, scale, bits)
    if keep is not None:
        xq = xq * keep + 0.0
    return xq.to(x.dtype), codes, scale


def trust_mask(x: torch.Tensor, xq: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """bool (x's shape): |x_q − x| ≤ step/2 (= α_b/(2^b − 1)·RMS), where the trust estimator passes gradient."""
    return (xq.float() - x.float()).abs() <= _step(scale.float(), bits) / 2


class QuestQuant(torch.autograd.Function):
    """Forward: quest_quantize's x_q. Backward: the trust estimator, grad · trust_mask (scale held constant)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int, keep: torch.Tensor | None = None, check: bool = True):
        xf = x.float()
        xq, _, scale = quest_quantize(xf, bits, keep, check)  # fp32, so the band is decided before any bf16 rounding
        ctx.save_for_backward(trust_mask(xf, xq, scale, bits))
        return xq.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def quest_ste(x: torch.Tensor, bits: int, keep: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
    """Differentiable QuEST quantization of the rows of x with the trust gradient estimator."""
    return QuestQuant.apply(x, bits, keep, check)


@dataclass(frozen=True)
class QuestResult:
    W_hat: torch.Tensor  # (out, in), W's dtype: dequantized weight with the rotation folded back
    codes: torch.Tensor  # (out, in) uint8, in the rotated basis when rotated
    scale: torch.Tensor  # (out, 1) fp32
    rotated: bool  # False for hadamard_block 0 or a keep mask
    block: int = 0  # the Hadamard block the codes are expressed in (0 when not rotated)


def _check_weight(W: torch.Tensor, keep: torch.Tensor | None) -> None:
    if W.dim() != 2:
        raise ValueError(f"quest weight must be 2-D (out, in), got shape {tuple(W.shape)}")
    if keep is not None and keep.shape != W.shape:
        raise ValueError(f"quest keep mask shape {tuple(keep.shape)} must equal the weight's {tuple(W.shape)}")


def quest_weight(W: torch.Tensor, spec: QuestSpec, keep: torch.Tensor | None = None) -> QuestResult:
    """Post-training QuEST quantization of a Linear weight W (out, in), one scale per output row.

    Dense (keep None, hadamard_block > 0): W_r = fwht(W) along in-features, Q per row, W_hat = fwht(Q(W_r)), so
    x·W_hatᵀ = fwht(x)·Q(W_r)ᵀ. With keep (a pruned/2:4 layer) there is no rotation: kept entries are quantized
    (RMS over kept entries) and pruned positions are exactly 0 — see the module docstring.
    """
    _check_weight(W, keep)
    _check_finite(W, "weight")
    rotate = keep is None and spec.hadamard_block > 0
    if rotate:
        spec.check(W.shape[1])
        Wq, codes, scale = quest_quantize(fwht(W.float(), spec.hadamard_block), spec.bits)
        W_hat = fwht(Wq, spec.hadamard_block)
    else:
        W_hat, codes, scale = quest_quantize(W.float(), spec.bits, keep)
    return QuestResult(W_hat.to(W.dtype), codes, scale, rotate, spec.hadamard_block if rotate else 0)


def quest_linear_forward(
    x: torch.Tensor,
    W: torch.Tensor,
    spec: QuestSpec,
    keep: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    train: bool = False,
) -> torch.Tensor:
    """QuEST Linear: (x·H)·Q(W·H)ᵀ + bias, x (..., in), W (out, in) -> (..., out) in x's dtype.

    W is multiplied by keep first (pruned weights exactly 0, and zero gradient). Rotation only without keep.
    spec.activations quantizes the (rotated) tokens per row with act_bits. train=True: gradients flow through
    both quantizers by the trust estimator (QAT); train=False: quantized values only, no gradient through Q —
    equal to x @ quest_weight(W, spec, keep).W_hatᵀ + bias up to fp32 rounding when activations is False.
    """
    _check_weight(W, keep)
    rotate = keep is None and spec.hadamard_block > 0
    if rotate:
        spec.check(W.shape[1])
    Wk = W if keep is None else W * keep.to(W.dtype)
    xr = fwht(x, spec.hadamard_block) if rotate else x
    Wr = fwht(Wk, spec.hadamard_block) if rotate else Wk
    if train:
        Wq = quest_ste(Wr, spec.bits, keep)
        xq = quest_ste(xr, spec.act_bits) if spec.activations else xr
    else:
        with torch.no_grad():
            Wq = quest_quantize(Wr, spec.bits, keep)[0]
        xq = quest_quantize(xr.detach(), spec.act_bits)[0] if spec.activations else xr
    return F.linear(xq, Wq.to(xq.dtype), None if bias is None else bias.to(xq.dtype))


class QuestLinear(nn.Module):
    """nn.Linear replacement for QuEST QAT: shares `linear`'s weight and bias Parameters; `keep` (bool, the
    weight's shape) is a buffer and pins pruned weights at 0. Trains with the trust estimator in train mode;
    eval mode gives the post-training result of quest_weight."""

    def __init__(self, linear: nn.Linear, spec: QuestSpec, keep: torch.Tensor | None = None) -> None:
        super().__init__()
        _check_weight(linear.weight, keep)
        if keep is None and spec.hadamard_block:
            spec.check(linear.in_features)
        self.spec = spec
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("keep", None if keep is None else keep.to(device=linear.weight.device, dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quest_linear_forward(x, self.weight, self.spec, self.keep, self.bias, train=self.training)

    def extra_repr(self) -> str:
        s = self.spec
        act = f", act_bits={s.act_bits}" if s.activations else ""
        rot = 0 if self.keep is not None else s.hadamard_block
        return f"in={self.in_features}, out={self.out_features}, bits={s.bits}{act}, hadamard_block={rot}"
