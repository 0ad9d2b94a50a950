"""cuSPARSELt with plans made once per shape (prefill path): a small C++ shim built on first use.

The shim (csrc/cslt_shim.cpp) is compiled with g++ against the cuSPARSELt header and library of the
`nvidia-cusparselt` wheel that torch itself loads, cached under the project cache, and called through ctypes.
Per (N, K, M, dtype) it keeps one plan, tuned once with cusparseLtMatmulSearch on the first call's operands;
a matmul is then one library call (no per-call descriptor/plan set-up, unlike torch._cslt_sparse_mm).
If the shim cannot be built or loaded, `backend()` falls back to torch._cslt_sparse_mm with a searched alg id.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from compress.runtime.build import build_and_load, cuda_home, report_unavailable

SRC = Path(__file__).with_name("csrc") / "cslt_shim.cpp"
KERNEL = f"the cached-plan cuSPARSELt shim ({SRC.name})"  # as reported when it cannot be used
DTYPE_CODE = {torch.bfloat16: 0, torch.float16: 1}
PAD_M = 16


def _candidate_dirs() -> list[Path]:
    roots = []
    try:
        import nvidia  # the CUDA wheels torch depends on

        roots += [Path(p) for p in nvidia.__path__]
    except ImportError:
        pass
    return roots + [cuda_home()]


def _find(name: str, sub: str) -> Path | None:
    for root in _candidate_dirs():
        hits = sorted(root.glob(f"**/{sub}/{name}")) if root.exists() else []
        if hits:
            return hits[0].parent
    return None


def build_with_cusparselt(src: Path, what: str) -> ctypes.CDLL:
    """Build a C++ source against the cuSPARSELt header and library of the `nvidia-cusparselt` wheel (g++, once,
    cached) and load it; RuntimeError naming what is missing."""
    inc = _find("cusparseLt.h", "include")
    lib = _find("libcusparseLt.so.0", "lib")
    cusparse_inc = _find("cusparse.h", "include")
    crt_inc = _find("host_defines.h", "include/crt")
    if not (inc and lib and cusparse_inc and crt_inc):
        raise RuntimeError(
            f"cuSPARSELt headers/library not found (cusparseLt.h {inc}, libcusparseLt.so.0 {lib}, "
            f"cusparse.h {cusparse_inc}, crt/host_defines.h {crt_inc}); install nvidia-cusparselt and the CUDA headers"
        )
    incs = {inc, cusparse_inc, crt_inc.parent}
    cmd = ["g++", "-O2", "-std=c++17", "-shared", "-fPIC", str(src)]
    cmd += [f"-I{d}" for d in sorted(incs)] + [f"-L{lib}", "-l:libcusparseLt.so.0", f"-Wl,-rpath,{lib}"]
    return build_and_load(src, cmd, what)


@lru_cache(maxsize=1)
def load_shim() -> ctypes.CDLL:
    """Build (once, cached) and load the shim; RuntimeError naming what is missing."""
    so = build_with_cusparselt(SRC, "the cuSPARSELt shim")
    so.cslt_last_error.restype = ctypes.c_char_p
    lng, i32, ptr, sz = ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    pi32, psz = ctypes.POINTER(i32), ctypes.POINTER(sz)
    so.cslt_compressed_size.argtypes = [lng, lng, i32, psz, psz]
    so.cslt_compress.argtypes = [lng, lng, i32, ptr, ptr, ptr, ptr]
    so.cslt_plan.argtypes = [lng, lng, lng, i32, ctypes.POINTER(ptr), psz, pi32]
    so.cslt_search.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, psz, pi32]
    so.cslt_matmul.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr]
    _check(so, so.cslt_init(), "cusparseLtInit")
    return so


def _check(so, rc: int, what: str) -> None:
    if rc:
        raise RuntimeError(f"{what}: {so.cslt_last_error().decode()}")


def bucket(m: int) -> int:
    """The M a call of m tokens is planned and run at: a multiple of 16 up to 64, of 64 up to 1024, then of 256.
    cuSPARSELt refuses M not a multiple of 8 (bench/cslt_probe.py: 2047, 100 and 17 fail) and a plan's first call
    runs cusparseLtMatmulSearch (45-215 ms on the H200), so a new prompt length reuses the plan of its bucket."""
    step = PAD_M if m <= 64 else 64 if m <= 1024 else 256
    return -(-m // step) * step


def _pad_rows(x: torch.Tensor) -> torch.Tensor:
    """x (M, K) with zero rows appended up to `bucket(M)`."""
    extra = bucket(x.shape[0]) - x.shape[0]
    return torch.nn.functional.pad(x, (0, 0, 0, extra)) if extra else x


def _stream(device: torch.device) -> int:
    return torch._C._cuda_getCurrentRawStream(device.index)


class Plans:
    """Plan, workspace and algorithm per (N, K, M, dtype), shared by every weight of that shape."""

    def __init__(self):
        self.so = load_shim()
        self.device = torch.cuda.current_device()  # the shim's cuSPARSELt handle belongs to this GPU
        self.cache: dict[tuple, tuple[int, torch.Tensor]] = {}  # key -> (plan, workspace)

    def _same_device(self, t: torch.Tensor) -> None:
        if t.device.index != self.device:
            raise ValueError(
                f"the cuSPARSELt shim runs on cuda:{self.device} only, got a tensor on {t.device}; "
                "put the model on one GPU (multi-GPU prefill is not supported)"
            )

    def compress(self, W: torch.Tensor) -> torch.Tensor:
        """cuSPARSELt's compressed form (values + its own metadata) of a 2:4 CUDA weight (N, K)."""
        self._same_device(W)
        n, k = W.shape
        code = DTYPE_CODE[W.dtype]
        size, buf = ctypes.c_size_t(), ctypes.c_size_t()
        _check(self.so, self.so.cslt_compressed_size(n, k, code, ctypes.byref(size), ctypes.byref(buf)), "size")
        out = torch.empty(size.value, dtype=torch.uint8, device=W.device)
        scratch = torch.empty(max(buf.value, 1), dtype=torch.uint8, device=W.device)
        W = W.contiguous()
        _check(
            self.so,
            self.so.cslt_compress(n, k, code, W.data_ptr(), out.data_ptr(), scratch.data_ptr(), _stream(W.device)),
            "cusparseLtSpMMACompress2",
        )
        return out

    def matmul(self, packed: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
        """x (M, K) contiguous @ W^T -> (M, N), W given by its compressed form (M padded to its bucket)."""
        m = x.shape[0]
        y = self._matmul(packed, _pad_rows(x), n)
        return y if y.shape[0] == m else y[:m]

    def _matmul(self, packed: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
        self._same_device(x)
        m, k = x.shape
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        key = (n, k, m, x.dtype)
        entry = self.cache.get(key)
        if entry is None:
            plan, ws, alg = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_int()
            rc = self.so.cslt_plan(
                n, k, m, DTYPE_CODE[x.dtype], ctypes.byref(plan), ctypes.byref(ws), ctypes.byref(alg)
            )
            _check(self.so, rc, "cusparseLt plan")
            work = torch.empty(max(ws.value, 1) * 4, dtype=torch.uint8, device=x.device)  # search may need more
            rc = self.so.cslt_search(
                plan, packed.data_ptr(), x.data_ptr(), y.data_ptr(), work.data_ptr(), _stream(x.device),
                ctypes.byref(ws), ctypes.byref(alg),
            )  # fmt: skip
            _check(self.so, rc, "cusparseLtMatmulSearch")
            if ws.value > work.numel():
                work = torch.empty(ws.value, dtype=torch.uint8, device=x.device)
            entry = self.cache[key] = (plan.value, work)
        plan, work = entry
        stream = _stream(x.device)
        rc = self.so.cslt_matmul(plan, packed.data_ptr(), x.data_ptr(), y.data_ptr(), work.data_ptr(), stream)
        _check(self.so, rc, "cusparseLtMatmul")
        return y


class TorchCslt:
    """Fallback: torch's own cuSPARSELt ops (descriptors and plan rebuilt on every call)."""

    def __init__(self):
        self.alg: dict[tuple, int] = {}

    def compress(self, W: torch.Tensor) -> torch.Tensor:
        return torch._cslt_compress(W.contiguous())

    def matmul(self, packed: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
        xp = _pad_rows(x)
        key = (n, *xp.shape, xp.dtype)
        if key not in self.alg:
            self.alg[key] = torch._cslt_sparse_mm_search(packed, xp.t())
        return torch._cslt_sparse_mm(packed, xp.t(), transpose_result=True, alg_id=self.alg[key])[: x.shape[0]]


@lru_cache(maxsize=1)
def backend():
    """The prefill backend: the cached-plan shim, else torch's per-call cuSPARSELt (reported once, with why)."""
    try:
        return Plans()
    except (RuntimeError, OSError) as e:
        fallback = "cuSPARSELt calls use torch._cslt_sparse_mm instead (descriptors and plan rebuilt on every call)"
        report_unavailable(KERNEL, str(e).strip() or type(e).__name__, fallback)
        return TorchCslt()
