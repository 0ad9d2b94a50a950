"""Block-diagonal Walsh–Hadamard rotation for QuEST (Panferov et al., ICML 2025, "QuEST: Stable Training of
LLMs with 1-Bit Weights and Activations"; reference IST-DASLab/QuEST, which multiplies 128-column blocks by a
dense 128×128 Hadamard matrix).

Here the transform is the fast Walsh–Hadamard butterfly (log2(block) add/subtract stages, O(n log n), pure torch
ops, so autograd differentiates it) instead of a dense matmul. H_block is the Sylvester matrix
H_1 = [1], H_2m = [[H_m, H_m], [H_m, −H_m]] scaled by 1/sqrt(block): symmetric and orthonormal, so the transform
preserves norms and is its own inverse, and fwht(x) = x · H = x · Hᵀ blockwise.
"""

from __future__ import annotations

import math

import torch

MAX_BLOCK = 128  # the paper's block; the largest size suggested when a block does not fit


def _is_pow2(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and n & (n - 1) == 0


def _fitting_blocks(in_features: int, limit: int) -> list[int]:
    """Powers of two in [2, limit] that divide in_features, largest first."""
    out, b = [], 2
    while b <= limit:
        if in_features % b == 0:
            out.append(b)
        b *= 2
    return out[::-1]


def check_block(in_features: int, block: int) -> None:
    """Validate a Hadamard block size for a layer with `in_features` inputs; returns None when it is usable.

    block 0 means no rotation and is always valid. Otherwise the block must be a power of two that divides
    in_features; if not, a one-line ValueError is raised before any work is done, naming the power-of-two blocks
    that would fit (e.g. "choose hadamard_block 64 or 32 that divides 576, or 0 for no rotation"). Nothing is
    padded or silently shrunk: the caller picks the block.
    """
    if block == 0 and not isinstance(block, bool):
        return
    fits = _fitting_blocks(in_features, MAX_BLOCK)[:2]
    hint = (
        f"choose hadamard_block {' or '.join(map(str, fits))} that divides {in_features}, or 0 for no rotation"
        if fits
        else f"no power-of-two block divides {in_features}; use hadamard_block 0 for no rotation"
    )
    if not _is_pow2(block):
        raise ValueError(f"hadamard_block {block!r} is not a power of two; {hint}")
    if in_features % block:
        raise ValueError(f"hadamard_block {block} does not divide in-features {in_features}; {hint}")


def fwht(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Orthonormal fast Walsh–Hadamard transform in independent blocks of `block` along the last dim.

    x (..., n) with block | n, fp32 or bf16 (computed in fp32, returned in x's dtype). Equals
    x.reshape(..., n/block, block) @ H_block / sqrt(block) (hadamard_matrix) but costs O(n log block).
    Self-inverse: fwht(fwht(x)) = x up to rounding. block 1 is the identity.
    """
    if block == 0:
        raise ValueError("fwht block must be a positive power of two; skip the call for no rotation")
    check_block(x.shape[-1], block)
    shape = x.shape
    y = x.float().reshape(-1, shape[-1] // block, block)  # (rows, blocks, block)
    rows, nb = y.shape[0], y.shape[1]
    h = 1
    while h < block:
        # pair element i with i + h inside every run of 2h: (rows, blocks, block/2h, 2, h)
        y = y.reshape(rows, nb, block // (2 * h), 2, h)
        a, b = y[:, :, :, 0, :], y[:, :, :, 1, :]
        y = torch.stack((a + b, a - b), dim=3)
        h *= 2
    y = y.reshape(shape) * (1.0 / math.sqrt(block))
    return y.to(x.dtype)


def hadamard_matrix(n: int) -> torch.Tensor:
    """Unnormalised Sylvester Hadamard matrix (n, n) of ±1, fp32 (for tests; fwht never builds it)."""
    if not _is_pow2(n):
        raise ValueError(f"hadamard_matrix size {n!r} must be a power of two (e.g. 64 or 128)")
    H = torch.ones(1, 1)
    while H.shape[0] < n:
        H = torch.cat((torch.cat((H, H), 1), torch.cat((H, -H), 1)), 0)
    return H
