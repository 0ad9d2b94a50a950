"""DSnoT (Zhang et al., ICLR 2024): training-free prune-and-grow refinement of a sparse mask.

After zyxxmu/DSnoT `lib/prune.py::prune_DSnoT`. With D_ij = W_ij * s_j (s_j: per-sample sum of input
channel j over tokens) the reconstruction error of row i is e_i = sum over pruned j of D_ij (what pruning
removed from the output). Each cycle, in every still-active row, one pruned weight is regrown and one kept
weight pruned:
- grow: pruned weights ranked by D / var^pow (`pow_of_var_regrowing`): the largest when e > 0, the most
  negative when e < 0 (two pointers walking inwards, as the reference);
- prune, unstructured: kept weights ordered by Wanda score with negative-D first and positive-D last (positives
  reversed); e > 0 takes from the head, e < 0 from the tail. N:M: the lowest-Wanda-score kept weight of the
  regrown weight's M-block, so every block keeps its count;
- the swap is applied when |e| > update_threshold and the new error keeps the initial sign
  (`without_same_sign` False in the reference's default); a row that fails once stops. At most `max_cycles`.
Deviations (documented in the README): grow candidates are only pruned weights (the reference's sorted list
also holds kept weights with metric 0, which can break the N:M count); a swap must also lower |e| (it does in
the reference whenever the candidates are of the expected sign; this makes "never increases" exact); the
prune choice in N:M mode uses the Wanda score for every initial method.
"""

from __future__ import annotations

import torch

from prune.config import NM, Pattern
from prune.wanda import wanda_scores


def row_error(D: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """e_i = sum of D_ij over the pruned j of row i.  (rows,)"""
    return (D * ~keep).sum(1)


def _order_negative_first(idx: torch.Tensor, D: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """The first n_valid indices of each row (kept weights, ascending score) reordered: negative-D in order,
    then non-negative-D in reverse order (the reference's `return_reorder_indice`); the rest stay behind."""
    n = idx.shape[1]
    d = torch.gather(D, 1, idx)
    rank = torch.arange(n, device=idx.device).expand_as(idx)
    key = torch.where(d < 0, rank, 2 * n - rank)
    key = torch.where(rank < n_valid.unsqueeze(1), key, 3 * n + rank)
    return torch.gather(idx, 1, torch.sort(key, dim=1, stable=True).indices)


@torch.no_grad()
def dsnot_refine(
    W: torch.Tensor,
    keep: torch.Tensor,
    sum_row: torch.Tensor,
    var: torch.Tensor,
    act_norm_sq: torch.Tensor,
    pattern: Pattern,
    max_cycles: int = 50,
    update_threshold: float = 0.1,
    pow_of_var_regrowing: float = 1.0,
    same_sign: bool = True,
) -> torch.Tensor:
    """Refined keep-mask with the same number of zeros per row (unstructured) or per M-block (N:M)."""
    W = W.float()
    rows, cols = W.shape
    keep = keep.clone()
    D = W * sum_row.float().reshape(1, -1)  # (rows, cols)
    e = row_error(D, keep)
    sign0 = torch.sign(e)
    arange = torch.arange(rows, device=W.device)

    # grow list: pruned entries sorted ascending by D / var^pow; kept entries pushed past the end
    grow_metric = D / var.float().clamp_min(1e-12).reshape(1, -1) ** pow_of_var_regrowing
    n_pruned = (~keep).sum(1)
    grow_key = torch.where(keep, torch.full_like(grow_metric, float("inf")), grow_metric)
    grow_order = torch.sort(grow_key, dim=1, stable=True).indices
    grow_lo, grow_hi = torch.zeros_like(n_pruned), n_pruned - 1

    wanda = wanda_scores(W, act_norm_sq)
    kept_score = torch.where(keep, wanda, torch.full_like(wanda, float("inf")))  # pruned entries never chosen
    nm = isinstance(pattern, NM)
    if not nm:  # prune list: kept entries by Wanda score, negative D first
        n_kept = keep.sum(1)
        kept_sorted = torch.sort(kept_score, dim=1, stable=True)
        prune_order = _order_negative_first(kept_sorted.indices, D, n_kept)
        # rows differ in kept counts only for per-layer initial masks; entries past n_kept are pruned ones
        prune_lo, prune_hi = torch.zeros_like(n_kept), n_kept - 1
    else:
        prune_score = kept_score
        in_block = torch.arange(pattern.m, device=W.device)

    active = torch.ones(rows, dtype=torch.bool, device=W.device)
    for _ in range(max_cycles):
        active &= (e.abs() > update_threshold) & (grow_lo <= grow_hi)
        if not nm:
            active &= prune_lo <= prune_hi
        if not active.any():
            break
        positive = e > 0
        g_pos = torch.where(positive, grow_hi, grow_lo).clamp(0, cols - 1)
        g = grow_order[arange, g_pos]
        if nm:
            start = g - g % pattern.m
            block = start.unsqueeze(1) + in_block  # (rows, m)
            p = start + torch.argmin(torch.gather(prune_score, 1, block), dim=1)
        else:
            p_pos = torch.where(positive, prune_lo, prune_hi).clamp(0, cols - 1)
            p = prune_order[arange, p_pos]
        e_after = e + D[arange, p] - D[arange, g]
        update = active & (e_after.abs() < e.abs())
        if same_sign:
            update &= torch.sign(e_after) == sign0
        if nm:
            update &= torch.isfinite(prune_score[arange, p])  # a kept weight exists in that block
        rows_u = arange[update]
        keep[rows_u, p[update]] = False
        keep[rows_u, g[update]] = True
        e = torch.where(update, e_after, e)
        if nm:
            prune_score[rows_u, p[update]] = float("inf")  # pruned now; the regrown one is never pruned again
        # pointers advance whether or not the swap happened (as the reference)
        grow_hi = torch.where(positive, grow_hi - 1, grow_hi)
        grow_lo = torch.where(positive, grow_lo, grow_lo + 1)
        if not nm:
            prune_lo = torch.where(positive, prune_lo + 1, prune_lo)
            prune_hi = torch.where(positive, prune_hi, prune_hi - 1)
        active &= update
    return keep
