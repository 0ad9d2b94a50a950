"""Refuse a loaded model that is not exactly what its files hold: one line naming the tensors (first few + count).

A load that leaves a parameter uninitialised (missing, shape-mismatched, still on the `meta` device) or ignores a
stored tensor (unexpected) gives a partly random model whose scores look plausible; non-finite weights give NaN
scores that would be cached and written into the model card. All checks are cheap (one pass over the tensors).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from compress.errors import UserError

SHOWN = 3


def some(names: Iterable[str], shown: int = SHOWN) -> str:
    """'3: a, b, c' or '14: a, b, c, ...' - the count, then the first few names in sorted order."""
    names = sorted(names)
    more = ", ..." if len(names) > shown else ""
    return f"{len(names)}: {', '.join(names[:shown])}{more}"


def non_persistent_buffers(model: nn.Module) -> set[str]:
    """Buffers the model computes itself (rotary inv_freq, ...): never in a checkpoint, never expected from one."""
    out = set()
    for prefix, module in model.named_modules():
        for name in getattr(module, "_non_persistent_buffers_set", ()):
            out.add(f"{prefix}.{name}" if prefix else name)
    return out


def tied_targets(model: nn.Module) -> dict[str, str]:
    """{tied parameter: the parameter it shares storage with} (e.g. lm_head.weight -> embed_tokens.weight when
    tie_word_embeddings); transformers 5 lists them in `all_tied_weights_keys`, empty when nothing is tied."""
    return dict(getattr(model, "all_tied_weights_keys", None) or {})


def refuse_incomplete(
    where: str,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Iterable[tuple[str, tuple, tuple]] = (),
) -> None:
    """One line naming the missing, unexpected and shape-mismatched tensors, when there are any."""
    missing, unexpected, mismatched = sorted(missing), sorted(unexpected), sorted(mismatched)
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing tensors {some(missing)}")
    if unexpected:
        parts.append(f"unexpected tensors {some(unexpected)}")
    if mismatched:
        shapes = [f"{k} {tuple(stored)} vs {tuple(expected)}" for k, stored, expected in mismatched]
        parts.append(f"shape-mismatched tensors (stored vs model) {some(shapes)}")
    raise UserError(
        f"{where} does not match its config ({'; '.join(parts)}); refusing a partly random model. "
        "Re-export or re-download it"
    )


def refuse_not_matching(where: str, model: nn.Module, stored: dict[str, tuple]) -> None:
    """One line when the stored tensors (name -> shape) are not exactly the model's state dict: missing (tied
    weights stored once excepted), unexpected (computed buffers and the model's own ignore patterns excepted) or
    shape-mismatched tensors. Used by our decoder (export.build_model) and the packed quantizer's header check."""
    import re

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied, computed = tied_targets(model), non_persistent_buffers(model)
    ignored = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
    refuse_incomplete(
        where,
        missing=[k for k in expected if k not in stored and not (k in tied and tied[k] in stored)],
        unexpected=[
            k for k in stored if k not in expected and k not in computed and not any(p.search(k) for p in ignored)
        ],
        mismatched=[(k, tuple(s), expected[k]) for k, s in stored.items() if k in expected and tuple(s) != expected[k]],
    )


def refuse_meta(model: nn.Module, where: str) -> None:
    """Parameters or buffers still on the `meta` device were never loaded (they have no values at all)."""
    names = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t is not None and t.is_meta]
    if names:
        raise UserError(
            f"{where}: tensors never loaded (still on the meta device) {some(names)}; the files are incomplete"
        )


def refuse_non_finite(model: nn.Module, where: str) -> None:
    """NaN or inf in any floating weight (parameters and stored buffers, e.g. packed 2:4 values and scales)."""
    seen: set[tuple[int, int]] = set()
    bad = []
    for name, t in model.state_dict().items():
        if not t.is_floating_point() or t.is_meta or not t.numel():
            continue
        key = (t.data_ptr(), t.numel())
        if key in seen:  # tied duplicates (lm_head = embed_tokens) are checked once
            continue
        seen.add(key)
        if not bool(torch.isfinite(t).all()):
            bad.append(name)
    if bad:
        raise UserError(
            f"{where} has non-finite weights (NaN or inf) in tensors {some(bad)}; re-export or re-download it"
        )
