"""Fast 2:4 runtime: Linear layers that compute on the compressed weights.

- `format24`: the packed layouts (bf16 values + 2-bit positions; int4 values + group scales) and their
  pure-torch reference matmuls, used on CPU and as the test oracle.
- `triton_decode`: Triton kernels for small M (decode) reading the packed layouts directly.
- `cusparselt`: cuSPARSELt with descriptors and plans made once per shape and reused (prefill, large M).
- `linear`: `Sparse24Linear`, which picks the path by device and M; `model`: swapping a model's Linears.
"""
