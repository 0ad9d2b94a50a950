"""How the tensor-core kernel (csrc/sparse24_mma.cu) feeds `mma.sp.m16n8k32` from the one resident weight form,
written out as a pure-torch emulation of its loads and of the instruction, so a CPU test checks the kernel's index
arithmetic against a dense matmul (and the GPU test checks the hardware agrees with both).

Register layout of one k-tile (32 columns = 8 groups of 4 = 16 kept values per row), lane l, g = l // 4,
t = l % 4 (PTX ISA "Matrix fragments for sparse mma.m16n8k32 with .f16/.bf16", confirmed on the H200 by
`tests/test_resident_form.py::test_mma_sp_probe`):
  A reg r (r = 0..3), half h:  row g + 8 * (r % 2),  kept value 2t + 8 * (r // 2) + h of the tile
  B reg r, half h:             tile column 2t + 8r + h, token g
  D reg r:                     row g + 8 * (r // 2), token 2t + r % 2
  metadata (sparsity selector 0, lanes t = 0, 1): the 2-bit positions of kept values 8t..8t+7 of row g in
                               bits 0-15 and of row g + 8 in bits 16-31.
A kept-value pair is one group; the tile's group "slot" s (kept values 2s, 2s+1, tile columns 4s..4s+3) may be any
group of the weight, as long as A, B and the metadata agree. The kernel's k-tile kt (0..3) of a 128-column unit
takes slot s = block s % 4 of the unit (32 columns each), group 2 * kt + s // 4 of that block (SLOT). Then:
  - lane t's A registers for all 4 k-tiles (slots t and t + 4) are the 8 groups of block t: 32 contiguous bytes
    of a row of bf16 values (two 16-byte loads), or 8 of int4 nibbles;
  - lane t = 0, 1's metadata word takes group 2kt + t of each block: byte (kt >> 1) + 2t of word kt & 1 of the
    block's 8 metadata bytes for the row pair (cslt_layout), the 4 blocks' bytes side by side, nibbles unzipped
    (row g's even nibbles to bits 0-15, row g + 8's odd ones to 16-31);
  - B reg r of lane t reads x pair 64u + 16 * (t >> 1) + (t & 1) + 4kt + B_PAIR[r].
"""

from __future__ import annotations

import torch

from compress.runtime.cslt_layout import meta_bytes

UNIT = 128  # dense columns per kernel step: 4 k-tiles of 32, one int4 scale group
TILE = 16  # rows per mma tile
B_PAIR = (0, 32, 2, 34)  # B reg r: slot 2r + (t >> 1) = block (2r + (t >> 1)) % 4, group 2kt + r // 2


def slot(kt: int, s: int) -> tuple[int, int]:
    """(block of the unit, group of the block) held by slot s of k-tile kt."""
    return s % 4, 2 * kt + s // 4


def check_shape(n: int, k: int) -> None:
    if k % UNIT or n % TILE:
        raise ValueError(
            f"the tensor-core kernel needs in-features % {UNIT} == 0 and out-features % {TILE} == 0, got ({n}, {k})"
        )


def meta_word(chunks: list[tuple[torch.Tensor, torch.Tensor]], kt: int, t: int) -> torch.Tensor:
    """The kernel's `meta_word`: chunks[j] = (lo, hi) 32-bit words (int64 tensors) of block j's 8 metadata bytes."""
    p = (kt >> 1) + 2 * (t & 1)
    b = [((hi if kt & 1 else lo) >> (8 * p)) & 0xFF for lo, hi in chunks]  # row g low nibble, row g + 8 high
    x = b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)
    e, o = x & 0x0F0F0F0F, (x >> 4) & 0x0F0F0F0F
    c, d = e | (e >> 4), o | (o >> 4)
    return (c & 0xFF) | (((c >> 16) & 0xFF) << 8) | ((d & 0xFF) << 16) | (((d >> 16) & 0xFF) << 24)  # 0x6420


def _bf16_halves(words: torch.Tensor) -> torch.Tensor:
    """int64 tensor of 32-bit words -> (..., 2) fp32: the bf16 pair, low half first."""
    halves = torch.stack([words & 0xFFFF, (words >> 16) & 0xFFFF], -1).to(torch.int32) << 16
    return halves.view(torch.float32)


def _int4_pair(w: torch.Tensor, r: int) -> torch.Tensor:
    """The kernel's int4_pair: nibbles at bits 4r and 16 + 4r -> (q0 - 8, q1 - 8) fp32."""
    return torch.stack([((w >> (4 * r)) & 15) - 8, ((w >> (16 + 4 * r)) & 15) - 8], -1).float()


def emulate(x: torch.Tensor, w: torch.Tensor, meta: torch.Tensor, scales: torch.Tensor | None, n: int) -> torch.Tensor:
    """y (M, N) fp32 = what the kernel computes for x (M, K) bf16, reading w (values (N, K/2) bf16, or qweight
    (N, K/16) int32 with scales (N, K/128)) and the cuSPARSELt-order metadata bytes exactly as it does."""
    m, k = x.shape
    check_shape(n, k)
    int4 = scales is not None
    dev = x.device
    T, U = n // TILE, k // UNIT
    g = torch.arange(8, device=dev)[:, None]
    t = torch.arange(4, device=dev)[None, :]  # lanes as (g, t)
    tiles = torch.arange(T, device=dev)[:, None, None, None]
    units = torch.arange(U, device=dev)[None, :, None, None]
    r0 = tiles * TILE + g  # (T, 1, 8, 1)
    words = (w.to(torch.int64) if int4 else w.contiguous().view(torch.int32).to(torch.int64)) & 0xFFFFFFFF
    chunks = meta[: meta_bytes(n, k)].view(torch.int64).reshape(-1)  # 8 bytes each, little-endian
    blocks32 = k // 32
    ch = []  # block j's row-pair chunk, (T, U, 8) as (lo, hi)
    for j in range(4):
        idx = ((tiles[..., 0] >> 2) * blocks32 + 4 * units[..., 0] + j) * 32 + torch.arange(8, device=dev)
        c = chunks[idx + 8 * (tiles[..., 0] & 3)]
        ch.append((c & 0xFFFFFFFF, (c >> 32) & 0xFFFFFFFF))
    xp = x.float()
    y = torch.zeros(T, TILE, m, device=dev)
    for u in range(U):
        acc = torch.zeros(T, TILE, m, device=dev)
        for kt in range(4):
            if int4:  # lane t: words 8u + 2t, +1 of each row; k-tile kt: half kt & 1 of word kt >> 1
                r = r0[:, 0]
                h0, h1 = ((words[rr, 8 * u + 2 * t + (kt >> 1)] >> (16 * (kt & 1))) & 0xFFFF for rr in (r, r + 8))
                s0, s1 = h0 | (h0 << 12), h1 | (h1 << 12)
                regs = [_int4_pair(s0, 0), _int4_pair(s1, 0), _int4_pair(s0, 2), _int4_pair(s1, 2)]
            else:  # lane t: the 8 words (groups) of block t; k-tile kt: words 2kt, 2kt + 1
                col = 32 * u + 8 * t + 2 * kt
                r = r0[:, 0]
                at = ((r, col), (r + 8, col), (r, col + 1), (r + 8, col + 1))
                regs = [_bf16_halves(words[rr, cc]) for rr, cc in at]
            A = torch.zeros(T, TILE, 16, device=dev)  # (T, 16 rows, 16 kept) of this k-tile
            for ri, v in enumerate(regs):  # v (T, 8 g, 4 t, 2 h)
                for h in range(2):
                    A[:, (g + 8 * (ri % 2)).expand(8, 4), (2 * t + 8 * (ri // 2) + h).expand(8, 4)] = v[..., h]
            pos = torch.zeros(T, TILE, 16, dtype=torch.int64, device=dev)
            for tt in range(2):
                word = meta_word([(lo[:, u], hi[:, u]) for lo, hi in ch], kt, tt)  # (T, 8)
                for j in range(8):
                    pos[:, :8, 8 * tt + j] = (word >> (2 * j)) & 3
                    pos[:, 8:, 8 * tt + j] = (word >> (16 + 2 * j)) & 3
            cols = 4 * (torch.arange(16, device=dev) // 2) + pos
            Ad = torch.zeros(T, TILE, 32, device=dev).scatter_add_(2, cols, A)
            Bt = torch.zeros(32, m, device=dev)  # tile column -> x column, per the lane layout of B
            for ri in range(4):
                for tt in range(4):
                    pair = 64 * u + 16 * (tt >> 1) + (tt & 1) + 4 * kt + B_PAIR[ri]
                    for h in range(2):
                        Bt[2 * tt + 8 * ri + h] = xp[:, 2 * pair + h]
            acc += Ad @ Bt
        y += acc * (scales.float().reshape(T, TILE, U)[:, :, u, None] if int4 else 1.0)
    return y.reshape(n, m).t()
