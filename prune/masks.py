"""Keep-masks from importance scores (True = weight kept), with exact counts.

Ties are broken by a stable sort (lower column index pruned first), so masks are deterministic.
Scores must be finite: a NaN compares false with everything, so it would keep its group unpruned (N:M) or
sort to an arbitrary end (unstructured); every function raises ValueError instead.
"""

from __future__ import annotations

import torch

from prune.config import NM, Pattern, Unstructured


def require_finite(scores: torch.Tensor) -> None:
    if not bool(torch.isfinite(scores).all()):
        bad = int((~torch.isfinite(scores)).sum())
        raise ValueError(f"{bad} importance scores are NaN or inf (from a non-finite weight or activation)")


def prune_lowest_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the floor(cols * sparsity) lowest scores of every row (locuslab/wanda lib/prune.py, stable sort)."""
    require_finite(scores)
    rows, cols = scores.shape
    k = int(cols * sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        idx = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, idx, False)
    return keep


def prune_lowest_per_tensor(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero exactly floor(numel * sparsity) lowest scores of the whole tensor.

    The wanda repo's magnitude baseline uses `W <= sorted[k]` (k + 1 entries plus ties); we prune exactly k.
    """
    require_finite(scores)
    k = int(scores.numel() * sparsity)
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k:
        idx = torch.sort(scores.flatten(), stable=True).indices[:k]
        keep[idx] = False
    return keep.view_as(scores)


def prune_lowest_per_group(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of m consecutive columns of each row, zero the n lowest scores.

    Rank of each entry within its group by pairwise comparison (m^2 elementwise ops, no sort): an entry's
    rank counts the entries that are smaller, or equal with a lower index -- the order a stable sort
    gives -- so the n lowest-ranked are pruned.
    """
    require_finite(scores)
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"in-features {cols} is not divisible by M={m}")
    groups = scores.reshape(rows, cols // m, m)  # (rows, groups, m)
    rank = torch.zeros_like(groups, dtype=torch.uint8)
    idx = torch.arange(m, device=scores.device)
    for j in range(m):
        sj = groups[..., j : j + 1]
        rank += (sj < groups) | ((sj == groups) & (j < idx))
    return (rank >= n).view(rows, cols)


def keep_top_n_of_m(scores: torch.Tensor, n: int) -> torch.Tensor:
    """`prune_lowest_per_group` for one group per row, scores (rows, m), without the finiteness check: the n
    lowest of each row by one stable sort (the order the pairwise ranks reproduce). For SparseGPT's column sweep,
    which chooses a group every M columns (37k calls on SmolLM2) and checks finiteness on its result instead;
    half the time of the m-pass ranks there (measured: 205 vs 418 us for 1536 rows)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    return keep.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :n], False)


def mask_from_scores(scores: torch.Tensor, pattern: Pattern, per_row: bool = True) -> torch.Tensor:
    """Keep-mask for `pattern`; unstructured compares within rows (`per_row`) or over the whole tensor."""
    if isinstance(pattern, NM):
        return prune_lowest_per_group(scores, pattern.n, pattern.m)
    if isinstance(pattern, Unstructured):
        fn = prune_lowest_per_row if per_row else prune_lowest_per_tensor
        return fn(scores, pattern.sparsity)
    raise TypeError(f"unsupported pattern {pattern!r}")


def satisfies_nm(W: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of m consecutive columns of every row holds at least n zeros."""
    rows, cols = W.shape
    if cols % m:
        return False
    zeros = (W.reshape(rows, cols // m, m) == 0).sum(-1)
    return bool((zeros >= n).all())
