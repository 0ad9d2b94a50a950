"""Fast 2:4 runtime: Linear layers that compute on the compressed weights.

- `format24`: the packed layouts (bf16 values + 2-bit positions; int4 values + group scales) and their
  pure-torch reference matmuls, used on CPU and as the test oracle.
- `cslt_layout`: cuSPARSELt's compressed form written and read in pure torch — the one resident weight form on
  a GPU (bf16; int4 keeps its nibbles and scales beside that form's metadata section).
- `cuda_mma` (+ `csrc/sparse24_mma.cu`): the tensor-core `mma.sp` kernel for decode (M <= 64) reading that form
  as it is, and the int4 -> bf16 values kernel of the int4 prefill; `mma_layout`: its register layout, emulated
  in pure torch for the CPU tests.
- `cusparselt` (+ `csrc/cslt_shim.cpp`): cuSPARSELt with descriptors and plans made once per shape (prefill).
- `build`: compiling and caching the native libraries on first use.
- `linear`: `Sparse24Linear`, which picks the path by device and M; `model`: swapping a model's Linears,
  `compile_forward`; `decoder`: the static-cache, CUDA-graph decode loop; `timing`: GPU timing for the path
  search; `pack`: the packed format; `convert` (`load_runtime_model`, `pack`), `generate`: the CLI commands.
"""
