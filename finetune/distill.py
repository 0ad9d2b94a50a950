"""Distillation loss from the frozen dense teacher (Huang et al. 2024 §3.2).

    loss = alpha * CE(student, next tokens) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)

with p^T = softmax(logits / T). The KL is summed over the vocabulary and averaged over every token position, and
multiplied by T^2 (Hinton et al. 2015, so the soft-target gradients keep their scale as T changes), exactly as
thu-ml/Adaptive-Sparse-Trainer sparse_modeling.py `Distill_Model.kl_loss` and LLaMA-2-7B/llmshearing/models/
composer_llama.py `DistillComposerMosaicLlama.loss` compute it: `F.kl_div(log_softmax(s / T), log_softmax(t / T),
log_target=True, reduction="sum") * T**2 / num_tokens`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def check_vocab(student_vocab: int, teacher_vocab: int) -> None:
    if student_vocab != teacher_vocab:
        raise ValueError(
            f"finetune: teacher logits have {teacher_vocab} entries, student logits {student_vocab}; "
            "distillation needs one vocabulary (use the dense model the student was pruned from as teacher)"
        )


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * mean over positions of KL(softmax(t / T) || softmax(s / T)); logits (..., V), fp32 math."""
    check_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
    log_s = F.log_softmax(student_logits.float() / T, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / T, dim=-1)
    positions = student_logits.numel() // student_logits.shape[-1]
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum") * (T * T) / positions


def next_token_ce(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean CE of logits (B, L, V) at positions 0..L-2 against the tokens 1..L-1 (B, L)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    input_ids: torch.Tensor,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, ce, kl) for logits (B, L, V) and the window's tokens (B, L); the teacher's logits carry no grad."""
    kl = kl_teacher_student(student_logits, teacher_logits.detach(), temperature)
    ce = next_token_ce(student_logits, input_ids)
    return alpha * ce + (1 - alpha) * kl, ce, kl
