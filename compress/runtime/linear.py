"""`Sparse24Linear`: a Linear whose weight lives only in a packed 2:4 form (bf16 or int4 values + 2-bit
positions), computing on it directly. Path by device, M (tokens in the call) and a per-shape table:
  CPU                        -> the pure-torch reference (format24): unpack, then a dense matmul;
  CUDA, M > decode_max_m     -> cuSPARSELt on the sparse tensor cores with cached plans (prefill);
  CUDA, M <= decode_max_m    -> "cuda" (our CUDA-core GEMV reading the packed form, M <= 8), "mma" (our
                                tensor-core `mma.sp` kernel on a fragment-ordered copy, M <= 64), "triton" (our
                                Triton kernels, any M) or "cusparselt" (M padded to 16), whichever
                                `choose_paths` measured fastest for this (N, K, format, M) on this GPU (a one-time
                                search, kept on each layer); before a search: cuda, then mma, where they apply,
                                else triton for int4 and cuSPARSELt for bf16.
`prepare_gpu()` makes the cuSPARSELt form (from the dequantised weight) and the fragment-ordered copy (from the
packed values, or int4 nibbles and scales, as stored) on the GPU and builds the CUDA kernels; a kernel that
cannot be built is reported once (`check_kernels`: which, why, and the path its calls take instead). Under
torch.compile the layer calls one opaque custom op (`llm_compress::sparse24_mm`), so the compiler fuses the
surrounding element-wise work and leaves the sparse matmul to our kernels. The op takes the layer's path table
(the path of every M up to decode_max_m + 1, the last for all larger M) and reads it on the real M when it runs,
so the choice adds no guard on M and no recompile beyond a dense Linear's (a user's `torch.compile(model)` over
prompts of many lengths). Dynamo shows a symbolic size to Python as a plain int, so the table cannot be cut to
one entry for fixed shapes without guarding on M.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.runtime import format24
from compress.runtime.timing import fastest

DECODE_MAX_M = 64
CUDA_MAX_M = 8  # the CUDA GEMV's largest M (compress/runtime/cuda_decode.py)
MMA_MAX_M = 64  # the tensor-core kernel's largest M (compress/runtime/cuda_mma.py)


def check_kernels(int4: bool) -> tuple[bool, bool]:
    """(CUDA GEMV usable, tensor-core kernel usable) on this machine, building them on first use. Each that is not
    is reported once per process (build.report_unavailable, a KernelUnavailableWarning) with the reason and the
    path its calls take instead (before `choose_paths`; that search then picks the fastest remaining path)."""
    from compress.runtime import cuda_decode, cuda_mma
    from compress.runtime.build import report_unavailable

    gemv, mma = cuda_decode.unavailable(), cuda_mma.unavailable()
    rest = "Triton" if int4 else "cuSPARSELt"  # `path`'s order after the two CUDA kernels
    later = " (or the fastest remaining path once choose_paths has measured)"
    if gemv is not None:
        instead = "the tensor-core 2:4 kernel" if mma is None else rest
        report_unavailable(cuda_decode.KERNEL, gemv, f"calls of 1-{CUDA_MAX_M} tokens use {instead} instead{later}")
    if mma is not None:
        span = f"{CUDA_MAX_M + 1}-{MMA_MAX_M}" if gemv is None else f"1-{MMA_MAX_M}"
        report_unavailable(cuda_mma.KERNEL, mma, f"calls of {span} tokens use {rest} instead{later}")
    return gemv is None, mma is None


def sparse24_mm(x2, w, scales, meta, cslt, n: int, int4: bool, path: str, launch=None) -> torch.Tensor:
    """x2 (M, K) contiguous CUDA @ W^T -> (M, N) through one named path; w = values (bf16) or qweight (int4).
    `launch`: the CUDA kernels' launch shape (default: the tuned one)."""
    if path == "cuda":
        from compress.runtime import cuda_decode

        return cuda_decode.gemv(x2, w, scales, meta, int4, launch)
    if path == "mma":  # w, scales, meta = the fragment-ordered copies (afrag/qfrag, sfrag, efrag)
        from compress.runtime import cuda_mma

        return cuda_mma.mm(x2, w, meta, scales, n, int4, launch)
    if path == "triton":
        from compress.runtime import triton_decode

        if int4:
            return triton_decode.sparse24_int4_matmul(x2, w, scales, meta)
        return triton_decode.sparse24_matmul(x2, w, meta)
    from compress.runtime.cusparselt import backend

    return backend().matmul(cslt, x2, n)


PATHS = ("cuda", "mma", "triton", "cusparselt")  # the op's path codes


def reference_mm(x2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """x2 @ W^T in fp32, back in x2's dtype: the CPU path (eager, and the op's under torch.compile)."""
    return (x2.float() @ W.float().t()).to(x2.dtype)


@torch.library.custom_op("llm_compress::sparse24_mm", mutates_args=())
def sparse24_mm_op(
    x2: torch.Tensor,
    w: torch.Tensor | None,
    scales: torch.Tensor | None,
    meta: torch.Tensor | None,
    cslt: torch.Tensor | None,
    mma_a: torch.Tensor | None,
    mma_s: torch.Tensor | None,
    mma_e: torch.Tensor | None,
    n: int,
    int4: bool,
    table: list[int],
) -> torch.Tensor:
    """x2 (M, K) @ W^T on the path PATHS[table[min(M, len(table)) - 1]] (w, scales, meta: the packed form;
    mma_*: the fragment copy); on the CPU the reference (unpack, dense matmul in fp32) whatever the table."""
    if not x2.is_cuda:
        return reference_mm(x2, format24.unpack_24(format24.dequantize_int4(w, scales) if int4 else w, meta))
    path = PATHS[table[min(x2.shape[0], len(table)) - 1]]
    if path == "mma":
        return sparse24_mm(x2, mma_a, mma_s, mma_e, None, n, int4, path)
    return sparse24_mm(x2, w, scales, meta, cslt, n, int4, path)


@sparse24_mm_op.register_fake
def _(x2, w, scales, meta, cslt, mma_a, mma_s, mma_e, n, int4, table):
    return x2.new_empty((x2.shape[0], n))


class Sparse24Linear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        meta: torch.Tensor,
        values: torch.Tensor | None = None,
        qweight: torch.Tensor | None = None,
        scales: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        decode_max_m: int = DECODE_MAX_M,
    ):
        super().__init__()
        if (values is None) == (qweight is None):
            raise ValueError("give either bf16 `values` or int4 `qweight` + `scales`")
        self.in_features, self.out_features, self.decode_max_m = in_features, out_features, decode_max_m
        self._int4 = qweight is not None
        self.register_buffer("meta", meta)
        self.register_buffer("values", values)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        self.register_buffer("cslt", None)  # cuSPARSELt's compressed form, made by prepare_gpu()
        # the tensor-core kernel's fragment-ordered copy (mma_layout: afrag or qfrag, efrag, sfrag), ditto
        self.register_buffer("mma_a", None, persistent=False)  # derived on load: not in the state dict
        self.register_buffer("mma_e", None, persistent=False)
        self.register_buffer("mma_s", None, persistent=False)
        self.cuda_gemv = False  # the CUDA GEMV built and supports this shape (set by prepare_gpu())
        self.paths: dict[int, str] = {}  # M -> "cuda" | "mma" | "triton" | "cusparselt", set by choose_paths

    @property
    def int4(self) -> bool:
        return self._int4

    @property
    def packed(self) -> torch.Tensor | None:
        """The packed kept values the CUDA GEMV and Triton read: int4 `qweight` or bf16 `values` (None once
        `release_unused` freed them)."""
        return self.qweight if self.int4 else self.values

    @property
    def value_dtype(self) -> torch.dtype:
        """The dtype the layer computes in (of the values, or of the int4 scales)."""
        if self.packed is None:
            return self.mma_s.dtype if self.int4 else torch.bfloat16  # the fragment copy is bf16 by construction
        return self.scales.dtype if self.int4 else self.values.dtype

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, keep: torch.Tensor, int4: bool = False, scales: torch.Tensor | None = None, **kw
    ) -> Sparse24Linear:
        """int4 with `scales` (N, K/128, the checkpoint's dtype): the weight already holds a quantization stage's
        symmetric 4-bit values on those scales, decoded in that dtype; they are packed exactly (format24.pack_int4).
        In a wider compute dtype (fp32 on the CPU) the layer computes scale * code exactly, so its weight is the
        checkpoint's decoded one before that decode's rounding to the scales' dtype. int4 without: round to
        nearest."""
        values, meta = format24.pack_24(linear.weight.data, keep)
        bias = None if linear.bias is None else linear.bias.data
        if int4 and scales is not None:
            # the checkpoint decoded scale * code in the scales' dtype (compressed-tensors does), so the codes are
            # checked there; the layer then computes scale * code in the compute dtype (exactly, in fp32)
            qweight = format24.pack_int4(values.to(scales.dtype), scales)
            computed = scales.to(values.dtype)
            if not torch.equal(computed.to(scales.dtype), scales):
                raise ValueError(
                    f"the checkpoint's {scales.dtype} scales do not fit {values.dtype}; load in {scales.dtype}"
                )
            return cls(linear.in_features, linear.out_features, meta, qweight=qweight, scales=computed, bias=bias, **kw)
        if int4:
            qweight, scales = format24.quantize_int4(values)
            return cls(linear.in_features, linear.out_features, meta, qweight=qweight, scales=scales, bias=bias, **kw)
        return cls(linear.in_features, linear.out_features, meta, values=values, bias=bias, **kw)

    def kept_values(self) -> torch.Tensor:
        return format24.dequantize_int4(self.qweight, self.scales) if self.int4 else self.values

    def dense_weight(self) -> torch.Tensor:
        """The (dequantised) dense weight this layer computes with (from the fragment copy once the packed form
        is released: the same values)."""
        if self.packed is None:
            from compress.runtime.mma_layout import dense_from_fragments

            W = dense_from_fragments(self.mma_a, self.mma_e, self.out_features, self.mma_s)
            return W.to(self.value_dtype)
        return format24.unpack_24(self.kept_values(), self.meta)

    def prepare_gpu(self) -> None:
        """Build the cuSPARSELt form and the tensor-core kernel's fragment-ordered copy on this layer's GPU, and
        the CUDA kernels (call after `.to('cuda')`)."""
        from compress.runtime import cuda_mma
        from compress.runtime.cusparselt import backend

        self.cslt = backend().compress(self.dense_weight())
        readable = self.value_dtype == torch.bfloat16 and self.in_features % 128 == 0  # by both CUDA kernels
        gemv, mma = check_kernels(self.int4) if readable else (False, False)
        self.cuda_gemv = gemv
        if mma:
            self.mma_a, self.mma_e, self.mma_s = cuda_mma.fragments(self.meta, self.values, self.qweight, self.scales)

    def can(self, path: str, m: int, dtype: torch.dtype) -> bool:
        """Whether `path` can run a CUDA call of m tokens of `dtype` on this layer."""
        if path == "cuda":
            return self.cuda_gemv and self.packed is not None and m <= CUDA_MAX_M and dtype == torch.bfloat16
        if path == "mma":
            return self.mma_e is not None and m <= MMA_MAX_M and dtype == torch.bfloat16
        if path == "triton":
            return self.packed is not None
        return path == "cusparselt" and self.cslt is not None

    def release_unused(self) -> int:
        """Free the weight forms that no call can reach any more, given the measured `paths` (call after
        `choose_paths`): the fragment copy when no M takes the tensor-core kernel, the packed form when every M
        takes the tensor-core kernel or cuSPARSELt. Returns the bytes freed. The dense weight stays recoverable
        from the form kept, and `path` never picks a freed form's kernel."""

        def nbytes(*ts):
            return sum(t.numel() * t.element_size() for t in ts if t is not None)

        if not self.paths or self.cslt is None:
            return 0  # before a search every kernel may still be picked
        used = {self.path(m) for m in range(1, self.decode_max_m + 1)} | {self.path(self.decode_max_m + 1)}
        freed = 0
        if "mma" not in used and self.mma_e is not None and self.packed is not None:
            freed += nbytes(self.mma_a, self.mma_e, self.mma_s)
            self.mma_a = self.mma_e = self.mma_s = None
        elif not used & {"cuda", "triton"} and self.mma_e is not None:
            freed += nbytes(self.values, self.qweight, self.scales, self.meta)
            self.values = self.qweight = self.scales = self.meta = None
        return freed

    def shape_key(self) -> tuple:
        """(N, K, int4, dtype): layers with equal keys run the same kernels equally fast."""
        return (self.out_features, self.in_features, self.int4, self.value_dtype)

    def path(self, m: int, dtype: torch.dtype = torch.bfloat16) -> str:
        """Which kernel a CUDA call with m tokens of `dtype` takes."""
        if m > self.decode_max_m:
            return "triton" if self.cslt is None else "cusparselt"  # (a released layer keeps cuSPARSELt's form)
        measured = [k for k in self.paths if k >= m]  # the nearest measured M at or above m
        chosen = self.paths[min(measured)] if measured else None
        if chosen and self.can(chosen, m, dtype):
            return chosen
        order = ("cuda", "mma", *(("triton", "cusparselt") if self.int4 else ("cusparselt", "triton")))
        return next(p for p in order if self.can(p, m, dtype))  # triton or cusparselt always can

    def _operands(self, x2: torch.Tensor, path: str) -> tuple:
        if path == "mma":
            return (x2, self.mma_a, self.mma_s, self.mma_e, None, self.out_features, self.int4, path)
        return (x2, self.packed, self.scales, self.meta, self.cslt, self.out_features, self.int4, path)

    def run_path(self, x2: torch.Tensor, path: str, launch=None) -> torch.Tensor:
        """x2 (M, K) contiguous CUDA -> (M, N) through one named path (no bias); `launch` for the CUDA kernels."""
        return sparse24_mm(*self._operands(x2, path), launch)

    def path_table(self, dtype: torch.dtype = torch.bfloat16) -> list[int]:
        """The compiled op's table (PATHS codes): path(1), ..., path(decode_max_m + 1), the last for every larger
        M (no M is compared in Python, so tracing adds no guard on it)."""
        return [PATHS.index(self.path(m, dtype)) for m in range(1, self.decode_max_m + 2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        m = x2.shape[0]
        if m == 0:  # (a symbolic size is ≥ 2 to the compiler: no guard)
            y = x2.new_empty((0, self.out_features))
        elif torch.compiler.is_compiling():  # CPU too: the op runs the reference there
            y = torch.ops.llm_compress.sparse24_mm(
                x2.contiguous(), self.packed, self.scales, self.meta, self.cslt, self.mma_a, self.mma_s, self.mma_e,
                self.out_features, self.int4, self.path_table(x.dtype),
            )  # fmt: skip
        elif not x2.is_cuda:
            y = reference_mm(x2, self.dense_weight())
        else:
            y = self.run_path(x2.contiguous(), self.path(m, x.dtype))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "int4 g128" if self.int4 else str(self.value_dtype).removeprefix("torch.")
        return f"in_features={self.in_features}, out_features={self.out_features}, 2:4 {kind}"


@torch.inference_mode()
def choose_paths(model: nn.Module, ms=(1, 2, 4, 8, 16, 32, 64), per_key: int = 8) -> dict[tuple, dict]:
    """Time every small-M path for every (N, K, format) of the model's CUDA Sparse24Linear layers and each M
    (over up to `per_key` distinct layers, so the weights do not sit in L2); every layer of that key records the
    fastest in its `paths`. The CUDA GEMV's launch shape and the tensor-core kernel's block size are tuned first
    (cuda_decode.tune, cuda_mma.tune).
    Returns {(N, K, int4, dtype, M): {"us": {path: µs}, "chosen": path, "cuda_launch": .., "mma_launch": ..}}."""
    from compress.runtime import cuda_decode, cuda_mma

    groups: dict[tuple, list[Sparse24Linear]] = {}
    for m in model.modules():
        if isinstance(m, Sparse24Linear) and m.meta.is_cuda and m.cslt is not None:
            groups.setdefault(m.shape_key(), []).append(m)
    report = {}
    for key, layers in groups.items():
        mods = layers[:per_key]
        dtype = key[3]
        for m in ms:
            if m > mods[0].decode_max_m:
                continue
            x = torch.randn(m, key[1], device=mods[0].meta.device, dtype=dtype)
            entry = {}
            paths = [p for p in ("cuda", "mma", "triton", "cusparselt") if mods[0].can(p, m, dtype)]
            for p, kernel in (("cuda", cuda_decode), ("mma", cuda_mma)):  # their launch shapes first
                if p in paths:
                    entry[f"{p}_launch"] = kernel.tune(
                        (key[0], key[1], key[2], m),
                        lambda lw, p=p, x=x, mods=mods: [mod.run_path(x, p, lw) for mod in mods],
                    )
            best, times = fastest(paths, lambda p, x=x, mods=mods: [mod.run_path(x, p) for mod in mods])
            times = {p: t / len(mods) for p, t in times.items()}
            for layer in layers:
                layer.paths[m] = best
            report[(*key, m)] = {"us": times, "chosen": best, **entry}
    return report
