"""The tensor-core 2:4 small-M kernel (csrc/sparse24_mma.cu, `mma.sp`, M <= 64 tokens): built with nvcc on
first use, cached, called through ctypes on torch's current stream (so CUDA graphs capture it).

It reads the fragment-ordered copies of mma_layout (made once per layer by `fragments`); the launch shape
(warps per block, 16-row tiles per block) is chosen per (N, K, format, M) by `tune` and cached here.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from compress.runtime import mma_layout
from compress.runtime.build import build_cuda, build_error, operand_problems
from compress.runtime.timing import fastest

SRC = Path(__file__).with_name("csrc") / "sparse24_mma.cu"
WHAT = "the tensor-core 2:4 kernel"
KERNEL = f"{WHAT} ({SRC.name})"  # as reported when it cannot be used
MAX_M = 64
WARPS = (4, 8)
ROWS = (1, 2, 4)  # 16-row tiles per block, sharing each x fragment; rows * ceil(M / 8) <= 8
_launch: dict[tuple, tuple[int, int]] = {}  # (N, K, int4, M) -> (warps, rows), filled by tune()
_resolved: dict[tuple, tuple[int, int]] = {}  # tuned_launch's answers, per call shape (emptied by tune)


def launches(m: int) -> list[tuple[int, int]]:
    """The (warps, rows) launch shapes the kernel takes for m tokens."""
    return [(w, r) for w in WARPS for r in ROWS if r * -(-m // 8) <= 8]


def default_launch(m: int) -> tuple[int, int]:
    return 8, max(r for r in ROWS if r * -(-m // 8) <= 8 and r <= -(-m // 4))


def tuned_launch(n: int, k: int, int4: bool, m: int) -> tuple[int, int]:
    """The launch `tune` found for this shape at m tokens, else at the nearest tuned M above m (when valid for
    m), else `default_launch(m)`. Resolved once per (N, K, int4, M) until the next `tune` (it runs on every
    call: the search over the tuned keys cost ~8 µs of host time per call)."""
    key = (n, k, int4, m)
    got = _resolved.get(key)
    if got is None:
        above = sorted(mm for (nn, kk, q, mm) in _launch if (nn, kk, q) == (n, k, int4) and mm >= m)
        got = next((_launch[(n, k, int4, mm)] for mm in above if _launch[(n, k, int4, mm)] in launches(m)), None)
        got = _resolved[key] = got or default_launch(m)
    return got


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL:
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    return build_cuda(SRC, WHAT, {
        "s24_mma": ([ptr] * 5 + [i32] * 6 + [ptr], i32),
        "s24_mma_probe": ([ptr] * 5, i32),
        "s24_mma_error_string": ([i32], ctypes.c_char_p),
    })  # fmt: skip


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why the kernel cannot run here, or None when it is built (tried once per process: a failed build is not
    retried per layer) for a GPU that has `mma.sp` with ordered metadata (sm_80 or newer; nvcc of CUDA 12.5 or
    newer). `linear.check_kernels` reports it, with the path used instead."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        return f"it needs sm_80 or newer (mma.sp with ordered metadata), this GPU is sm_{major}{minor}"
    return build_error(load)


def fragments(meta: torch.Tensor, values: torch.Tensor | None, qweight: torch.Tensor | None,
              scales: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """(a, e, s): the kernel's operands for one layer — afrag or qfrag, efrag, sfrag (int4 only)."""
    e = mma_layout.e_fragments(meta)
    if qweight is not None:
        return mma_layout.q_fragments(qweight), e, mma_layout.s_fragments(scales)
    return mma_layout.a_fragments(values), e, None


def _raise(rc: int) -> None:
    if rc:
        raise RuntimeError(f"tensor-core 2:4 kernel launch failed: {load().s24_mma_error_string(rc).decode()}")


def check(x: torch.Tensor, a: torch.Tensor, e: torch.Tensor, s: torch.Tensor | None, n: int, int4: bool) -> None:
    """ValueError naming the problem unless the operands fit the kernel (it reads raw pointers)."""
    m, k = x.shape
    nt, units = -(-n // mma_layout.TILE), k // mma_layout.UNIT
    want = {"efrag": (e, (nt, units, 16, 4), torch.int32)}
    if int4:
        want["qfrag"] = (a, (nt, units, 32, 4), torch.int32)
        want["sfrag"] = (s, (nt, units, 8, 2), torch.bfloat16)
    else:
        want["afrag"] = (a, (nt, units, 4, 32, 4), torch.int32)
    problems = operand_problems(x, m, MAX_M, k, mma_layout.UNIT, want)
    if problems:
        raise ValueError("tensor-core 2:4 kernel: " + "; ".join(problems))


def mm(x: torch.Tensor, a: torch.Tensor, e: torch.Tensor, s: torch.Tensor | None, n: int, int4: bool,
       launch: tuple[int, int] | None = None) -> torch.Tensor:  # fmt: skip
    """x (M <= 64, K) bf16 @ W^T -> (M, N), W given by its fragments (see `fragments`)."""
    check(x, a, e, s, n, int4)
    m, k = x.shape
    x = x.contiguous()
    if x.data_ptr() % 4:  # the kernel reads x in bf16 pairs
        x = x.clone()
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    warps, rows = launch or tuned_launch(n, k, int4, m)
    with torch.cuda.device(x.device):
        rc = load().s24_mma(
            x.data_ptr(), a.data_ptr(), e.data_ptr(), s.data_ptr() if s is not None else None, y.data_ptr(),
            m, n, k, int(int4), warps, rows, torch.cuda.current_stream(x.device).cuda_stream,
        )  # fmt: skip
    _raise(rc)
    return y


def tune(key: tuple, run) -> dict:
    """Time `run(launch)` for each launch shape (GPU time, CUDA-graph replay); keep the fastest for `key`
    = (N, K, int4, M). Returns {"warps x rows": µs}."""
    _launch[key], times = fastest(launches(key[3]), run)
    _resolved.clear()
    return {"x".join(map(str, lw)): t for lw, t in times.items()}


def probe(a: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """One `mma.sp` on raw per-lane registers: a, b (32, 4) int32, e (32,) int32 -> d (32, 4) fp32."""
    d = torch.empty((32, 4), dtype=torch.float32, device=a.device)
    with torch.cuda.device(a.device):
        _raise(load().s24_mma_probe(a.data_ptr(), b.data_ptr(), e.data_ptr(), d.data_ptr(),
                                    torch.cuda.current_stream(a.device).cuda_stream))  # fmt: skip
    return d
