"""Packed 2:4 layouts read by the runtime kernels (pure tensor functions; the CPU reference path).

bf16 2:4 (per weight of shape (N, K), K % 32 == 0):
  values (N, K/2)  the 2 kept values of every group of 4 input columns, in column order (the same array as
                   compressed-tensors' `sparse-24-bitmask` `.compressed`);
  meta   (N, K/32) int32: kept value t of a row (t = 0..K/2-1) sits at dense column 4*(t//2) + p_t, with the
                   2-bit position p_t in bits 2*(t%16)..2*(t%16)+1 of meta[:, t//16].
  Bytes per weight: N*K*(1 + 1/8) = 56% of dense bf16.
int4 2:4 (K % 128 == 0): the kept values quantised to symmetric int4 per group of 128 dense columns
  (64 kept values), round to nearest, q = clamp(round(v / s), -8, 7), s = max|v| / 7 (bf16):
  qweight (N, K/16) int32: kept value t as the nibble q_t + 8 in bits 4*(t%8)..4*(t%8)+3 of qweight[:, t//8];
  scales  (N, K/128) in the compute dtype; meta as above. Bytes: N*K*(1/4 + 1/8 + 1/64) = 20% of dense bf16.
  The same layout holds a quantization stage's codes (`pack_int4`): GPTQ or RTN symmetric 4-bit, group 128, is
  compressed-tensors' q in [-8, 7] with W = q * s, so its nibbles are q + 8 and its scales are used as stored.
"""

from __future__ import annotations

import torch

GROUP = 128  # dense input columns per int4 scale
LAYOUT = {
    "bf16": "values (N, K/2) kept values in column order; meta (N, K/32) int32, 2-bit position of kept value t "
    "in bits 2*(t%16) of meta[:, t//16]",
    "int4": "qweight (N, K/16) int32, nibble q+8 of kept value t in bits 4*(t%8) of qweight[:, t//8]; "
    "scales (N, K/128), symmetric, group 128 dense columns; meta as bf16",
}


def packed_shapes(n: int, k: int, int4: bool) -> dict[str, tuple[int, int]]:
    """Shapes of a packed (N, K) weight's buffers, as LAYOUT describes them (bias aside)."""
    values = {"qweight": (n, k // 16), "scales": (n, k // GROUP)} if int4 else {"values": (n, k // 2)}
    return {"meta": (n, k // 32), **values}


def positions_24(keep: torch.Tensor) -> torch.Tensor:
    """(N, K/2) int64 in-group positions (0..3) of the kept entries of an exact 2:4 keep-mask, column order."""
    rows, cols = keep.shape
    groups = keep.reshape(rows, cols // 4, 4)
    if not bool((groups.sum(-1) == 2).all()):
        raise ValueError("keep-mask is not 2:4 (every group of 4 must keep exactly 2)")
    pos = torch.arange(4, device=keep.device).expand_as(groups)
    return pos[groups].reshape(rows, cols // 2)


def pack_meta(pos: torch.Tensor) -> torch.Tensor:
    """(N, K/2) positions -> (N, K/32) int32, 16 two-bit fields per word."""
    rows, half = pos.shape
    if half % 16:
        raise ValueError(f"in-features {2 * half} is not divisible by 32")
    fields = pos.reshape(rows, half // 16, 16).to(torch.int64) << (2 * torch.arange(16, device=pos.device))
    return _to_int32(fields.sum(-1))


def unpack_meta(meta: torch.Tensor) -> torch.Tensor:
    rows, words = meta.shape
    shifts = 2 * torch.arange(16, device=meta.device)
    return ((meta.to(torch.int64)[..., None] >> shifts) & 3).reshape(rows, words * 16)


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit patterns held in int64 -> the same bits as int32."""
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def pack_24(W: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, meta) of a 2:4 weight and its exact 2:4 keep-mask (entries outside `keep` must be 0)."""
    rows, cols = W.shape
    values = W[keep].reshape(rows, cols // 2).contiguous()
    return values, pack_meta(positions_24(keep))


def unpack_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Dense (N, K) weight from (values, meta)."""
    rows, half = values.shape
    cols = torch.arange(half, device=values.device) // 2 * 4 + unpack_meta(meta)
    W = torch.zeros(rows, 2 * half, dtype=values.dtype, device=values.device)
    return W.scatter_(1, cols, values)


def _groups(values: torch.Tensor) -> torch.Tensor:
    rows, half = values.shape
    if (2 * half) % GROUP:
        raise ValueError(f"in-features {2 * half} is not divisible by the int4 group {GROUP}")
    return values.float().reshape(rows, -1, GROUP // 2)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(N, K/2) int64 codes in [-8, 7] -> qweight (N, K/16) int32, nibble q + 8 of kept value t at bits 4*(t%8)."""
    rows, half = q.shape
    fields = (q + 8).reshape(rows, half // 8, 8) << (4 * torch.arange(8, device=q.device))
    return _to_int32(fields.sum(-1))


def quantize_int4(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept values (N, K/2) -> (qweight (N, K/16) int32, scales (N, K/128) in values' dtype); RTN, symmetric."""
    v = _groups(values)
    scales = (v.abs().amax(-1) / 7).to(values.dtype)
    s = scales.float().clamp_min(torch.finfo(torch.float32).tiny)[..., None]
    q = torch.clamp(torch.round(v / s), -8, 7).to(torch.int64).reshape(values.shape)
    return _pack_nibbles(q), scales


def pack_int4(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Kept values (N, K/2) that already lie on a symmetric 4-bit grid with the given scales (N, K/128) -> their
    qweight (N, K/16), exactly: ValueError unless every value is q * s for an integer q in [-8, 7] and
    dequantize_int4(qweight, scales) gives the values back bit for bit (a quantization stage's codes, not RTN)."""
    v = _groups(values)
    rows, groups, _ = v.shape
    if tuple(scales.shape) != (rows, groups):
        raise ValueError(f"int4 scales have shape {tuple(scales.shape)}, expected {(rows, groups)} (group {GROUP})")
    s = scales.float()[..., None]
    q = torch.round(v / torch.where(s > 0, s, torch.ones_like(s)))
    if bool(((q < -8) | (q > 7)).any()):
        raise ValueError("the values need codes outside [-8, 7] at these scales: not a symmetric 4-bit grid")
    qweight = _pack_nibbles(q.to(torch.int64).reshape(values.shape))
    back = dequantize_int4(qweight, scales).to(values.dtype)
    if not torch.equal(back, values):
        n = int((back != values).sum())
        raise ValueError(f"{n} kept values are not code * scale on the checkpoint's grid (in {values.dtype})")
    return qweight


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    rows, words = qweight.shape
    q = ((qweight.to(torch.int64)[..., None] >> (4 * torch.arange(8, device=qweight.device))) & 15) - 8
    q = q.reshape(rows, -1, GROUP // 2).float()
    return (q * scales.float()[..., None]).reshape(rows, words * 8).to(scales.dtype)


def matmul_24_reference(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ W^T for the packed bf16 layout, in fp32 accumulation, result in x's dtype."""
    W = unpack_24(values, meta)
    return (x.float() @ W.float().t()).to(x.dtype)


def matmul_24_int4_reference(x, qweight, scales, meta) -> torch.Tensor:
    return matmul_24_reference(x, dequantize_int4(qweight, scales), meta)
