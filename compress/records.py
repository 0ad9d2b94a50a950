"""One record per compressed Linear, handed from stage to stage and encoded by the export (issue 14, A.2).

A stage that changes a Linear's sparsity writes its record: the pattern the weight satisfies and the keep-mask
it chose (packed 8 per byte, compressed-tensors' bitmask layout, so a 7B model's masks take 0.8 GB, not 6.5).
Later stages (finetune) replace the mask; the export writes the mask it finds here and checks the weight against
it (a pruned position holding a nonzero value is an error, never silently re-derived from the zeros).
A quantization stage (quant/stage.py) adds its codes and parameters (`quant`: a quant/codes.py object whose
`decode()` is exactly the weight it left in the model); the export writes them in the method's format.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune.config import NM, Pattern, Unstructured
from quant.pack import pack_mask as pack_bits
from quant.pack import unpack_mask as unpack_bits


@dataclass
class LinearRecord:
    """What the stages decided for one Linear. `keep_bits`: the packed keep-mask (None: dense); `quant`: the
    quantization codes (None: not quantized)."""

    shape: tuple[int, int]
    pattern: Pattern | None = None
    keep_bits: torch.Tensor | None = None
    quant: object | None = None  # quant/codes.py UniformCodes, ...

    @property
    def mask(self) -> torch.Tensor | None:
        """The (rows, cols) bool keep-mask, or None for a dense Linear."""
        return None if self.keep_bits is None else unpack_bits(self.keep_bits, self.shape)

    def set_mask(self, pattern: Pattern, keep: torch.Tensor) -> None:
        if tuple(keep.shape) != tuple(self.shape) or keep.dtype != torch.bool:
            raise ValueError(f"keep-mask must be bool {tuple(self.shape)}, got {keep.dtype} {tuple(keep.shape)}")
        self.pattern, self.keep_bits = pattern, pack_bits(keep)

    # ---- resume files (compress/resume.py): tensors + JSON
    def tensors(self) -> dict[str, torch.Tensor]:
        """The record's tensors by name (`keep_bits`, `quant.<name>`), for a layer's resume file."""
        out = {} if self.keep_bits is None else {"keep_bits": self.keep_bits}
        if self.quant is not None:
            out.update({f"quant.{k}": v for k, v in self.quant.tensors().items()})
        return out

    def to_json(self) -> dict:
        p = self.pattern
        kind = None if p is None else ({"n": p.n, "m": p.m} if isinstance(p, NM) else {"sparsity": p.sparsity})
        return {
            "shape": list(self.shape),
            "pattern": kind,
            "quant": None if self.quant is None else self.quant.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict, tensors: dict[str, torch.Tensor]) -> LinearRecord:
        from quant.codes import codes_from_saved

        p = data["pattern"]
        pattern = None if p is None else (NM(p["n"], p["m"]) if "n" in p else Unstructured(p["sparsity"]))
        q = data.get("quant")
        quant = None
        if q is not None:
            quant = codes_from_saved(
                q, {k.removeprefix("quant."): v for k, v in tensors.items() if k.startswith("quant.")}
            )
        return cls(tuple(data["shape"]), pattern, tensors.get("keep_bits"), quant)


Records = dict[str, LinearRecord]  # Linear module name (as in model.named_modules()) -> its record


def with_pattern(records: Records, pattern: Pattern) -> set[str]:
    """Names of the Linears whose record says `pattern`."""
    return {n for n, r in records.items() if r.pattern == pattern}


def check_weight_matches(name: str, W: torch.Tensor, record: LinearRecord) -> None:
    """ValueError when a position the record prunes holds a nonzero value, or the record's quantization codes do
    not decode to the weight in its dtype (a stage wrote the weight without its record, or the other way round)."""
    if record.quant is not None:
        decoded = record.quant.decode().to(W.dtype)
        if not torch.equal(decoded, W.detach().cpu()):
            n = int((decoded != W.detach().cpu()).sum())
            raise ValueError(
                f"{name}: {n} weights differ from what its recorded quantization codes decode to; a stage changed "
                "the weight after quantizing it"
            )
    keep = record.mask
    if keep is None:
        return
    stray = int(((W.detach().cpu() != 0) & ~keep).sum())
    if stray:
        raise ValueError(
            f"{name}: {stray} weights outside its recorded {record.pattern} keep-mask are nonzero; a stage changed "
            "the weight without updating its record"
        )
