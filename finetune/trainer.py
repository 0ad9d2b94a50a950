"""The AST training loop: 2:4 student distilled from its dense teacher, masks recomputed from |W| as it learns.

One optimizer step (thu-ml/Adaptive-Sparse-Trainer main.py training loop; LLaMA-2-7B/train.py):
  grad_accum micro-batches of distill_loss (finetune/distill.py) through W ⊙ M with straight-through gradients
  (finetune/sparse_linear.py) -> clip the global gradient norm -> masked decay (finetune/optim.py) -> AdamW ->
  every mask_interval steps, new 2:4 masks from |W| (finetune/masks.py).
At the end the masks are frozen and the Linears are plain nn.Linear again with weight exactly W ⊙ M; under QAT
(cfg.qat) with weight Q(W ⊙ M), quantized by the function the forward trained with, and their codes returned.

Checkpoints (every checkpoint_every steps into state_dir/ast-checkpoint, written to a temporary folder and renamed):
tensors.safetensors (trainable parameters, current and initial masks, optimizer state, RNG states) and state.json
(step, counters, metrics, the recipe, parameter order). Nothing is unpickled on load. The data order is a pure
function of the seed (finetune/data.py `window_order`), so a resumed run continues bit-exactly on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from finetune.config import ASTConfig
from finetune.data import window_order
from finetune.distill import check_vocab, distill_loss
from finetune.masks import flips, is_exact_nm, magnitude_mask, nm_violations
from finetune.optim import (
    add_masked_decay_to_grad_,
    build_optimizer,
    decay_masked_weights_,
    flatten_optimizer_state,
    lr_at,
    masked_decay_at,
    unflatten_optimizer_state,
)
from finetune.slorb import attach_slorb
from finetune.sparse_linear import SparseLinear, restore_linears, sparsify_linears

CHECKPOINT = "ast-checkpoint"
FORMAT = "ast-checkpoint/1"
RESUMABLE_CHANGES = {"checkpoint_every", "eval_every"}  # recipe keys that may differ on resume


@dataclass(frozen=True)
class ASTResult:
    """masks: name -> bool (out, in) on the CPU; slorb: name -> S (out, in/k) or None; metrics: the run report;
    codes: name -> the quantized weight's codes (quant/codes.py) under QAT, else None."""

    masks: dict[str, torch.Tensor]
    slorb: dict[str, torch.Tensor] | None
    metrics: dict
    codes: dict | None = None


def train_ast(
    student: nn.Module,
    teacher: nn.Module,
    masks: dict[str, torch.Tensor],
    windows: torch.Tensor,
    cfg: ASTConfig,
    *,
    device: torch.device | str,
    state_dir: Path | None,
    evaluate: Callable[[nn.Module], dict] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> ASTResult:
    """Train `student` (modified in place, returned in eval mode, fp32) against the frozen dense `teacher`.

    masks: Linear names as in `student.named_modules()` -> exact 2:4 bool keep-masks (the one-shot mask to start
    from). windows: (N, cfg.seqlen) int64 token windows. evaluate(model) -> metrics, called every eval_every steps
    and at the end (under no_grad). on_step(step, student) is called after each optimizer step (observers, tests).
    With SLoRB on, S is initialised from the teacher's (dense) weights and the returned model carries forward hooks
    adding its term (finetune/slorb.py `attach_slorb`), their handles in `student._slorb_hooks`; S is not in the
    state_dict.
    """
    device = torch.device(device)
    _check_inputs(student, teacher, masks, windows, cfg)
    torch.manual_seed(cfg.seed)
    teacher.to(device).eval().requires_grad_(False)
    flags = {n: p.requires_grad for n, p in student.named_parameters()}
    student.to(device=device, dtype=torch.float32)
    student.requires_grad_(True)
    if not cfg.train_embeddings:
        for m in (student.get_input_embeddings(), student.get_output_embeddings()):
            m.requires_grad_(False)
    layers = sparsify_linears(student, masks, cfg.qat_spec)
    if cfg.slorb:
        dense = dict(teacher.named_modules())
        for name, sl in layers.items():
            sl.enable_slorb(cfg.slorb_k, dense[name].weight, name)
    # matrices (weight decay) first, then norms and biases (none), as nanoGPT's configure_optimizers groups them
    named = sorted(((n, p) for n, p in student.named_parameters() if p.requires_grad), key=lambda i: i[1].dim() < 2)
    params = [p for _, p in named]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = build_optimizer(groups, cfg, device.type)
    init_masks = {name: sl.mask.cpu().clone() for name, sl in layers.items()}

    data_sha = windows_sha256(windows)
    run = {"step": 0, "tokens_seen": 0, "train_s": 0.0, "loss_history": [], "mask_flips": [], "curve": []}
    ckpt_step = None
    if state_dir is not None and (loaded := read_checkpoint(Path(state_dir))) is not None:
        run = _resume(loaded, student, layers, init_masks, opt, [n for n, _ in named], cfg, device, data_sha)
        ckpt_step = run["step"]
        log(f"finetune: resuming from step {ckpt_step} of {cfg.steps} ({Path(state_dir) / CHECKPOINT})")
    start = run["step"]
    resumed_from = start or None

    n_train = sum(p.numel() for p in params)
    qat = f", QAT quest w{cfg.qat_bits}" if cfg.qat_spec is not None else ""
    log(
        f"finetune: AST{qat} on {len(layers)} Linears, {n_train / 1e6:.1f}M trainable parameters, {cfg.steps} steps of "
        f"{cfg.tokens_per_step} tokens"
    )
    per_step = cfg.micro_batch * cfg.grad_accum
    order = window_order(windows.shape[0], cfg.steps * per_step, cfg.seed)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    )
    if cfg.gradient_checkpointing:
        _set_checkpointing(student, True)
    student.train()
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="finetune ast", unit="step")
    session_t, session_tokens = 0.0, 0
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        lr, decay = lr_at(step, cfg), masked_decay_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        sums = torch.zeros(3, device=device)
        for micro in range(cfg.grad_accum):
            first = (step * cfg.grad_accum + micro) * cfg.micro_batch
            x = windows[order[first : first + cfg.micro_batch]].to(device)  # (B, L)
            with autocast():
                s_logits = student(input_ids=x, use_cache=False).logits  # (B, L, V)
                with torch.no_grad():
                    t_logits = teacher(input_ids=x, use_cache=False).logits
                loss, ce, kl = distill_loss(s_logits, t_logits, x, cfg.alpha, cfg.temperature)
            (loss / cfg.grad_accum).backward()
            sums += torch.stack([loss, ce, kl]).detach()
            del s_logits, t_logits, loss
        loss_v, ce_v, kl_v = (sums / cfg.grad_accum).tolist()
        s = step + 1
        if not all(map(math.isfinite, (loss_v, ce_v, kl_v))):
            raise FloatingPointError(_nonfinite(s, f"loss {loss_v} (ce {ce_v}, kl {kl_v})", state_dir, ckpt_step))
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf))
        if not math.isfinite(norm):
            raise FloatingPointError(_nonfinite(s, f"gradient norm {norm}", state_dir, ckpt_step))
        if cfg.masked_decay_mode == "gradient":
            for sl in layers.values():
                add_masked_decay_to_grad_(sl.weight, sl.mask, decay)
        opt.step()
        if cfg.masked_decay_mode == "decoupled":
            for sl in layers.values():
                decay_masked_weights_(sl.weight, sl.mask, lr, decay)
        opt.zero_grad(set_to_none=True)
        if s % cfg.mask_interval == 0:
            run["mask_flips"].append({"step": s, **_recompute_masks(layers, init_masks)})
        dt = time.perf_counter() - t0
        run["step"] = s
        run["tokens_seen"] += cfg.tokens_per_step
        run["train_s"] += dt
        session_t, session_tokens = session_t + dt, session_tokens + cfg.tokens_per_step
        run["loss_history"].append(
            {"step": s, "loss": loss_v, "ce": ce_v, "kl": kl_v, "lr": lr, "masked_decay": decay, "grad_norm": norm}
        )
        if cfg.eval_every and evaluate is not None and s % cfg.eval_every == 0 and s < cfg.steps:
            run["curve"].append([run["tokens_seen"], _evaluate(student, evaluate, autocast, log, s)])
        if state_dir is not None and cfg.checkpoint_every and s % cfg.checkpoint_every == 0:
            _save(Path(state_dir), run, student, named, layers, init_masks, opt, cfg, device, data_sha)
            ckpt_step = s
        if on_step is not None:
            on_step(s, student)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}", kl=f"{kl_v:.4f}", tok_s=f"{session_tokens / session_t:.0f}")
    bar.close()

    final_masks, slorb = restore_linears(student)
    _check_final(student, final_masks)
    codes = None if cfg.qat_spec is None else quantize_trained(student, final_masks, cfg.qat_spec)
    if cfg.slorb:
        student._slorb_hooks = attach_slorb(student, slorb, cfg.slorb_k)  # remove() them before merging S into W
    if cfg.gradient_checkpointing:
        _set_checkpointing(student, False)
    for n, p in student.named_parameters():
        p.requires_grad_(flags.get(n, False))
    student.eval()
    if evaluate is not None:
        run["curve"].append([run["tokens_seen"], _evaluate(student, evaluate, autocast, log, cfg.steps)])
    hist = run["loss_history"]
    metrics = {
        "steps": cfg.steps,
        "train_tokens": run["tokens_seen"],
        "train_s": run["train_s"],
        "tokens_per_s": run["tokens_seen"] / run["train_s"] if run["train_s"] else 0.0,
        "final_loss": hist[-1]["loss"] if hist else None,
        "final_kl": hist[-1]["kl"] if hist else None,
        "trainable_params": n_train,
        "resumed_from": resumed_from,
        "curve": run["curve"],
        "mask_flips": run["mask_flips"],
        "loss_history": hist,
    }
    return ASTResult(masks=final_masks, slorb=slorb if cfg.slorb else None, metrics=metrics, codes=codes)


@torch.no_grad()
def quantize_trained(student: nn.Module, masks: dict[str, torch.Tensor], spec) -> dict:
    """QAT's end: each 2:4 Linear's weight W ⊙ M (fp32, as trained) replaced by Q(W ⊙ M), the quantizer its forward
    computed with (quant/step.py quantize_weight on the QuEST spec, keep = the final mask); returns the codes."""
    from quant.step import quantize_weight

    modules = dict(student.named_modules())
    codes = {}
    for name, keep in masks.items():
        W = modules[name].weight
        W_hat, codes[name], _ = quantize_weight(spec, W.data, None, keep.to(W.device), W.dtype)
        W.data.copy_(W_hat.to(W.dtype))
    _check_final(student, masks)  # the grid has no zero level: the zeros must still come from the mask
    return codes


def _check_inputs(student, teacher, masks, windows, cfg: ASTConfig) -> None:
    check_vocab(student.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0])
    if not masks:
        raise ValueError("finetune: no masks given; AST trains the 2:4 Linears the prune stage masked")
    if windows.dtype != torch.int64 or windows.dim() != 2 or windows.shape[1] != cfg.seqlen or not len(windows):
        raise ValueError(
            f"finetune windows must be (N, {cfg.seqlen}) int64 (finetune.seqlen), got {tuple(windows.shape)} "
            f"{windows.dtype}"
        )
    vocab = student.get_output_embeddings().weight.shape[0]
    if int(windows.min()) < 0 or int(windows.max()) >= vocab:
        raise ValueError(f"finetune windows hold token ids outside the vocabulary [0, {vocab})")
    max_pos = getattr(student.config, "max_position_embeddings", None)
    if max_pos is not None and cfg.seqlen > max_pos:
        raise ValueError(f"finetune.seqlen {cfg.seqlen} exceeds the model's max_position_embeddings {max_pos}")
    if cfg.gradient_checkpointing and not getattr(student, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(student).__name__} has no gradient checkpointing; set gradient_checkpointing: false")
    if cfg.slorb:
        dense = dict(teacher.named_modules())
        for name, mask in masks.items():
            w = getattr(dense.get(name), "weight", None)
            if w is None or tuple(w.shape) != tuple(mask.shape):
                raise ValueError(f"finetune.slorb starts S from the teacher's {name!r}, which it lacks or shapes else")


def _set_checkpointing(model: nn.Module, on: bool) -> None:
    """One checkpoint per decoder layer, non-reentrant (frozen embeddings need no input grads); transformers 5
    renamed gradient_checkpointing_enable to activation_checkpointing_enable and deprecated the old name."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


@torch.no_grad()
def _recompute_masks(layers: dict[str, SparseLinear], init_masks: dict[str, torch.Tensor]) -> dict:
    changed = changed_init = total = 0
    for name, sl in layers.items():
        new = magnitude_mask(sl.weight)
        changed += flips(sl.mask, new)
        changed_init += flips(init_masks[name].to(new.device), new)
        total += new.numel()
        sl.mask.copy_(new)
    return {"flip_rate": changed / total, "flip_rate_vs_init": changed_init / total}


def _evaluate(student, evaluate, autocast, log, step: int) -> dict:
    was_training = student.training
    student.eval()
    with torch.no_grad(), autocast():
        metrics = dict(evaluate(student))
    student.train(was_training)
    log(f"finetune: step {step}: {metrics}")
    return metrics


def _check_final(student: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    modules = dict(student.named_modules())
    for name, mask in masks.items():
        W = modules[name].weight
        if not is_exact_nm(mask) or nm_violations(W) or bool((W[~mask.to(W.device)] != 0).any()):
            raise RuntimeError(f"finetune: {name} is not exactly 2:4 after training (a bug; please report)")


def _nonfinite(step: int, what: str, state_dir, ckpt_step: int | None) -> str:
    where = (
        f"last good checkpoint: {Path(state_dir) / CHECKPOINT} (step {ckpt_step})"
        if ckpt_step is not None
        else "no checkpoint was written"
    )
    return f"finetune: non-finite {what} at step {step}; {where}; lower finetune.lr or check the data"


def _json_default(o):
    return float(o) if hasattr(o, "__float__") else str(o)


def windows_sha256(windows: torch.Tensor) -> str:
    """Fingerprint of the training windows (shape and int64 token ids): a resumed run must train on the same data."""
    h = hashlib.sha256(str(tuple(windows.shape)).encode())
    h.update(windows.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _save(state_dir, run, student, named, layers, init_masks, opt, cfg: ASTConfig, device, data_sha: str) -> None:
    tensors = {f"param.{n}": p.detach().cpu().contiguous().clone() for n, p in named}
    tensors |= {f"mask.{n}": sl.mask.cpu().clone() for n, sl in layers.items()}
    tensors |= {f"mask_init.{n}": m.clone() for n, m in init_masks.items()}
    opt_tensors, opt_rest = flatten_optimizer_state(opt)
    tensors |= opt_tensors
    tensors["rng.cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device).cpu()
    meta = {
        "format": FORMAT,
        "config": dataclasses.asdict(cfg),
        "params": [n for n, _ in named],
        "data_sha256": data_sha,
        "optimizer": opt_rest,
        **run,
    }
    write_checkpoint(state_dir, tensors, meta)


def write_checkpoint(state_dir: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Atomically replace state_dir/ast-checkpoint: write a temporary folder, then rename it into place."""
    state_dir.mkdir(parents=True, exist_ok=True)
    final, tmp, old = state_dir / CHECKPOINT, state_dir / f".{CHECKPOINT}.tmp", state_dir / f".{CHECKPOINT}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta, default=_json_default))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, state) of the checkpoint in state_dir, or None; safetensors and json only, never pickle.
    Falls back to the previous checkpoint when a crash came between the two renames of `write_checkpoint`."""
    for folder in (state_dir / CHECKPOINT, state_dir / f".{CHECKPOINT}.old"):
        if (folder / "state.json").is_file() and (folder / "tensors.safetensors").is_file():
            meta = json.loads((folder / "state.json").read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{folder} is not an AST checkpoint of format {FORMAT}")
            return load_file(str(folder / "tensors.safetensors")), meta
    return None


@torch.no_grad()
def _resume(loaded, student, layers, init_masks, opt, names, cfg: ASTConfig, device, data_sha: str) -> dict:
    tensors, meta = loaded
    saved = meta["config"]
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=_json_default))  # as saved: tuples are lists
    diff = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in now.items() if saved.get(k) != v]
    diff = [d for d in diff if d.split(":")[0] not in RESUMABLE_CHANGES]
    if diff:
        raise ValueError(
            f"finetune: the checkpoint was written with other settings ({'; '.join(diff)}); resume with the same "
            "finetune settings or delete the checkpoint folder to start over"
        )
    if meta.get("data_sha256") != data_sha:
        # e.g. self-distillation texts sampled again differently, or a changed source file: continuing would
        # train the second half on other windows than the window order of the first half assumed
        raise ValueError(
            "finetune: the checkpoint was trained on other windows (data fingerprint differs); restore the same "
            "training data or delete the checkpoint folder to start over"
        )
    if meta["params"] != names:
        raise ValueError("finetune: the checkpoint's trainable parameters differ from the student's; start over")
    params = dict(student.named_parameters())
    for n in names:
        params[n].copy_(tensors[f"param.{n}"])
    for n, sl in layers.items():
        sl.mask.copy_(tensors[f"mask.{n}"])
        init_masks[n].copy_(tensors[f"mask_init.{n}"])
    opt.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return {k: meta[k] for k in ("step", "tokens_seen", "train_s", "loss_history", "mask_flips", "curve")}
