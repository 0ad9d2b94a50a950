"""Build a small native library once per source and toolchain, cache it, load it with ctypes; and the operand
checks shared by the kernels called through ctypes.

Used by the cuSPARSELt shim (g++) and the decode kernels (nvcc): the output name carries a hash of the
source and the build command, so an edited source or another toolchain builds anew; the build writes to a
temporary file first, so an interrupted build never leaves a broken library behind. A kernel that cannot be
built or loaded is reported once per process (`report_unavailable`: which kernel, why, which path computes
instead), never silently skipped.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

from compress.assets import cache_dir


def cuda_home() -> Path:
    return Path(os.environ.get("CUDA_HOME") or "/usr/local/cuda")


class KernelUnavailableWarning(RuntimeWarning):
    """A native kernel could not be built or loaded; the runtime computes on another path."""


_reported: set[str] = set()  # kernels already reported in this process


def report_unavailable(kernel: str, reason: str, fallback: str) -> str:
    """Warn (once per `kernel` per process) that `kernel` is unavailable for `reason` and `fallback` computes
    instead; returns the message."""
    message = f"{kernel} is unavailable: {reason}; {fallback}"
    if kernel not in _reported:
        _reported.add(kernel)
        warnings.warn(message, KernelUnavailableWarning, stacklevel=2)
    return message


def check_source(src: Path) -> None:
    if not src.is_file():
        raise RuntimeError(f"its source {src} is missing (an install without the package's csrc/ files?)")


def build_and_load(src: Path, cmd: list[str], what: str) -> ctypes.CDLL:
    """Run `cmd + ["-o", OUT]` (cmd names `src`) unless OUT exists; load OUT. RuntimeError on a failed build."""
    check_source(src)
    key = hashlib.sha256(src.read_bytes() + " ".join(cmd).encode()).hexdigest()[:16]
    out = cache_dir() / "ext" / f"{src.stem}_{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        r = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
        if r.returncode:
            tail = r.stderr.strip()[-600:]
            raise RuntimeError(f"building {what} failed ({Path(cmd[0]).name} exit status {r.returncode}): {tail}")
        tmp.replace(out)
    return ctypes.CDLL(str(out))


def nvcc() -> str:
    found = shutil.which("nvcc")
    if found:
        return found
    if (cuda_home() / "bin" / "nvcc").exists():
        return str(cuda_home() / "bin" / "nvcc")
    raise RuntimeError("nvcc not found (put the CUDA toolkit's bin on PATH or set CUDA_HOME)")


def build_cuda(src: Path, what: str, signatures: dict) -> ctypes.CDLL:
    """Build a .cu source with nvcc for the current GPU's architecture (once, cached), load it and declare its
    functions: signatures[name] = (argtypes, restype)."""
    import torch

    check_source(src)
    compiler = nvcc()
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    cmd = [compiler, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "--use_fast_math"]
    cmd += [f"-gencode=arch=compute_{arch},code=sm_{arch}", str(src)]
    so = build_and_load(src, cmd, what)
    for name, (argtypes, restype) in signatures.items():
        getattr(so, name).argtypes, getattr(so, name).restype = argtypes, restype
    return so


def build_error(load) -> str | None:
    """Why `load()` (a cached builder) gives no library — a failed build, a missing toolchain or source, a library
    that does not load — or None when it does."""
    try:
        load()
        return None
    except (RuntimeError, OSError) as e:
        return str(e).strip() or type(e).__name__


def operand_problems(x, m: int, max_m: int, k: int, k_step: int, want: dict) -> list[str]:
    """What keeps the operands from a raw-pointer kernel: x (M, K) must be bf16 with 1 <= M <= max_m and K a
    multiple of k_step; each `want[name] = (tensor, shape, dtype)` contiguous, 16-byte aligned, on x's device."""
    import torch

    problems = []
    if x.dtype != torch.bfloat16:
        problems.append(f"x is {x.dtype}, the kernel computes bf16")
    if not 1 <= m <= max_m:
        problems.append(f"M = {m} tokens, the kernel takes 1..{max_m}")
    if k % k_step:
        problems.append(f"in-features {k} not divisible by {k_step}")
    for name, (t, shape, dtype) in want.items():
        if t is None or tuple(t.shape) != shape or t.dtype != dtype or not t.is_contiguous():
            got = None if t is None else (tuple(t.shape), t.dtype, "contiguous" if t.is_contiguous() else "strided")
            problems.append(f"{name} must be contiguous {dtype} {shape}, got {got}")
        elif t.device != x.device or t.data_ptr() % 16:
            problems.append(f"{name} must be 16-byte aligned on {x.device}")
    return problems
