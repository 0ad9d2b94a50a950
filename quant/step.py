"""One quantization step for one Linear weight, dispatched on the method's config type (like prune/step.py).

`quantize_weight(method, W, stats, keep, scale_dtype) -> (W_hat fp32, codes, chosen)`: W_hat is exactly
`codes.decode()`, the weight the model computes with and the export writes. `keep` is the Linear's recorded
keep-mask (a 2:4 or pruned layer, else None): its zeros survive exactly. `chosen`: the keep-mask the method chose
itself (GPTQ with an N:M `pattern`: joint pruning and quantization in one sweep), else None. `scale_dtype`: the
dtype the export stores scales in; scales are rounded to it before the weight is computed, so the exported
checkpoint decodes to the evaluated weights.
"""

from __future__ import annotations

from functools import singledispatch

import torch

from prune.stats import Hessian
from quant.codes import HadamardCodes, LUTCodes, UniformCodes
from quant.config import GPTQConfig, RTNConfig
from quant.dense_sparse import DenseSparseSpec, dense_and_sparse
from quant.gptq import gptq_quantize
from quant.pack import pack_bits, pack_mask
from quant.primitives import dequantize, quant_params, quantize
from quant.quest import QuestSpec, quest_weight


@singledispatch
def make_stats(method, in_features: int, device: torch.device | str):
    """The calibration accumulator `method` needs for a Linear with `in_features` inputs (None: no data)."""
    raise TypeError(f"no quantization method registered for {type(method).__name__}")


@make_stats.register
def _(method: RTNConfig, in_features: int, device):
    return None


@make_stats.register
def _(method: GPTQConfig, in_features: int, device):
    return Hessian(in_features, device)


@make_stats.register
def _(method: QuestSpec, in_features: int, device):
    return None


@make_stats.register
def _(method: DenseSparseSpec, in_features: int, device):
    return None  # its statistic is the Fisher diagonal of the whole model's loss (quant/stage.py), not a layer's


@singledispatch
def quantize_weight(method, W: torch.Tensor, stats, keep: torch.Tensor | None, scale_dtype: torch.dtype):
    raise TypeError(f"no quantization method registered for {type(method).__name__}")


def round_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The scale as the export stores it (e.g. bf16), back in fp32; a scale that rounds to 0 or inf is refused."""
    out = scale.to(dtype).float()
    if not bool((torch.isfinite(out) & (out > 0)).all()):
        raise ValueError(f"a quantization scale is not representable in {dtype} (0 or inf after rounding)")
    return out


@quantize_weight.register
def _(method: RTNConfig, W, stats, keep, scale_dtype):
    spec = method.spec
    Wk = W.float() if keep is None else W.float() * keep
    scale, zero = quant_params(Wk, spec)
    scale = round_scale(scale, scale_dtype)
    codes = quantize(Wk, scale, zero, spec)
    return dequantize(codes, scale, zero, spec), UniformCodes.of(codes, scale, zero, spec), None


@quantize_weight.register
def _(method: GPTQConfig, W, stats, keep, scale_dtype):
    if stats is None or stats.nsamples == 0:
        raise ValueError("GPTQ needs calibration statistics, but none were collected for this layer")
    r = gptq_quantize(
        W,
        stats.H,
        method.spec,
        blocksize=method.blocksize,
        percdamp=method.percdamp,
        act_order=method.act_order,
        keep=keep,
        pattern=method.pattern if keep is None else None,
        scale_dtype=scale_dtype,
    )
    chosen = r.keep if keep is None and method.pattern is not None else None
    return r.W, UniformCodes.of(r.codes, r.scale, r.zero, method.spec), chosen


@quantize_weight.register
def _(method: QuestSpec, W, stats, keep, scale_dtype):
    r = quest_weight(W.float(), method, keep)
    codes = HadamardCodes(
        method.bits,
        r.block,
        tuple(W.shape),
        pack_bits(r.codes.cpu(), method.bits),
        r.scale.float().cpu(),
        None if keep is None else pack_mask(keep),
    )
    return r.W_hat, codes, None


@quantize_weight.register
def _(method: DenseSparseSpec, W, stats, keep, scale_dtype):
    """stats: the weight's Fisher diagonal (same shape)."""
    if stats is None:
        raise ValueError("SqueezeLLM needs the Fisher diagonal of the weight, but none was computed")
    r = dense_and_sparse(W.float(), stats.to(W.device), method, keep)
    codes = LUTCodes(
        method.bits,
        tuple(W.shape),
        r.lut.cpu(),
        pack_bits(r.indices.cpu(), method.bits),
        r.crow_indices.cpu(),
        r.col_indices.cpu(),
        r.values.cpu(),
        None if keep is None else pack_mask(keep.cpu()),
    )
    return r.W, codes, None
