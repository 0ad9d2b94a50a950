"""GPTQ (Frantar et al., ICLR 2023; IST-DASLab/gptq `gptq.py::fasterquant`) on the shared OBS sweep.

The sweep is prune/obs.py `obs_sweep` (the one SparseGPT uses); GPTQ's part is the chooser: q = the column
rounded to its group's grid. Per-group parameters are found when the sweep reaches the group's first column,
from the group's columns as they were when the sweep reached their block (the reference's
`find_params(W[:, (i1+i):(i1+i+groupsize)])` reads the full W, whose current block is only written back at the
block's end; GPTQModel does the same). Groups smaller than the block (64 in a block of 128) therefore take their
range before the block's earlier columns updated them, as in the reference; checked against GPTQModel 7.6.
Per channel / per tensor: parameters from the initial W, before the sweep (the reference's groupsize = -1).
act_order: columns in order of decreasing diag H; with groups the parameters are fixed before the sweep from
the original, consecutive column groups (the reference's `static_groups`), so a checkpoint needs no g_idx.
2:4: with `keep` (a recorded mask) pruned entries are zeroed and kept ones quantized in one sweep, both errors
compensated, group ranges taken over the kept entries; with `pattern` the N:M mask is chosen in the same sweep
(SparseGPT's choice, the sparsegpt repo's `fasterprune` with a quantizer), ranges over the whole group since its
mask is not known yet when the group starts. The zero pattern survives exactly: 0 is always on the grid.
Replaces auto-gptq (archived; does not build on current torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune.config import NM
from prune.obs import float_w_and_hinv, obs_sweep
from prune.sparsegpt import MaskChooser
from quant.primitives import QuantSpec, quant_params, quantize


@dataclass
class GPTQResult:
    W: torch.Tensor  # dequantized, fp32, (rows, cols)
    codes: torch.Tensor  # uint8 codes in [0, maxq], (rows, cols)
    scale: torch.Tensor  # fp32, (rows, groups); (1, 1) per tensor
    zero: torch.Tensor  # fp32, same shape
    keep: torch.Tensor | None  # the 2:4 mask, when one was given or chosen
    loss: float  # OBS error sum


class QuantChooser:
    """q = the column on its group's grid; the group of sweep position j is original column perm[j] // size."""

    def __init__(
        self,
        spec: QuantSpec,
        rows: int,
        cols: int,
        perm: torch.Tensor | None,
        fixed,
        scale_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.spec, self.perm, self.scale_dtype = spec, perm, scale_dtype
        self.size = spec.group_size if spec.strategy == "group" else cols
        self.dynamic = fixed is None
        if fixed is None:
            self.scale = torch.ones(rows, spec.groups(cols), device=device)
            self.zero = torch.zeros(rows, spec.groups(cols), device=device)
        else:
            self.scale, self.zero = fixed
        # per tensor: one (1, 1) scale, broadcast to the rows once here rather than per column in the sweep
        self.s_rows = self.scale.expand(rows, -1) if self.scale.shape[0] == 1 else self.scale
        self.z_rows = self.zero.expand(rows, -1) if self.zero.shape[0] == 1 else self.zero
        self.per_group = QuantSpec(spec.bits, "channel", symmetric=spec.symmetric)
        self.keep1: torch.Tensor | None = None  # the block's fixed mask, set by MaskChooser
        self.W_block: torch.Tensor | None = None  # the block as it was when the sweep reached it

    def block(self, i1: int, W1: torch.Tensor, d1: torch.Tensor) -> None:
        if self.dynamic:
            self.W_block = W1.clone()

    def column(self, i1: int, i: int, W1: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        j = i1 + i
        g = (int(self.perm[j]) if self.perm is not None else j) // self.size
        if self.dynamic and j % self.size == 0:  # the group starts here: its range from the block's start values
            group = self.W_block[:, i : i + self.size]
            if self.keep1 is not None:
                group = group * self.keep1[:, i : i + self.size]
            s, z = quant_params(group, self.per_group)  # (rows, 1)
            self.scale[:, g : g + 1], self.zero[:, g : g + 1] = s.to(self.scale_dtype).float(), z
        s, z = self.s_rows[:, g : g + 1], self.z_rows[:, g : g + 1]
        q = torch.clamp(torch.round(W1[:, i : i + 1] / s) + z, 0, self.spec.maxq)
        return (s * (q - z)).reshape(-1)


def gptq_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    spec: QuantSpec,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
    keep: torch.Tensor | None = None,
    pattern: NM | None = None,
    scale_dtype: torch.dtype = torch.float32,
) -> GPTQResult:
    """GPTQ-quantize W (rows, cols) with the layer-input Hessian H (cols, cols); W is not modified.

    keep: a fixed keep-mask (e.g. a 2:4 record). pattern: an N:M mask chosen in this sweep. At most one.
    scale_dtype: scales are rounded to it (the export's dtype) as soon as they are found, so the sweep quantizes
    and compensates on the grid the checkpoint stores."""
    if keep is not None and pattern is not None:
        raise ValueError("gptq: give a fixed keep mask or an N:M pattern to choose, not both")
    rows, cols = W.shape
    spec.groups(cols)  # the group size must divide in-features
    if spec.strategy == "group" and blocksize % spec.group_size:
        raise ValueError(f"gptq: blocksize {blocksize} must be a multiple of group_size {spec.group_size}")
    if pattern is not None and blocksize % pattern.m:
        raise ValueError(f"gptq: blocksize {blocksize} must be a multiple of M={pattern.m}")
    perm = torch.argsort(torch.diag(H), descending=True, stable=True) if act_order else None
    Wf, Hinv = (
        float_w_and_hinv(W, H, percdamp) if perm is None else float_w_and_hinv(W[:, perm], H[perm][:, perm], percdamp)
    )
    fixed = None
    if spec.strategy != "group" or act_order:  # parameters before the sweep (static groups with act_order)
        initial = Wf if perm is None else Wf[:, torch.argsort(perm)]
        if keep is not None:
            initial = initial * keep
        scale, zero = quant_params(initial, spec)
        fixed = (scale.to(scale_dtype).float(), zero)
    qc = QuantChooser(spec, rows, cols, perm, fixed, scale_dtype, Wf.device)
    if keep is not None:
        chooser = MaskChooser(None, (keep if perm is None else keep[:, perm]).clone(), quant=qc)
    elif pattern is not None:
        chooser = MaskChooser(pattern, torch.ones_like(Wf, dtype=torch.bool), quant=qc)
    else:
        chooser = qc
    Wq, loss = obs_sweep(Wf, Hinv, chooser, blocksize)
    mask = chooser.keep if isinstance(chooser, MaskChooser) else None
    if perm is not None:
        inv = torch.argsort(perm)
        Wq = Wq[:, inv]
        mask = mask[:, inv] if mask is not None else None
    if not bool(torch.isfinite(Wq).all()):
        raise ValueError("gptq: non-finite values after the sweep (a non-finite weight or Hessian)")
    codes = quantize(Wq, qc.scale, qc.zero, spec)
    return GPTQResult(Wq, codes, qc.scale, qc.zero, mask, loss)
