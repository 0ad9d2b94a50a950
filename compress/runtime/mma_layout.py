"""Fragment-ordered copies of the packed 2:4 layouts, read by the tensor-core kernel (csrc/sparse24_mma.cu).

The kernel feeds `mma.sp.m16n8k32` (bf16, fp32 accumulate; PTX ISA §9.7.14.6) with a 16-row tile of W as the
sparse operand A and up to 8 tokens of x as B. Each lane must hold specific elements in its registers; storing
the weights once in that order (at load time) lets every lane fetch its fragment with one 16-byte load and a
warp read 512 contiguous bytes. Pure tensor functions; rows are padded to a multiple of 16 (padding rows are
zero with metadata "positions 0 and 1"), K must be a multiple of UNIT = 128 (one int4 scale group, 4 k-tiles).

Register layout of one k-tile (32 dense columns = 16 kept values per row), lane l, g = l // 4, t = l % 4
(PTX ISA "Matrix fragments for sparse mma.m16n8k32 with .f16/.bf16": A as the dense m16n8k16 A fragment over
the compressed 16 x 16 tile, a layout confirmed on the H200 by `tests/test_runtime.py::test_mma_sp_probe`):
  A reg r (r = 0..3), half h:  row g + 8 * (r % 2),  kept value 2t + 8 * (r // 2) + h of the tile
  B reg r, half h:             dense column 2t + 8r + h of the tile, token g
  D reg r:                     row g + 8 * (r // 2), token 2t + r % 2
  metadata (sparsity selector 0, lanes t = 0, 1): lane (g, t) holds the 2-bit positions of kept values
                               8t..8t+7 of row g in bits 0-15 and of row g + 8 in bits 16-31 ("half" below).
Buffers (Nt = N / 16 tiles, U = K / 128 units):
  afrag (Nt, U, 4, 32, 4) int32   bf16 pairs: [tile, unit, k-tile, lane, reg]
  qfrag (Nt, U, 32, 4) int32      int4: word [tile, unit, lane, k-tile] holds the lane's 8 nibbles (q + 8) of that
                                  k-tile, reg r half h at bits 4r + 16h (so `(w >> 4r) & 0x000F000F` is a pair)
  efrag (Nt, U, 16, 4) int32      metadata word [tile, unit, 2g + t, k-tile]
  sfrag (Nt, U, 8, 2) bf16        int4 scales of rows (g, g + 8) of the unit's group
"""

from __future__ import annotations

import torch

from compress.runtime.format24 import GROUP, _to_int32, unpack_meta

TILE = 16  # rows per mma tile
UNIT = GROUP  # dense columns per kernel step: 4 k-tiles of 32, one int4 scale group
PAD_META = 0x44444444  # every group: positions (0, 1) — a valid pattern for all-zero padding rows


def _lane_index(device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, kept) of A element [lane, reg, half] inside a 16-row k-tile: (32, 4, 2) each."""
    lane = torch.arange(32, device=device)[:, None, None]
    reg = torch.arange(4, device=device)[None, :, None]
    half = torch.arange(2, device=device)[None, None, :]
    g, t = lane // 4, lane % 4
    row = g + 8 * (reg % 2) + 0 * half
    kept = 2 * t + 8 * (reg // 2) + half
    return row, kept


def _pad_rows(a: torch.Tensor, fill) -> torch.Tensor:
    pad = -a.shape[0] % TILE
    if not pad:
        return a
    return torch.cat([a, a.new_full((pad, *a.shape[1:]), fill)])


def _tiles(kept: torch.Tensor) -> torch.Tensor:
    """(N, K/2) per-kept-value array -> (Nt, U, 4, 32, 4, 2) in fragment order."""
    n, half = kept.shape
    units = half * 2 // UNIT
    v = kept.reshape(n // TILE, TILE, units, 4, 16).permute(0, 2, 3, 1, 4)  # (Nt, U, kt, 16 rows, 16 kept)
    row, col = _lane_index(kept.device)
    return v[:, :, :, row, col]


def check_shape(k: int) -> None:
    if k % UNIT:
        raise ValueError(f"in-features {k} not divisible by {UNIT} (the tensor-core kernel's step)")


def a_fragments(values: torch.Tensor) -> torch.Tensor:
    """bf16 kept values (N, K/2) -> afrag (Nt, U, 4, 32, 4) int32 (bf16 pairs, low half first)."""
    if values.dtype != torch.bfloat16:
        raise ValueError(f"the tensor-core kernel reads bf16 kept values, got {values.dtype}")
    check_shape(values.shape[1] * 2)
    v = _tiles(_pad_rows(values, 0)).contiguous()  # (..., 4 regs, 2 halves) bf16
    return v.view(torch.int32).reshape(*v.shape[:-1])


def q_fragments(qweight: torch.Tensor) -> torch.Tensor:
    """int4 qweight (N, K/16) (format24 nibbles) -> qfrag (Nt, U, 32, 4) int32."""
    n, words = qweight.shape
    check_shape(words * 16)
    nib = (qweight.to(torch.int64)[..., None] >> (4 * torch.arange(8, device=qweight.device))) & 15
    f = _tiles(_pad_rows(nib.reshape(n, words * 8), 8))  # (Nt, U, kt, lane, reg, half); 8 = value 0
    shifts = 4 * torch.arange(4, device=f.device)[:, None] + 16 * torch.arange(2, device=f.device)
    word = (f << shifts).sum((-1, -2))  # (Nt, U, kt, lane)
    return _to_int32(word.transpose(2, 3).contiguous())


def e_fragments(meta: torch.Tensor) -> torch.Tensor:
    """meta (N, K/32) int32 (format24) -> efrag (Nt, U, 16, 4) int32 (see the module docstring)."""
    words = meta.shape[1]
    check_shape(words * 32)
    m = _pad_rows(meta, PAD_META).to(torch.int64) & 0xFFFFFFFF
    m = m.reshape(-1, TILE, words // 4, 4).permute(0, 2, 1, 3)  # (Nt, U, 16 rows, kt)
    lo, hi = m[:, :, :8], m[:, :, 8:]  # rows g and g + 8
    t0 = (lo & 0xFFFF) | ((hi & 0xFFFF) << 16)  # kept values 0..7 of the k-tile
    t1 = (lo >> 16) | ((hi >> 16) << 16)  # kept values 8..15
    return _to_int32(torch.stack([t0, t1], 3).reshape(m.shape[0], m.shape[1], 16, 4))


def s_fragments(scales: torch.Tensor) -> torch.Tensor:
    """int4 scales (N, K/128) -> sfrag (Nt, U, 8, 2): the scales of rows (g, g + 8) side by side."""
    s = _pad_rows(scales, 0)
    s = s.reshape(-1, TILE, s.shape[1]).permute(0, 2, 1)  # (Nt, U, 16)
    return torch.stack([s[..., :8], s[..., 8:]], -1).contiguous()


def _untile(v: torch.Tensor) -> torch.Tensor:
    """(Nt, U, 4, 32, 4, 2) in fragment order -> (Nt * 16, K/2) per kept value (the inverse of `_tiles`)."""
    nt, units = v.shape[:2]
    row, col = _lane_index(v.device)
    tiles = v.new_zeros(nt, units, 4, TILE, 16)
    tiles[:, :, :, row, col] = v
    return tiles.permute(0, 3, 1, 2, 4).reshape(nt * TILE, units * 64)


def dense_from_fragments(a: torch.Tensor, e: torch.Tensor, n: int, s: torch.Tensor | None = None) -> torch.Tensor:
    """The dense (N, K) weight the kernel multiplies, read back from its operands by the register layout above:
    afrag + efrag (bf16), or qfrag + efrag + sfrag (int4, dequantised in fp32). The inverse of the *_fragments
    functions; tests use it to check them against format24, and the GPU test checks the hardware agrees."""
    nt, units = a.shape[:2]
    dev = a.device
    if s is None:
        kept = _untile(a.contiguous().view(torch.bfloat16).reshape(nt, units, 4, 32, 4, 2))
    else:
        w = a.to(torch.int64).transpose(2, 3)[..., None, None]  # (Nt, U, kt, lane, 1, 1)
        shifts = 4 * torch.arange(4, device=dev)[:, None] + 16 * torch.arange(2, device=dev)
        q = ((w >> shifts) & 15) - 8  # (Nt, U, kt, lane, reg, half)
        g = torch.arange(32, device=dev)[:, None] // 4
        scale = s.float()[:, :, g, torch.arange(4, device=dev) % 2]  # (Nt, U, lane, reg): scale of row g + 8 (reg % 2)
        kept = _untile(q.float() * scale[:, :, None, :, :, None])
    e = e.to(torch.int64) & 0xFFFFFFFF  # (Nt, U, 16 = 2g + t, kt)
    e = e.reshape(nt, units, 8, 2, 4)
    lo = (e[:, :, :, 0] & 0xFFFF) | ((e[:, :, :, 1] & 0xFFFF) << 16)  # rows g
    hi = (e[:, :, :, 0] >> 16) | ((e[:, :, :, 1] >> 16) << 16)  # rows g + 8
    m = torch.cat([lo, hi], 2).permute(0, 2, 1, 3).reshape(nt * TILE, units * 4)
    cols = torch.arange(kept.shape[1], device=dev) // 2 * 4 + unpack_meta(_to_int32(m))
    W = torch.zeros(nt * TILE, units * UNIT, dtype=kept.dtype, device=dev)
    return W.scatter_(1, cols, kept)[:n]
