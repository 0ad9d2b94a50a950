"""Quantized Linears in a checkpoint: which format holds a run's codes, how they are written and read back.

Two formats, chosen from what the records hold (never from names):
  compressed-tensors `pack-quantized` (compress/quant_format.py): every quantized Linear on one uniform integer grid
      of 2, 4 or 8 bits (RTN, GPTQ). transformers, vLLM and llm-compressor read it; we decode it with
      compressed-tensors' own PackedQuantizationCompressor. A 2:4 model's mask is metadata there (sparsity_config
      format "dense", structure "2:4"): compressed-tensors cannot compose its bitmask compressor with
      pack-quantized, and the zeros are exact codes anyway.
  `llm-compress-quant` (ours, `LAYOUTS`): everything else — 3-bit uniform grids (compressed-tensors 0.14 and 0.20
      pack 3 bits differently), SqueezeLLM's lookup tables + fp16 outliers, QuEST's Hadamard-basis codes. Each
      Linear's record tensors (quant/codes.py) are stored as `<module>.quant.<name>`; config.json's
      quantization_config names each module's format and shape and documents the layouts. Only our loader reads it.
Both decode to exactly the weights the pipeline evaluated (tests/test_quant_checkpoint.py).
"""

from __future__ import annotations

import torch

from quant.codes import UniformCodes, codes_from_saved

OURS = "llm-compress-quant"
FORMAT_VERSION = 1
LAYOUTS = {
    "uniform": "<m>.quant.packed uint8: little-endian bit stream of the (rows, cols) codes in [0, 2^b-1], code k "
    "in bits [k*b, (k+1)*b); <m>.quant.scale, <m>.quant.zero fp32 (rows, cols/group_size) ((1, 1) per tensor); "
    "W = scale * (code - zero) per group of group_size input columns",
    "lut": "<m>.quant.lut fp16 (rows, 2^b) centroids per output row; <m>.quant.packed: the (rows, cols) b-bit "
    "indices as a little-endian bit stream; outliers as CSR <m>.quant.crow int64 (rows+1), <m>.quant.col int64, "
    "<m>.quant.values fp16, replacing the table value at their positions; <m>.quant.keep_bits (optional) uint8 "
    "(rows, ceil(cols/8)) numpy packbits little-endian keep-mask, pruned positions exactly 0",
    "hadamard": "<m>.quant.packed: (rows, cols) b-bit codes (bit stream) of W·H, H the orthonormal block "
    "Walsh-Hadamard matrix of size `block` along in-features; <m>.quant.scale fp32 (rows, 1) = alpha_b * RMS(row); "
    "level = (code - (2^b-1)/2) * 2*scale/(2^b-1); W = fwht(levels) (block 0: no rotation, levels are W); "
    "<m>.quant.keep_bits as for lut",
}


def uses_pack_quantized(codes: dict) -> bool:
    """Whether compressed-tensors pack-quantized can hold every Linear's codes: one uniform spec of 2/4/8 bits."""
    from compress.quant_format import PACK_BITS

    if not codes or not all(isinstance(c, UniformCodes) for c in codes.values()):
        return False
    specs = {c.spec for c in codes.values()}
    return len(specs) == 1 and next(iter(specs)).bits in PACK_BITS


def encode(codes: dict, dtype: torch.dtype, ignore: list[str], sparsity_24: dict | None) -> tuple[dict, dict]:
    """(tensors keyed by full name, quantization_config) of the quantized Linears `codes` (module name -> codes);
    `ignore`: the Linears left unquantized; `sparsity_24`: the 2:4 metadata when the model is 2:4."""
    from compress.quant_format import pack_quantized_tensors, quantization_config

    tensors = {}
    if uses_pack_quantized(codes):
        spec = next(iter(codes.values())).spec
        for name, c in codes.items():
            for suffix, t in pack_quantized_tensors(c.codes, c.scale, c.zero, spec, dtype).items():
                tensors[f"{name}.{suffix}"] = t
        return tensors, quantization_config(spec, ignore, sparsity_24=sparsity_24)
    for name, c in codes.items():
        for key, t in c.tensors().items():
            tensors[f"{name}.quant.{key}"] = t.detach().cpu().contiguous()
    qc = {
        "quant_method": OURS,
        "format_version": FORMAT_VERSION,
        "dtype": str(dtype).removeprefix("torch."),
        "modules": {name: c.to_json() for name, c in codes.items()},
        "ignore": sorted(ignore),
        "sparsity_structure": "2:4" if sparsity_24 else None,
        "layouts": LAYOUTS,
    }
    return tensors, qc


def decode(raw: dict[str, torch.Tensor], qc: dict, where: str) -> dict[str, torch.Tensor]:
    """The dense `<module>.weight` of every quantized Linear in `raw` (its tensors are taken out of `raw`)."""
    if qc.get("quant_method") == OURS:
        return _decode_ours(raw, qc, where)
    return _decode_pack_quantized(raw, qc, where)


def _decode_pack_quantized(raw: dict, qc: dict, where: str) -> dict[str, torch.Tensor]:
    from compress.quant_format import SUFFIXES, decompress_with_compressed_tensors, spec_from_quantization_config

    spec = spec_from_quantization_config(qc)
    out = {}
    for key in [k for k in raw if k.endswith(".weight_packed")]:
        module = key.removesuffix(".weight_packed")
        parts = {s: raw.pop(f"{module}.{s}") for s in SUFFIXES if f"{module}.{s}" in raw}
        if "weight_scale" not in parts or "weight_shape" not in parts:
            raise ValueError(f"{where}: {module} lacks its weight_scale or weight_shape; the file is incomplete")
        out[f"{module}.weight"] = decompress_with_compressed_tensors(parts, spec, parts["weight_scale"].dtype)
    return out


def _decode_ours(raw: dict, qc: dict, where: str) -> dict[str, torch.Tensor]:
    if qc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{where}: {OURS} format_version {qc.get('format_version')!r} is not {FORMAT_VERSION}")
    dtype = getattr(torch, qc["dtype"])
    out = {}
    for module, meta in qc["modules"].items():
        prefix = f"{module}.quant."
        parts = {k.removeprefix(prefix): raw.pop(k) for k in [k for k in raw if k.startswith(prefix)]}
        if not parts:
            raise ValueError(f"{where}: {module} is listed as quantized but its tensors are missing")
        try:
            out[f"{module}.weight"] = codes_from_saved(meta, parts).decode().to(dtype)
        except (KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"{where}: {module}'s quantized tensors do not decode ({e})") from None
    stray = [k for k in raw if ".quant." in k]
    if stray:
        raise ValueError(f"{where}: tensors {stray[:3]} belong to no module listed in quantization_config")
    return out
