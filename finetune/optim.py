"""AdamW, the learning-rate schedule and AST's decay on masked-out weights.

Schedules follow the reference: linear warm-up from 0 then cosine to lr x min_lr_ratio (thu-ml/
Adaptive-Sparse-Trainer main.py `get_lr`; LLaMA-2-7B config `cosine_with_warmup`, `alpha_f: 0.1`), and the masked
decay ramps linearly from 0 to its final value (main.py `get_decay`; LLaMA-2-7B/train.py `SRSTE_Callback`, where
`decay = batch x 2e-8` reaches 6e-5 at batch 3000).

The decay on masked-out weights (SR-STE, Zhou et al. 2021, Eq. 5: g + lambda * (~M) ⊙ W) has two forms here:
- `gradient` (default): decay_t * (~M) ⊙ W is added to the gradient before AdamW, as LLaMA-2-7B/train.py
  `SRSTE_Callback` does (`param.grad += (~mask) * weight * decay`, with a bool mask);
- `decoupled`: W[~M] -= lr_t * decay_t * W[~M] after the AdamW step, AdamW-style decoupled decay.
The GPT-2 path of the reference (adamw.py `step`) instead adds `p.data * ~p.mask * decay` to the normalised update,
but `p.mask` is an int 0/1 tensor there (sparse_modeling.py `update_mask` stores `new_mask.int()`), so `~mask` is a
bitwise NOT giving -2 on kept and -1 on pruned weights (it grows every weight) rather than the boolean complement;
both forms here use the intended bool ~M and refuse any other mask dtype.
"""

from __future__ import annotations

import math

import torch

from finetune.config import ASTConfig

BETAS = (0.9, 0.95)  # LLaMA-2-7B config `optimizer.betas`; main.py beta2 = 0.95
EPS = 1e-8


def lr_at(step: int, cfg: ASTConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): lr * step / warmup, then cosine to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    span = cfg.steps - cfg.warmup_steps
    ratio = min(1.0, (step - cfg.warmup_steps) / span) if span else 1.0
    return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - floor)


def masked_decay_at(step: int, cfg: ASTConfig) -> float:
    """Decay on masked-out weights at step `step` (0-based): masked_decay * step / masked_decay_warmup, capped."""
    if step < cfg.masked_decay_warmup:
        return cfg.masked_decay * step / cfg.masked_decay_warmup
    return cfg.masked_decay


def _require_bool(mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"masked decay needs a bool keep-mask, got {mask.dtype} (~ on an int mask is a bitwise NOT)")


@torch.no_grad()
def add_masked_decay_to_grad_(W: torch.nn.Parameter, mask: torch.Tensor, decay: float) -> None:
    """W.grad += decay * (~mask) ⊙ W; kept entries' gradients are untouched bit for bit."""
    _require_bool(mask)
    if decay and W.grad is not None:
        W.grad.add_(torch.where(mask, 0.0, W * decay))


@torch.no_grad()
def decay_masked_weights_(W: torch.nn.Parameter, mask: torch.Tensor, lr: float, decay: float) -> None:
    """W[~mask] *= 1 - lr * decay (decoupled); kept entries are untouched bit for bit."""
    _require_bool(mask)
    if lr * decay:
        W.copy_(torch.where(mask, W, W * (1.0 - lr * decay)))


def build_optimizer(groups: list[dict], cfg: ASTConfig, device_type: str) -> torch.optim.Optimizer:
    """AdamW over param groups (each a dict with `params` and `weight_decay`); 8-bit AdamW only on CUDA."""
    if cfg.optimizer == "adamw8bit":
        if device_type != "cuda":
            raise ValueError(
                f"finetune.optimizer adamw8bit (bitsandbytes) needs a CUDA device, not {device_type}; use adamw"
            )
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("finetune.optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from None
        return bnb.optim.AdamW8bit(groups, lr=cfg.lr, betas=BETAS, eps=EPS)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=BETAS, eps=EPS)


def flatten_optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, json-able rest) of `opt.state_dict()`: tensors as 'optim.<param index>.<key>'."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Inverse of `flatten_optimizer_state`: a state_dict for `opt.load_state_dict`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in rest["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}
