"""Triton kernels for 2:4 matmuls at small M (decode), reading the packed layouts of `format24` directly.

y (M, N) = x (M, K) @ W^T. A program owns BLOCK_N output rows and walks K in tiles of BLOCK_K dense columns.
Each dense column c of the tile reads, for its group g = c // 4, the group's two kept values (or int4 nibbles
and the group-of-128 scale) and its metadata word, and takes the kept value whose 2-bit position equals c % 4
(else 0). Everything stays in one (BLOCK_N, BLOCK_K) register layout, so no reshapes or shuffles are needed;
the repeated reads of a group's values hit L1, and DRAM traffic stays at the packed bytes: 56% (bf16) or 20%
(int4) of the dense bf16 weight. M == 1 uses a GEMV (multiply and row sums); M > 1 multiplies the expanded
tile on the tensor cores (tl.dot).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [(8, 256, 4, 3), (16, 256, 4, 3), (16, 512, 8, 3), (32, 128, 4, 4), (8, 512, 4, 3)]
]
GEMM_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [(32, 128, 4, 3), (64, 128, 4, 3), (32, 256, 4, 3), (64, 64, 4, 4)]
]


@triton.jit
def _weight_tile(w_ptr, s_ptr, meta_ptr, rows, row_ok, k0, K: tl.constexpr, INT4: tl.constexpr, BLOCK_K: tl.constexpr):
    """Dense (BLOCK_N, BLOCK_K) tile of W at columns k0.. in fp32, expanded from the packed layout."""
    c = k0 + tl.arange(0, BLOCK_K)
    g = c // 4
    mask = row_ok[:, None] & (c < K)[None, :]
    word = tl.load(meta_ptr + rows[:, None] * (K // 32) + (c // 32)[None, :], mask=mask, other=0)
    sh = (4 * (g % 8))[None, :]  # kept value 2g at bits 2*((2g) % 16) of word (2g) // 16 = c // 32
    p0 = (word >> sh) & 3
    p1 = (word >> (sh + 2)) & 3
    if INT4:
        qw = tl.load(w_ptr + rows[:, None] * (K // 16) + (g // 4)[None, :], mask=mask, other=0)
        s = tl.load(s_ptr + rows[:, None] * (K // 128) + (c // 128)[None, :], mask=mask, other=0.0).to(tl.float32)
        qs = (8 * (g % 4))[None, :]  # kept value 2g: nibble 4*((2g) % 8) of word (2g) // 8 = g // 4
        v0 = (((qw >> qs) & 15) - 8).to(tl.float32) * s
        v1 = (((qw >> (qs + 4)) & 15) - 8).to(tl.float32) * s
    else:
        base = w_ptr + rows[:, None] * (K // 2) + (2 * g)[None, :]
        v0 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
        v1 = tl.load(base + 1, mask=mask, other=0.0).to(tl.float32)
    j = (c % 4)[None, :]
    return tl.where(p0 == j, v0, tl.where(p1 == j, v1, 0.0))


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, s_ptr, meta_ptr, y_ptr, N: tl.constexpr, K: tl.constexpr, INT4: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w = _weight_tile(w_ptr, s_ptr, meta_ptr, rows, row_ok, k0, K, INT4, BLOCK_K)
        c = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + c, mask=c < K, other=0.0).to(tl.float32)
        acc += tl.sum(w * x[None, :], axis=1)
    tl.store(y_ptr + rows, acc.to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _gemm_kernel(x_ptr, w_ptr, s_ptr, meta_ptr, y_ptr, M, N: tl.constexpr, K: tl.constexpr, INT4: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    toks = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w = _weight_tile(w_ptr, s_ptr, meta_ptr, rows, row_ok, k0, K, INT4, BLOCK_K).to(x_ptr.dtype.element_ty)
        c = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + toks[:, None] * K + c[None, :], mask=(toks < M)[:, None] & (c < K)[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
    y = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + toks[:, None] * N + rows[None, :], y, mask=(toks < M)[:, None] & row_ok[None, :])


_gemv_tuned = triton.autotune(configs=GEMV_CONFIGS, key=["N", "K", "INT4"])(_gemv_kernel)
_gemm_tuned = triton.autotune(configs=GEMM_CONFIGS, key=["N", "K", "BLOCK_M", "INT4"])(_gemm_kernel)
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
    s = s if s is not None else w
    if M == 1:
        grid = lambda c: (triton.cdiv(N, c["BLOCK_N"]),)  # noqa: E731
        if INTERPRET:
            _gemv_kernel[grid](x, w, s, meta, y, N, K, INT4=int4, BLOCK_N=16, BLOCK_K=128)
        else:
            _gemv_tuned[grid](x, w, s, meta, y, N, K, INT4=int4)
        return y
    bm = 16 if M <= 16 else (32 if M <= 32 else 64)
    grid = lambda c: (triton.cdiv(N, c["BLOCK_N"]), triton.cdiv(M, bm))  # noqa: E731
    if INTERPRET:
        _gemm_kernel[grid](x, w, s, meta, y, M, N, K, INT4=int4, BLOCK_M=bm, BLOCK_N=16, BLOCK_K=128)
    else:
        _gemm_tuned[grid](x, w, s, meta, y, M, N, K, INT4=int4, BLOCK_M=bm)
    return y
