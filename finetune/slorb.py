"""SLoRB, Sparse Low-Rank Boosting (Huang et al. 2024 §3.3): a small dense term beside each 2:4 Linear.

The k inputs of each group g are summed and weighted per output row: y += S @ (P x) with P (in/k, in) the fixed
0/1 group-sum matrix and S (out, in/k) trained. S starts as the mean of each row's pruned weights over the k
entries of the group (kept entries count as zero): thu-ml/Adaptive-Sparse-Trainer sparse_modeling.py
`init_SLoRB` with `SLoRB_init_type="mean"`, `(W * (1 - mask)).view(out, in/k, k).mean(dim=2)`. Since 2:4 prunes k/2
of every k, S x (sum of the group's inputs) is the pruned weights' contribution when the group's inputs are alike.

S stays a separate tensor (merging it into W would destroy the 2:4 pattern). The reference can also train P
(`trainable_projection`, on in its README command and the LLaMA config); here P is the fixed group sum, computed by
a reshape and a sum instead of a dense (in/k, in) matmul.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def check_groups(in_features: int, k: int, name: str) -> None:
    if in_features % k:
        raise ValueError(
            f"finetune.slorb_k={k} does not divide the {in_features} inputs of {name}; pick a divisor such as 16"
        )


def slorb_init(W: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """S (out, in/k) fp32: per row and group of k inputs, the mean over the k entries of W * ~mask."""
    out, d = W.shape
    pruned = W.detach().float() * ~mask  # (out, in), kept entries zero
    return pruned.view(out, d // k, k).mean(dim=-1)


def group_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """P x: (..., in) -> (..., in/k), the sum of every k consecutive inputs."""
    return x.unflatten(-1, (x.shape[-1] // k, k)).sum(dim=-1)


def slorb_term(x: torch.Tensor, S: torch.Tensor, k: int) -> torch.Tensor:
    """(..., in) -> (..., out): S @ (P x)."""
    return F.linear(group_sum(x, k), S.to(x.dtype))  # under autocast F.linear casts both to bf16


def attach_slorb(model: nn.Module, tensors: dict[str, torch.Tensor], k: int) -> list:
    """Forward hooks adding S @ (P x) to the named plain Linears, so the restored model computes what was trained.

    The S tensors are held by the hooks only (not parameters or buffers): the state_dict stays the plain model's
    and export writes S from `ASTResult.slorb`. Returns the hook handles (`handle.remove()` detaches)."""
    modules = dict(model.named_modules())
    handles = []
    for name, S in tensors.items():
        linear = modules[name]
        S = S.detach().to(linear.weight.device)

        def hook(module, args, output, S=S):
            return output + slorb_term(args[0], S, k)

        handles.append(linear.register_forward_hook(hook))
    return handles
