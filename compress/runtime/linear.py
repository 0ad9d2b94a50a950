"""`Sparse24Linear`: a Linear whose weight lives only in a packed 2:4 form (bf16 or int4 values + 2-bit
positions), computing on it directly. Path by device, format and M (tokens in the call):
  CPU                                  -> the pure-torch reference (format24): unpack, then a dense matmul;
  CUDA, int4, M <= decode_max_m        -> the Triton kernel reading int4 nibbles + scales + metadata;
  CUDA, bf16, M <= decode_max_m        -> `small_m_path`: "cusparselt" (default) or "triton";
  CUDA, otherwise                      -> cuSPARSELt on the sparse tensor cores with cached plans.
The default for bf16 decode is cuSPARSELt (M padded to 16) because it measured faster than our Triton kernel
at every M on the H200 (BENCHMARKS.md); both stay selectable and benchmarked. The cuSPARSELt form is made on
the GPU by `prepare_prefill()` from the same (dequantised) weights.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.runtime import format24

DECODE_MAX_M = 64
SMALL_M_PATHS = ("cusparselt", "triton")


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
        small_m_path: str = "cusparselt",
    ):
        super().__init__()
        if (values is None) == (qweight is None):
            raise ValueError("give either bf16 `values` or int4 `qweight` + `scales`")
        if small_m_path not in SMALL_M_PATHS:
            raise ValueError(f"small_m_path {small_m_path!r} is unknown; allowed: {', '.join(SMALL_M_PATHS)}")
        self.in_features, self.out_features, self.decode_max_m = in_features, out_features, decode_max_m
        self.small_m_path = small_m_path
        self.register_buffer("meta", meta)
        self.register_buffer("values", values)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        self.register_buffer("cslt", None)  # cuSPARSELt's compressed form, made by prepare_prefill()

    @property
    def int4(self) -> bool:
        return self.qweight is not None

    @classmethod
    def from_linear(cls, linear: nn.Linear, keep: torch.Tensor, int4: bool = False, **kw) -> Sparse24Linear:
        values, meta = format24.pack_24(linear.weight.data, keep)
        bias = None if linear.bias is None else linear.bias.data
        if int4:
            qweight, scales = format24.quantize_int4(values)
            return cls(linear.in_features, linear.out_features, meta, qweight=qweight, scales=scales, bias=bias, **kw)
        return cls(linear.in_features, linear.out_features, meta, values=values, bias=bias, **kw)

    def kept_values(self) -> torch.Tensor:
        return format24.dequantize_int4(self.qweight, self.scales) if self.int4 else self.values

    def dense_weight(self) -> torch.Tensor:
        """The (dequantised) dense weight this layer computes with."""
        return format24.unpack_24(self.kept_values(), self.meta)

    def prepare_prefill(self) -> None:
        """Build the cuSPARSELt form on this layer's GPU (call after `.to('cuda')`)."""
        from compress.runtime.cusparselt import backend

        self.cslt = backend().compress(self.dense_weight())

    def path(self, m: int) -> str:
        """Which kernel a CUDA call with m tokens takes."""
        if self.cslt is None or (m <= self.decode_max_m and (self.int4 or self.small_m_path == "triton")):
            return "triton"
        return "cusparselt"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if not x2.is_cuda:
            W = self.dense_weight()
            y = (x2.float() @ W.float().t()).to(x.dtype)
        elif self.cslt is None or (x2.shape[0] <= self.decode_max_m and (self.int4 or self.small_m_path == "triton")):
            from compress.runtime import triton_decode

            x2 = x2.contiguous()
            if self.int4:
                y = triton_decode.sparse24_int4_matmul(x2, self.qweight, self.scales, self.meta)
            else:
                y = triton_decode.sparse24_matmul(x2, self.values, self.meta)
        else:
            from compress.runtime.cusparselt import backend

            y = backend().matmul(self.cslt, x2.contiguous(), self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "int4 g128" if self.int4 else str(self.values.dtype).removeprefix("torch.")
        return f"in_features={self.in_features}, out_features={self.out_features}, 2:4 {kind}"
