"""Fast 2:4 runtime: Linear layers that compute on the compressed weights.

- `format24`: the packed layouts (bf16 values + 2-bit positions; int4 values + group scales) and their
  pure-torch reference matmuls, used on CPU and as the test oracle.
- `cuda_decode` (+ `csrc/sparse24_gemv.cu`): the CUDA GEMV for decode (M <= 8) reading the packed layouts.
- `triton_decode`: Triton kernels for small M reading the packed layouts directly (any M).
- `cusparselt` (+ `csrc/cslt_shim.cpp`): cuSPARSELt with descriptors and plans made once per shape (prefill).
- `build`: compiling and caching the two native libraries on first use.
- `linear`: `Sparse24Linear`, which picks the path by device and M; `model`: swapping a model's Linears,
  `compile_forward`; `decoder`: the static-cache, CUDA-graph decode loop; `timing`: GPU timing for the path
  search; `pack`: the packed format; `convert` (`load_runtime_model`, `pack`), `generate`: the CLI commands.
"""
