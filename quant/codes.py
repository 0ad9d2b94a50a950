"""What a quantization method leaves in a Linear's record (compress/records.py): its codes and parameters, in the
form the export writes, so that what is exported decodes to exactly the weight the stage left in the model.

`UniformCodes` (RTN, GPTQ): b-bit codes on a uniform grid per tensor / channel / group, scale and zero point;
exported as compressed-tensors `pack-quantized`. The codes are held as a dense bit stream (quant/pack.py
`pack_bits`), b/8 bytes per weight, so the records of a 7B model stay a fraction of its fp16 size.
Later formats (lookup table + outliers, Hadamard) add their own classes with the same three methods:
`decode()` (the dense fp32 weight), `tensors()` / `to_json()` and `from_saved()` for the resume files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quant.pack import pack_bits, unpack_bits, unpack_mask
from quant.primitives import QuantSpec, dequantize


@dataclass
class UniformCodes:
    spec: QuantSpec
    shape: tuple[int, int]
    packed: torch.Tensor  # uint8 bit stream of the (rows, cols) codes in [0, maxq]
    scale: torch.Tensor  # fp32 (rows, groups), (1, 1) per tensor; already rounded to the export dtype
    zero: torch.Tensor  # fp32, same shape (symmetric: (maxq + 1) / 2)

    @classmethod
    def of(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> UniformCodes:
        return cls(spec, tuple(codes.shape), pack_bits(codes.cpu(), spec.bits), scale.float().cpu(), zero.float().cpu())

    @property
    def codes(self) -> torch.Tensor:
        return unpack_bits(self.packed, self.spec.bits, self.shape)

    def decode(self) -> torch.Tensor:
        """The dense fp32 weight scale · (codes − zero)."""
        return dequantize(self.codes, self.scale, self.zero, self.spec)

    # ---- resume files: tensors + JSON
    def tensors(self) -> dict[str, torch.Tensor]:
        return {"packed": self.packed, "scale": self.scale, "zero": self.zero}

    def to_json(self) -> dict:
        s = self.spec
        return {
            "format": "uniform",
            "shape": list(self.shape),
            "spec": {"bits": s.bits, "strategy": s.strategy, "group_size": s.group_size, "symmetric": s.symmetric},
        }

    @classmethod
    def from_saved(cls, data: dict, tensors: dict[str, torch.Tensor]) -> UniformCodes:
        return cls(
            QuantSpec(**data["spec"]), tuple(data["shape"]), tensors["packed"], tensors["scale"], tensors["zero"]
        )


@dataclass
class HadamardCodes:
    """QuEST (quant/quest.py): b-bit midpoint codes per output row, scale = α_b · RMS(row), of the weight rotated by
    the orthonormal block Hadamard transform along in-features (`block`; 0 = no rotation, a pruned layer). The
    dense weight is fwht(dequantize(codes)) (the rotation folded back); with `keep_bits` (a pruned layer, no
    rotation) the pruned positions are exactly 0."""

    bits: int
    block: int
    shape: tuple[int, int]
    packed: torch.Tensor  # uint8 bit stream of the (rows, cols) codes in [0, 2^b - 1]
    scale: torch.Tensor  # fp32 (rows, 1)
    keep_bits: torch.Tensor | None = None  # compress/records.py pack_bits layout

    def decode(self) -> torch.Tensor:
        from quant.hadamard import fwht
        from quant.quest import quest_dequantize

        W = quest_dequantize(unpack_bits(self.packed, self.bits, self.shape), self.scale, self.bits)
        if self.block:
            W = fwht(W, self.block)
        if self.keep_bits is not None:
            W = W * unpack_mask(self.keep_bits, self.shape) + 0.0
        return W

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"packed": self.packed, "scale": self.scale}
        return out if self.keep_bits is None else {**out, "keep_bits": self.keep_bits}

    def to_json(self) -> dict:
        return {"format": "hadamard", "bits": self.bits, "block": self.block, "shape": list(self.shape)}

    @classmethod
    def from_saved(cls, data: dict, tensors: dict[str, torch.Tensor]) -> HadamardCodes:
        return cls(
            data["bits"],
            data["block"],
            tuple(data["shape"]),
            tensors["packed"],
            tensors["scale"],
            tensors.get("keep_bits"),
        )


@dataclass
class LUTCodes:
    """SqueezeLLM dense-and-sparse (quant/dense_sparse.py): per output row a lookup table of 2^b fp16 centroids and
    b-bit indices (the dense part), plus the outliers as an fp16 CSR matrix that replaces the dense value at its
    positions; with `keep_bits` (a pruned layer) the pruned positions are exactly 0."""

    bits: int
    shape: tuple[int, int]
    lut: torch.Tensor  # fp16 (rows, 2^b)
    packed: torch.Tensor  # uint8 bit stream of the (rows, cols) indices
    crow: torch.Tensor  # int64 (rows + 1,)
    col: torch.Tensor  # int64 (nnz,)
    values: torch.Tensor  # fp16 (nnz,)
    keep_bits: torch.Tensor | None = None

    def decode(self) -> torch.Tensor:
        from quant.dense_sparse import reconstruct

        keep = None if self.keep_bits is None else unpack_mask(self.keep_bits, self.shape)
        indices = unpack_bits(self.packed, self.bits, self.shape)
        return reconstruct(self.lut, indices, self.crow, self.col, self.values, keep, self.shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"lut": self.lut, "packed": self.packed, "crow": self.crow, "col": self.col, "values": self.values}
        return out if self.keep_bits is None else {**out, "keep_bits": self.keep_bits}

    def to_json(self) -> dict:
        return {"format": "lut", "bits": self.bits, "shape": list(self.shape)}

    @classmethod
    def from_saved(cls, data: dict, tensors: dict[str, torch.Tensor]) -> LUTCodes:
        t = tensors
        return cls(
            data["bits"],
            tuple(data["shape"]),
            t["lut"],
            t["packed"],
            t["crow"],
            t["col"],
            t["values"],
            t.get("keep_bits"),
        )


CODE_FORMATS = {"uniform": UniformCodes, "hadamard": HadamardCodes, "lut": LUTCodes}  # to_json()["format"] -> class


def codes_from_saved(data: dict, tensors: dict[str, torch.Tensor]):
    return CODE_FORMATS[data["format"]].from_saved(data, tensors)
