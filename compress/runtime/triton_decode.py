"""Triton kernels for 2:4 matmuls at small M (decode), reading the packed layouts of `format24` directly.

y (M, N) = x (M, K) @ W^T. M = 1 runs `_gemv24_kernel` (below). For M > 1 each program owns BLOCK_N output
rows and BLOCK_M tokens and walks K in tiles of
BLOCK_K dense columns: it loads BLOCK_K/2 kept values (bf16, or int4 nibbles + one scale per 128 columns) and
BLOCK_K/32 metadata words per row, expands them in registers to the dense (BLOCK_N, BLOCK_K) tile (each of the
4 positions of a group takes the kept value whose 2-bit position matches, else 0) and multiplies on the tensor
cores. Decode is bound by the weight bytes: 56% (bf16) or 20% (int4) of the dense bf16 bytes.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [(16, 256, 4, 4), (32, 256, 4, 4), (32, 128, 4, 4), (64, 128, 4, 3)]
]


@triton.jit
def _dense_tile(v, meta, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """(BLOCK_N, BLOCK_K/2) kept values + (BLOCK_N, BLOCK_K/32) meta words -> (BLOCK_N, BLOCK_K) dense tile."""
    shifts = 2 * tl.arange(0, 16)
    pos = (meta[:, :, None] >> shifts[None, None, :]) & 3  # (BN, BK/32, 16)
    pos = tl.reshape(pos, (BLOCK_N, BLOCK_K // 4, 2))
    p0, p1 = tl.split(pos)
    v0, v1 = tl.split(tl.reshape(v, (BLOCK_N, BLOCK_K // 4, 2)))
    zero = tl.zeros_like(v0)
    d0 = tl.where(p0 == 0, v0, zero) + tl.where(p1 == 0, v1, zero)
    d1 = tl.where(p0 == 1, v0, zero) + tl.where(p1 == 1, v1, zero)
    d2 = tl.where(p0 == 2, v0, zero) + tl.where(p1 == 2, v1, zero)
    d3 = tl.where(p0 == 3, v0, zero) + tl.where(p1 == 3, v1, zero)
    # join(join(d0, d2), join(d1, d3))[..., a, b] is d(2a + b): flattening gives d0 d1 d2 d3 per group
    return tl.reshape(tl.join(tl.join(d0, d2), tl.join(d1, d3)), (BLOCK_N, BLOCK_K))


@triton.jit
def _int4_values(qw, s, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """(BLOCK_N, BLOCK_K/16) int32 nibble words + (BLOCK_N, BLOCK_K/128) scales -> (BLOCK_N, BLOCK_K/2) values."""
    shifts = 4 * tl.arange(0, 8)
    q = ((qw[:, :, None] >> shifts[None, None, :]) & 15) - 8  # (BN, BK/16, 8)
    q = tl.reshape(q, (BLOCK_N, BLOCK_K // 128, 64)).to(tl.float32)
    return tl.reshape(q * s.to(tl.float32)[:, :, None], (BLOCK_N, BLOCK_K // 2))


@triton.jit
def _sparse24_kernel(
    x_ptr, w_ptr, s_ptr, meta_ptr, y_ptr,
    M, N: tl.constexpr, K: tl.constexpr,
    INT4: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    toks = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kd = k0 + tl.arange(0, BLOCK_K)
        km = k0 // 32 + tl.arange(0, BLOCK_K // 32)
        meta = tl.load(
            meta_ptr + rows[:, None] * (K // 32) + km[None, :], mask=row_ok[:, None] & (km < K // 32)[None, :], other=0
        )
        if INT4:
            kq = k0 // 16 + tl.arange(0, BLOCK_K // 16)
            ks = k0 // 128 + tl.arange(0, BLOCK_K // 128)
            qw = tl.load(
                w_ptr + rows[:, None] * (K // 16) + kq[None, :], mask=row_ok[:, None] & (kq < K // 16)[None, :], other=0
            )
            s = tl.load(
                s_ptr + rows[:, None] * (K // 128) + ks[None, :],
                mask=row_ok[:, None] & (ks < K // 128)[None, :],
                other=0.0,
            )
            v = _int4_values(qw, s, BLOCK_N, BLOCK_K).to(x_ptr.dtype.element_ty)
        else:
            kv = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            v = tl.load(
                w_ptr + rows[:, None] * (K // 2) + kv[None, :], mask=row_ok[:, None] & (kv < K // 2)[None, :], other=0.0
            )
        w = _dense_tile(v, meta, BLOCK_N, BLOCK_K)
        x = tl.load(x_ptr + toks[:, None] * K + kd[None, :], mask=(toks < M)[:, None] & (kd < K)[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
    y = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + toks[:, None] * N + rows[None, :], y, mask=(toks < M)[:, None] & row_ok[None, :])  # fmt: skip


@triton.jit
def _gemv24_kernel(x_ptr, w_ptr, s_ptr, meta_ptr, y_ptr, N: tl.constexpr, K: tl.constexpr, INT4: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr):  # fmt: skip
    """M = 1: y[n] = sum over groups g of v0 * x[4g + p0] + v1 * x[4g + p1], without expanding W.

    Per group of 4 input columns one 32-bit load brings both bf16 kept values (int4: one byte, two nibbles),
    the metadata word (shared by 8 groups) gives p0 < p1, and the four x[4g + j] are selected in registers;
    everything stays in one (BLOCK_N, BLOCK_G) layout."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    acc = tl.zeros((BLOCK_N, BLOCK_G), dtype=tl.float32)
    for g0 in range(0, K // 4, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        g_ok = g < K // 4
        mask = row_ok[:, None] & g_ok[None, :]
        x0 = tl.load(x_ptr + 4 * g, mask=g_ok, other=0.0).to(tl.float32)[None, :]
        x1 = tl.load(x_ptr + 4 * g + 1, mask=g_ok, other=0.0).to(tl.float32)[None, :]
        x2 = tl.load(x_ptr + 4 * g + 2, mask=g_ok, other=0.0).to(tl.float32)[None, :]
        x3 = tl.load(x_ptr + 4 * g + 3, mask=g_ok, other=0.0).to(tl.float32)[None, :]
        word = tl.load(meta_ptr + rows[:, None] * (K // 32) + (g // 8)[None, :], mask=mask, other=0)
        sh = (4 * (g % 8))[None, :]
        p0 = (word >> sh) & 3  # 0..2
        p1 = (word >> (sh + 2)) & 3  # 1..3
        if INT4:
            b = tl.load(w_ptr + rows[:, None] * (K // 4) + g[None, :], mask=mask, other=0).to(tl.int32)
            s = tl.load(s_ptr + rows[:, None] * (K // 128) + (g // 32)[None, :], mask=mask, other=0.0)
            s = s.to(tl.float32)
            v0 = ((b & 15) - 8).to(tl.float32) * s
            v1 = ((b >> 4) - 8).to(tl.float32) * s
        else:
            pair = tl.load(w_ptr + rows[:, None] * (K // 4) + g[None, :], mask=mask, other=0)
            v0 = (pair & 0xFFFF).to(tl.int16).to(x_ptr.dtype.element_ty, bitcast=True).to(tl.float32)
            v1 = (pair >> 16).to(tl.int16).to(x_ptr.dtype.element_ty, bitcast=True).to(tl.float32)
        xs0 = tl.where(p0 == 0, x0, tl.where(p0 == 1, x1, x2))
        xs1 = tl.where(p1 == 3, x3, tl.where(p1 == 2, x2, x1))
        acc += v0 * xs0 + v1 * xs1
    tl.store(y_ptr + rows, tl.sum(acc, axis=1).to(y_ptr.dtype.element_ty), mask=row_ok)


GEMV_CONFIGS = [  # few, long tiles keep many loads in flight per program (K/4 = 1024 or 2752 groups)
    triton.Config({"BLOCK_N": bn, "BLOCK_G": bg}, num_warps=w, num_stages=st)
    for bn, bg, w, st in [
        (4, 256, 4, 3),
        (8, 128, 4, 3),
        (8, 256, 4, 3),
        (16, 128, 4, 3),
        (4, 512, 4, 2),
        (2, 512, 4, 3),
        (2, 1024, 4, 2),
        (2, 1024, 8, 2),
        (4, 1024, 8, 2),
        (8, 512, 8, 2),
    ]
]
_gemv_tuned = triton.autotune(configs=GEMV_CONFIGS, key=["N", "K", "INT4"])(_gemv24_kernel)


_tuned_kernel = triton.autotune(configs=CONFIGS, key=["N", "K", "BLOCK_M", "INT4"])(_sparse24_kernel)
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # the CPU interpreter: one fixed config, no tuning


def sparse24_matmul(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """x (M, K) contiguous @ W^T for the packed bf16 2:4 layout; (M, N) in x's dtype."""
    return _launch(x, values, None, meta, int4=False)


def sparse24_int4_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, meta: torch.Tensor):
    """x (M, K) contiguous @ W^T for the packed int4 2:4 layout; (M, N) in x's dtype."""
    return _launch(x, qweight, scales, meta, int4=True)


def _launch(x, w, s, meta, int4: bool) -> torch.Tensor:
    M, K = x.shape
    N = meta.shape[0]
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    s = s if s is not None else w  # bf16 has no scales; the kernels never read this pointer then
    if M == 1:
        # bf16: a group's two kept values as one 32-bit word; int4: a group's two nibbles as one byte
        wv = w.view(torch.uint8) if int4 else w.view(torch.int32)
        grid1 = lambda c: (triton.cdiv(N, c["BLOCK_N"]),)  # noqa: E731
        if INTERPRET:
            _gemv24_kernel[grid1](x, wv, s, meta, y, N, K, INT4=int4, BLOCK_N=4, BLOCK_G=32)
        else:
            _gemv_tuned[grid1](x, wv, s, meta, y, N, K, INT4=int4)
        return y
    bm = 16 if M <= 16 else (32 if M <= 32 else 64)
    grid = lambda meta_: (triton.cdiv(N, meta_["BLOCK_N"]), triton.cdiv(M, bm))  # noqa: E731
    args = (x, w, s, meta, y, M, N, K)
    if INTERPRET:
        _sparse24_kernel[grid](*args, INT4=int4, BLOCK_M=bm, BLOCK_N=16, BLOCK_K=128)
    else:
        _tuned_kernel[grid](*args, INT4=int4, BLOCK_M=bm)
    return y
