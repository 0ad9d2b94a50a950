"""The CUDA 2:4 decode GEMV (csrc/sparse24_gemv.cu, M <= 8 tokens): built with nvcc on first use, cached, called
through ctypes on torch's current stream (so it is captured by CUDA graphs like any other kernel).

The kernel reads format24's packed bf16 and int4 layouts as stored; its launch shape (rows per warp, warps per
block) is chosen per (N, K, format, M) by `tune` (a one-time timing over `LAUNCHES`) and cached here.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from compress.runtime.build import build_cuda, build_error, operand_problems
from compress.runtime.timing import fastest

SRC = Path(__file__).with_name("csrc") / "sparse24_gemv.cu"
WHAT = "the CUDA 2:4 decode kernel"
KERNEL = f"{WHAT} ({SRC.name})"  # as reported when it cannot be used
MAX_M = 8
# (rows per warp, warps per block, x staged in shared memory)
LAUNCHES = [(r, w, sm) for sm in (1, 0) for r in (1, 2, 4) for w in (4, 8)]
DEFAULT_LAUNCH = (2, 4, 1)
_launch: dict[tuple, tuple[int, int, int]] = {}  # (N, K, int4, M) -> launch, filled by tune()


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL:
    """Build (once per source, toolkit and GPU architecture) and load the kernel library."""
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    return build_cuda(SRC, WHAT, {
        "s24_gemv": ([ptr] * 5 + [i32] * 7 + [ptr], i32),
        "s24_error_string": ([i32], ctypes.c_char_p),
    })  # fmt: skip


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why the kernel cannot run here, or None when it is built and loaded (tried once per process: a failed
    build is not retried per layer). `linear.check_kernels` reports it, with the path used instead."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    return build_error(load)


def check(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor | None, meta: torch.Tensor, int4: bool) -> None:
    """ValueError naming the problem unless the operands fit the kernel (it reads raw pointers, so a wrong
    dtype or shape would compute garbage or read out of bounds)."""
    m, k = x.shape
    n = meta.shape[0]
    want = {"meta": (meta, (n, k // 32), torch.int32)}
    if int4:
        want["qweight"] = (w, (n, k // 16), torch.int32)
        want["scales"] = (scales, (n, k // 128), torch.bfloat16)
    else:
        want["values"] = (w, (n, k // 2), torch.bfloat16)
    problems = operand_problems(x, m, MAX_M, k, 128 if int4 else 64, want)
    if problems:
        raise ValueError("CUDA 2:4 GEMV: " + "; ".join(problems))


def gemv(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor | None, meta: torch.Tensor, int4: bool,
         launch: tuple[int, int, int] | None = None) -> torch.Tensor:  # fmt: skip
    """x (M <= 8, K) bf16 @ W^T for the packed layout (bf16: w = values; int4: w = qweight + scales) -> (M, N)."""
    check(x, w, scales, meta, int4)
    m, k = x.shape
    n = meta.shape[0]
    x = x.contiguous()
    if x.data_ptr() % 16:  # a view into a larger activation; the kernel reads x in 16-byte words
        x = x.clone()
    rows, warps, smem = launch or _launch.get((n, k, int4, m), DEFAULT_LAUNCH)
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    s = scales.data_ptr() if scales is not None else None
    with torch.cuda.device(x.device):  # the kernel launches on the current device
        rc = load().s24_gemv(
            x.data_ptr(), w.data_ptr(), s, meta.data_ptr(), y.data_ptr(), m, n, k, int(int4), rows, warps, smem,
            torch.cuda.current_stream(x.device).cuda_stream,
        )  # fmt: skip
    if rc:
        raise RuntimeError(f"CUDA 2:4 kernel launch failed: {load().s24_error_string(rc).decode()}")
    return y


def tune(key: tuple, run) -> dict:
    """Time `run(launch)` for every launch shape (GPU time, CUDA-graph replay) and keep the fastest for `key`
    = (N, K, int4, M). Returns {"rows x warps": µs}."""
    _launch[key], times = fastest(LAUNCHES, run)
    return {"x".join(map(str, lw)): t for lw, t in times.items()}
