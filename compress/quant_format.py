"""Codec between our quantization results (quant/primitives.py: uint8 codes in [0, maxq], fp32 scale and zero of
shape (rows, groups)) and compressed-tensors' `pack-quantized` checkpoint format, as compressed-tensors'
PackedQuantizationCompressor writes it (0.14 and 0.20.1 agree for the widths allowed here).

Per quantized Linear `<module>` of weight shape (rows, cols) the safetensors file holds:
  <module>.weight_packed      (rows, cols·b/32)       int32  codes (unsigned, = signed + 2^(b−1)) packed along the
                                                             input dim, 32/b per word, code j in bits [j·b, (j+1)·b)
                                                             (quant/pack.py pack_int32 = compressed-tensors
                                                             pack_to_int32); cols padded with code 0 to a word
  <module>.weight_scale       group (rows, groups) | channel (rows, 1) | tensor (1,)     in the model dtype
  <module>.weight_shape       (2,)                    int64  [rows, cols]
  <module>.weight_zero_point  asymmetric only: group/channel (ceil(rows·b/32), groups) int32, our zero points
                              packed along the OUTPUT dim (pack_to_int32(packed_dim=0)); tensor (1,) int8 holding
                              zero − 2^(b−1) (compressed-tensors' signed zero point, not packed)
No `weight_g_idx` (activation-order groups are not used: compressed-tensors 0.20 removed actorder "group") and no
`.weight`. Symmetric: our zero is 2^(b−1), compressed-tensors' signed codes are codes − 2^(b−1), no zero point.

Dequantization (compressed-tensors `_dequantize`) runs in the scale's dtype: (q − z).to(dtype) · scale. The scale
is therefore stored in the model dtype (bf16/fp16/fp32), and what the pipeline computes with must be that rounded
scale: `export_scale(scale, dtype)` before `quantize` / `dequantize`; then
  dequantize(codes, export_scale(scale, dtype), zero, spec).to(dtype) == compressed-tensors' decompression, bit-exactly
(q − z is an integer of at most 9 bits and the scale has at most 24 significant bits, so the fp32 product is exact
and both sides round it once to `dtype`). An exact zero (a pruned 2:4 entry, code == zero) stays exactly zero.

Bit widths: 2, 4, 8. compressed-tensors 0.20 packs any width 1..8 densely (3-bit codes straddle int32 words) while
0.14 (transformers 4.x) packs floor(32/b) codes per word, so a 3-bit checkpoint of one is misread by the other;
3-bit is refused. vLLM's WNA16 kernels run 4 and 8 bits only; llm-compressor writes pack-quantized for 4/8 only.

2:4 sparsity beside int quantization: compressed-tensors' sparse-24-bitmask compressor only handles `.weight`
tensors (0.14; 0.20 removed sparse compressors and marlin-24), so it cannot compose with pack-quantized. The
`sparsity_config` is then metadata only: format "dense", sparsity_structure "2:4" (what llm-compressor 0.10 writes
for a 2:4 W4A16 model saved with quantization_format="pack-quantized"); vLLM then runs WNA16 (its cutlass 2:4
kernels exclude weight-only quantization) and transformers ignores it.

Loading (tests/test_quant_format.py): transformers 5 (compressed-tensors 0.20.1) with
CompressedTensorsConfig(dequantize=True) gives dense Linears equal to our dequantized weights bit-exactly; its
default (dequantize=False) keeps plain Linears holding weight_packed and decompresses them on the first forward,
except asymmetric group/channel checkpoints, which compressed-tensors 0.20.1 cannot load that way (its meta-device
compress leaves weight_zero_point unpacked: a size-mismatch error; llm-compressor's own W4A16_ASYM folders too).
transformers 4.57 (compressed-tensors 0.14) loads every case, run_compressed (CompressedLinear, CPU too) or not.
A loader turning such a folder into dense weights should use `decompress_with_compressed_tensors` or dequantize=True.
"""

from __future__ import annotations

import torch

from quant.pack import pack_int32
from quant.primitives import QuantSpec

PACK_BITS = (2, 4, 8)
SCALE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
SUFFIXES = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")


def _check_bits(spec: QuantSpec) -> None:
    if spec.bits not in PACK_BITS:
        raise ValueError(
            f"{spec.bits}-bit weights cannot be written as compressed-tensors pack-quantized (compressed-tensors "
            "0.14 and 0.20 pack them differently; 2, 4 and 8 bits only); use bits 4 or 8, or export: ours"
        )


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in SCALE_DTYPES:
        raise ValueError(f"pack-quantized scales are stored in bfloat16, float16 or float32, not {dtype}")


def export_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`scale` rounded to the dtype the checkpoint stores it in (the model dtype), back in fp32. Quantize and
    dequantize with this scale so that the weights the pipeline evaluates are the ones compressed-tensors
    decompresses. ValueError when a scale is not representable (zero, subnormal-flushed or infinite in fp16)."""
    _check_dtype(dtype)
    rounded = scale.detach().to(dtype).float()
    if not bool(torch.isfinite(rounded).all()) or not bool((rounded > 0).all()):
        raise ValueError(
            f"quant scales outside what {str(dtype).removeprefix('torch.')} represents (range "
            f"{float(scale.min()):.3g}..{float(scale.max()):.3g}); export in bfloat16 or float32"
        )
    return rounded


def _scale_shape(spec: QuantSpec, rows: int, cols: int) -> tuple[int, int]:
    return (1, 1) if spec.strategy == "tensor" else (rows, spec.groups(cols))


def pack_quantized_tensors(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """One Linear's pack-quantized tensors, keyed by suffix (prefix them with `<module>.`), as compressed-tensors'
    PackedQuantizationCompressor writes them. codes: uint8 (rows, cols) in [0, maxq]; scale, zero: fp32
    (rows, groups), (1, 1) per tensor (quant/primitives.py quant_params). The scale is stored as
    scale.to(dtype): pass the scale the codes were computed with, export_scale'd (see the module docstring)."""
    _check_bits(spec)
    _check_dtype(dtype)
    if codes.dtype != torch.uint8 or codes.dim() != 2:
        raise ValueError(f"codes must be a 2-D uint8 tensor, got {codes.dtype} of shape {tuple(codes.shape)}")
    rows, cols = codes.shape
    want = _scale_shape(spec, rows, cols)
    if tuple(scale.shape) != want or tuple(zero.shape) != want:
        raise ValueError(
            f"scale {tuple(scale.shape)} / zero {tuple(zero.shape)} do not fit a {spec.strategy} weight of shape "
            f"{(rows, cols)} (expected {want})"
        )
    if codes.numel() and int(codes.max()) > spec.maxq:
        raise ValueError(f"codes exceed {spec.maxq}, the largest {spec.bits}-bit code")
    half = 2 ** (spec.bits - 1)
    zero = zero.detach().cpu().float()
    if spec.symmetric and not bool((zero == half).all()):
        raise ValueError(f"a symmetric {spec.bits}-bit spec needs every zero point = {half}")
    if not bool((zero == zero.round()).all()) or not bool(((zero >= 0) & (zero <= spec.maxq)).all()):
        raise ValueError(f"zero points must be integers in [0, {spec.maxq}]")
    s = export_scale(scale.cpu(), dtype).to(dtype)
    out = {
        "weight_packed": pack_int32(codes.cpu(), spec.bits),
        "weight_scale": (s.reshape(1) if spec.strategy == "tensor" else s).contiguous(),
        "weight_shape": torch.tensor([rows, cols], dtype=torch.int64),
    }
    if not spec.symmetric:
        if spec.strategy == "tensor":
            out["weight_zero_point"] = (zero.reshape(1) - half).to(torch.int8)
        else:  # packed along the output dim (compressed-tensors pack_to_int32(zero_point, packed_dim=0))
            out["weight_zero_point"] = pack_int32(zero.to(torch.uint8).T.contiguous(), spec.bits).T.contiguous()
    return out


def weight_args(spec: QuantSpec) -> dict:
    """compressed-tensors QuantizationArgs of the weights, key for key as llm-compressor 0.10 writes them."""
    _check_bits(spec)
    return {
        "actorder": None,
        "block_structure": None,
        "dynamic": False,
        "group_size": spec.group_size if spec.strategy == "group" else None,
        "num_bits": spec.bits,
        "observer": "memoryless_minmax",
        "observer_kwargs": {},
        "scale_dtype": None,
        "strategy": spec.strategy,
        "symmetric": spec.symmetric,
        "type": "int",
        "zp_dtype": None if spec.symmetric else "torch.int8",
    }


_SPARSITY_KEYS = {"global_sparsity", "targets", "ignore"}


def quantization_config(
    spec: QuantSpec, ignore: list[str], targets=("Linear",), sparsity_24: dict | None = None
) -> dict:
    """config.json's `quantization_config` for a pack-quantized model, key for key as llm-compressor 0.10 /
    compressed-tensors write it (W4A16 group 128 is spec QuantSpec(4, "group", 128, True)). `ignore`: the modules
    left dense (e.g. ["lm_head"]). sparsity_24: the 2:4 metadata {"global_sparsity": fraction of zeros,
    optional "targets" (default `targets`) and "ignore" (default `ignore`)}, written as a format "dense",
    sparsity_structure "2:4" sparsity_config; None: an empty sparsity_config."""
    import compressed_tensors
    from compressed_tensors.config import DenseSparsityConfig

    sparsity = {}
    if sparsity_24 is not None:
        unknown = sorted(set(sparsity_24) - _SPARSITY_KEYS)
        if unknown:
            raise ValueError(f"sparsity_24 has unknown keys {unknown}; allowed: {', '.join(sorted(_SPARSITY_KEYS))}")
        sparsity = DenseSparsityConfig(
            global_sparsity=float(sparsity_24.get("global_sparsity", 0.0)),
            sparsity_structure="2:4",
            targets=list(sparsity_24.get("targets", targets)),
            ignore=sorted(sparsity_24.get("ignore", ignore)),
        ).model_dump()
    return {
        "config_groups": {
            "group_0": {
                "format": "pack-quantized",
                "input_activations": None,
                "output_activations": None,
                "targets": list(targets),
                "weights": weight_args(spec),
            }
        },
        "format": "pack-quantized",
        "global_compression_ratio": None,
        "ignore": sorted(ignore),
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": sparsity,
        "transform_config": {},
        "version": compressed_tensors.__version__,
    }


def spec_from_quantization_config(qc: dict) -> QuantSpec:
    """The QuantSpec of a pack-quantized `quantization_config` with one int weight-only group (what
    `quantization_config` writes and llm-compressor writes for W4A16 / W8A16); ValueError naming what differs."""
    if qc.get("quant_method") != "compressed-tensors" or qc.get("format") != "pack-quantized":
        raise ValueError(f"not a compressed-tensors pack-quantized config (format {qc.get('format')!r})")
    groups = qc.get("config_groups") or {}
    if len(groups) != 1:
        raise ValueError(f"pack-quantized config has {len(groups)} config groups; only one is supported")
    (group,) = groups.values()
    w = group.get("weights") or {}
    if group.get("input_activations") or group.get("output_activations"):
        raise ValueError("pack-quantized config quantizes activations; only weight-only int is supported")
    if group.get("format", "pack-quantized") != "pack-quantized" or w.get("type", "int") != "int":
        raise ValueError("pack-quantized config group is not int weight-only pack-quantized")
    if w.get("actorder") not in (None, "weight", "static"):
        raise ValueError(f"pack-quantized actorder {w.get('actorder')!r} (weight_g_idx) is not supported")
    strategy = w.get("strategy") or ("group" if w.get("group_size") else "tensor")
    spec = QuantSpec(
        bits=int(w.get("num_bits", 8)),
        strategy=strategy,
        group_size=int(w["group_size"]) if strategy == "group" else 128,
        symmetric=bool(w.get("symmetric", True)),
    )
    _check_bits(spec)
    return spec


def _scheme(spec: QuantSpec):
    from compressed_tensors.quantization import QuantizationScheme

    args = {k: v for k, v in weight_args(spec).items() if v is not None and k != "observer_kwargs"}
    return QuantizationScheme(targets=["Linear"], weights=args, format="pack-quantized")


def decompress_with_compressed_tensors(tensors: dict, spec: QuantSpec, dtype: torch.dtype) -> torch.Tensor:
    """The dense (rows, cols) weight in `dtype` that compressed-tensors' own PackedQuantizationCompressor
    decompresses from one Linear's pack-quantized tensors (keyed by suffix, as `pack_quantized_tensors` returns
    them or a checkpoint holds them). Works with compressed-tensors 0.20 (classmethod `decompress`) and 0.14
    (`decompress_weight`)."""
    from compressed_tensors.compressors import PackedQuantizationCompressor

    _check_bits(spec)
    state = {k: v for k, v in tensors.items() if k in SUFFIXES}
    missing = {"weight_packed", "weight_scale", "weight_shape"} - set(state)
    if not spec.symmetric:
        missing |= {"weight_zero_point"} - set(state)
    if missing:
        raise ValueError(f"pack-quantized tensors lack {', '.join(sorted(missing))}")
    scheme = _scheme(spec)
    if hasattr(PackedQuantizationCompressor, "decompress_weight"):  # compressed-tensors <= 0.14
        weight = PackedQuantizationCompressor().decompress_weight(dict(state), scheme.weights)
    else:
        weight = PackedQuantizationCompressor.decompress(state, scheme)["weight"]
    return weight.to(dtype)
