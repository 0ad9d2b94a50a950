"""cuSPARSELt's compressed 2:4 form, written and read without the library (pure tensor functions): the one
resident weight form of a bf16 Sparse24Linear (issue 16), read by cuSPARSELt for prefill and by our tensor-core
kernel for decode; for int4 its metadata section alone sits beside the packed nibbles.

The layout is undocumented; it was read off the bytes cusparseLtSpMMACompress2 writes (cuSPARSELt 0.8, H200,
our shim's descriptor: bf16, row-major (N, K), 50%) by bench/cslt_probe.py, and `prepare_gpu` checks it against
the library bit for bit on every new shape before trusting it (`check_against_library`):
  values  N*K bytes: the kept values row-major, (N, K/2) bf16, i.e. format24's `values` as they are;
  meta    ceil(N/64)*64 * K/8 bytes after them: 64-row x 32-column tiles (8 groups of 4 columns), tile
          (R, B) = rows 64R.., columns 32B.. at byte 256 * (R * K/32 + B); in a tile the 4-bit field of row r
          (0..63) and group j (0..7) — the two kept positions a < b as a | b << 2, format24's nibble — is nibble
          r3 | j2<<1 | j0<<2 | j1<<3 | (r&7)<<4 | (r>>4)<<7 (bit i of a number written x_i), low nibble first.
          Rows past N (N not a multiple of 64) hold 0xE (positions 2, 3).
So the 8 bytes at 256 * tile + 8 * ((r & 7) + 8 * (r >> 4 & 3)) hold the 16 fields of rows r and r + 8 (r3 = 0)
over one 32-column block: what one `mma.sp` k-tile needs for a lane pair (csrc/sparse24_mma.cu).
"""

from __future__ import annotations

import torch

from compress.runtime import format24
from compress.runtime.format24 import _to_int32

TILE_ROWS = 64  # rows per metadata tile
DTYPES = (torch.bfloat16, torch.float16)  # what the compressed form holds
_checked: set[tuple] = set()  # (N, K, dtype, backend) the library was found to agree on
PAD_NIBBLE = 0xE  # padding rows: positions (2, 3), as the library writes them


def meta_bytes(n: int, k: int) -> int:
    return -(-n // TILE_ROWS) * TILE_ROWS * k // 8


def compressed_bytes(n: int, k: int) -> int:
    """Bytes of the compressed form of an (N, K) bf16 2:4 weight (cusparseLtSpMMACompressedSize2's figure)."""
    return n * k + meta_bytes(n, k)


def _nibbles(meta: torch.Tensor) -> torch.Tensor:
    """format24 meta (N, K/32) int32 -> (N, K/4) int64 group fields a | b << 2 (8 per word, group j at bits 4j)."""
    m = meta.to(torch.int64) & 0xFFFFFFFF
    return ((m[..., None] >> (4 * torch.arange(8, device=meta.device))) & 15).reshape(meta.shape[0], -1)


def _tile_order(n_pad: int, k: int) -> tuple[int, ...]:
    """(R, rhi, r3, rlo, B, j2, j1, j0) view of the (N_pad, K/4) fields, then the permutation to the byte order."""
    return (n_pad // TILE_ROWS, 4, 2, 8, k // 32, 2, 2, 2)


# nibble order in a tile, outermost first: rhi (r>>4), rlo (r&7), j1, j0, j2, r3 -> dims of the view above
_PERM = (0, 4, 1, 3, 6, 7, 5, 2)


def to_meta(meta: torch.Tensor) -> torch.Tensor:
    """format24 meta (N, K/32) int32 -> cuSPARSELt's metadata section, uint8 (meta_bytes(N, K),)."""
    n, words = meta.shape
    k = words * 32
    f = _nibbles(meta)
    pad = -n % TILE_ROWS
    if pad:
        f = torch.cat([f, f.new_full((pad, f.shape[1]), PAD_NIBBLE)])
    f = f.reshape(_tile_order(n + pad, k)).permute(_PERM).reshape(-1, 2)
    return (f[:, 0] | (f[:, 1] << 4)).to(torch.uint8)


def from_meta(section: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """cuSPARSELt's metadata section -> format24 meta (N, K/32) int32 (the inverse of `to_meta`)."""
    b = section.to(torch.int64)
    f = torch.stack([b & 15, b >> 4], -1)
    n_pad = -(-n // TILE_ROWS) * TILE_ROWS
    dims = _tile_order(n_pad, k)
    f = f.reshape([dims[p] for p in _PERM]).permute(tuple(_PERM.index(i) for i in range(8))).reshape(n_pad, k // 4)
    f = f[:n].reshape(n, k // 32, 8) << (4 * torch.arange(8, device=section.device))
    return _to_int32(f.sum(-1))


def to_cslt(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """format24 (values (N, K/2) bf16, meta) -> the compressed form cusparseLtSpMMACompress2 writes, uint8."""
    if values.dtype not in DTYPES:
        raise ValueError(f"cuSPARSELt's form holds 16-bit values, got {values.dtype}")
    return torch.cat([values.contiguous().view(torch.uint8).reshape(-1), to_meta(meta)])


def values_view(buf: torch.Tensor, n: int, k: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The kept values (N, K/2) inside a compressed form (a view: no copy)."""
    return buf[: n * k].view(dtype).view(n, k // 2)


def meta_view(buf: torch.Tensor, n: int, k: int) -> torch.Tensor:
    return buf[n * k : n * k + meta_bytes(n, k)]


def from_cslt(
    buf: torch.Tensor, n: int, k: int, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    """The compressed form -> format24 (values, meta) (copies)."""
    if buf.numel() != compressed_bytes(n, k):
        raise ValueError(f"a compressed ({n}, {k}) weight has {compressed_bytes(n, k)} bytes, got {buf.numel()}")
    return values_view(buf, n, k, dtype).clone(), from_meta(meta_view(buf, n, k), n, k)


def random_keep(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """An exact 2:4 keep-mask (N, K), each group's pair uniform over the 6 (CPU, from `gen`)."""
    pairs = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]])
    return pairs[torch.randint(0, 6, (n, k // 4), generator=gen)].reshape(n, k).bool()


def probe_weight(n: int, k: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, keep): a seeded random 2:4 weight whose kept values are nonzero normals and whose other entries are
    +0.0 (a kept zero, or a -0.0, would leave the library free to store another pair of positions)."""
    gen = torch.Generator().manual_seed(n * 131 + k)
    keep = random_keep(n, k, gen)
    codes = torch.randint(0x3C00, 0x4400, (n, k), generator=gen, dtype=torch.int32).to(torch.int16)  # ~[1, 4)
    W = torch.where(keep, codes, torch.zeros((), dtype=torch.int16)).view(dtype)
    return W.to(device), keep.to(device)


def check_against_library(backend, n: int, k: int, dtype: torch.dtype, device) -> None:
    """RuntimeError unless the library's own compression of a probe weight of this shape equals `to_cslt`'s bit
    for bit (once per shape and process): the layout is read off the library, not documented by it."""
    key = (n, k, dtype, type(backend).__name__)
    if key in _checked:
        return
    W, keep = probe_weight(n, k, dtype, device)
    values, meta = format24.pack_24(W, keep)
    ours, lib = to_cslt(values, meta), backend.compress(W)
    if lib.numel() != ours.numel() or not torch.equal(lib, ours):
        same = lib.numel() == ours.numel() and torch.equal(lib[: n * k], ours[: n * k])
        what = "values agree, metadata differs" if same else "sizes or values differ"
        raise RuntimeError(
            f"cuSPARSELt's compressed form of a ({n}, {k}) {dtype} weight is not the layout this runtime writes and "
            f"reads (compress/runtime/cslt_layout.py; {what}): this cuSPARSELt build stores it another way; use "
            "the nvidia-cusparselt version the runtime was checked with (0.8), or re-derive the layout with "
            "bench/cslt_probe.py"
        )
    _checked.add(key)
