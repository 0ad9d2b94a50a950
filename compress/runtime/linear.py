"""`Sparse24Linear`: a Linear whose weight lives only in a packed 2:4 form (bf16 or int4 values + 2-bit
positions), computing on it directly.

Stored (state dict, packed checkpoints, the CPU): format24's buffers — `values` (bf16) or `qweight` + `scales`
(int4), and `meta`. On a GPU, `prepare_gpu()` turns them into **one resident form** (issue 16), read by every
path:
  bf16: `cslt` = cuSPARSELt's compressed form (cslt_layout: the kept values row-major, then the metadata in the
        library's order) — 1.125 bytes per weight, 56% of dense bf16; `values` and `meta` are dropped;
  int4: `qweight` + `scales` as stored, `cslt` = the metadata section alone in the library's order — 0.39 bytes
        per weight, 20% of dense; `meta` is dropped.
Paths on the GPU, by M (tokens in the call):
  M <= DECODE_MAX_M -> our tensor-core `mma.sp` kernel (csrc/sparse24_mma.cu) on that form or cuSPARSELt,
                       whichever `choose_paths` measured faster for this (N, K, format, M) (before it has: the
                       kernel up to DEFAULT_MMA_MAX_M);
  larger M          -> cuSPARSELt on the compressed form with cached plans (cusparselt.py); int4 first writes its
                       bf16 kept values into a per-device scratch compressed form (one kernel, ~1 byte per weight
                       written, then the metadata copied in), since cuSPARSELt has no int4 x bf16 product.
CPU: the pure-torch reference (unpack, dense matmul in fp32).

Under torch.compile the layer calls one opaque custom op (`llm_compress::sparse24_mm`) whose implementation picks
the path on the real M when it runs: no Python compare on M is traced, so the path choice adds no guard and no
recompile beyond a dense Linear's, and no per-layer Python state is read by the graph. Eager calls skip the
dispatcher and run the same function with operands checked once at `prepare_gpu` (host cost: one `torch.empty`
and one ctypes call on the decode path).
"""

from __future__ import annotations

import torch
from torch import nn

from compress.runtime import cslt_layout, format24
from compress.runtime.device_buffer import grown
from compress.runtime.timing import fastest

DECODE_MAX_M = 64  # the tensor-core kernel's largest M (compress/runtime/cuda_mma.py)
# before `choose_paths` has measured a shape, M up to this takes the kernel, larger M cuSPARSELt (on the H200 the
# kernel wins up to M = 16 and loses at 64 on every 7B shape: bench/runtime.json gemm)
DEFAULT_MMA_MAX_M = 32
MMA, CSLT = "mma", "cusparselt"
# (N, K, int4) -> the path of every M = 1..DECODE_MAX_M that `choose_paths` measured fastest (module level: the
# same for every layer of the shape, and never seen by the compiler)
_measured: dict[tuple, tuple[str, ...]] = {}
_scratch: dict[int, torch.Tensor] = {}  # device index -> the int4 prefill's compressed-form scratch


def check_kernels() -> bool:
    """Whether the tensor-core kernel is usable here, building it on first use; if not, reported once per process
    (build.report_unavailable, a KernelUnavailableWarning) with the reason and the path its calls take instead."""
    from compress.runtime import cuda_mma
    from compress.runtime.build import report_unavailable

    why = cuda_mma.unavailable()
    if why is not None:
        report_unavailable(cuda_mma.KERNEL, why, f"calls of 1-{DECODE_MAX_M} tokens use cuSPARSELt instead")
    return why is None


def reference_mm(x2: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """x2 @ W^T in fp32, back in x2's dtype: the CPU path (eager, and the op's under torch.compile)."""
    return (x2.float() @ W.float().t()).to(x2.dtype)


def scratch(device: torch.device, nbytes: int) -> torch.Tensor:
    """The per-device scratch compressed form of the int4 prefill, at least `nbytes` (device_buffer.grown; a layer
    moved to another GPU after preparing gets one on its first call)."""
    return grown(_scratch, device, nbytes, torch.uint8)


def path_of(n: int, k: int, int4: bool, m: int, mma: bool) -> str:
    if m > DECODE_MAX_M or not mma:
        return CSLT
    table = _measured.get((n, k, int4))
    if table is None:
        return MMA if m <= DEFAULT_MMA_MAX_M else CSLT
    return table[m - 1]


def sparse24_mm(x2: torch.Tensor, layer: Sparse24Linear, path: str | None = None, launch=None) -> torch.Tensor:
    """x2 (M, K) contiguous CUDA @ W^T -> (M, N) on a prepared layer's one form (path: by M unless given)."""
    m, k = x2.shape
    n, int4 = layer.out_features, layer.int4
    if x2.dtype != layer.value_dtype:
        raise ValueError(f"this 2:4 layer computes in {layer.value_dtype}, got {x2.dtype} input; cast the model")
    path = path or path_of(n, k, int4, m, layer.mma)
    if path == MMA:
        from compress.runtime import cuda_mma

        w, e, s = layer.pointers()
        if torch.cuda.current_device() != x2.device.index:  # the kernel launches on the current device
            with torch.cuda.device(x2.device):
                return cuda_mma.launch(x2, w, e, s, n, int4, launch)
        return cuda_mma.launch(x2, w, e, s, n, int4, launch)
    from compress.runtime.cusparselt import backend

    if not int4:
        return backend().matmul(layer.cslt, x2, n)
    from compress.runtime import cuda_mma

    nbytes = cslt_layout.compressed_bytes(n, k)
    buf = scratch(x2.device, nbytes)[:nbytes]
    with torch.cuda.device(x2.device):
        cuda_mma.int4_values(layer.qweight, layer.scales, cslt_layout.values_view(buf, n, k))
    cslt_layout.meta_view(buf, n, k).copy_(layer.cslt)
    return backend().matmul(buf, x2, n)


@torch.library.custom_op("llm_compress::sparse24_mm", mutates_args=())
def sparse24_mm_op(
    x2: torch.Tensor,
    w: torch.Tensor | None,
    scales: torch.Tensor | None,
    meta: torch.Tensor | None,
    cslt: torch.Tensor | None,
    n: int,
    int4: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """x2 (M, K) @ W^T for a layer given by its buffers: format24 (w = values or qweight, scales, meta) on the CPU,
    the prepared one form on a GPU (bf16: cslt; int4: qweight, scales, cslt metadata), the path chosen on the
    real M here, at run time. `dtype`: the layer's value dtype (the compressed form's bytes do not carry it)."""
    if not x2.is_cuda:
        if meta is None:
            meta = cslt_layout.from_meta(cslt[-cslt_layout.meta_bytes(n, x2.shape[1]) :], n, x2.shape[1])
            w = w if int4 else cslt_layout.values_view(cslt, n, x2.shape[1], dtype)
        return reference_mm(x2, format24.unpack_24(format24.dequantize_int4(w, scales) if int4 else w, meta))
    return sparse24_mm(x2, _Prepared(w, scales, cslt, n, x2.shape[1], int4, dtype))


@sparse24_mm_op.register_fake
def _(x2, w, scales, meta, cslt, n, int4, dtype):
    return x2.new_empty((x2.shape[0], n))


class _Prepared:
    """The operands of a prepared layer as the compiled op receives them (tensors, not the module)."""

    __slots__ = ("qweight", "scales", "cslt", "out_features", "in_features", "int4", "mma", "value_dtype")

    def __init__(self, w, scales, cslt, n, k, int4, dtype):
        self.qweight, self.scales, self.cslt = w, scales, cslt
        self.out_features, self.in_features, self.int4 = n, k, int4
        self.value_dtype = dtype
        self.mma = _mma_usable(n, k, self.value_dtype)

    def pointers(self):
        return _pointers(self.qweight, self.scales, self.cslt, self.out_features, self.in_features, self.int4)


def _mma_usable(n: int, k: int, dtype: torch.dtype) -> bool:
    from compress.runtime import cuda_mma

    return dtype == torch.bfloat16 and n % 16 == 0 and k % 128 == 0 and cuda_mma.unavailable() is None


def _pointers(qweight, scales, cslt, n: int, k: int, int4: bool) -> tuple[int, int, int | None]:
    if int4:
        return qweight.data_ptr(), cslt.data_ptr(), scales.data_ptr()
    return cslt.data_ptr(), cslt.data_ptr() + n * k, None


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
    ):
        super().__init__()
        if (values is None) == (qweight is None):
            raise ValueError("give either bf16 `values` or int4 `qweight` + `scales`")
        self.in_features, self.out_features = in_features, out_features
        self._int4 = qweight is not None
        self.register_buffer("meta", meta)
        self.register_buffer("values", values)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        # the GPU's one form, made by prepare_gpu() (bf16: the compressed form; int4: its metadata section);
        # derived on load, so not in the state dict (which always holds format24, see _save_to_state_dict)
        self.register_buffer("cslt", None, persistent=False)
        self.mma = False  # the tensor-core kernel reads this layer (set by prepare_gpu)
        self._resident_dtype: torch.dtype | None = None  # the values' dtype inside `cslt` (bf16 layers)
        self._ptrs: tuple = (None, None)  # (cslt's data_ptr, the kernel's operand pointers)

    @property
    def int4(self) -> bool:
        return self._int4

    @property
    def prepared(self) -> bool:
        return self.cslt is not None

    @property
    def value_dtype(self) -> torch.dtype:
        """The dtype the layer computes in (of the values, or of the int4 scales)."""
        if self.int4:
            return self.scales.dtype
        return self._resident_dtype if self.values is None else self.values.dtype

    @property
    def device(self) -> torch.device:
        return (self.scales if self.int4 else self.cslt if self.values is None else self.values).device

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

    def format24(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(values or qweight, meta) in format24, as stored (read back from the one form once prepared)."""
        n, k = self.out_features, self.in_features
        meta = self.meta
        if meta is None:
            section = self.cslt if self.int4 else cslt_layout.meta_view(self.cslt, n, k)
            meta = cslt_layout.from_meta(section, n, k)
        if self.int4:
            return self.qweight, meta
        values = self.values if self.values is not None else cslt_layout.values_view(self.cslt, n, k, self.value_dtype)
        return values, meta

    def kept_values(self) -> torch.Tensor:
        w, _ = self.format24()
        return format24.dequantize_int4(w, self.scales) if self.int4 else w

    def dense_weight(self) -> torch.Tensor:
        """The (dequantised) dense weight this layer computes with."""
        return format24.unpack_24(self.kept_values(), self.format24()[1])

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.prepared:  # the state dict holds format24 whatever the resident form (pack.py, load_packed)
            w, meta = self.format24()
            destination[prefix + "meta"] = meta
            if not self.int4:
                destination[prefix + "values"] = w.clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.prepared:
            raise RuntimeError(
                f"{prefix.rstrip('.')}: load a state dict into an unprepared layer (on the CPU), then move it to the "
                "GPU and prepare it (compress.runtime.model.prepare)"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def to_resident(self) -> None:
        """format24 -> the one resident form, in place on the layer's device (pure tensor work: the bf16 compressed
        form, or the int4 metadata section; the format24 buffers it replaces are dropped)."""
        if self.prepared:
            return
        if self.int4:
            self.cslt = cslt_layout.to_meta(self.meta)
        else:
            self.cslt = cslt_layout.to_cslt(self.values, self.meta)
            self._resident_dtype, self.values = self.values.dtype, None
        self.meta = None

    def prepare_gpu(self) -> None:
        """Turn the format24 buffers into the one resident form on this layer's GPU (call after `.to('cuda')`),
        after checking the library agrees with that form's layout for this shape, and build the tensor-core
        kernel; a layer it cannot read (dtype, shape, no kernel) takes cuSPARSELt at every M."""
        if self.prepared:
            return
        from compress.runtime import cuda_mma
        from compress.runtime.cusparselt import backend

        n, k = self.out_features, self.in_features
        dev = self.device
        if self.int4 and self.scales.dtype != torch.bfloat16:
            raise ValueError(f"int4 2:4 layers compute in bf16 on a GPU, got {self.scales.dtype} scales; load in bf16")
        if not self.int4 and self.values.dtype not in cslt_layout.DTYPES:
            raise ValueError(f"2:4 layers compute in bf16 or fp16 on a GPU, got {self.values.dtype}; load in bf16")
        with torch.cuda.device(dev):
            cslt_layout.check_against_library(backend(), n, k, self.value_dtype, dev)
            if self.int4:
                scratch(dev, cslt_layout.compressed_bytes(n, k))
            self.to_resident()
            self.mma = _mma_usable(n, k, self.value_dtype) and check_kernels()
            if self.mma:
                cuda_mma.reserve(dev, n)
        if self.mma:
            cslt = self.cslt
            w = self.qweight if self.int4 else cslt_layout.values_view(cslt, n, k, self.value_dtype)
            cuda_mma.check(w, cslt if self.int4 else cslt_layout.meta_view(cslt, n, k), self.scales, n, k, self.int4)

    def pointers(self) -> tuple[int, int, int | None]:
        """The tensor-core kernel's operand pointers (cached; recomputed when the buffers moved)."""
        key = self.cslt.data_ptr()
        if self._ptrs[0] != key:
            self._ptrs = (key, _pointers(self.qweight, self.scales, self.cslt, self.out_features, self.in_features,
                                         self.int4))  # fmt: skip
        return self._ptrs[1]

    def shape_key(self) -> tuple:
        """(N, K, int4): layers with equal keys run the same kernels equally fast."""
        return (self.out_features, self.in_features, self.int4)

    def path(self, m: int) -> str:
        """Which kernel a CUDA call with m tokens takes."""
        return path_of(self.out_features, self.in_features, self.int4, m, self.mma)

    def run_path(self, x2: torch.Tensor, path: str, launch=None) -> torch.Tensor:
        """x2 (M, K) contiguous CUDA -> (M, N) through one named path (no bias); `launch` for the mma kernel."""
        return sparse24_mm(x2, self, path, launch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x2.is_cuda and not self.prepared:
            raise RuntimeError("a CUDA Sparse24Linear must be prepared first: compress.runtime.model.prepare(model)")
        if x2.shape[0] == 0:  # (a symbolic size is ≥ 2 to the compiler: no guard)
            y = x2.new_empty((0, self.out_features))
        elif torch.compiler.is_compiling():  # CPU too: the op runs the reference there
            w = self.qweight if self.int4 else self.values
            y = torch.ops.llm_compress.sparse24_mm(
                x2.contiguous(), w, self.scales, self.meta, self.cslt, self.out_features, self.int4, self.value_dtype
            )
        elif not x2.is_cuda:
            y = reference_mm(x2, self.dense_weight())
        else:
            y = sparse24_mm(x2.contiguous(), self)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "int4 g128" if self.int4 else str(self.value_dtype).removeprefix("torch.")
        return f"in_features={self.in_features}, out_features={self.out_features}, 2:4 {kind}"


@torch.inference_mode()
def choose_paths(model: nn.Module, ms=(1, 2, 4, 8, 16, 32, 64), per_key: int = 8) -> dict[tuple, dict]:
    """Tune the tensor-core kernel's launch shape (cuda_mma.tune) and time it against cuSPARSELt for every
    (N, K, format) of the model's prepared CUDA layers and each M in `ms` (over up to `per_key` distinct layers, so
    the weights do not sit in L2); each M up to DECODE_MAX_M then takes the path measured fastest at the nearest
    measured M at or above it (M above the largest measured: the default rule).
    Returns {(N, K, int4, M): {"us": {path: µs}, "chosen": path, "mma_launch": ..}}."""
    from compress.runtime import cuda_mma

    groups: dict[tuple, list[Sparse24Linear]] = {}
    for m in model.modules():
        if isinstance(m, Sparse24Linear) and m.prepared and m.cslt.is_cuda and m.mma:
            groups.setdefault(m.shape_key(), []).append(m)
    report = {}
    for key, layers in groups.items():
        mods = layers[:per_key]
        best_at = {}
        for m in sorted(x for x in ms if x <= DECODE_MAX_M):
            x = torch.randn(m, key[1], device=mods[0].device, dtype=torch.bfloat16)
            launch = cuda_mma.tune((*key, m), lambda lw, x=x, mods=mods: [mod.run_path(x, MMA, lw) for mod in mods])
            best, times = fastest((MMA, CSLT), lambda p, x=x, mods=mods: [mod.run_path(x, p) for mod in mods])
            best_at[m] = best
            us = {p: t / len(mods) for p, t in times.items()}
            report[(*key, m)] = {"us": us, "chosen": best, "mma_launch": launch}
        if best_at:  # M above the largest measured keeps the default rule
            top = max(best_at)
            default = [MMA if m <= DEFAULT_MMA_MAX_M else CSLT for m in range(1, DECODE_MAX_M + 1)]
            _measured[key] = tuple(best_at[min(x for x in best_at if x >= m)] if m <= top else default[m - 1]
                                   for m in range(1, DECODE_MAX_M + 1))  # fmt: skip
    return report
