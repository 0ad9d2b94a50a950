"""Linears that compute with W ⊙ M while the dense W learns (straight-through estimator).

AST trains the dense weight: the forward uses W ⊙ M and the backward hands the output gradient of W ⊙ M to W
unmasked, so pruned weights keep receiving gradients and can win their place back when the mask is recomputed
(Huang et al. 2024 §3.1; thu-ml/Adaptive-Sparse-Trainer sparse_modeling.py `STE`, `SparseLinear.forward`).

With a QuEST spec (`qat`, finetune.qat: quest) the forward computes with Q(W ⊙ M), QuEST's quantizer of the kept
weights with the trust estimator (quant/quest.py `quest_ste`): the gradient reaches W ⊙ M only where
|Q(w) − w| ≤ step/2, then W through the mask's straight-through estimator.

`sparsify_linears` swaps the named nn.Linear modules of a model for `SparseLinear` (an nn.Linear subclass that
shares the same weight and bias Parameters, so parameter names and the rest of the transformers model are
untouched); `restore_linears` swaps back plain nn.Linear modules whose weight is exactly W ⊙ M.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from finetune.masks import is_exact_nm
from finetune.slorb import check_groups, slorb_init, slorb_term
from quant.quest import QuestSpec, quest_ste


class MaskSTE(torch.autograd.Function):
    """forward W ⊙ M; backward passes the gradient to the dense W unchanged (d(W ⊙ M)/dW := 1)."""

    @staticmethod
    def forward(ctx, W: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return W * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class SparseLinear(nn.Linear):
    """nn.Linear with a bool keep-mask buffer `mask` (out, in) and optional SLoRB term `slorb_S` (out, in/k)."""

    def __init__(self, linear: nn.Linear, mask: torch.Tensor, qat: QuestSpec | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter objects: optimizers and names see no change
        self.bias = linear.bias
        # a copy (masks are recomputed in place, never the caller's tensor); not persistent: the state_dict stays
        # the plain model's, the trainer checkpoints masks itself
        mask = mask.to(device=linear.weight.device, dtype=torch.bool, copy=True)
        self.register_buffer("mask", mask, persistent=False)
        self.slorb_S: nn.Parameter | None = None
        self.slorb_k = 0
        self.qat = qat

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward computes with: W ⊙ M, quantized (trust estimator) under QAT."""
        W = MaskSTE.apply(self.weight, self.mask)
        if self.qat is not None:
            W = quest_ste(W, self.qat.bits, self.mask, check=False)  # the trainer checks loss and grad norm
        return W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.effective_weight(), self.bias)
        if self.slorb_S is not None:
            y = y + slorb_term(x, self.slorb_S, self.slorb_k)
        return y

    def enable_slorb(self, k: int, dense_W: torch.Tensor, name: str) -> None:
        check_groups(self.in_features, k, name)
        S = slorb_init(dense_W.to(self.weight.device), self.mask, k)
        self.slorb_S = nn.Parameter(S)
        self.slorb_k = k


def sparse_linears(model: nn.Module) -> dict[str, SparseLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SparseLinear)}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def sparsify_linears(
    model: nn.Module, masks: dict[str, torch.Tensor], qat: QuestSpec | None = None
) -> dict[str, SparseLinear]:
    """Replace every Linear named in `masks` by a SparseLinear (training under `qat` if given); ValueError for a
    missing name, a shape mismatch or a mask that is not exact 2:4 bool."""
    modules = dict(model.named_modules())
    out = {}
    for name, mask in masks.items():
        linear = modules.get(name)
        if type(linear) is not nn.Linear:
            found = "no such module" if linear is None else type(linear).__name__
            raise ValueError(f"finetune mask {name!r} names no nn.Linear of the student ({found})")
        if tuple(mask.shape) != tuple(linear.weight.shape):
            shapes = f"{tuple(mask.shape)}, weight {tuple(linear.weight.shape)}"
            raise ValueError(f"finetune mask {name!r} has shape {shapes}")
        if not is_exact_nm(mask):
            raise ValueError(f"finetune mask {name!r} is not an exact 2:4 bool keep-mask (2 kept of every 4 inputs)")
        out[name] = SparseLinear(linear, mask, qat)
        _set_module(model, name, out[name])
    return out


@torch.no_grad()
def restore_linears(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Swap every SparseLinear back for a plain nn.Linear with weight W ⊙ M (same dtype, device, requires_grad).

    Returns (masks, slorb S tensors), both by module name, on the CPU; S is empty without SLoRB."""
    masks, slorb = {}, {}
    for name, sl in sparse_linears(model).items():
        linear = nn.Linear(sl.in_features, sl.out_features, bias=sl.bias is not None, device="meta")
        W = torch.where(sl.mask, sl.weight, torch.zeros((), dtype=sl.weight.dtype, device=sl.weight.device))
        linear.weight = nn.Parameter(W, requires_grad=sl.weight.requires_grad)  # +0.0 where pruned
        linear.bias = sl.bias
        _set_module(model, name, linear)
        masks[name] = sl.mask.cpu()
        if sl.slorb_S is not None:
            slorb[name] = sl.slorb_S.detach().cpu()
    return masks, slorb
