"""Exact packing of b-bit integer codes (b = 1..8).

`pack_bits`: a little-endian bit stream in uint8 (code k occupies bits [k·b, (k+1)·b) of the stream, lowest bit
first), the densest layout for any width — 3-bit codes take 3/8 byte each. `pack_int32`: compressed-tensors'
`pack-quantized` layout for widths dividing 32 (2, 4, 8): 32 // b codes per int32 along the last dimension,
code j of a word in bits [j·b, (j+1)·b) (compressed-tensors `pack_to_int32`); rows padded with zero codes.
"""

from __future__ import annotations

import numpy as np
import torch


def _check(codes: torch.Tensor, bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"pack: bits must be 1..8, got {bits}")
    if codes.dtype not in (torch.uint8, torch.int16, torch.int32, torch.int64):
        raise ValueError(f"pack: codes must be an integer tensor, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
        raise ValueError(f"pack: codes outside [0, {2**bits - 1}] for {bits} bits")


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """All codes (flattened) as a uint8 bit stream of ceil(numel·bits / 8) bytes."""
    _check(codes, bits)
    flat = codes.reshape(-1).to(torch.int64)
    stream = ((flat.unsqueeze(1) >> torch.arange(bits, device=flat.device)) & 1).reshape(-1)  # (numel·bits,)
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8))
    weights = 1 << torch.arange(8, device=flat.device)
    return (stream.reshape(-1, 8) * weights).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `pack_bits`: uint8 codes of `shape`."""
    n = 1
    for d in shape:
        n *= d
    if packed.dtype != torch.uint8 or packed.numel() != (n * bits + 7) // 8:
        raise ValueError(f"unpack: expected {(n * bits + 7) // 8} uint8 bytes for {n} codes of {bits} bits")
    stream = ((packed.to(torch.int64).unsqueeze(1) >> torch.arange(8, device=packed.device)) & 1).reshape(-1)
    fields = stream[: n * bits].reshape(n, bits)
    return (fields << torch.arange(bits, device=packed.device)).sum(1).to(torch.uint8).reshape(shape)


def pack_int32(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, cols) codes -> (rows, ceil(cols / (32 // bits))) int32, 32 // bits codes per word."""
    _check(codes, bits)
    if 32 % bits:
        raise ValueError(f"pack_int32 holds 2-, 4- or 8-bit codes (32 // bits per word), not {bits}-bit")
    per = 32 // bits
    rows, cols = codes.shape
    c = torch.nn.functional.pad(codes.to(torch.int64), (0, (-cols) % per)).reshape(rows, -1, per)
    words = (c << (bits * torch.arange(per, device=codes.device))).sum(-1)  # < 2^32
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_int32(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of `pack_int32`: (rows, cols) uint8 codes."""
    per = 32 // bits
    w = packed.to(torch.int64) & 0xFFFFFFFF
    c = (w.unsqueeze(-1) >> (bits * torch.arange(per, device=packed.device))) & (2**bits - 1)
    return c.reshape(packed.shape[0], -1)[:, :cols].to(torch.uint8)


def pack_mask(keep: torch.Tensor) -> torch.Tensor:
    """(rows, cols) bool -> (rows, ceil(cols/8)) uint8, numpy.packbits(axis=-1, bitorder='little'): compressed-tensors'
    bitmask layout, used for every keep-mask (records, sparse-24-bitmask, the quantized layouts' keep_bits)."""
    return torch.from_numpy(np.packbits(keep.detach().cpu().numpy(), axis=-1, bitorder="little"))


def unpack_mask(bits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    rows, cols = shape
    out = np.unpackbits(bits.cpu().numpy(), axis=-1, count=cols, bitorder="little")
    return torch.from_numpy(out.astype(bool)).reshape(rows, cols)
