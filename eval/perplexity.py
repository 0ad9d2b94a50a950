"""Perplexity by the standard protocol of the pruning papers (locuslab/wanda lib/eval.py `eval_ppl_wikitext`).

The test text is tokenized once as the tokenizer does by default (so a model whose tokenizer adds BOS gets
it once, at the start, as in the reference), cut into non-overlapping windows of `seqlen` tokens (the tail
shorter than seqlen is dropped), and ppl = exp(sum of token NLLs / number of predicted tokens), accumulated
in fp32/fp64. Every window predicts seqlen - 1 tokens, so this equals the reference's
exp(sum(loss_w * seqlen) / (n * seqlen)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def token_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """(n, seqlen) non-overlapping windows of a 1-D id tensor."""
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"the test text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    return ids[: n * seqlen].view(n, seqlen)


@torch.no_grad()
def perplexity(
    model: nn.Module, windows: torch.Tensor, device: torch.device, batch_size: int = 1, progress: bool = True
) -> float:
    """exp(mean NLL) of `model` on (n, seqlen) token windows; the model must already be on `device`."""
    nll = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for start in tqdm(range(0, len(windows), batch_size), desc="perplexity", disable=not progress):
        ids = windows[start : start + batch_size].to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()  # (B, T-1, V)
        targets = ids[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").double()
        count += targets.numel()
    return math.exp(nll.item() / count)
