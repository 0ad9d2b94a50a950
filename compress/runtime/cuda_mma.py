"""The tensor-core 2:4 small-M kernel (csrc/sparse24_mma.cu, `mma.sp`, M <= 64 tokens) and the int4 -> bf16
values kernel (int4 prefill): built with nvcc on first use, cached, called through ctypes on torch's current
stream (so CUDA graphs capture them).

The kernel reads the layer's one resident form as it is (mma_layout: row-major kept values, cuSPARSELt-order
metadata). The operands are checked once, when a layer is prepared (`check`); a call (`launch`) passes raw
pointers with no per-call checks beyond x's, so its host cost is one `torch.empty` and one ctypes call. The launch
shape (warps per block, 16-row tiles per block; or the tiled variant for M > 8 — x staged in shared memory for
more row tiles, split-K — with its warps, tiles per warp and splits) is chosen per (N, K, format, M) by `tune`
and cached here.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from compress.runtime import mma_layout
from compress.runtime.build import build_cuda, build_error, operand_problems
from compress.runtime.device_buffer import grown
from compress.runtime.timing import fastest

SRC = Path(__file__).with_name("csrc") / "sparse24_mma.cu"
WHAT = "the tensor-core 2:4 kernel"
KERNEL = f"{WHAT} ({SRC.name})"  # as reported when it cannot be used
MAX_M = 64
WARPS = (4, 8)
ROWS = (1, 2, 4)  # 16-row tiles per block, sharing each x fragment; rows * ceil(M / 8) <= 8
# the tiled variant (x staged in shared memory for the block's warps * tiles_per_warp row tiles, split-K): its
# launch shapes are ("tiled", warps, tiles per warp, splits), searched for M > TILED_MIN_M
TILED = "tiled"
TILED_MIN_M = 8
TILED_SHAPES = tuple((TILED, w, tpw, sp) for w in (4, 8) for tpw in (1, 2) for sp in (1, 2, 4, 8, 16))
MAX_SPLITS = max(sp for *_, sp in TILED_SHAPES)
COUNTERS = 4096  # split-K counters per device: row blocks of up to 4096 * 64 output features
_partials: dict[int, torch.Tensor] = {}  # device index -> the split-K fp32 partial sums
_counters: dict[int, torch.Tensor] = {}  # device index -> the split-K counters, one per row block
_launch: dict[tuple, tuple[int, int]] = {}  # (N, K, int4, M) -> (warps, rows), filled by tune()
_resolved: dict[tuple, tuple[int, int]] = {}  # tuned_launch's answers, per call shape (emptied by tune)


def launches(m: int) -> list[tuple]:
    """The launch shapes for m tokens: (warps, rows) of the small-M kernel, and past TILED_MIN_M tokens the tiled
    variant's ("tiled", warps, tiles per warp, splits)."""
    small = [(w, r) for w in WARPS for r in ROWS if r * -(-m // 8) <= 8]
    return small + (list(TILED_SHAPES) if m > TILED_MIN_M else [])


def reserve(device: torch.device, n: int) -> None:
    """The tiled variant's split-K workspace on `device`, big enough for n output features at MAX_M tokens
    (device_buffer.grown), and its counters (zero at allocation; every call leaves them zero)."""
    grown(_partials, device, MAX_SPLITS * MAX_M * n, torch.float32)
    if device.index not in _counters:
        _counters[device.index] = torch.zeros(COUNTERS, dtype=torch.int32, device=device)


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
        "s24_mma_tiled": ([ptr] * 7 + [i32] * 8 + [ptr], i32),
        "s24_mma_probe": ([ptr] * 5, i32),
        "s24_int4_values": ([ptr] * 3 + [i32] * 2 + [ptr], i32),
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


def _raise(rc: int) -> None:
    if rc:
        raise RuntimeError(f"tensor-core 2:4 kernel launch failed: {load().s24_mma_error_string(rc).decode()}")


def check(w: torch.Tensor, e: torch.Tensor, s: torch.Tensor | None, n: int, k: int, int4: bool) -> None:
    """ValueError naming the problem unless a layer's operands fit the kernel (it reads raw pointers): w = values
    (N, K/2) bf16 or qweight (N, K/16) int32, e = the cuSPARSELt-order metadata bytes, s = int4 scales."""
    from compress.runtime.cslt_layout import meta_bytes

    mma_layout.check_shape(n, k)
    if n > COUNTERS * 64:
        raise ValueError(f"tensor-core 2:4 kernel: at most {COUNTERS * 64} output features, got {n}")
    want = {"metadata": (e, (meta_bytes(n, k),), torch.uint8)}
    if int4:
        want["qweight"] = (w, (n, k // 16), torch.int32)
        want["scales"] = (s, (n, k // mma_layout.UNIT), torch.bfloat16)
    else:
        want["values"] = (w, (n, k // 2), torch.bfloat16)
    x = torch.empty(1, k, dtype=torch.bfloat16, device=e.device)
    problems = operand_problems(x, 1, MAX_M, k, mma_layout.UNIT, want)
    if problems:
        raise ValueError("tensor-core 2:4 kernel: " + "; ".join(problems))


def launch(x: torch.Tensor, w_ptr: int, e_ptr: int, s_ptr: int | None, n: int, int4: bool,
           shape: tuple[int, int] | None = None) -> torch.Tensor:  # fmt: skip
    """x (M <= 64, K) contiguous bf16 CUDA on the current device @ W^T -> (M, N), W given by the pointers of
    operands `check` accepted. `shape`: the launch shape (default: the tuned one)."""
    m, k = x.shape
    if x.data_ptr() % 4:  # the kernel reads x in bf16 pairs (a view at an odd offset)
        x = x.clone()
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    shape = shape or tuned_launch(n, k, int4, m)
    stream = torch._C._cuda_getCurrentRawStream(x.device.index)
    if shape[0] == TILED:
        _, warps, tpw, splits = shape
        wp = cp = None
        if splits > 1:
            ws = _partials.get(x.device.index)
            if ws is None or ws.numel() < splits * m * n:
                raise RuntimeError(f"no split-K workspace for {n} outputs on {x.device}: prepare the layer there first")
            wp, cp = ws.data_ptr(), _counters[x.device.index].data_ptr()
        rc = load().s24_mma_tiled(x.data_ptr(), w_ptr, e_ptr, s_ptr, y.data_ptr(), wp, cp, COUNTERS, m, n, k, int4,
                                  warps, tpw, splits, stream)  # fmt: skip
    else:
        warps, rows = shape
        rc = load().s24_mma(x.data_ptr(), w_ptr, e_ptr, s_ptr, y.data_ptr(), m, n, k, int4, warps, rows, stream)
    _raise(rc)
    return y


def int4_values(qweight: torch.Tensor, scales: torch.Tensor, out: torch.Tensor) -> None:
    """Write the bf16 kept values (N, K/2) of int4 qweight + scales into `out` (bf16, 16-byte aligned)."""
    n, words = qweight.shape
    stream = torch._C._cuda_getCurrentRawStream(qweight.device.index)
    _raise(load().s24_int4_values(qweight.data_ptr(), scales.data_ptr(), out.data_ptr(), n, words * 16, stream))


def tune(key: tuple, run) -> dict:
    """Time `run(launch)` for each launch shape (GPU time, CUDA-graph replay); keep the fastest for `key`
    = (N, K, int4, M). Returns {"warps x rows" or "tiled x warps x tiles per warp x splits": µs}."""
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
